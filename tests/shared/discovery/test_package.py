"""The discovery package is engine code: host-free imports and an exported surface that matches `__all__`."""

from __future__ import annotations

import ast
from pathlib import Path

import shared.discovery as discovery

PACKAGE = Path(discovery.__file__).parent
HOST_MODULES = ("azure.functions", "azure.durable_functions", "functions", "emulator", "devhost")


def test_no_module_imports_the_functions_host_or_dev_tools() -> None:
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert not any(name == m or name.startswith(m + ".") for m in HOST_MODULES), (path.name, name)


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n in vars(discovery) if not n.startswith("_")} - {
        "annotations",
        "estimate",
        "output",
        "profile",
        "report",
        "summary",
        "patterns",
        "sketch",
    }
    assert sorted(discovery.__all__) == discovery.__all__
    assert set(discovery.__all__) == public
