"""The on-prem Bridgework agent: synthesise, extract, validate and upload Dentrix export bundles."""

from __future__ import annotations

__version__ = "0.1.0"
