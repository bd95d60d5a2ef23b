"""Placeholder."""
from __future__ import annotations

from emulator.errors import graph_error
from emulator.messages import ApiResponse


def dispatch(store, req, upload=False):
    return ApiResponse.of_error(graph_error(501, "notSupported", "Not implemented yet."))
