"""Hypothesis profiles and the small bundle the reader properties mutate.

Profiles: `ci` (the default: a few dozen examples per property, the whole directory in well under
90 s) and `long` (`HYPOTHESIS_PROFILE=long`, used by `make chaos`: a thousand examples each, no deadline).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from agent.extract import extract
from agent.synth import synthesize

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def bundle_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Every file of a small extracted bundle (10 patients, parts of 40 rows), by bundle path."""
    work = tmp_path_factory.mktemp("property-bundle")
    synth = synthesize(work / "practice.db", 10, 5)
    out = extract(str(work / "practice.db"), work / "bundle", files_root=synth.files_root, part_rows=40,
                  bundle_id="property-10-5")
    root = Path(out.bundle_dir)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
