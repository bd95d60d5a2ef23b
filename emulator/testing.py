"""`run_emulator(...)`: start the emulator on a free loopback port for a test and hand back its URLs, tokens
and admin helpers (reset, snapshot, restore, dump, counters, config).

Two modes: a thread with its own event loop (fast; default) or a child process (`subprocess=True`) that a test can
`kill()` and `restart()` on the same port, with state persisted to a file when `state_file` is given.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import subprocess as sp
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from emulator.config import EmulatorConfig
from emulator.server import Listener, start
from emulator.tokens import make_token

ROOT = Path(__file__).resolve().parent.parent


class RunningEmulator:
    """A started emulator. `base_url` is the environment URL (the token audience); the Web API is `api_url`."""

    def __init__(self, base_url: str, config: EmulatorConfig, cert_file: str | None) -> None:
        self.base_url = base_url
        self.config = config
        self.cert_file = cert_file
        self._admin = httpx.Client(base_url=base_url, verify=self.verify, timeout=30)

    @property
    def api_url(self) -> str:
        """Web API root with trailing slash: '<base_url>/api/data/v9.2/'."""
        return self.base_url + "/api/data/v9.2/"

    @property
    def graph_url(self) -> str:
        """Graph root without trailing slash: '<base_url>/v1.0'."""
        return self.base_url + "/v1.0"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What to pass as httpx `verify=`: a context trusting the generated certificate over https, else True.
        (requests-based clients such as Microsoft's SDK take the file itself: `cert_file`.)"""
        return ssl.create_default_context(cafile=self.cert_file) if self.cert_file else True

    def token_for(self, app_user: str = "app-1", graph: bool = False, lifetime_seconds: float = 3600.0) -> str:
        """A bearer token for this environment (or for Graph) as application user `app_user` (its app id)."""
        audience = self.config.token_audience_graph if graph else self.base_url
        return make_token(app_user, audience, lifetime_seconds)

    def headers_for(self, app_user: str = "app-1", graph: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token_for(app_user, graph)}"}

    # ---------- admin ----------
    def _call(self, method: str, action: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        r = self._admin.request(method, f"/_emulator/{action}", json=body, params=params)
        r.raise_for_status()
        return r.json()

    def reset(self) -> None:
        """Back to a fresh environment (metadata, rows, files) and zero counters."""
        self._call("POST", "reset")

    def snapshot(self) -> str:
        return self._call("POST", "snapshot")["id"]

    def restore(self, snap: str) -> None:
        self._call("POST", "restore", {"id": snap})

    def dump(self) -> dict[str, Any]:
        """Whole state as plain JSON; two dumps of the same state compare equal with ==."""
        return self._call("GET", "dump")

    def counters(self, app_user: str | None = None) -> dict[str, Any]:
        """Per-user service-protection counters: requests, throttled, throttled_by_code, execution_seconds,
        records, max_in_flight, affinity_cookie_requests, early_requests, errors. All users if None."""
        return self._call("GET", "counters", params={"app_user": app_user} if app_user else None)

    def reset_counters(self) -> None:
        """Zero the per-user statistics. The sliding windows are kept: this does not grant new budget."""
        self._call("POST", "counters/reset")

    def configure(self, **patch: Any) -> EmulatorConfig:
        """Change config at runtime (deep-merged), e.g. configure(limits={"max_requests": 10}, faults=[...])."""
        self.config = EmulatorConfig.model_validate(self._call("PATCH", "config", patch))
        return self.config

    def rows(self, table: str) -> dict[str, dict[str, Any]]:
        """Stored rows of one table by id (lookups as {"id", "table"}), straight from a dump."""
        return self.dump()["rows"].get(table, {})

    def close(self) -> None:
        self._admin.close()


class _ThreadServer:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="emulator", daemon=True)
        self.listener: Listener | None = None

    def start(self, config: EmulatorConfig, tls: bool, cert_dir: str) -> Listener:
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(start(config, 0, tls, cert_dir), self.loop)
        self.listener = fut.result(timeout=30)
        return self.listener

    def stop(self) -> None:
        if self.listener is not None:
            asyncio.run_coroutine_threadsafe(self.listener.runner.cleanup(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


class SubprocessEmulator(RunningEmulator):
    """RunningEmulator in a child process: `kill()` (SIGKILL, no save) and `restart()` on the same port."""

    def __init__(self, config_file: Path, tls: bool, workdir: Path, config: EmulatorConfig) -> None:
        self._config_file, self._tls, self._workdir = config_file, tls, workdir
        self.proc: sp.Popen[bytes] | None = None
        self._port = 0
        info = self._spawn()
        super().__init__(info["base_url"], config, info["cert_file"])

    def _spawn(self) -> dict[str, Any]:
        ready = self._workdir / "ready.json"
        ready.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "emulator", "--port", str(self._port), "--config", str(self._config_file),
               "--ready-file", str(ready)]
        if self._tls:
            cmd += ["--tls", "--cert-dir", str(self._workdir / "tls")]
        self.proc = sp.Popen(cmd, cwd=ROOT, stdout=sp.DEVNULL, stderr=open(self._workdir / "stderr.log", "ab"))
        deadline = time.time() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"emulator did not start; see {self._workdir / 'stderr.log'}")
            time.sleep(0.05)
        info = json.loads(ready.read_text(encoding="utf-8"))
        self._port = int(info["base_url"].rsplit(":", 1)[1])
        return info

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, so only what was already persisted survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM: clean shutdown (state saved when a state file is configured)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except sp.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def restart(self) -> None:
        """Start again on the same port (after kill() or stop())."""
        self.stop()
        self._spawn()


@contextmanager
def run_emulator(config: EmulatorConfig | dict[str, Any] | None = None, tls: bool = False,
                 subprocess: bool = False) -> Iterator[RunningEmulator]:
    """Start an emulator on a free 127.0.0.1 port for the duration of the `with` block."""
    cfg = config if isinstance(config, EmulatorConfig) else EmulatorConfig.model_validate(config or {})
    with tempfile.TemporaryDirectory(prefix="emulator-") as tmp:
        workdir = Path(tmp)
        if subprocess:
            config_file = workdir / "config.json"
            config_file.write_text(cfg.model_dump_json(), encoding="utf-8")
            emu = SubprocessEmulator(config_file, tls, workdir, cfg)
            try:
                yield emu
            finally:
                emu.close()
                emu.stop()
            return
        server = _ThreadServer()
        try:
            listener = server.start(cfg, tls, str(workdir / "tls"))
            emu_t = RunningEmulator(listener.base_url, cfg, str(listener.cert_file) if listener.cert_file else None)
            try:
                yield emu_t
            finally:
                emu_t.close()
        finally:
            server.stop()


__all__ = ["RunningEmulator", "SubprocessEmulator", "run_emulator"]
