"""Benchmark: a whole migration (agent bundle in Blob -> local host -> emulator) against the service-protection
bound, with a naive loader and Microsoft's SDK bulk path on the same records.

For each practice size (`--patients`) and number of application users (`--users`): synthesise and extract a
practice, migrate it end to end with the emulator at Dataverse's default limits (6,000 requests and 1,200 s
of execution time per 5-minute window, 52 concurrent, per application user), time-scaled, with the per-record
and per-request server cost and latency given here; print records/s (emulated and real), requests per 1,000
records, 429s and Retry-After waits, the computable bound and the fraction achieved, the host's peak memory,
transform CPU per 1,000 records and the orchestration overhead. With `--peers`, the same transformed records
are then written into a fresh emulator each by a naive loader (one request per record) and by Microsoft's
`powerplatform-dataverse-client` bulk path, and the ratios printed. Results go to bench/results/ as JSON.

    .venv/bin/python -m bench.bench_e2e --patients 360 --users 1,2,4 --peers
        [--time-scale 10] [--per-record-cost 0.01] [--per-request-cost 0.05] [--latency 0.02]
    .venv/bin/python -m bench.bench_e2e --table bench/results/*.json     # the README table

360 patients make about 10,000 target records, 3,600 about 100,000 (28 records per patient).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.e2e_bound import run_bound
from bench.e2e_peers import PeerRun, build_schema, bulk_support, naive_load, sdk_load
from bench.e2e_run import Counters, E2EResult, emulator_config, run_e2e
from devhost.stalls import TICK as STALL_SAMPLE_SECONDS
from devtools.stack import synthetic_practice
from emulator.config import EmulatorConfig
from emulator.testing import run_emulator
from shared.dataverse.writer import WriterConfig

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CHUNK = WriterConfig().max_chunk


def machine() -> dict[str, Any]:
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent.parent, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {"cores": os.cpu_count(), "ram_gb": round(int(meminfo["MemTotal"].split()[0]) / 1024 / 1024, 1),
            "python": platform.python_version(), "platform": platform.platform(), "commit": commit}


def config_from(args: argparse.Namespace) -> EmulatorConfig:
    base = EmulatorConfig()
    return base.model_copy(update={
        "time_scale": args.time_scale,
        "key_activation_seconds": 2.0,
        "costs": base.costs.model_copy(update={"per_record_seconds": args.per_record_cost,
                                               "per_request_seconds": args.per_request_cost,
                                               "network_latency_seconds": args.latency}),
    })


def describe(cfg: EmulatorConfig) -> str:
    lim, c = cfg.limits, cfg.costs
    return (f"limits per application user: {lim.max_requests:,} requests and {lim.max_execution_seconds:,.0f} s "
            f"execution per {lim.window_seconds:.0f} s window, {lim.max_concurrent} concurrent, dop hint "
            f"{lim.dop_hint}; server cost {c.per_request_seconds:g} s per request + {c.per_record_seconds:g} s "
            f"per record, latency {c.network_latency_seconds:g} s (emulated); time scale {cfg.time_scale:g} "
            f"(1 real s = {cfg.time_scale:g} emulated s); Retry-After in whole real seconds")


def summarize_e2e(r: E2EResult, cfg: EmulatorConfig) -> dict[str, Any]:
    emulated = r.load_seconds * cfg.time_scale
    rate = r.records / emulated
    bound = run_bound(cfg, r.records, CHUNK, r.app_users)
    c = r.load_counters
    t = r.transform
    out = {
        "records": r.records, "journal_rows": r.journal_rows, "app_users": r.app_users,
        "load_seconds_real": round(r.load_seconds, 1), "load_seconds_emulated": round(emulated, 1),
        "migration_seconds_real": round(r.migration_seconds, 1),
        "records_per_second_emulated": round(rate, 1), "records_per_second_real": round(r.records / r.load_seconds, 1),
        "requests_per_1000_records": round(c.requests * 1000 / r.records, 1),
        "emulator_records_written": c.records, "server_seconds": round(c.execution_seconds, 1),
        "throttled_429": c.throttled, "early_requests": c.early_requests, "max_in_flight": c.max_in_flight,
        "retry_after_total_seconds_real": round(r.retry_after_seconds, 2),
        "retry_after_total_seconds_emulated": round(r.retry_after_seconds * cfg.time_scale, 1),
        "held_back_seconds_real": round(r.held_back_seconds, 2),
        "bound_steady_records_per_second": round(bound.steady_records_per_second, 1),
        "bound_run_records_per_second": round(bound.run_records_per_second, 1),
        "bound_limited_by": bound.limited_by,
        "fraction_of_steady_bound": round(rate / bound.steady_records_per_second, 3),
        "fraction_of_run_bound": round(rate / bound.run_records_per_second, 3),
        "host_peak_rss_mb": round(r.host_peak_rss_mb, 1),
        "host_loop_blocked_seconds_load": round(r.loop_blocked_seconds_load, 2),
        "host_loop_longest_stall_ms": r.loop_longest_stall_ms,
        "host_loop_stall_sites": r.loop_stall_sites[:5],
        "host_gc_seconds_load": round(r.gc_seconds_load, 2),
        "host_gc_full_collections_load": r.gc_full_collections_load,
        "host_gc_longest_ms": r.gc_longest_ms,
        "stage_seconds_real": r.stage_seconds,
        "host_peak_rss_mb_after_stage": r.peak_rss_mb_after_stage,
        **({"host_traced_heap_by_stage": r.host_traced_by_stage} if r.host_traced_by_stage else {}),
        "host_heap_by_stage_mib": r.host_heap_by_stage,
        "host_live_and_garbage_by_stage_mib": r.host_collected_by_stage,
        "host_cpu_seconds_per_1000_records": round(r.host_cpu_seconds_load * 1000 / r.records, 3),
        "emulator_cpu_seconds_per_1000_records": round(r.emulator_cpu_seconds_load * 1000 / r.records, 3),
        "storage_cpu_seconds_per_1000_records": round(r.storage_cpu_seconds_load * 1000 / r.records, 3),
        "instances": r.instances, "activities": r.activities, "history_events": r.history_events,
        "activities_per_1000_records": round(r.activities * 1000 / r.records, 2),
        "history_events_per_1000_records": round(r.history_events * 1000 / r.records, 1),
        "per_user_requests": r.per_user_requests, "actions": r.actions,
        "journal_entity_writes": r.journal_entity_writes, "journal_transactions": r.journal_transactions,
        "journal_entity_writes_per_1000_records": round(r.journal_entity_writes * 1000 / r.records, 1),
        "journal_transactions_per_1000_records": round(r.journal_transactions * 1000 / r.records, 1),
        **storage_requests(r.storage_requests_by_stage, r.records),
        "cpu_seconds_by_stage": r.cpu_seconds_by_stage,
        "azurite_cpu_ms_per_storage_request_by_stage": azurite_ms_per_request(r),
    }
    if t is not None:
        out["transform"] = {
            "records": t.records, "source_rows": t.source_rows,
            "transform_cpu_per_1000": round(t.per_1000(t.transform_cpu), 3),
            "read_validate_cpu_per_1000": round(t.per_1000(t.read_cpu), 3),
            "children_cpu_per_1000": round(t.per_1000(t.children_cpu), 3),
            "context_cpu_seconds": round(t.context_cpu, 2),
            "transform_records_per_cpu_second": round(t.records / max(t.transform_cpu, 1e-9), 0),
        }
        # The load closes finished activities and binds second-pass lookups with one PATCH per record
        # (shared/pipeline/load.py `_close`, `bind_deferred`); BulkWriter.update would batch them 200 a request.
        single = t.closing + t.deferred
        out["single_record_requests"] = {"closing": t.closing, "second_pass": t.deferred}
        if c.requests > single:  # meaningful only while the load still sends them one by one
            out["requests_per_1000_records_if_batched"] = round(
                (c.requests - single + math.ceil(t.closing / 200) + math.ceil(t.deferred / 200)) * 1000 / r.records, 1)
    return out


def storage_requests(by_stage: dict[str, dict[str, int]], records: int) -> dict[str, Any]:
    """Storage requests per 1,000 records: in all, per stage and per kind (service, method, table or container).
    On Azure each is an index operation, so these flat with the practice's size mean a flat storage cost there,
    whatever Azurite's scans add here (devhost/storage_calls.py)."""
    if not by_stage:
        return {}
    kinds: dict[str, int] = {}
    for sent in by_stage.values():
        for key, n in sent.items():
            kinds[key] = kinds.get(key, 0) + n
    per_1000 = 1000 / records
    return {
        "storage_requests_per_1000_records": round(sum(kinds.values()) * per_1000, 1),
        "storage_requests_per_1000_records_by_stage": {
            stage: round(sum(sent.values()) * per_1000, 2) for stage, sent in by_stage.items() if sent},
        "storage_requests_per_1000_records_by_kind": {
            key: round(n * per_1000, 2) for key, n in sorted(kinds.items(), key=lambda kv: -kv[1])},
        "storage_requests_by_stage": by_stage,
    }


def azurite_ms_per_request(r: E2EResult) -> dict[str, float]:
    """Azurite's CPU per Storage request in each stage with at least 100 requests. The agent's upload runs before
    the first stage is polled, so its requests count with `(start)`, whose CPU includes them."""
    sent = {stage: sum(counts.values()) for stage, counts in r.storage_requests_by_stage.items()}
    sent["(start)"] = sent.get("(start)", 0) + sent.pop("upload", 0)
    return {stage: round(cpu["azurite"] * 1000 / sent[stage], 2) for stage, cpu in r.cpu_seconds_by_stage.items()
            if sent.get(stage, 0) >= 100}


def describe_heap(heap: dict[str, float]) -> str:
    """One line of devhost's heap breakdown: resident = Python objects + pymalloc free + C heap + rest."""
    if "rest" not in heap:
        return f"resident {heap.get('rss', 0):,.0f}"
    return (f"resident {heap['rss']:,.0f} = Python objects {heap['py_used']:,.0f} + free in pymalloc arenas "
            f"{heap['py_free']:,.0f} + C heap in use {heap['c_used']:,.0f} + C heap free {heap['c_free']:,.0f} "
            f"+ rest {heap['rest']:,.0f}")


def print_e2e(label: str, s: dict[str, Any]) -> None:
    print(f"\n[{label}]")
    rows = [
        ("records (target, load)", f"{s['records']:,}  (journal rows {s['journal_rows']:,})"),
        ("load time", f"{s['load_seconds_real']:,} s real = {s['load_seconds_emulated']:,} s emulated "
                      f"(whole migration {s['migration_seconds_real']:,} s real)"),
        ("records/s", f"{s['records_per_second_emulated']:,} emulated, {s['records_per_second_real']:,} real"),
        ("requests per 1,000 records", f"{s['requests_per_1000_records']:,}  (max in flight {s['max_in_flight']})"),
        ("429 responses", f"{s['throttled_429']}  (early requests {s['early_requests']})"),
        ("Retry-After total", f"{s['retry_after_total_seconds_real']} s real = "
                              f"{s['retry_after_total_seconds_emulated']} s emulated; governors held back "
                              f"{s['held_back_seconds_real']} s real"),
        ("upper bound (emulated)", f"{s['bound_steady_records_per_second']:,} rec/s steady; "
                                   f"{s['bound_run_records_per_second']:,} rec/s for a run this size "
                                   f"(limited by {s['bound_limited_by']})"),
        ("fraction achieved", f"{s['fraction_of_run_bound']:.1%} of the run bound, "
                              f"{s['fraction_of_steady_bound']:.1%} of the steady bound"),
        ("host peak memory (VmHWM)", f"{s['host_peak_rss_mb']:,} MB"),
        ("host event loop blocked", f"{s['host_loop_blocked_seconds_load']} s of the load phase "
                                    f"(longest stall {s['host_loop_longest_stall_ms']:,} ms); mostly at "
                                    + ("; ".join(f"{w['at']} ({w['samples'] * STALL_SAMPLE_SECONDS:.1f} s)"
                                                 for w in s.get("host_loop_stall_sites", [])[:3]) or "-")),
        ("host garbage collection", f"{s.get('host_gc_seconds_load', '-')} s of the load phase, "
                                    f"{s.get('host_gc_full_collections_load', '-')} full collections "
                                    f"(longest {s.get('host_gc_longest_ms', '-')} ms)"),
        ("host CPU per 1,000 records", f"{s['host_cpu_seconds_per_1000_records']} s (emulator "
                                       f"{s['emulator_cpu_seconds_per_1000_records']} s, Azurite "
                                       f"{s.get('storage_cpu_seconds_per_1000_records', '-')} s)"),
        ("journal writes /1,000 records", f"{s['journal_entity_writes_per_1000_records']} entities in "
                                             f"{s['journal_transactions_per_1000_records']} transactions"),
        ("orchestration", f"{s['activities']} activities, {s['history_events']:,} history rows, "
                          f"{s['instances']} instances = {s['activities_per_1000_records']} activities and "
                          f"{s['history_events_per_1000_records']} history rows per 1,000 records"),
    ]
    if "transform" in s:
        t = s["transform"]
        batched = s.get("requests_per_1000_records_if_batched")
        rows.append(("closes, second-pass lookups", f"{s['single_record_requests']['closing']:,} + "
                     f"{s['single_record_requests']['second_pass']:,} records"
                     + (f" (one PATCH each today; batched by BulkWriter.update: {batched} requests per 1,000 "
                        "records)" if batched is not None else "")))
        rows.append(("transform CPU per 1,000 records",
                     f"{t['transform_cpu_per_1000']} s transform + {t['read_validate_cpu_per_1000']} s read/validate "
                     f"+ {t['children_cpu_per_1000']} s child rows ({t['transform_records_per_cpu_second']:,.0f} "
                     f"records per CPU second in transform; context {t['context_cpu_seconds']} s once)"))
    if s.get("storage_requests_per_1000_records_by_stage"):
        stages = s["storage_requests_per_1000_records_by_stage"]
        rows.append(("Storage requests /1,000 records", f"{s['storage_requests_per_1000_records']:,} in all: " + ", ".join(
            f"{k} {v:,}" for k, v in stages.items() if v >= 0.05)))
        rows.append(("Storage requests, commonest", "; ".join(
            f"{k} {v:,}" for k, v in list(s["storage_requests_per_1000_records_by_kind"].items())[:8])
            + " per 1,000 records"))
    if s.get("azurite_cpu_ms_per_storage_request_by_stage"):
        rows.append(("Azurite CPU per request", ", ".join(
            f"{k} {v:,}" for k, v in s["azurite_cpu_ms_per_storage_request_by_stage"].items())
            + " ms ((start) includes the agent's upload)"))
    if s.get("stage_seconds_real"):
        rows.append(("stages (real s)", ", ".join(f"{k} {v:,}" for k, v in s["stage_seconds_real"].items())))
    if s.get("host_peak_rss_mb_after_stage"):
        rows.append(("host peak as each stage ended", ", ".join(
            f"{k} {v:,} MB" for k, v in s["host_peak_rss_mb_after_stage"].items())))
    if s.get("host_heap_by_stage_mib"):
        stage, heap = max(s["host_heap_by_stage_mib"].items(), key=lambda kv: kv[1].get("rss", 0))
        rows.append(("host memory at its largest", describe_heap(heap) + f" (in {stage}; MiB)"))
    # Samples without the split print no row (the traced 100k run of 2026-12-03 had none).
    if any("py_live" in v for v in s.get("host_live_and_garbage_by_stage_mib", {}).values()):
        rows.append(("host objects live + garbage", ", ".join(
            f"{k} {v['py_live']:,.0f} + {v['py_garbage']:,.0f}" for k, v in s["host_live_and_garbage_by_stage_mib"].items()
            if "py_live" in v) + " MiB (the sample with the most objects per stage, every 30 s; types: shallow sizes)"))
        for stage in ("load", "attachments"):
            for kind in ("garbage", "live"):
                counted = s["host_live_and_garbage_by_stage_mib"].get(stage, {}).get(f"{kind}_types")
                if counted:
                    rows.append((f"host {kind} types, {stage}", "; ".join(
                        f"{name} {n:,} ({kib / 1024:.1f} MiB)" for name, n, kib in counted[:8])))
    for stage in ("load", "attachments"):
        heap = s.get("host_traced_heap_by_stage", {}).get(stage)
        if heap:
            rows.append((f"host traced heap, {stage}", f"{heap['traced_kib'] / 1024:,.1f} MiB at the stage's largest "
                         f"sample (traced peak so far {heap['peak_kib'] / 1024:,.1f} MiB); most held at: " + "; ".join(
                             f"{t['where'].rsplit('site-packages/', 1)[-1].replace(str(REPO) + '/', '')} "
                             f"{t['size_kib'] / 1024:.1f} MiB" for t in heap["top"][:8])))
    for name, value in rows:
        print(f"  {name:<32}{value}")


def run_peers(workload: Any, schema_spec: Any, cfg: EmulatorConfig, practice: Path, users: int, threads: int,
              names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    peer_cfg = emulator_config(cfg, practice)
    for name in names:
        with run_emulator(peer_cfg, tls=name == "sdk", subprocess=True) as emu:
            asyncio.run(build_schema(emu, schema_spec))
            bulk = asyncio.run(bulk_support(emu, workload))
            before = Counters.of(emu.counters())
            if name == "naive":
                run: PeerRun = asyncio.run(naive_load(emu, workload, users))
            else:
                run = sdk_load(emu, workload, users, bulk, threads)
            counters = Counters.of(emu.counters()).minus(before)
        emulated = run.seconds * cfg.time_scale
        bound = run_bound(cfg, run.records, 1 if name == "naive" else CHUNK, users)
        rate = run.records / emulated
        out[name] = {
            "records": run.records, "seconds_real": round(run.seconds, 1), "seconds_emulated": round(emulated, 1),
            "records_per_second_emulated": round(rate, 1), "records_per_second_real": round(run.records / run.seconds, 1),
            "requests_per_1000_records": round(counters.requests * 1000 / run.records, 1),
            "throttled_429": counters.throttled, "early_requests": counters.early_requests,
            "retry_after_total_seconds_real": round(run.retry_after_wait_seconds, 2),
            "bound_run_records_per_second": round(bound.run_records_per_second, 1),
            "bound_limited_by": bound.limited_by,
            "fraction_of_run_bound": round(rate / bound.run_records_per_second, 3),
        }
        title = ("one request per record (PATCH upsert)" if name == "naive" else
                 f"Microsoft SDK UpsertMultiple / batch, chunks of 1,000, {threads} threads")
        print(f"\n[{name}: {title}]")
        p = out[name]
        print(f"  records {p['records']:,} in {p['seconds_real']} s real = {p['seconds_emulated']} s emulated: "
              f"{p['records_per_second_emulated']:,} rec/s emulated, {p['records_per_second_real']:,} real")
        print(f"  requests per 1,000 records {p['requests_per_1000_records']:,}; 429s {p['throttled_429']} "
              f"(early {p['early_requests']}); Retry-After waited {p['retry_after_total_seconds_real']} s real")
        print(f"  run bound for its request size {p['bound_run_records_per_second']:,} rec/s "
              f"({p['bound_limited_by']}): {p['fraction_of_run_bound']:.1%}")
    return out


def markdown_table(files: list[Path]) -> str:
    """The README table: one row per run of the given result files."""
    head = ("| code | patients | users | cost/record | time scale | records | rec/s emulated (real) | req/1,000 rec | 429s "
            "| Retry-After s | % run bound (steady) | host peak MB | host CPU s/1,000 | transform CPU s/1,000 "
            "| activities, history /1,000 | load avg | peers: naive, SDK rec/s emulated (req/1,000) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for file in files:
        data = json.loads(file.read_text(encoding="utf-8"))
        if "config" not in data or not all("bridgework" in run for run in data.get("runs", [])):
            continue  # another benchmark's results
        costs, scale = data["config"]["emulator"]["costs"], data["config"]["emulator"]["time_scale"]
        for run in data["runs"]:
            b = run["bridgework"]
            t = b.get("transform", {})
            peers = run.get("peers", {})
            peer_text = ", ".join(f"{name} {p['records_per_second_emulated']:,} ({p['requests_per_1000_records']:,})"
                                  for name, p in peers.items()) or "-"
            lines.append(
                f"| {data.get('label') or data['machine'].get('commit', '')} | {run['patients']:,} | {run['app_users']} | {costs['per_record_seconds']:g} s | {scale:g} "
                f"| {b['records']:,} | {b['records_per_second_emulated']:,} ({b['records_per_second_real']:,}) "
                f"| {b['requests_per_1000_records']:,} | {b['throttled_429']} | {b['retry_after_total_seconds_real']} "
                f"| {b['fraction_of_run_bound']:.1%} ({b['fraction_of_steady_bound']:.1%}) | {b['host_peak_rss_mb']:,.0f} "
                f"| {b['host_cpu_seconds_per_1000_records']} | {t.get('transform_cpu_per_1000', '-')} "
                f"| {b['activities_per_1000_records']}, {b['history_events_per_1000_records']} "
                f"| {b['load_average']['after'][0]} | {peer_text} |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--table"]:
        print(markdown_table([Path(f) for f in sys.argv[2:]]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--patients", default="360", help="comma-separated practice sizes (patients)")
    parser.add_argument("--users", default="1", help="comma-separated numbers of application users")
    parser.add_argument("--time-scale", type=float, default=10.0)
    parser.add_argument("--per-record-cost", type=float, default=0.01, help="emulated server s per record")
    parser.add_argument("--per-request-cost", type=float, default=0.05, help="emulated server s per request")
    parser.add_argument("--latency", type=float, default=0.02, help="emulated network latency s per request")
    parser.add_argument("--peers", nargs="?", const="naive,sdk", default="",
                        help="also run these peers on the same records: naive, sdk (default both)")
    parser.add_argument("--sdk-threads", type=int, default=16, help="SDK threads per application user")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=7200)
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/e2e-<time>.json)")
    parser.add_argument("--label", default="", help="what code this run measures (kept in the results)")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp folder)")
    parser.add_argument("--trace-host-memory", action="store_true",
                        help="run the host under tracemalloc and report what its heap holds at its largest "
                             "(slows the host several times: speed figures of such a run do not compare)")
    args = parser.parse_args()
    sizes = [int(x) for x in args.patients.split(",")]
    user_counts = [int(x) for x in args.users.split(",")]
    cfg = config_from(args)
    peer_names = [name for name in args.peers.split(",") if name]
    if set(peer_names) - {"naive", "sdk"}:
        parser.error("--peers takes naive, sdk or both")
    started_at = datetime.now(UTC)
    results: dict[str, Any] = {"started": started_at.isoformat(), "label": args.label, "machine": machine(),
                               "command": " ".join([Path(sys.executable).name, "-m", "bench.bench_e2e", *sys.argv[1:]]),
                               "config": {"emulator": json.loads(cfg.model_dump_json(include={"time_scale", "limits",
                                                                                                "costs"})),
                                          "writer": WriterConfig().model_dump()},
                               "runs": []}
    print(describe(cfg))
    out = args.out or RESULTS / f"e2e-{started_at:%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        root = args.keep or Path(tmp)
        for patients in sizes:
            work = root / f"p{patients}"
            t = time.monotonic()
            practice, bundle = synthetic_practice(work, patients, args.seed)
            print(f"\n=== {patients:,} patients: practice synthesised and extracted in {time.monotonic() - t:.0f} s")
            for users in user_counts:
                load_before = os.getloadavg()
                collect = bool(peer_names) and users == user_counts[0]
                result, workload, schema_spec = run_e2e(work / f"u{users}", practice, bundle, cfg, users,
                                                        collect, args.timeout, args.trace_host_memory)
                summary = summarize_e2e(result, cfg)
                summary["load_average"] = {"before": [round(x, 2) for x in load_before],
                                           "after": [round(x, 2) for x in os.getloadavg()]}
                print_e2e(f"bridgework end to end: {patients:,} patients, {users} application user(s); load "
                          f"average {summary['load_average']['after'][0]}", summary)
                entry: dict[str, Any] = {"patients": patients, "app_users": users, "bridgework": summary}
                results["runs"].append(entry)  # kept even if a peer fails below
                out.write_text(json.dumps(results, indent=2), encoding="utf-8")
                if collect and workload is not None:
                    peers = run_peers(workload, schema_spec, cfg, practice, users, args.sdk_threads * users,
                                      peer_names)
                    entry["peers"] = peers
                    ours = summary["records_per_second_emulated"]
                    entry["ratios"] = {}
                    for name, peer in peers.items():
                        entry["ratios"][f"bridgework_vs_{name}_throughput"] = round(
                            ours / peer["records_per_second_emulated"], 2)
                        entry["ratios"][f"{name}_vs_bridgework_requests_per_record"] = round(
                            peer["requests_per_1000_records"] / summary["requests_per_1000_records"], 2)
                    entry["load_average_after_peers"] = [round(x, 2) for x in os.getloadavg()]
                    print("\n[ratios]  " + ", ".join(f"{k} {v}x" for k, v in entry["ratios"].items()))
                out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
