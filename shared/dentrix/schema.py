"""Generate the bundle's JSON Schema files (manifest, a file-index line, one per table) kept in the repo.

    python -m shared.dentrix.schema          # rewrite shared/dentrix/schema/*.json

A test fails when the committed files differ from what the models generate, so the schema in the
repo is always the contract the code enforces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shared.dentrix.manifest import BUNDLE_FORMAT, FileEntry, Manifest
from shared.dentrix.models import ROW_MODELS

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"


def generate() -> dict[str, str]:
    """file name -> JSON text for every schema file."""
    out: dict[str, str] = {}
    manifest = Manifest.model_json_schema()
    manifest["$id"] = f"{BUNDLE_FORMAT}/manifest"
    out["manifest.schema.json"] = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    index_line = FileEntry.model_json_schema()
    index_line["$id"] = f"{BUNDLE_FORMAT}/files/index"
    out["file_index.schema.json"] = json.dumps(index_line, indent=2, sort_keys=True) + "\n"
    for name, model in ROW_MODELS.items():
        schema = model.model_json_schema()
        schema["$id"] = f"{BUNDLE_FORMAT}/tables/{name}"
        schema["additionalProperties"] = True  # practice custom columns: see tables.py
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in generate().items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write():
        print(p.relative_to(Path.cwd()) if p.is_relative_to(Path.cwd()) else p)
    sys.exit(0)
