"""`python -m emulator --port PORT [--tls] [--config FILE]`: serve the Dataverse + Graph emulator on loopback."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import tempfile
from pathlib import Path

from emulator.config import EmulatorConfig
from emulator.server import start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=8090, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--tls", action="store_true", help="serve https with a generated self-signed cert")
    parser.add_argument("--config", help="JSON file with EmulatorConfig fields")
    parser.add_argument("--cert-dir", help="where to write cert.pem/key.pem with --tls (default: a temp dir)")
    parser.add_argument("--state-file", help="persist state to this JSON file across restarts")
    parser.add_argument("--ready-file", help="write {base_url, cert_file} here once listening")
    args = parser.parse_args(argv)
    config = EmulatorConfig.load(args.config) if args.config else EmulatorConfig()
    if args.state_file:
        config = config.model_copy(update={"state_file": args.state_file})
    asyncio.run(_serve(config, args))


async def _serve(config: EmulatorConfig, args: argparse.Namespace) -> None:
    cert_dir = args.cert_dir or (tempfile.mkdtemp(prefix="emulator-tls-") if args.tls else None)
    listener = await start(config, args.port, args.tls, cert_dir)
    info = {"base_url": listener.base_url, "cert_file": str(listener.cert_file) if listener.cert_file else None}
    print(f"emulator listening on {listener.base_url}" +
          (f" (CA certificate: {listener.cert_file})" if listener.cert_file else ""), flush=True)
    if args.ready_file:
        tmp = Path(args.ready_file + ".tmp")
        tmp.write_text(json.dumps(info), encoding="utf-8")
        tmp.replace(args.ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await listener.runner.cleanup()


if __name__ == "__main__":
    main()
