"""Start and stop the emulator's HTTP(S) listener on loopback; used by the CLI and by emulator.testing."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from emulator.app import Emulator, build_app
from emulator.config import EmulatorConfig
from emulator.tls import make_certificate, server_context


@dataclass
class Listener:
    runner: web.AppRunner
    emulator: Emulator
    port: int
    scheme: str
    cert_file: Path | None

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"


async def start(config: EmulatorConfig, port: int = 0, tls: bool = False,
                cert_dir: str | Path | None = None) -> Listener:
    """Listen on 127.0.0.1:`port` (0 = a free port). With `tls`, a self-signed cert is written to `cert_dir`."""
    emu = Emulator(config)
    runner = web.AppRunner(build_app(emu), access_log=None, handle_signals=False)
    await runner.setup()
    ctx: ssl.SSLContext | None = None
    cert_file = None
    if tls:
        if cert_dir is None:
            raise ValueError("tls needs a cert_dir for the generated certificate")
        cert_file, key_file = make_certificate(cert_dir)
        ctx = server_context(cert_file, key_file)
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx, reuse_address=True)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return Listener(runner, emu, bound, "https" if tls else "http", cert_file)
