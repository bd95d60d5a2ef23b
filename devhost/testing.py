"""Run the local host as a child process from tests, benchmarks and the demo.

    with run_host("tests.devhost.sample_app:app", storage, hub="t123", clock="virtual") as host:
        client = host.client()                     # the SDK's real DurableOrchestrationClient
        instance_id = asyncio.run(client.start_new("fan_out", client_input=200))
        host.advance(seconds=900)                  # virtual clock: fire timers due in 15 minutes
        host.kill(); host.start()                  # SIGKILL and resume from storage
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from azure.durable_functions import DurableOrchestrationClient

from .server import client_binding

REPO_ROOT = Path(__file__).resolve().parent.parent


_LOOP: asyncio.AbstractEventLoop | None = None


def run_sync(coroutine: Any) -> Any:
    """Run an SDK client coroutine on one loop kept for the whole process.

    The Durable SDK's client shares one aiohttp session per process, bound to the loop that made
    it, so every call must come from the same loop (as inside the Functions worker).
    """
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    return _LOOP.run_until_complete(coroutine)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningHost:
    """A local host child process and the ways tests talk to it."""

    def __init__(self, app: str, storage: str, hub: str, clock: str, env: dict[str, str] | None,
                 log_path: Path | None, clock_start: str | None = None) -> None:
        self.app, self.storage, self.hub, self.clock = app, storage, hub, clock
        self.port = free_port()
        self.key = secrets.token_urlsafe(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.log_path = log_path
        self.clock_start = clock_start
        self.process: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(base_url=self.url, timeout=60, params={"code": self.key})

    def start(self, timeout: float = 30) -> None:
        env = {**os.environ, **self.extra_env, "AzureWebJobsStorage": self.storage, "DEVHOST_KEY": self.key,
               "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "devhost", "--app", self.app, "--port", str(self.port),
                   "--task-hub", self.hub, "--clock", self.clock]
        if self.clock_start:
            command += ["--clock-start", self.clock_start]
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=output)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the local host exited with {self.process.returncode}; see {self.log_path}")
            try:
                if self._http.get("/admin/host/status").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the local host did not answer in time")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as when a worker VM disappears."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def client(self) -> DurableOrchestrationClient:
        return DurableOrchestrationClient(client_binding(self.url, self.hub, self.key))

    def http(self) -> httpx.Client:
        """An httpx client for this host that sends the host key."""
        return self._http

    def advance(self, seconds: float) -> dict[str, Any]:
        response = self._http.post("/admin/devhost/clock", json={"advance_seconds": seconds})
        response.raise_for_status()
        return response.json()

    def wait_idle(self, timeout: float = 60) -> bool:
        response = self._http.get("/admin/devhost/idle", params={"timeout": timeout, "code": self.key},
                                  timeout=timeout + 10)
        return response.status_code == 200

    def status(self, instance_id: str, history: bool = False) -> dict[str, Any]:
        params = {"showHistory": "true", "showHistoryOutput": "true"} if history else {}
        response = self._http.get(f"/runtime/webhooks/durabletask/instances/{instance_id}",
                                  params={**params, "code": self.key})
        if response.status_code == 404:
            return {}
        return response.json()

    def wait_for(self, instance_id: str, statuses: tuple[str, ...] = ("Completed", "Failed", "Terminated"),
                 timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(instance_id)
            if status.get("runtimeStatus") in statuses:
                return status
            time.sleep(0.05)
        raise TimeoutError(f"instance {instance_id} not in {statuses} after {timeout} s: {status.get('runtimeStatus')}")


@contextmanager
def run_host(app: str, storage: str, hub: str, clock: str = "real", env: dict[str, str] | None = None,
             log_path: Path | None = None, clock_start: str | None = None) -> Iterator[RunningHost]:
    host = RunningHost(app, storage, hub, clock, env, log_path, clock_start)
    host.start()
    try:
        yield host
    finally:
        host.stop()
