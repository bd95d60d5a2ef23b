"""Chaos run: a whole migration under 429 storms, 5xx answers, dropped connections (before and after
the server applied the write), the local host killed at random points and activities delivered
twice must end in exactly the state of a clean run of the same bundle.

"Exactly" is three comparisons against the clean run: the canonical emulator state (records keyed by
source key, devtools/canonical.py), the journal counts per (map, action) and per (map, origin), and
the final report (ids left out). One seeded RNG per kind of chaos drives the choices; the seed is
printed so a failing run can be repeated (the interleaving with real time is not reproducible, the
choices are).

    python -m devtools.chaos --patients 20 --seed 1234 --runs 3     # three chaos runs vs one clean run

Used by tests/chaos/test_chaos_migration.py (one seed, CI) and `make chaos` (a seed sweep).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devtools import azurite
from devtools.canonical import canonical_state, now_iso
from devtools.stack import LocalStack, drive_migration, practice_stack, synthetic_practice

DUPLICATE_RATE_ENV = "DEVHOST_DUPLICATE_ACTIVITIES"
DUPLICATE_SEED_ENV = "DEVHOST_DUPLICATE_SEED"
_VOLATILE_REPORT_KEYS = {"migration_id", "bundle_id"}


@dataclass(frozen=True)
class ChaosSettings:
    """What one chaos run throws at the migration."""

    seed: int
    min_kills: int = 10
    """Host kills to reach; approvals are held back until a share of them has happened, so the kills
    spread over every stage instead of piling up before the load."""
    max_kills: int = 16
    duplicate_rate: float = 0.2
    """Probability that an activity is delivered twice (devhost DEVHOST_DUPLICATE_ACTIVITIES)."""
    kill_gap: tuple[float, float] = (0.2, 2.5)
    """Real seconds between the next kill being armed and the kill. A kill is armed once the restarted
    host has completed an activity (or the migration waits for a person), so a slow activity cannot be
    killed forever and the run always progresses."""
    weather_gap: tuple[float, float] = (0.3, 1.5)
    """Real seconds between changes of the emulator's fault rules."""
    timeout: float = 900.0
    sample_patients: int | None = None
    """Patients of the sample stage (None: the API's default; 0: no sample stage, a shorter run)."""


@dataclass
class Outcome:
    """What a migration ended as, in forms two runs can be compared by."""

    migration_id: str
    runtime_status: str
    canonical: dict[str, dict[str, Any]]
    journal: dict[str, int]
    """"map/action" -> rows."""
    origins: dict[str, int]
    """"map/origin" -> rows (a lost `created` origin would leave a record behind on rollback)."""
    report: dict[str, Any]
    seconds: float
    entries: dict[str, str] = field(default_factory=dict)
    """"map/source id" -> "action/origin/batch" (ids only), to name the rows that differ."""

    def differences(self, other: Outcome) -> list[str]:
        """Human-readable differences from `other` (ids, tables, counts; never row values)."""
        out: list[str] = []
        if self.runtime_status != other.runtime_status:
            out.append(f"runtime status {self.runtime_status} != {other.runtime_status}")
        for table in sorted(set(self.canonical) | set(other.canonical)):
            mine, theirs = self.canonical.get(table, {}), other.canonical.get(table, {})
            missing, extra = sorted(set(theirs) - set(mine)), sorted(set(mine) - set(theirs))
            changed = sorted(k for k in set(mine) & set(theirs) if mine[k] != theirs[k])
            if missing or extra or changed:
                columns = sorted({c for k in changed for c in set(mine[k]) | set(theirs[k])
                                  if mine[k].get(c) != theirs[k].get(c)})
                out.append(f"table {table}: {len(missing)} missing, {len(extra)} extra, {len(changed)} changed"
                           + (f" (columns {', '.join(columns[:10])})" if columns else "")
                           + (f"; e.g. missing {missing[:3]}" if missing else "")
                           + (f"; e.g. extra {extra[:3]}" if extra else ""))
        for name, mine_counts, theirs_counts in (("journal", self.journal, other.journal),
                                                 ("origins", self.origins, other.origins)):
            for key in sorted(set(mine_counts) | set(theirs_counts)):
                if mine_counts.get(key, 0) != theirs_counts.get(key, 0):
                    out.append(f"{name} {key}: {mine_counts.get(key, 0)} != {theirs_counts.get(key, 0)}")
        rows = sorted(k for k in set(self.entries) | set(other.entries) if self.entries.get(k) != other.entries.get(k))
        out += [f"journal row {k}: {self.entries.get(k)} != {other.entries.get(k)}" for k in rows[:8]]
        if self.report != other.report:
            out.append("final report differs: " + _diff_paths(self.report, other.report)[:500])
        return out


@dataclass
class ChaosLog:
    """What was thrown, for the printout and the results file."""

    seed: int
    kills: list[dict[str, Any]] = field(default_factory=list)
    weather: Counter[str] = field(default_factory=Counter)
    duplicated_activities: int = 0


def _diff_paths(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        return "; ".join(_diff_paths(a.get(k), b.get(k), f"{path}/{k}") for k in sorted(set(a) | set(b))
                         if a.get(k) != b.get(k))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return "; ".join(_diff_paths(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True))
                         if x != y)
    return f"{path or '/'}: {json.dumps(a)[:80]} != {json.dumps(b)[:80]}"


def _normalised_report(report: Any) -> Any:
    if isinstance(report, dict):
        return {k: _normalised_report(v) for k, v in report.items() if k not in _VOLATILE_REPORT_KEYS}
    if isinstance(report, list):
        return [_normalised_report(v) for v in report]
    return report


def outcome_of(stack: LocalStack, result: dict[str, Any], started: str, seconds: float) -> Outcome:
    """The outcome of a migration `drive_migration` ran (started at ISO time `started`)."""
    migration_id = result["migration_id"]
    rt = stack.runtime()
    journal: Counter[str] = Counter()
    origins: Counter[str] = Counter()
    entries: dict[str, str] = {}
    for entry in rt.journal.entries(migration_id):
        journal[f"{entry.table}/{entry.action}"] += 1
        origins[f"{entry.table}/{entry.origin}"] += 1
        # Codes are left out: an attachment's code is its contact folder's id, generated per run.
        entries[f"{entry.table}/{entry.source_id}"] = f"{entry.action}/{entry.origin}/{entry.batch}"
    return Outcome(migration_id=migration_id, runtime_status=str(result["view"].get("runtime_status")),
                   canonical=canonical_state(stack.emulator.dump(), created_after=started),
                   journal=dict(sorted(journal.items())), origins=dict(sorted(origins.items())),
                   report=_normalised_report(result.get("report") or {}), seconds=seconds, entries=entries)


def migrate(stack: LocalStack, bundle: Path, timeout: float = 600, sample_patients: int | None = None) -> Outcome:
    """One migration of `bundle` on an emptied emulator, as a user would drive it."""
    stack.emulator.reset()
    started, clock = now_iso(), time.monotonic()
    result = drive_migration(stack, bundle, timeout=timeout, sample_patients=sample_patients)
    return outcome_of(stack, result, started, time.monotonic() - clock)


# -- the chaos ----------------------------------------------------------------------------------------

APPROVAL_SHARES = {"/mapping/approve": 0.2, "/schema-plan/approve": 0.35, "/sample/approve": 0.5}
"""Share of the minimum kills that must have happened before each approval is given: the rest fall
on the full load and what follows it."""
NO_SAMPLE_SHARES = {**APPROVAL_SHARES, "/schema-plan/approve": 0.8}
"""Without a sample stage the schema approval is the last hold: the full load of a small practice is
over in seconds, so more of the kills must happen before it (discovery, planning, the waits). At 0.6 the
build, load and attachments of the CI run (20 patients) had room for only 3 kills once the journal's
inserts made the load faster (9 in all, against the 10 required); the kills after the hold still fall
on the build and the load, up to `max_kills`."""


class ChaosStack(LocalStack):
    """The stack as the operator's client sees it during chaos: a kill never lands inside one of its
    API calls (those are the operator's clicks, not the work under test), and approvals wait until
    enough kills have happened for the stage so kills cover discovery, planning and loading alike."""

    def __init__(self, stack: LocalStack, monkey: Monkey) -> None:
        super().__init__(stack.storage, stack.emulator, stack.host, stack.prefix)
        self.monkey = monkey

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        shares = NO_SAMPLE_SHARES if self.monkey.settings.sample_patients == 0 else APPROVAL_SHARES
        share = next((share for suffix, share in shares.items() if path.endswith(suffix)), None)
        if method == "POST" and share is not None:
            self.monkey.wait_for_kills(int(self.monkey.settings.min_kills * share))
        with self.monkey.lock:
            return super().api(method, path, **kwargs)


class Monkey:
    """Two threads: one kills and restarts the host, one changes the emulator's faults."""

    def __init__(self, stack: LocalStack, settings: ChaosSettings, log: ChaosLog) -> None:
        self.stack, self.settings, self.log = stack, settings, log
        self.lock = threading.RLock()
        self.stop = threading.Event()
        self._kill_rng = random.Random(f"{settings.seed}:kills")
        self._weather_rng = random.Random(f"{settings.seed}:weather")
        self._threads = [threading.Thread(target=self._killer, name="chaos-killer", daemon=True),
                         threading.Thread(target=self._weather, name="chaos-weather", daemon=True)]
        self.errors: list[BaseException] = []
        self.stage = "start"

    def __enter__(self) -> Monkey:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        self.stack.emulator.configure(faults=[])

    def wait_for_kills(self, count: int) -> None:
        deadline = time.monotonic() + self.settings.timeout
        while len(self.log.kills) < count and time.monotonic() < deadline and not self.stop.is_set():
            time.sleep(0.1)

    def _killer(self) -> None:
        try:
            while not self.stop.is_set() and len(self.log.kills) < self.settings.max_kills:
                while not self.stop.is_set() and self._host_status("completedActivities") < 1 \
                        and not self.stage.startswith("awaiting"):
                    self.stop.wait(0.2)
                if self.stop.wait(self._kill_rng.uniform(*self.settings.kill_gap)):
                    return
                with self.lock:
                    if self.stop.is_set():
                        return
                    self.log.duplicated_activities += self._host_status("duplicatedActivities")
                    self.stack.host.kill()
                    number = len(self.log.kills) + 1
                    self.log.kills.append({"kill": number, "stage": self.stage, "at": now_iso()})
                    # A fresh duplicate-delivery seed per process, derived from the run's seed.
                    self.stack.host.extra_env[DUPLICATE_SEED_ENV] = str(self.settings.seed * 1000 + number)
                    self.stack.host.start(timeout=60)
        except BaseException as exc:  # surfaced by run_chaos: a chaos thread must not die silently
            self.errors.append(exc)

    def _host_status(self, counter: str) -> int:
        """A counter of the running host process (0 if it does not answer in time)."""
        try:
            return int(self.stack.host.http().get("/admin/host/status", timeout=5).json()[counter])
        except Exception:  # informative only: a host too busy to answer counts as no progress yet
            return 0

    def _weather(self) -> None:
        try:
            while not self.stop.wait(self._weather_rng.uniform(*self.settings.weather_gap)):
                name, faults = random_weather(self._weather_rng)
                self.log.weather[name] += 1
                self.stack.emulator.configure(faults=faults)
        except BaseException as exc:
            self.errors.append(exc)


def random_weather(rng: random.Random) -> tuple[str, list[dict[str, Any]]]:
    """One spell of faults: calm, a 429 storm, 5xx answers, dropped connections, or a mix."""
    writes = ["POST", "PATCH", "PUT", "DELETE"]
    every = ["GET", *writes]

    def storm() -> dict[str, Any]:
        return {"kind": "status", "status": 429, "code": "0x80072322",
                "message": "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
                "retry_after_seconds": 1, "every": 1, "times": rng.randint(2, 6), "methods": every}

    def server_error() -> dict[str, Any]:
        return {"kind": "status", "status": rng.choice([500, 502, 503, 504]), "every": rng.randint(3, 12),
                "times": rng.randint(1, 4), "methods": rng.choice([every, writes])}

    def drop(kind: str) -> dict[str, Any]:
        return {"kind": kind, "every": rng.randint(3, 12), "times": rng.randint(1, 3),
                "methods": writes if kind == "drop_after" else every}

    def graph() -> dict[str, Any]:
        return {"kind": rng.choice(["status", "drop_before", "drop_after"]), "status": 503,
                "path_prefix": rng.choice(["/v1.0/", "/_upload/"]), "every": rng.randint(2, 6),
                "times": rng.randint(1, 2), "methods": every}

    spells = {
        "calm": list,
        "429_storm": lambda: [storm()],
        "5xx": lambda: [server_error()],
        "drop_before": lambda: [drop("drop_before")],
        "drop_after": lambda: [drop("drop_after")],
        "graph": lambda: [graph()],
        "mixed": lambda: [server_error(), drop("drop_after"), drop("drop_before"), graph()],
    }
    name = rng.choice(sorted(spells))
    return name, spells[name]()


def run_chaos(stack: LocalStack, bundle: Path, settings: ChaosSettings) -> tuple[Outcome, ChaosLog]:
    """One migration of `bundle` under chaos, on an emptied emulator."""
    log = ChaosLog(seed=settings.seed)
    stack.host.extra_env[DUPLICATE_RATE_ENV] = str(settings.duplicate_rate)
    stack.host.extra_env[DUPLICATE_SEED_ENV] = str(settings.seed * 1000)
    stack.host.stop()
    stack.host.start(timeout=60)
    stack.emulator.reset()
    started, clock = now_iso(), time.monotonic()
    monkey = Monkey(stack, settings, log)
    chaotic = ChaosStack(stack, monkey)

    def on_progress(view: dict[str, Any]) -> None:
        monkey.stage = str((view.get("custom_status") or {}).get("stage") or view.get("runtime_status"))

    try:
        with monkey:
            result = drive_migration(chaotic, bundle, timeout=settings.timeout, on_progress=on_progress,
                                     sample_patients=settings.sample_patients)
    finally:
        stack.host.extra_env.pop(DUPLICATE_RATE_ENV, None)
        stack.host.extra_env.pop(DUPLICATE_SEED_ENV, None)
    if monkey.errors:
        raise RuntimeError(f"a chaos thread failed: {monkey.errors[0]!r}") from monkey.errors[0]
    log.duplicated_activities += monkey._host_status("duplicatedActivities")
    return outcome_of(stack, result, started, time.monotonic() - clock), log


def summary(log: ChaosLog, outcome: Outcome) -> str:
    stages = Counter(k["stage"] for k in log.kills)
    return (f"seed {log.seed}: {len(log.kills)} host kills ({', '.join(f'{s} {n}' for s, n in sorted(stages.items()))}), "
            f"{log.duplicated_activities} activities delivered twice, fault spells "
            f"{dict(sorted(log.weather.items()))}; {outcome.runtime_status} in {outcome.seconds:.0f} s")


# -- command line -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="first seed (random if not given; printed)")
    parser.add_argument("--runs", type=int, default=1, help="chaos runs, seeds seed, seed+1, ...")
    parser.add_argument("--kills", type=int, default=10, help="minimum host kills per run")
    parser.add_argument("--duplicate-rate", type=float, default=0.2)
    parser.add_argument("--sample-patients", type=int, default=None,
                        help="patients of the sample stage (default: the API's; 0: no sample stage)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default bench/results/chaos-<time>.json)")
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    print(f"chaos: seed {seed}, {args.runs} run(s), {args.patients} patients", flush=True)
    results: list[dict[str, Any]] = []
    failed = 0
    with contextlib.ExitStack() as exits:
        work = args.work_dir or Path(exits.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
        work.mkdir(parents=True, exist_ok=True)
        storage = azurite.start(log_file=work / "azurite.log")
        exits.callback(storage.stop)
        practice, bundle = synthetic_practice(work, args.patients, seed, part_rows=40)
        stack = exits.enter_context(practice_stack(work, practice, storage))
        clean = migrate(stack, bundle, sample_patients=args.sample_patients)
        print(f"clean run: {clean.runtime_status} in {clean.seconds:.0f} s, "
              f"{sum(len(r) for r in clean.canonical.values())} records", flush=True)
        if clean.runtime_status != "Completed":
            print("the clean run did not complete: nothing to compare a chaos run with (see the host log in "
                  f"{work / 'stack'})", flush=True)
            return 2
        for run in range(args.runs):
            settings = ChaosSettings(seed=seed + run, min_kills=args.kills, max_kills=max(args.kills + 6, 16),
                                     duplicate_rate=args.duplicate_rate, sample_patients=args.sample_patients)
            outcome, log = run_chaos(stack, bundle, settings)
            differences = outcome.differences(clean)
            if len(log.kills) < args.kills:
                differences.append(f"only {len(log.kills)} host kills (wanted {args.kills})")
            failed += bool(differences)
            print(summary(log, outcome), flush=True)
            print("  same as the clean run" if not differences else "  DIFFERENT:\n    " + "\n    ".join(differences),
                  flush=True)
            results.append({"seed": settings.seed, "settings": asdict(settings), "kills": log.kills,
                            "weather": dict(log.weather), "duplicated_activities": log.duplicated_activities,
                            "seconds": round(outcome.seconds, 1), "differences": differences})
    out = args.out or Path("bench/results") / f"chaos-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"patients": args.patients, "first_seed": seed, "clean_seconds": round(clean.seconds, 1),
                               "runs": results, "failed": failed}, indent=2))
    print(f"{args.runs - failed}/{args.runs} chaos runs ended exactly as the clean run; results in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
