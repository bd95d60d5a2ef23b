"""Benchmark discovery: profile synthetic practices of two sizes and print time, rows/s and peak memory.

    .venv/bin/python -m bench.bench_discovery                      # 2,000 and 10,000 patients
    .venv/bin/python -m bench.bench_discovery --sizes 1000,5000    # quicker

For each size: synthesise and extract the practice (agent), then run `profile_bundle` on the local
bundle in its own process, so its peak resident memory (ru_maxrss) is its own, and compare with a
process that only imports the same modules. Memory should barely grow with the practice: the
profiler holds one part of rows at a time plus 8-byte key hashes of referenced tables.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _phase(bundle: str, profile: bool) -> None:
    from shared.dentrix.reader import BundleReader
    from shared.discovery import EstimateSettings, profile_bundle
    from shared.discovery.summary import render_summary
    from shared.mapping.spec import default_mapping

    mapping = default_mapping()
    baseline = _peak_mb()
    started = time.perf_counter()
    rows = 0
    if profile:
        report = profile_bundle(BundleReader.from_directory(Path(bundle)), settings=EstimateSettings(), mapping=mapping)
        rows = sum(t.rows for t in report.tables)
        render_summary(report)
        est = report.estimate.load
        print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started, "peak_mb": _peak_mb(),
                          "baseline_mb": baseline, "report_kb": len(report.model_dump_json()) / 1024,
                          "estimate_s": est.seconds, "writes": est.records, "bound": est.bound}))
    else:
        print(json.dumps({"peak_mb": _peak_mb()}))


def _run(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "bench.bench_discovery", "--phase", *args], cwd=REPO, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="2000,10000")
    parser.add_argument("--phase", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        _phase(args.phase[0], args.phase[1] == "profile")
        return
    from agent.extract import extract
    from agent.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            db = Path(tmp) / f"p{size}.db"
            synthesize(db, size, 7)
            bundle = Path(tmp) / f"b{size}"
            extract(str(db), bundle, bundle_id=f"bench-{size}")
            idle = _run(str(bundle), "idle")
            fig = _run(str(bundle), "profile")
            print(f"{size:>7,} patients  {fig['rows']:>10,.0f} rows  {fig['seconds']:7.2f} s  "
                  f"{fig['rows'] / fig['seconds']:>9,.0f} rows/s  peak {fig['peak_mb']:6.1f} MB "
                  f"(imports alone {idle['peak_mb']:.1f} MB)  report {fig['report_kb']:.0f} KB  "
                  f"estimated load {fig['estimate_s']:.0f} s for {fig['writes']:,.0f} writes ({fig['bound']})")


if __name__ == "__main__":
    main()
