"""Build the agent as one file, `bridgework-agent.pyz`, holding exactly what runs at the practice.

    python -m agent.package dist/bridgework-agent.pyz
    python dist/bridgework-agent.pyz extract --source "DSN=...;" --out C:\\bridgework\\bundle-1

The archive carries `agent/` plus the bundle contract it shares with the cloud (`shared/errors.py`
and `shared/dentrix/`), nothing else of the service. Its third-party dependencies are those pinned
in agent/requirements.txt (pip install -r on the practice machine; pyodbc needs the c-treeACE ODBC
driver of the same bitness as Python).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import zipapp
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INCLUDED = ("agent", "shared/__init__.py", "shared/errors.py", "shared/dentrix")


def _wanted(path: Path) -> bool:
    rel = path.relative_to(REPO).as_posix()
    if "__pycache__" in rel or path.suffix == ".pyc":
        return False
    return any(rel == item or rel.startswith(item + "/") for item in INCLUDED)


def build(target: Path) -> Path:
    """Write the .pyz to `target` (a standard zipapp) and return it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp)
        for item in INCLUDED:
            root = REPO / item
            paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            for path in paths:
                if _wanted(path):
                    dest = stage / path.relative_to(REPO)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, dest)
        zipapp.create_archive(stage, target, interpreter="/usr/bin/env python3", main="agent.__main__:main",
                              compressed=True)
    return target


if __name__ == "__main__":
    out = build(Path(sys.argv[1] if len(sys.argv) > 1 else "dist/bridgework-agent.pyz"))
    print(out)
