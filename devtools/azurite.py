"""Start and stop Azurite (the real npm storage emulator) in memory on free loopback ports.

Used by the tests, `make demo` and anyone who wants local storage by hand:

    python -m devtools.azurite start --state .azurite.json   # prints the connection string
    python -m devtools.azurite stop --state .azurite.json

Azurite is started with `--skipApiVersionCheck` because current storage SDKs send an API version
newer than Azurite's baseline (see ../shared/reference/durable.md §5), and it is stopped by its own
pid, never by name, so parallel runs on one machine do not stop each other's emulator.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite"

# The well-known development account every Azurite install shares; it is not a secret.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteError(RuntimeError):
    """Azurite could not be found, started or reached."""


@dataclass(frozen=True)
class AzuriteProcess:
    """A running Azurite: its pid and the loopback ports of its three services."""

    pid: int
    blob_port: int
    queue_port: int
    table_port: int

    @property
    def connection_string(self) -> str:
        host = "http://127.0.0.1"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={host}:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint={host}:{self.queue_port}/{ACCOUNT};"
            f"TableEndpoint={host}:{self.table_port}/{ACCOUNT};"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop this Azurite (SIGTERM, then SIGKILL); a process already gone is fine."""
        _stop_pid(self.pid, timeout)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop_pid(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished:
                return
        except ChildProcessError:  # not our child: poll for existence instead
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def start(timeout: float = 30.0, log_file: Path | None = None) -> AzuriteProcess:
    """Start Azurite in memory on three free loopback ports and wait until all three answer.

    Raises AzuriteError if the npm package is not installed (run `make setup`) or it does not
    answer within `timeout` seconds.
    """
    binary = AZURITE_BIN if AZURITE_BIN.exists() else shutil.which("azurite")
    if binary is None:
        raise AzuriteError(f"Azurite is not installed: expected {AZURITE_BIN}; run `make setup` (npm ci)")
    ports = [_free_port() for _ in range(3)]
    command = [
        str(binary), "--inMemoryPersistence",
        "--blobHost", "127.0.0.1", "--blobPort", str(ports[0]),
        "--queueHost", "127.0.0.1", "--queuePort", str(ports[1]),
        "--tableHost", "127.0.0.1", "--tablePort", str(ports[2]),
        "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent",
    ]
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL
    process = subprocess.Popen(command, stdout=output, stderr=output, start_new_session=True)
    running = AzuriteProcess(process.pid, *ports)
    deadline = time.monotonic() + timeout
    while not all(_answers(port) for port in ports):
        if process.poll() is not None:
            raise AzuriteError(f"Azurite exited with status {process.returncode} before answering")
        if time.monotonic() > deadline:
            running.stop()
            raise AzuriteError(f"Azurite did not answer on ports {ports} within {timeout:.0f} s")
        time.sleep(0.1)
    return running


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.azurite", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--state", type=Path, default=REPO_ROOT / ".azurite.json",
                        help="file that records the pid and ports of the started Azurite")
    args = parser.parse_args(argv)
    if args.action == "start":
        running = start(log_file=args.state.with_suffix(".log"))
        args.state.write_text(json.dumps(asdict(running)))
        print(running.connection_string)
        return 0
    if not args.state.exists():
        print(f"no Azurite state file at {args.state}: nothing to stop", file=sys.stderr)
        return 0
    AzuriteProcess(**json.loads(args.state.read_text())).stop()
    args.state.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
