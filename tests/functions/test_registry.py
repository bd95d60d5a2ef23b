"""The function app's shape: thin, every named function registered, the engine free of the host."""

from __future__ import annotations

import ast
from pathlib import Path

import function_app
from functions import names

ROOT = Path(__file__).resolve().parents[2]


def test_every_name_in_the_names_module_is_a_registered_function():
    registered = {f.get_function_name() for f in function_app.app.get_functions()}
    # *_EVENT constants name external events raised to orchestrations, not functions.
    declared = {value for key, value in vars(names).items() if key.isupper() and not key.endswith("_EVENT")}
    assert declared <= registered


def test_shared_never_imports_the_functions_host():
    offenders = []
    for path in (ROOT / "shared").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            if any(m.startswith(("azure.functions", "azure.durable_functions", "functions")) for m in modules):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_function_app_module_only_registers_blueprints():
    tree = ast.parse((ROOT / "function_app.py").read_text())
    decorated = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    assert decorated == []
