"""Benchmark the Dentrix side: extract, upload and read a synthetic practice at two sizes.

    .venv/bin/python -m bench.bench_bundle                            # 10,000 and 50,000 patients
    .venv/bin/python -m bench.bench_bundle --sizes 2000 10000 50000   # (or 2000,10000,50000)

For each size: synthesise the practice, `extract` it (agent), `upload` it to a real Azurite with a
create+write SAS (agent), then `verify` it from Blob Storage (the cloud reader: every part hashed,
every row validated, every row's file looked up in the file index, every file hashed). Each phase
runs in its own process so its peak resident memory (ru_maxrss) is its own. Memory should not grow
with the practice, in rows or in files (format 2 keeps the file index out of the manifest and
streams it): compare the sizes. The read line also shows how many passes over the file index
`verify()` made (one per 20,000 referenced files, plus one for hashing the files).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _phase(argv: list[str]) -> None:
    """Run one phase in this (child) process and print its figures as JSON."""
    phase, *rest = argv
    started = time.perf_counter()
    if phase == "synth":
        from agent.synth import synthesize

        info = synthesize(Path(rest[0]), int(rest[1]), 7)
        rows = sum(info.rows.values())
    elif phase == "extract":
        from agent.extract import extract

        info = extract(rest[0], Path(rest[1]), bundle_id="bench")
        rows = sum(info.rows.values())
    elif phase == "upload":
        from agent.upload import upload_bundle

        report = upload_bundle(Path(rest[0]), rest[1], migration_id="bench", concurrency=8,
                               progress=_Silent())
        rows = report.uploaded
    elif phase == "read":
        from azure.storage.blob import ContainerClient

        from shared.dentrix.reader import BundleReader

        container = ContainerClient.from_connection_string(rest[0], rest[1])
        reader = BundleReader.from_container(container, "bench/bench/")
        report = reader.verify(check_files=False)  # every part hashed, every row validated
        rows = sum(t.loaded + t.quarantined for t in report.tables.values())
        seconds = time.perf_counter() - started
        files_started = time.perf_counter()
        files = reader.verify_files(concurrency=8)
        print(json.dumps({"phase": phase, "rows": rows, "seconds": seconds, "files": files,
                          "files_seconds": time.perf_counter() - files_started, "peak_mb": _peak_mb(),
                          "index_passes": reader.index_stats.passes,
                          "index_lines_held_max": reader.index_stats.lines_held_max}))
        return
    else:
        raise SystemExit(f"unknown phase {phase}")
    seconds = time.perf_counter() - started
    print(json.dumps({"phase": phase, "rows": rows, "seconds": seconds, "peak_mb": _peak_mb()}))


class _Silent:
    def advance(self) -> None:
        pass


def _run(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "bench.bench_bundle", "--phase", *args], cwd=REPO,
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["10000", "50000"],
                        help="patient counts, separated by spaces or commas")
    parser.add_argument("--workdir", help="keep the practices and bundles here (default: a temp folder, removed)")
    parser.add_argument("--phase", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        _phase(args.phase)
        return 0

    from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

    from devtools import azurite

    sizes = [int(s) for item in args.sizes for s in item.split(",") if s]
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bw-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    emulator = azurite.start()
    results = []
    try:
        service = BlobServiceClient.from_connection_string(emulator.connection_string)
        for size in sizes:
            folder = work / f"p{size}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            db = folder / "practice.db"
            synth = _run("synth", str(db), str(size))
            extract = _run("extract", str(db), str(folder / "bundle"))
            container_name = f"bench{size}"
            container = service.create_container(container_name)
            sas = generate_container_sas(azurite.ACCOUNT, container_name, account_key=azurite.ACCOUNT_KEY,
                                         permission=ContainerSasPermissions(create=True, write=True),
                                         expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2))
            upload = _run("upload", str(folder / "bundle"), f"{container.url}?{sas}")
            read = _run("read", emulator.connection_string, container_name)
            bundle_mb = sum(p.stat().st_size for p in (folder / "bundle").rglob("*") if p.is_file()) / 2**20
            results.append((size, synth, extract, upload, read, bundle_mb))
            service.delete_container(container_name)
    finally:
        emulator.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    print(f"{'patients':>9} {'rows':>10} {'bundle MB':>9} | {'extract rows/s':>14} {'peak MB':>7} | "
          f"{'upload blobs/s':>14} {'peak MB':>7} | {'read rows/s':>11} {'peak MB':>7}")
    for size, synth, extract, upload, read, bundle_mb in results:
        print(f"{size:>9,} {int(extract['rows']):>10,} {bundle_mb:>9.1f} | "
              f"{extract['rows'] / extract['seconds']:>14,.0f} {extract['peak_mb']:>7.0f} | "
              f"{upload['rows'] / upload['seconds']:>14,.0f} {upload['peak_mb']:>7.0f} | "
              f"{read['rows'] / read['seconds']:>11,.0f} {read['peak_mb']:>7.0f}")
        print(f"{'':>9} synth {synth['seconds']:.0f} s, extract {extract['seconds']:.0f} s, "
              f"upload {upload['seconds']:.0f} s ({int(upload['rows'])} blobs), read+verify rows {read['seconds']:.0f} s, "
              f"hash {int(read['files'])} files {read['files_seconds']:.0f} s, "
              f"{int(read['index_passes'])} file index passes holding at most {int(read['index_lines_held_max'])} lines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
