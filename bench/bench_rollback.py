"""Benchmark: the sample diff and the compensating rollback of a migrated synthetic practice, on the local stack.

Migrates N patients (agent bundle -> API -> host -> emulator), then times through the API:
1. the sample field-level diff over every patient (fields compared per second);
2. the rollback (journal rows undone per second), and checks the emulator's records match the dump
   taken before the migration.

    .venv/bin/python -m bench.bench_rollback [--patients 25] [--screenshot docs/sample-diff.png]

`--screenshot` also renders the sample diff's HTML report (from the API) in headless Chromium.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from agent.extract import extract
from agent.synth import synthesize
from devtools.stack import OPERATOR, drive_migration, local_stack, users_for_practice


def _wait(stack, instance: str, timeout: float = 1800) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = stack.host.status(instance)
        if status.get("runtimeStatus") in ("Completed", "Failed", "Terminated"):
            return status
        time.sleep(0.2)
    raise TimeoutError(instance)


def _screenshot(stack, mid: str, work: Path, out: Path) -> None:
    page = stack.host.http().get(f"/api/migrations/{mid}/sample/diff", params={"format": "html"},
                                 headers={"x-ms-client-principal": OPERATOR})
    page.raise_for_status()
    html = work / "diff.html"
    html.write_text(page.text, encoding="utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    chromium = shutil.which("chromium") or "chromium"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={work / 'profile'}",
                    f"--screenshot={out}", "--window-size=1100,1000", html.as_uri()], check=True,
                   capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=25)
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        practice = work / "practice.db"
        synth = synthesize(practice, args.patients, 11)
        bundle = extract(str(practice), work / "bundle", files_root=synth.files_root, part_rows=500)
        with local_stack(work / "stack", emulator_config={"users": users_for_practice(practice)}) as stack:
            before = stack.emulator.dump()["rows"]
            started = time.monotonic()
            result = drive_migration(stack, bundle.bundle_dir, timeout=1800)
            migrated = time.monotonic() - started
            mid = result["migration_id"]
            journaled = sum(sum(m["actions"].values()) for m in result["report"]["maps"])

            started = time.monotonic()
            stack.api("POST", f"/migrations/{mid}/sample/diff", json={"patients": 5000})
            _wait(stack, f"{mid}:sample-diff")
            diffed = time.monotonic() - started
            diff = stack.api("GET", f"/migrations/{mid}/sample/diff")
            if args.screenshot:
                _screenshot(stack, mid, work, args.screenshot.resolve())

            started = time.monotonic()
            stack.api("POST", f"/migrations/{mid}/rollback", json={})
            status = _wait(stack, f"{mid}:rollback")
            rolled = time.monotonic() - started
            after = stack.emulator.dump()["rows"]
            same = {t: r for t, r in after.items() if r} == {t: r for t, r in before.items() if r}
    print(f"patients {args.patients}, journal rows {journaled}, migration {migrated:.1f} s")
    print(f"sample diff: {diff['fields_checked']} fields of {diff['patients']} patients in {diffed:.1f} s "
          f"({diff['fields_checked'] / diffed:.0f} fields/s), match rate {diff['match_rate']:.4f}")
    print(f"rollback: {status['runtimeStatus']} in {rolled:.1f} s ({journaled / rolled:.0f} journal rows/s), "
          f"records equal to the pre-migration dump: {same}")


if __name__ == "__main__":
    main()
