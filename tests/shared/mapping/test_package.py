"""The mapping package is engine code: host-free, documented modules, an exported surface that matches `__all__`."""

from __future__ import annotations

import ast
from pathlib import Path

import shared.mapping as mapping
from shared.mapping.contract import DATA_DIR

PACKAGE = Path(mapping.__file__).parent
HOST_MODULES = ("azure.functions", "azure.durable_functions", "functions", "emulator", "devhost")
SUBMODULES = {"contract", "graph", "proposer", "rows", "schema_plan", "spec", "transforms", "annotations"}


def test_no_module_imports_the_functions_host_or_dev_tools():
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not any(name == m or name.startswith(m + ".") for m in HOST_MODULES), (path.name, name)


def test_every_module_says_its_job_and_uses_postponed_annotations():
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), path.name
        assert any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body), path.name


def test_all_lists_exactly_the_public_names():
    public = {n for n in vars(mapping) if not n.startswith("_")} - SUBMODULES
    assert sorted(mapping.__all__) == mapping.__all__
    assert set(mapping.__all__) == public


def test_data_files_ship_inside_the_package():
    assert DATA_DIR.parent == PACKAGE
    assert {p.name for p in DATA_DIR.glob("*.yaml")} == {
        "default_map.yaml", "picklists.yaml", "cdt_categories.yaml", "dataverse_standard.yaml"}
