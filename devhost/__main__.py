"""`python -m devhost --app MODULE:ATTRIBUTE --port PORT`: run a function app on the local host."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import signal
import sys
from datetime import datetime
from pathlib import Path

from . import storage_calls
from .clock import Clock, VirtualClock
from .engine import TaskHub
from .functions import load_app
from .memory import fix_mmap_threshold, limit_arenas, trim_when_idle
from .server import LocalHost
from .store import HubStore


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devhost", description="Run a v2 function app locally.")
    parser.add_argument("--app", default="function_app:app", help="MODULE:ATTRIBUTE of the function app")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (loopback by default)")
    parser.add_argument("--task-hub", default=None, help="task hub name (default: BRIDGEWORK_TASK_HUB or 'devhost')")
    parser.add_argument("--settings", type=Path, default=None,
                        help="a local.settings.json whose Values become environment variables")
    parser.add_argument("--clock", choices=["real", "virtual"], default="real")
    parser.add_argument("--clock-start", default=None, help="ISO time the virtual clock starts at")
    parser.add_argument("--key-file", type=Path, default=None,
                        help="file holding the host key (created with a random key if missing); "
                             "or set DEVHOST_KEY")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--duplicate-activities", type=float,
                        default=float(os.environ.get("DEVHOST_DUPLICATE_ACTIVITIES") or 0.0), metavar="RATE",
                        help="chaos testing: probability (0-1) that an activity runs twice with the same input, "
                             "the first result kept (or DEVHOST_DUPLICATE_ACTIVITIES); seed DEVHOST_DUPLICATE_SEED")
    # DEVHOST_PRINCIPAL (environment): a base64 x-ms-client-principal the host adds to requests that
    # carry none, as App Service Authentication would after signing a user in.
    return parser.parse_args(argv)


def _host_key(key_file: Path | None) -> str:
    key = os.environ.get("DEVHOST_KEY")
    if key:
        return key
    if key_file is None:
        key_file = Path(".devhost") / "host-key"
    if key_file.exists():
        return key_file.read_text().strip()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(24)
    key_file.write_text(key)
    key_file.chmod(0o600)
    return key


async def _serve(args: argparse.Namespace) -> None:
    if args.settings is not None:
        for name, value in json.loads(args.settings.read_text()).get("Values", {}).items():
            os.environ.setdefault(name, str(value))
    connection = os.environ.get("AzureWebJobsStorage")
    if not connection:
        raise SystemExit("set AzureWebJobsStorage to a storage connection string (Azurite locally)")
    sys.path.insert(0, os.getcwd())
    functions = load_app(args.app)
    durable = functions.durable_settings
    hub_name = args.task_hub or os.environ.get("BRIDGEWORK_TASK_HUB") or "devhost"
    clock: Clock
    if args.clock == "virtual":
        start = datetime.fromisoformat(args.clock_start) if args.clock_start else None
        clock = VirtualClock(start)
    else:
        clock = Clock()
    hub = TaskHub(
        functions,
        HubStore(connection, hub_name),
        clock,
        max_activities=int(durable.get("maxConcurrentActivityFunctions", 8)),
        max_orchestrations=int(durable.get("maxConcurrentOrchestratorFunctions", 4)),
        duplicate_activities=args.duplicate_activities,
        duplicate_seed=int(os.environ["DEVHOST_DUPLICATE_SEED"]) if os.environ.get("DEVHOST_DUPLICATE_SEED") else None,
    )
    host = LocalHost(functions, hub, host_key=_host_key(args.key_file), port=args.port, host=args.host,
                     principal=os.environ.get("DEVHOST_PRINCIPAL") or None)
    await host.start()
    # Freed C heap back to the system once a burst of activities is over (devhost/memory.py says why).
    trimmer = asyncio.create_task(trim_when_idle(hub.is_idle, lambda: hub.completed_activities))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    trimmer.cancel()
    await host.stop()


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    if not 0.0 <= args.duplicate_activities <= 1.0:
        raise SystemExit("--duplicate-activities is a probability between 0 and 1")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Before any activity thread exists: 8 threads in glibc's default arenas keep each one's peak resident.
    arenas = limit_arenas()
    threshold = fix_mmap_threshold()
    logging.getLogger("devhost").info("malloc arenas: %s, mmap threshold: %s",
                                      arenas or os.environ.get("MALLOC_ARENA_MAX") or "default",
                                      threshold or os.environ.get("MALLOC_MMAP_THRESHOLD_") or "dynamic")
    # The storage SDKs log every request with its headers at INFO: keep them quiet.
    logging.getLogger("azure").setLevel(logging.WARNING)
    storage_calls.install()  # counted for /admin/host/status (the benchmark's requests per record)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
