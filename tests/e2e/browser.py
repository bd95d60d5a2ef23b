"""Headless Chromium (Debian's `chromium` package, installed by `make`) for the HTML report tests: the DOM
a page renders to, and a screenshot of it. `BRIDGEWORK_UPDATE_SCREENSHOTS=1` refreshes the one in docs/."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chromium(work: Path) -> list[str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium package is needed: apt-get install chromium"
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={work / 'chromium-profile'}"]


def render(page: str, work: Path, name: str, *, window: str = "1100,1000", docs_name: str | None = None) -> str:
    """Write `page` to `work/<name>.html`, return the DOM Chromium builds from it, and take a screenshot
    (checked to be a PNG; copied to docs/<docs_name> when BRIDGEWORK_UPDATE_SCREENSHOTS is set)."""
    file = work / f"{name}.html"
    file.write_text(page, encoding="utf-8")
    flags = _chromium(work)
    dom = subprocess.run([*flags, "--dump-dom", file.as_uri()], capture_output=True, text=True, timeout=90,
                         check=True).stdout
    shot = work / f"{name}.png"
    subprocess.run([*flags, f"--screenshot={shot}", f"--window-size={window}", file.as_uri()],
                   capture_output=True, timeout=90, check=True)
    assert shot.read_bytes()[:8] == PNG_SIGNATURE
    if docs_name and os.environ.get("BRIDGEWORK_UPDATE_SCREENSHOTS"):
        shutil.copyfile(shot, DOCS / docs_name)
    return dom
