"""Turn raw Dentrix values into the bundle's documented forms (money, dates, times, teeth, surfaces, text).

The agent calls these once per value while extracting; the cloud side calls `local_to_utc` when it
needs an instant. Each function raises `ValueError` with a message that names the rule broken and
never the value (values are patient data).
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Literal
from zoneinfo import ZoneInfo

TMoneyUnit = Literal["cents", "dollars"]

SURFACE_ORDER = "MODLF5"
SURFACE_FLAGS = ("surf_m", "surf_o", "surf_d", "surf_l", "surf_f", "surf_5")
# Dentrix UI aliases: B (buccal) is charted on the facial flag, I (incisal) on the occlusal flag.
_SURFACE_ALIASES = {"B": "F", "I": "O", "V": "5"}

PERMANENT_TEETH = tuple(str(n) for n in range(1, 33))
PRIMARY_TEETH = tuple(chr(c) for c in range(ord("A"), ord("T") + 1))
SUPERNUMERARY_TEETH = tuple(str(n) for n in range(51, 83))
PRIMARY_SUPERNUMERARY_TEETH = tuple(f"{t}S" for t in PRIMARY_TEETH)
VALID_TEETH = frozenset(PERMANENT_TEETH + PRIMARY_TEETH + SUPERNUMERARY_TEETH + PRIMARY_SUPERNUMERARY_TEETH)

# Dentrix writes these as "no date" in different versions (dentrix.md §4.12: unconfirmed which).
SENTINEL_DATES = frozenset({dt.date(1900, 1, 1), dt.date(1899, 12, 30), dt.date(9999, 12, 31), dt.date(1, 1, 1)})

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LOCAL_DT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")


def to_cents(value: object, unit: TMoneyUnit) -> int | None:
    """Money from the source unit to integer cents; None stays None.

    Cents must be whole (a fractional cent is refused, never rounded silently). Dollars are rounded
    half-even to the cent, the way Dentrix shows them; floats are read through their shortest repr
    so 0.1 + 0.2 style noise does not leak in.
    """
    if value is None:
        return None
    if type(value) is int and unit == "cents":
        return value  # type: ignore[return-value]
    if isinstance(value, bool):
        raise ValueError("money: a boolean is not an amount")
    if isinstance(value, str):
        value = value.strip()
        if value == "":
            return None
    try:
        amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise ValueError("money: not a number") from None
    if not amount.is_finite():
        raise ValueError("money: not a finite number")
    if unit == "dollars":
        amount = (amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    elif amount != amount.to_integral_value():
        raise ValueError("money: source unit is cents but the amount has a fraction of a cent")
    return int(amount)


def cents_to_decimal(cents: int) -> Decimal:
    """Integer cents to a two-place Decimal amount (for targets that want currency)."""
    return (Decimal(cents) / 100).quantize(Decimal("0.01"))


def normalise_text(value: object) -> str | None:
    """Trim padding (Dentrix fixed-width columns are space padded); empty becomes None; inner CR/LF kept."""
    if value is None:
        return None
    if type(value) is str:
        text = value.strip(" \t\r\n\x00")  # type: ignore[union-attr]
        return text or None
    if isinstance(value, bytes):
        raise ValueError("text: undecoded bytes (set the source encoding)")
    text = str(value).strip(" \t\r\n\x00")
    return text or None


def normalise_id(value: object) -> str | None:
    """Ids are strings; 0 / empty mean "none" in Dentrix (e.g. patid 0 on new-patient appointments)."""
    kind = type(value)
    if kind is int:  # the common cases first: this runs for every id of every row
        return str(value) if value else None
    if kind is str:
        text = value.strip()  # type: ignore[union-attr]
        return None if text in ("", "0") else text
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if text in ("", "0"):
        return None
    return text


def normalise_date(value: object) -> str | None:
    """A date as "YYYY-MM-DD"; sentinel "no date" values become None."""
    if value is None:
        return None
    if type(value) is str and len(value) == 10:  # fast path: already ISO
        day = dt.date.fromisoformat(value)
        return None if day in SENTINEL_DATES else value
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return None if value in SENTINEL_DATES else value.isoformat()
    text = str(value).strip()
    if text in ("", "0"):
        return None
    day = dt.date.fromisoformat(text[:10])
    return None if day in SENTINEL_DATES else day.isoformat()


def normalise_local_datetime(value: object, zone: ZoneInfo) -> str | None:
    """A practice-local datetime as "YYYY-MM-DDTHH:MM:SS" (no offset, seconds kept, fractions dropped).

    A value that carries an offset (Enterprise 11 UTC columns, ISO strings with Z) is converted to
    the practice zone first; a naive value is already local.
    """
    if value is None:
        return None
    if type(value) is str and len(value) in (19, 23, 26) and value[10] in " T" and value[19:20] in ("", "."):
        # fast path for "YYYY-MM-DD HH:MM:SS[.fff[fff]]" (no offset): validate, keep the wall time
        text = value[:10] + "T" + value[11:19]
        moment = dt.datetime.fromisoformat(text)
        if len(value) > 19 and not value[20:].isdigit():
            raise ValueError("datetime: bad fraction of a second")
        return None if moment.date() in SENTINEL_DATES else text
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        text = str(value).strip()
        if text in ("", "0"):
            return None
        value = dt.datetime.fromisoformat(text.replace(" ", "T", 1))
    if value.tzinfo is not None:
        value = value.astimezone(zone).replace(tzinfo=None)
    if value.date() in SENTINEL_DATES:
        return None
    return value.replace(microsecond=0).isoformat(timespec="seconds")


def appointment_start(date: str | None, hour: int | None, minute: int | None) -> str | None:
    """Dentrix splits the start into date + hour + minute: join them into one local datetime."""
    if date is None or hour is None or minute is None:
        return None
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise ValueError("appointment start: hour or minute out of range")
    return f"{date}T{hour:02d}:{minute:02d}:00"


def local_to_utc(local: str, zone: str) -> dt.datetime:
    """A bundle local datetime to an aware UTC datetime.

    Ambiguous wall times (the repeated hour when clocks go back) take the first occurrence
    (fold=0); wall times that do not exist (the skipped hour) are shifted forward by the gap, which
    is what the practice's clock meant.
    """
    naive = dt.datetime.fromisoformat(local)
    tz = ZoneInfo(zone)
    aware = naive.replace(tzinfo=tz, fold=0)
    as_utc = aware.astimezone(dt.UTC)
    if as_utc.astimezone(tz).replace(tzinfo=None) != naive:  # in a gap: move by the gap's size
        later = naive.replace(tzinfo=tz, fold=1).astimezone(dt.UTC)
        return max(as_utc, later)
    return as_utc


def is_date(text: str) -> bool:
    if not _DATE_RE.match(text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def is_local_datetime(text: str) -> bool:
    if not _LOCAL_DT_RE.match(text):
        return False
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def normalise_tooth(value: object) -> str | None:
    """A tooth as the bundle writes it: "1".."32", "A".."T", "51".."82", "AS".."TS"; 0 / empty = none.

    Numeric columns may return 3, "03", " 3" or 3.0; primary teeth may come as letters (dentrix.md
    §3.6 leaves their numeric encoding unconfirmed, so anything else is refused, not guessed).
    """
    if value is None or isinstance(value, bool):
        return None if value is None else _bad_tooth()
    if isinstance(value, float):
        if not value.is_integer():
            _bad_tooth()
        value = int(value)
    text = str(value).strip().upper()
    if text in ("", "0"):
        return None
    if text.isdigit():
        text = str(int(text))
    if text not in VALID_TEETH:
        _bad_tooth()
    return text


def _bad_tooth() -> None:
    raise ValueError("tooth: not 1-32, A-T, 51-82 or AS-TS")


def normalise_surface(value: object) -> str | None:
    """Surface letters in MODLF5 order, duplicates removed, B/I/V aliases folded; empty = none."""
    if value is None:
        return None
    text = str(value).strip().upper()
    if not text:
        return None
    letters = set()
    for ch in text:
        ch = _SURFACE_ALIASES.get(ch, ch)
        if ch not in SURFACE_ORDER:
            raise ValueError("surface: letters other than M O D L F 5 (B I V)")
        letters.add(ch)
    return "".join(ch for ch in SURFACE_ORDER if ch in letters)


def surface_from_flags(flags: dict[str, object]) -> str | None:
    """Rebuild the surface string from the six flags, in MODLF5 order (as integrators do)."""
    text = "".join(letter for letter, name in zip(SURFACE_ORDER, SURFACE_FLAGS, strict=True) if flags.get(name))
    return text or None


def flags_from_surface(surface: str | None) -> dict[str, bool]:
    """The six surface flags for a surface string."""
    normal = normalise_surface(surface) or ""
    return {name: letter in normal for letter, name in zip(SURFACE_ORDER, SURFACE_FLAGS, strict=True)}


def normalise_bool(value: object) -> bool | None:
    """Dentrix flags are 0/1 integers, 'Y'/'N' or 'T'/'F' characters."""
    if value is None:
        return None
    if type(value) is int:
        return value != 0
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    text = str(value).strip().upper()
    if text in ("", "0", "N", "F", "FALSE", "NO"):
        return False if text else None
    if text in ("1", "Y", "T", "TRUE", "YES", "-1"):
        return True
    raise ValueError("flag: not 0/1, Y/N or T/F")


def normalise_int(value: object) -> int | None:
    """Integers from int, integral float or numeric text; empty text is None."""
    if value is None or type(value) is int:
        return value  # type: ignore[return-value]
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("integer: has a fraction")
        return int(value)
    text = str(value).strip()
    if text == "":
        return None
    return int(text)
