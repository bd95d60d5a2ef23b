"""The agent ships as one .pyz holding only agent/ and the bundle contract, and runs from anywhere."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from agent.package import build


def test_packaged_agent_runs_outside_the_repo_with_only_the_contract_inside(tmp_path: Path):
    pyz = build(tmp_path / "dist" / "bridgework-agent.pyz")
    names = [n for n in zipfile.ZipFile(pyz).namelist() if not n.endswith("/")]
    allowed = ("agent/", "shared/dentrix/", "shared/__init__.py", "shared/errors.py", "__main__.py")
    assert names and all(n.startswith(allowed) for n in names), [n for n in names if not n.startswith(allowed)]
    assert "shared/dentrix/reader.py" in names and not any(n.startswith("shared/settings") for n in names)

    work = tmp_path / "practice-site"
    work.mkdir()
    for argv in (["synth", "--patients", "10", "--seed", "4", "--out", "p.db"],
                 ["extract", "--source", "p.db", "--out", "bundle"],
                 ["validate", "bundle"]):
        run = subprocess.run([sys.executable, "-I", str(pyz), *argv], cwd=work, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, run.stderr
    assert "ok:" in run.stdout
