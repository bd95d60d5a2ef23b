"""Recognise the shape of one value (e-mail, phone, date, CDT code, tooth, surface, money ...) without keeping it."""

from __future__ import annotations

import re
from typing import Literal

from shared.dentrix.normalise import VALID_TEETH

TPattern = Literal["email", "phone", "date", "datetime", "cdt_code", "money", "tooth", "surface", "zip", "integer"]
PATTERNS: tuple[TPattern, ...] = (
    "email", "phone", "date", "datetime", "cdt_code", "money", "tooth", "surface", "zip", "integer",
)
"""Every pattern discovery reports; the same names the mapping proposer reads (`shared/mapping/proposer.py`)."""

_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}$")
# North American numbers as practices type them: 303-555-0100, (303) 555-0100, +1 303.555.0100, x123 extensions.
_PHONE = re.compile(r"^(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4}(?:\s*(?:x|ext\.?)\s*\d{1,5})?$", re.I)
_DATE = re.compile(r"^(?:\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{4})$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?$")
_CDT = re.compile(r"^D\d{4}$")
_MONEY = re.compile(r"^-?\$?-?(?:\d{1,3}(?:,\d{3})+|\d+)\.\d{2}$|^-?\$-?(?:\d{1,3}(?:,\d{3})+|\d+)$")
_ZIP = re.compile(r"^\d{5}(?:-\d{4})?$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_SURFACE_LETTERS = frozenset("MODLF5BIV")


def text_patterns(value: str) -> list[TPattern]:
    """The patterns a text value matches (a value may match several: "12" is a tooth and an integer)."""
    v = value.strip()
    if not v:
        return []
    found: list[TPattern] = []
    if "@" in v:
        if _EMAIL.match(v):
            found.append("email")
        return found
    first = v[0]
    if first.isdigit() or first in "+-($":
        if _INTEGER.match(v):
            found.append("integer")
            if v in VALID_TEETH:
                found.append("tooth")
            if v == "5":
                found.append("surface")  # class V alone
            if len(v) == 5 and _ZIP.match(v):
                found.append("zip")
            if len(v) in (10, 11) and _PHONE.match(v):
                found.append("phone")
            return found
        if len(v) >= 10 and v[4:5] == "-" and v[:4].isdigit():
            if len(v) == 10:
                if _DATE.match(v):
                    found.append("date")
            elif _DATETIME.match(v):
                found.append("datetime")
            elif _ZIP.match(v):
                found.append("zip")
            return found
        if "/" in v:
            if _DATE.match(v):
                found.append("date")
            return found
        if _PHONE.match(v):
            found.append("phone")
        elif _ZIP.match(v):
            found.append("zip")
        elif _MONEY.match(v):
            found.append("money")
        return found
    upper = v.upper()
    if len(v) == 5 and _CDT.match(upper):
        found.append("cdt_code")
        return found
    if upper in VALID_TEETH:
        found.append("tooth")
    if len(v) <= 6 and set(upper) <= _SURFACE_LETTERS and len(set(upper)) == len(upper):
        found.append("surface")
    return found
