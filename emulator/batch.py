"""Placeholder: filled in next."""
from __future__ import annotations

from emulator.errors import ApiError

ROOTS = ("EntityDefinitions", "RelationshipDefinitions", "GlobalOptionSetDefinitions")
ACTIONS = ("PublishXml", "PublishAllXml")


def handle(*args, **kwargs):
    raise ApiError(501, "0x80040800", "Not implemented yet.")
