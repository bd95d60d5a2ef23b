"""Soak: back-to-back migrations and rollbacks of one practice for a set time, sampling after every
cycle the resident memory (VmRSS) and open file descriptors (/proc/<pid>/fd) of the local host, the
emulator and Azurite, then printing the series and a verdict per process from the growth slope.

    python -m devtools.soak --minutes 30 --patients 15      # `make soak`

A cycle is: a migration of the bundle to the end (every approval given), then its rollback to
`rolled_back`. The emulator runs as its own process here (not a thread of this one) so its figures
are its own. The first cycles warm caches and pools, so the verdict fits a line to the second half
of the series only: growth is "flat" when the fitted slope over the run's length stays under 5 %
of the mean (memory) or under 2 descriptors (files). Results go to bench/results/soak-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devhost.testing import run_host
from devtools import azurite
from devtools.stack import LocalStack, drive_migration, synthetic_practice, users_for_practice
from emulator.testing import SubprocessEmulator, run_emulator

MEMORY_GROWTH_LIMIT = 0.05
"""Fitted growth over the measured half, as a fraction of its mean RSS, above which memory grows."""
FD_GROWTH_LIMIT = 2.0
"""Fitted growth in descriptors over the measured half above which files leak."""
JUDGED = ("host", "emulator")
"""Processes the verdict is about. Azurite is sampled too, for information only: it runs with
in-memory persistence, so it holds every cycle's journal, artifacts and bundle by design."""


@dataclass
class Sample:
    cycle: int
    seconds: float
    """Since the soak started."""
    rss_kib: dict[str, int]
    fds: dict[str, int]
    migration_seconds: float
    rollback_seconds: float
    outcome: str
    load_average: float = 0.0
    """The machine's 1-minute load average as the sample was taken (others' work slows cycles, not memory)."""


@dataclass
class Verdict:
    process: str
    rss_first_kib: int
    rss_last_kib: int
    rss_slope_kib_per_cycle: float
    rss_growth_fraction: float
    fds_first: int
    fds_last: int
    fds_slope_per_cycle: float
    flat: bool


@dataclass
class SoakResult:
    minutes: float
    patients: int
    cycles: int
    failed_cycles: int
    samples: list[Sample] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    memory_growth: list[dict[str, Any]] = field(default_factory=list)
    """With `trace_memory`: per cycle, the host's top allocation growth by source line (devhost /admin/devhost/memory)."""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope(values: list[float]) -> float:
    """Least-squares slope per step (0 for fewer than two points)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
    den = sum((x - mean_x) ** 2 for x in range(n))
    return num / den


def verdicts(samples: list[Sample]) -> list[Verdict]:
    out = []
    for process in samples[0].rss_kib if samples else []:
        measured = samples[len(samples) // 2:] if len(samples) >= 4 else samples
        rss = [float(s.rss_kib[process]) for s in measured]
        fds = [float(s.fds[process]) for s in measured]
        rss_slope, fd_slope = slope(rss), slope(fds)
        span = max(len(measured) - 1, 1)
        growth = rss_slope * span / (sum(rss) / len(rss)) if rss else 0.0
        flat = growth < MEMORY_GROWTH_LIMIT and fd_slope * span < FD_GROWTH_LIMIT
        out.append(Verdict(process, samples[0].rss_kib[process], samples[-1].rss_kib[process], round(rss_slope, 1),
                           round(growth, 4), samples[0].fds[process], samples[-1].fds[process], round(fd_slope, 3),
                           flat))
    return out


@contextlib.contextmanager
def soak_stack(work: Path, practice: Path, storage: azurite.AzuriteProcess, trace_memory: bool = False
               ) -> Iterator[LocalStack]:
    """As devtools.stack.local_stack, with the emulator in its own process (so it can be measured)."""
    prefix = "bw" + uuid.uuid4().hex[:8]
    config = {"time_scale": 60.0, "key_activation_seconds": 2.0, "users": users_for_practice(practice)}
    with run_emulator(config, subprocess=True) as emulator:
        env = {"BRIDGEWORK_TABLE_PREFIX": prefix, "BRIDGEWORK_DATAVERSE_AUTH_MODE": "factory",
               "BRIDGEWORK_DATAVERSE_CREDENTIAL_FACTORY": "emulator.credentials:EmulatorTokenCredential",
               **({"PYTHONTRACEMALLOC": "1"} if trace_memory else {})}
        with run_host("function_app:app", storage.connection_string, prefix, env=env,
                      log_path=work / "host.log") as host:
            yield LocalStack(storage, emulator, host, prefix)


def rollback(stack: LocalStack, migration_id: str, timeout: float = 600) -> dict[str, Any]:
    stack.api("POST", f"/migrations/{migration_id}/rollback", json={})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = stack.api("GET", f"/migrations/{migration_id}/rollback")
        if view.get("runtime_status") in ("Completed", "Failed", "Terminated"):
            return view
        time.sleep(0.2)
    raise TimeoutError(f"the rollback of {migration_id} did not end in {timeout:.0f} s")


def pids(stack: LocalStack) -> dict[str, int]:
    assert stack.host.process is not None and isinstance(stack.emulator, SubprocessEmulator)
    assert stack.emulator.proc is not None
    return {"host": stack.host.process.pid, "emulator": stack.emulator.proc.pid, "azurite": stack.storage.pid}


def soak(minutes: float, patients: int, work: Path, seed: int = 7, echo: bool = True, trace_memory: bool = False
         ) -> SoakResult:
    result = SoakResult(minutes=minutes, patients=patients, cycles=0, failed_cycles=0)
    storage = azurite.start(log_file=work / "azurite.log")
    try:
        practice, bundle = synthetic_practice(work, patients, seed, part_rows=40)
        (work / "stack").mkdir(exist_ok=True)
        with soak_stack(work / "stack", practice, storage, trace_memory) as stack:
            started = time.monotonic()
            deadline = started + minutes * 60
            while time.monotonic() < deadline:
                cycle = result.cycles + 1
                clock = time.monotonic()
                migrated = drive_migration(stack, bundle, name=f"soak-{cycle}", timeout=900)
                migration_seconds = time.monotonic() - clock
                outcome = str(migrated["view"].get("runtime_status"))
                rollback_seconds = 0.0
                if outcome == "Completed":
                    clock = time.monotonic()
                    rolled = rollback(stack, migrated["migration_id"])
                    rollback_seconds = time.monotonic() - clock
                    stage = (rolled.get("custom_status") or {}).get("stage")
                    outcome = "rolled_back" if stage == "rolled_back" else f"rollback {rolled.get('runtime_status')}"
                result.cycles = cycle
                result.failed_cycles += outcome != "rolled_back"
                ids = pids(stack)
                sample = Sample(cycle, round(time.monotonic() - started, 1),
                                {name: rss_kib(pid) for name, pid in ids.items()},
                                {name: open_fds(pid) for name, pid in ids.items()},
                                round(migration_seconds, 1), round(rollback_seconds, 1), outcome,
                                round(os.getloadavg()[0], 2))
                result.samples.append(sample)
                if trace_memory:
                    grown = stack.host.http().get("/admin/devhost/memory", params={"top": 12}).json()
                    result.memory_growth.append({"cycle": cycle, **grown})
                    if echo and grown.get("since_previous"):
                        print(f"  host traced {grown['traced_kib']} KiB; grew most at: " + "; ".join(
                            f"{t['where'].rsplit('site-packages/', 1)[-1]} {t['size_diff_kib']:+.0f} KiB"
                            for t in grown["top"][:5]), flush=True)
                if echo:
                    print(f"cycle {cycle:3d} at {sample.seconds:7.0f} s: {outcome}, migration "
                          f"{migration_seconds:5.1f} s, rollback {rollback_seconds:5.1f} s; RSS MiB "
                          + ", ".join(f"{k} {v / 1024:.1f}" for k, v in sample.rss_kib.items()) + "; fds "
                          + ", ".join(f"{k} {v}" for k, v in sample.fds.items())
                          + f"; load average {sample.load_average:.1f}", flush=True)
    finally:
        storage.stop()
    result.verdicts = verdicts(result.samples)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--patients", type=int, default=15)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default bench/results/soak-<time>.json)")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--trace-memory", action="store_true",
                        help="trace the host's allocations (slower) and print where it grew after each cycle")
    args = parser.parse_args(argv)
    print(f"soak: {args.minutes:g} minutes of migrate + rollback cycles, {args.patients} patients", flush=True)
    with contextlib.ExitStack() as exits:
        work = args.work_dir or Path(exits.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        work.mkdir(parents=True, exist_ok=True)
        result = soak(args.minutes, args.patients, work, args.seed, trace_memory=args.trace_memory)
    for v in result.verdicts:
        print(f"{v.process:9s} RSS {v.rss_first_kib / 1024:.1f} -> {v.rss_last_kib / 1024:.1f} MiB "
              f"(slope {v.rss_slope_kib_per_cycle:+.1f} KiB/cycle over the second half, growth "
              f"{v.rss_growth_fraction:+.1%}); fds {v.fds_first} -> {v.fds_last} (slope {v.fds_slope_per_cycle:+.2f}/cycle)"
              f": {'flat' if v.flat else 'GROWS'}"
              + ("" if v.process in JUDGED else " (informational: in-memory storage keeps every cycle's data)"))
    out = args.out or Path("bench/results") / f"soak-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(result), indent=2))
    flat = all(v.flat for v in result.verdicts if v.process in JUDGED)
    print(f"{result.cycles} cycles, {result.failed_cycles} failed; verdict: "
          f"{'nothing grows' if flat else 'something grows'}; results in {out}")
    return 0 if flat and not result.failed_cycles and result.cycles else 1


if __name__ == "__main__":
    sys.exit(main())
