"""`make demo`: the main job. A whole local migration of a synthetic practice, end to end.

1. synthesise a Dentrix-shaped practice (SQLite with Dentrix G's view names, plus imaging files);
2. extract it with the on-prem agent into a verified export bundle;
3. start Azurite, the Dataverse + Graph emulator and the local Functions host;
4. create a migration through the HTTP API and upload the bundle with the write-only SAS it returns;
5. approve the proposed field map and the schema plan through the API, as an operator would;
   the sample run loads a stratified slice of patients first; its field-level diff is approved too;
6. follow the progress, then print per object what the bundle held and what became of it, with the
   records read back from the emulator, the time taken and where the reports are.
Exits non-zero if any source row is unaccounted for or the migration did not complete.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from devtools.stack import drive_migration, practice_stack, synthetic_practice
from shared.dentrix.reader import BundleReader

DEMO_DIR = Path(__file__).resolve().parent.parent / ".demo"


def _progress(view: dict[str, Any]) -> None:
    status = view.get("custom_status") or {}
    stage = status.get("stage", view.get("runtime_status"))
    detail = ""
    if stage in ("load", "sample_load"):
        detail = f" {status.get('tables_done')}/{status.get('tables')} tables, loading {', '.join(status.get('loading', []))}"
    elif stage == "awaiting_sample_approval":
        detail = f" (match rate {status['sample']['match_rate'] * 100:.2f}%)"
    print(f"  .. {stage}{detail}", flush=True)


def _target_counts(dump: dict[str, Any]) -> Counter[str]:
    """Records per table in the emulator's state, and files in its SharePoint, read back at the end."""
    counts: Counter[str] = Counter({table: len(rows) for table, rows in dump["rows"].items()})
    counts["sharepoint"] = sum(1 for drive in dump["graph"]["drives"].values()
                               for item in drive["items"].values() if not item.get("folder"))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    started = time.monotonic()
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    practice, bundle = synthetic_practice(DEMO_DIR, args.patients, args.seed)
    manifest = BundleReader.from_directory(bundle).manifest
    print(f"practice    {args.patients} patients synthesised; bundle {manifest.bundle_id}: "
          f"{sum(t.rows for t in manifest.tables)} rows in {len(manifest.tables)} tables, {manifest.file_index.count} files")

    with practice_stack(DEMO_DIR, practice) as stack:
        print(f"services    azurite, emulator {stack.emulator.base_url}, local host {stack.host.url}")
        result = drive_migration(stack, bundle, name="demo practice", on_progress=_progress)
        targets = _target_counts(stack.emulator.dump())

    view = result["view"]
    status = view.get("runtime_status")
    print(f"migration   {result['migration_id']}: {status}")
    sample = result.get("sample")
    if sample:
        print(f"sample      {sample['patients']} patients (+{sample['contacts'] - sample['patients']} contacts they "
              f"point at), {sample['records']} records: {sample['fields_matched']} of {sample['fields_checked']} "
              f"fields match, match rate {sample['match_rate'] * 100:.2f}%, {sample['mismatches']} mismatches "
              f"(GET /api/migrations/{result['migration_id']}/sample/diff?format=html); approved")
    report = result.get("report")
    if status != "Completed" or report is None:
        print(f"the migration did not complete: {view.get('custom_status')}; see {DEMO_DIR / 'stack' / 'host.log'}")
        return 1
    print()
    print(f"{'map':<28}{'source':>8}{'created':>9}{'updated':>9}{'same':>6}{'skip':>6}{'quar.':>7}"
          f"{'failed':>8}  target table (records read back)")
    print(f"{'':<28}{'rows':>8}  (source rows are the whole source table, which several maps may share)")
    for outcome in report["maps"]:
        actions = outcome["actions"]
        rows = report["source_rows"].get(outcome["source_table"], 0)
        target = "sharepoint" if outcome["map"] == "document" and "sharepoint" in targets else outcome["target_table"]
        print(f"{outcome['map']:<28}{rows:>8}{actions.get('created', 0):>9}{actions.get('updated', 0):>9}"
              f"{actions.get('unchanged', 0):>6}{actions.get('skipped', 0):>6}{actions.get('quarantined', 0):>7}"
              f"{actions.get('failed', 0):>8}  {target} ({targets.get(target, 0)})")
        for code, count in sorted(outcome["reasons"].items()):
            print(f"{'':<30}{count} x {code}")
    unaccounted = report["unaccounted"]
    print()
    print(f"reports     GET /api/migrations/{result['migration_id']}/report (also Blob "
          f"{stack.prefix}-migrations/{result['migration_id']}/reports/)")
    print(f"time        {time.monotonic() - started:.1f} s")
    if unaccounted:
        print(f"UNACCOUNTED source rows: {unaccounted}")
        return 1
    print("every source row is accounted for")
    return 0


if __name__ == "__main__":
    sys.exit(main())
