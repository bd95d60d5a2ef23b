"""The named value transforms a field map may use: pure functions from bundle values to Dataverse values.

A map names a transform and its arguments (`{name: cents_to_money}`); this registry holds the
function, how many source values it takes, and which target column types its output can go into,
so a map can be checked before any row moves. Bundle normalisation rules (money, teeth, surfaces,
dates, local time) come from `shared.dentrix.normalise`, the same code the agent writes them with.

A transform raises `TransformFailed(code)`: the code says which rule a value broke, never the value.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from shared.dentrix import normalise as dn

TargetType = str
"""One of `spec.TARGET_TYPES` (kept as a plain str here to avoid an import cycle)."""


class TransformFailed(ValueError):
    """A value broke a transform's rule. `code` names the rule; the message never holds the value."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class TransformContext:
    """What a row transform may know beyond the row itself. Built once per batch by the loader."""

    practice_timezone: str = "UTC"
    """IANA zone of the practice (bundle manifest `practice_timezone`)."""
    picklists: Mapping[str, Any] = field(default_factory=dict)
    """Picklist name -> `spec.Picklist` (the approved map's own, so codes are frozen with it)."""
    cdt_categories: Sequence[Any] = ()
    """`spec.CdtCategory` ranges, from the approved map."""
    references: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    """Small decode tables: bundle table -> key -> row (definition, proc_code, insured, operatory ...)."""
    children: Mapping[tuple[str, str], Mapping[str, Sequence[Mapping[str, Any]]]] = field(default_factory=dict)
    """(child table, parent column) -> parent id -> child rows (appointment procedures)."""
    owners: Mapping[str, str] = field(default_factory=dict)
    """Provider id -> active systemuser id (from the approved schema plan, fallback owner applied)."""
    fallback_owner: str | None = None
    """Systemuser id for records whose provider is unknown or empty; None = leave the default owner."""
    entity_sets: Mapping[str, str] = field(default_factory=dict)
    """Table logical name -> EntitySetName as read from Dataverse (never computed for custom tables)."""
    parent_ids: Mapping[str, Any] | None = None
    """Optional: table map name -> set of Dentrix ids present in the bundle. When given, a lookup to
    an absent parent (an orphan) is left out, or quarantines the row if the lookup is required,
    instead of failing the whole Dataverse batch on a bind to a missing key."""
    spec: Any = None
    """The approved `MappingSpec` (parents' prefixes and targets, publisher prefix)."""
    _codes: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)
    """Per-context memo for compiled map steps (the context lives for one batch)."""

    def codes_for(self, picklist: str) -> dict[str, int]:
        """The picklist's code index, built once per context (a batch), not per row."""
        if picklist not in self._codes:
            self._codes[picklist] = self.picklists[picklist].code_index()
        return self._codes[picklist]


TransformFn = Callable[[list[Any], Mapping[str, Any], TransformContext], Any]


@dataclass(frozen=True)
class TransformDef:
    """A registered transform."""

    name: str
    fn: TransformFn
    min_sources: int
    max_sources: int | None
    outputs: frozenset[str]
    """Target column types the output fits."""
    doc: str
    needs_picklist: bool = False


REGISTRY: dict[str, TransformDef] = {}


def _register(
    name: str, outputs: set[str], min_sources: int = 1, max_sources: int | None = 1, needs_picklist: bool = False
) -> Callable[[TransformFn], TransformFn]:
    def wrap(fn: TransformFn) -> TransformFn:
        REGISTRY[name] = TransformDef(
            name, fn, min_sources, max_sources, frozenset(outputs), (fn.__doc__ or "").strip(), needs_picklist
        )
        return fn

    return wrap


_TEXT = {"string", "memo"}
_ANY = {"string", "memo", "integer", "decimal", "money", "datetime", "date", "boolean", "picklist"}


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _text(value: Any) -> str | None:
    try:
        return dn.normalise_text(value)
    except ValueError:
        raise TransformFailed("not_text") from None


# --- text -------------------------------------------------------------------------------------


@_register("copy", _ANY)
def copy(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> Any:
    """The value as the bundle holds it (strings trimmed: Dentrix pads fixed-width columns)."""
    value = values[0]
    return _text(value) if isinstance(value, str) else value


@_register("trim", _TEXT)
def trim(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> str | None:
    """Trim padding; empty becomes null; inner line breaks kept."""
    value = values[0]
    if value is not None and not isinstance(value, str):
        value = str(value)
    return _text(value)


@_register("concat", _TEXT, max_sources=None)
def concat(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> str | None:
    """Join the non-empty values with `sep` (default a space), after an optional `prefix`."""
    parts = [t for t in (_text(str(v)) if v is not None else None for v in values) if t]
    if not parts:
        return args.get("default")
    return str(args.get("prefix", "")) + str(args.get("sep", " ")).join(parts)


@_register("first_nonempty", _TEXT, max_sources=None)
def first_nonempty(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> str | None:
    """The first value that is not empty, else `default`."""
    for v in values:
        t = _text(str(v)) if v is not None else None
        if t:
            return t
    return args.get("default")


@_register("constant", _ANY, min_sources=0, max_sources=0)
def constant(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> Any:
    """The fixed `value` from the map (e.g. a note subject)."""
    return args.get("value")


@_register("json_text", {"memo"})
def json_text(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> str | None:
    """A structured value (perio readings) as compact, key-sorted JSON text."""
    if values[0] is None:
        return None
    return json.dumps(values[0], sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- contact details --------------------------------------------------------------------------

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")


@_register("email", {"string"})
def email(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> str | None:
    """Trimmed, domain lower-cased; anything not shaped like an address is refused (`invalid_email`)."""
    text = _text(values[0]) if values[0] is not None else None
    if text is None:
        return None
    text = text.replace(" ", "")
    if text.lower().startswith("mailto:"):
        text = text[7:]
    if not _EMAIL_RE.match(text):
        raise TransformFailed("invalid_email")
    local, _, domain = text.rpartition("@")
    return f"{local}@{domain.lower()}"


_EXT_RE = re.compile(r"(?:x|ext\.?|extension)\s*(\d{1,6})\s*$", re.IGNORECASE)


@_register("phone", {"string"})
def phone(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> str | None:
    """North American numbers to E.164 (+1NXXNXXXXXX), others to + and digits; an extension is kept
    as ` x123`. Fewer than 7 digits is refused (`invalid_phone`)."""
    text = _text(values[0]) if values[0] is not None else None
    if text is None:
        return None
    ext = ""
    m = _EXT_RE.search(text)
    if m:
        ext = f" x{m.group(1)}"
        text = text[: m.start()]
    plus = text.lstrip().startswith("+")
    digits = re.sub(r"\D", "", text)
    if len(digits) < 7 or len(digits) > 15:
        raise TransformFailed("invalid_phone")
    country = str(args.get("default_country_code", "1"))
    if not plus and len(digits) == 10 and country == "1":
        return f"+1{digits}{ext}"
    if not plus and len(digits) == 11 and digits.startswith("1") and country == "1":
        return f"+{digits}{ext}"
    if not plus and len(digits) < 10:
        return f"{digits}{ext}"  # a local number without area code: keep the digits, do not guess
    return f"+{digits}{ext}"


# --- numbers, flags, money --------------------------------------------------------------------


@_register("integer", {"integer", "decimal"})
def integer(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> int | None:
    """A whole number (from an int, a whole float or digits)."""
    try:
        return dn.normalise_int(values[0])
    except ValueError:
        raise TransformFailed("not_integer") from None


@_register("boolean", {"boolean"})
def boolean(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> bool | None:
    """Dentrix flags (0/1, Y/N, T/F) to true/false."""
    try:
        return dn.normalise_bool(values[0])
    except ValueError:
        raise TransformFailed("not_boolean") from None


@_register("bit_flag", {"boolean"})
def bit_flag(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> bool | None:
    """True when bit `bit` (1-based: bit 1 = value 1, bit 2 = value 2) is set in a bitmask (privacy flags)."""
    value = integer(values, args, ctx)
    if value is None:
        return None
    return bool(value & (1 << (int(args.get("bit", 1)) - 1)))


MONEY_LIMIT_CENTS = 999_999_999_999_999
"""The largest amount (in cents) sent: 15 significant digits, the most a JSON number (a double) carries
exactly (74258277869390.54 would arrive as .55; found by fuzzing). Dataverse's own money range,
-922,337,203,685,477 .. 922,337,203,685,477, is wider; no practice's amount comes near either."""


def _money(cents: int) -> float:
    # Beyond it a value would arrive changed, or out of Dataverse's range fail its whole batch (and past
    # 28 digits crash the Decimal below, found by fuzzing): refuse it as this row's problem instead.
    if abs(cents) > MONEY_LIMIT_CENTS:
        raise TransformFailed("money_out_of_range")
    # A JSON number with exactly the cents' digits: the shortest repr of the nearest double to
    # d.cc is "d.cc", so json.dumps writes what Decimal would (checked by a property test).
    return float(dn.cents_to_decimal(cents))


def _cents(value: Any) -> int | None:
    try:
        return dn.to_cents(value, "cents")
    except ValueError:
        raise TransformFailed("not_cents") from None


@_register("cents_to_money", {"money", "decimal"})
def cents_to_money(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> float | None:
    """Integer cents to a currency amount with two decimals (12345 -> 123.45)."""
    cents = _cents(values[0])
    return None if cents is None else _money(cents)


@_register("cents_difference", {"money", "decimal"}, min_sources=2, max_sources=2)
def cents_difference(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> float | None:
    """First minus second, in cents, as money (remaining benefits = annual maximum - used); a missing
    second value counts as zero, a missing first gives null; `floor_zero` keeps it from going negative."""
    first = _cents(values[0])
    if first is None:
        return None
    result = first - (_cents(values[1]) or 0)
    if args.get("floor_zero", True):
        result = max(result, 0)
    return _money(result)


def money_decimal(value: float) -> Decimal:
    """The exact Decimal a money payload value stands for (for read-back comparisons)."""
    return Decimal(repr(value)).quantize(Decimal("0.01"))


# --- dates and times --------------------------------------------------------------------------


DATAVERSE_MIN_YEAR = 1753
"""Dataverse date-time columns hold 1753-01-01 .. 9999-12-31 (the SQL datetime range)."""


def _utc_iso(moment: dt.datetime) -> str:
    try:
        utc = moment.astimezone(dt.UTC)
    except OverflowError:
        raise TransformFailed("date_out_of_range") from None
    if utc.year < DATAVERSE_MIN_YEAR:
        raise TransformFailed("date_out_of_range")
    return utc.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def _local_text(value: Any) -> str | None:
    if _blank(value):
        return None
    text = str(value).strip()
    if text.endswith("Z") or re.search(r"[+-]\d{2}:\d{2}$", text):
        return text  # already an instant
    try:
        if dn.is_date(text):
            day = dt.date.fromisoformat(text)
            return None if day in dn.SENTINEL_DATES else f"{text}T00:00:00"
        if not dn.is_local_datetime(text):
            raise ValueError
    except ValueError:
        raise TransformFailed("not_local_datetime") from None
    if dt.date.fromisoformat(text[:10]) in dn.SENTINEL_DATES:
        return None
    return text


def _to_utc(text: str, zone: str) -> str:
    if text.endswith("Z") or re.search(r"[+-]\d{2}:\d{2}$", text):
        try:
            return _utc_iso(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            raise TransformFailed("not_datetime") from None
    try:
        moment = dn.local_to_utc(text, zone)
    except ValueError:
        raise TransformFailed("not_local_datetime") from None
    except OverflowError:
        raise TransformFailed("date_out_of_range") from None
    except Exception:  # zoneinfo.ZoneInfoNotFoundError and friends
        raise TransformFailed("unknown_time_zone") from None
    return _utc_iso(moment)


@_register("local_to_utc", {"datetime"})
def local_to_utc(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> str | None:
    """A practice-local datetime (or date, taken as local midnight) to UTC ISO with Z, through the
    practice's IANA zone (DST gaps shift forward, repeated hours take the first occurrence)."""
    text = _local_text(values[0])
    return None if text is None else _to_utc(text, ctx.practice_timezone)


@_register("appointment_start", {"datetime"}, min_sources=3, max_sources=3)
def appointment_start(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> str | None:
    """Dentrix's split start (date, hour, minute) to a UTC instant."""
    date, hour, minute = values
    if _blank(date) or hour is None or minute is None:
        return None
    try:
        local = dn.appointment_start(str(date).strip(), int(hour), int(minute))
    except (ValueError, TypeError, OverflowError):  # OverflowError: an infinite hour (found by fuzzing)
        raise TransformFailed("bad_appointment_time") from None
    return None if local is None else _to_utc(local, ctx.practice_timezone)


@_register("add_minutes", {"datetime"}, min_sources=2, max_sources=4)
def add_minutes(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> str | None:
    """A start plus a length in minutes, as a UTC instant (appointment end). The start is either one
    local datetime or Dentrix's split (date, hour, minute); the length is the last source. Added to the
    UTC start, so an appointment across a DST change keeps its real duration."""
    start = local_to_utc(values[:1], args, ctx) if len(values) == 2 else appointment_start(values[:3], args, ctx)
    if start is None:
        return None
    length = integer([values[-1]], args, ctx) or 0
    if length < 0:
        raise TransformFailed("negative_length")
    try:
        moment = dt.datetime.fromisoformat(start.replace("Z", "+00:00")) + dt.timedelta(minutes=length)
    except OverflowError:
        raise TransformFailed("date_out_of_range") from None
    return _utc_iso(moment)


@_register("date_only", {"date"})
def date_only(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> str | None:
    """A calendar date "YYYY-MM-DD" (birth dates have no time zone); sentinel "no date" values become null."""
    try:
        day = dn.normalise_date(values[0])
    except ValueError:
        raise TransformFailed("not_date") from None
    if day is not None and int(day[:4]) < DATAVERSE_MIN_YEAR:
        raise TransformFailed("date_out_of_range")
    return day


@_register("date_on_or_after", {"boolean"}, min_sources=2, max_sources=2)
def date_on_or_after(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> bool | None:
    """True when the first date is on or after the second (a recall done on or after it was due)."""
    first = date_only([values[0]], args, ctx)
    second = date_only([values[1]], args, ctx)
    if second is None:
        return None
    return first is not None and first >= second


# --- dental codes -----------------------------------------------------------------------------

_CDT_RE = re.compile(r"^D?(\d{4})$")


def normalise_cdt(value: Any) -> str | None:
    """"d0120", " D0120 ", "0120", "D0120.01" -> "D0120"; anything else raises `TransformFailed`."""
    if _blank(value):
        return None
    text = re.sub(r"\s+", "", str(value)).upper()
    text = text.split(".", 1)[0]
    m = _CDT_RE.match(text)
    if not m:
        raise TransformFailed("invalid_cdt_code")
    return f"D{m.group(1)}"


@_register("cdt_code", {"string"})
def cdt_code(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> str | None:
    """A CDT procedure code in its canonical form D0000."""
    return normalise_cdt(values[0])


@_register("cdt_list", {"string", "memo"})
def cdt_list(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> str | None:
    """A list of CDT codes (an appointment's procedures) as "D0120, D1110", in slot order, each
    normalised; practice codes that are not CDT are skipped."""
    items = values[0] if isinstance(values[0], list) else [values[0]]
    codes: list[str] = []
    for item in items:
        try:
            code = normalise_cdt(item)
        except TransformFailed:
            continue
        if code and code not in codes:
            codes.append(code)
    return ", ".join(codes) or None


@_register("cdt_category", {"picklist"}, needs_picklist=True)
def cdt_category(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> int | None:
    """The CDT category (Diagnostic, Preventive, ...) of a code, from the map's category ranges."""
    code = normalise_cdt(values[0])
    if code is None:
        return None
    number = int(code[1:])
    for cat in ctx.cdt_categories:
        if cat.low <= number <= cat.high:
            return int(cat.value)
    raise TransformFailed("cdt_code_outside_categories")


@_register("tooth", {"string"}, max_sources=2)
def tooth(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> str | None:
    """A tooth (1-32, A-T, 51-82, AS-TS); with two sources a range "3-5" (start = end gives one tooth)."""
    try:
        start = dn.normalise_tooth(values[0])
        end = dn.normalise_tooth(values[1]) if len(values) > 1 else None
    except ValueError:
        raise TransformFailed("invalid_tooth") from None
    if start is None:
        return end
    if end is None or end == start:
        return start
    return f"{start}-{end}"


@_register("surface", {"string"}, max_sources=7)
def surface(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> str | None:
    """Surfaces in Dentrix's MODLF5 order. One source: the surface string. Seven: the string then the
    six flags (M O D L F 5); the flags fill in when the string is empty, and a string that disagrees
    with set flags is refused (`surface_mismatch`)."""
    try:
        text = dn.normalise_surface(values[0])
    except ValueError:
        raise TransformFailed("invalid_surface") from None
    if len(values) == 1:
        return text
    if len(values) != 7:
        raise TransformFailed("surface_needs_string_and_six_flags")
    flags = dict(zip(dn.SURFACE_FLAGS, (bool(v) for v in values[1:]), strict=True))
    from_flags = dn.surface_from_flags(flags)
    if text is None:
        return from_flags
    if from_flags is not None and from_flags != text:
        raise TransformFailed("surface_mismatch")
    return text


# --- picklists --------------------------------------------------------------------------------


def _code_key(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip().lower()


@_register("picklist", {"picklist"}, max_sources=None, needs_picklist=True)
def picklist(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> int | None:
    """A source code to the option value of the map's picklist `picklist`. Several sources are joined
    with ":" (ledger: chart status and class, "90:3"); when the full code has no option the last part
    is dropped and tried again ("90:5" falls back to "90"). Codes compare case-insensitively, so a
    practice label ("Exam") can be a code. An unknown code gives `default` or fails
    (`unknown_picklist_code`)."""
    if all(_blank(v) for v in values):
        return None
    name = str(args.get("picklist"))
    if name not in ctx.picklists:
        raise TransformFailed("unknown_picklist")
    codes = ctx.codes_for(name)
    extra = {_code_key(k): int(v) for k, v in (args.get("codes") or {}).items()}
    parts = [_code_key(v) if not _blank(v) else "" for v in values]
    while parts:
        key = ":".join(parts)
        if key in extra:
            return extra[key]
        if key in codes:
            return codes[key]
        parts = parts[:-1]
    if args.get("default") is not None:
        return int(args["default"])
    raise TransformFailed("unknown_picklist_code")


@_register("picklist_label", _TEXT, max_sources=None, needs_picklist=True)
def picklist_label(values: list[Any], args: Mapping[str, Any], ctx: TransformContext) -> str | None:
    """The label of the option `picklist` would choose (the `default` option when the source is empty),
    with an optional `prefix` (note subjects)."""
    value = picklist(values, args, ctx)
    if value is None:
        value = args.get("default")
    if value is None:
        return None
    pl = ctx.picklists[str(args["picklist"])]
    return str(args.get("prefix", "")) + pl.label_of(value)


def get(name: str) -> TransformDef:
    """The registered transform `name`; KeyError if none."""
    return REGISTRY[name]


__all__ = [
    "REGISTRY",
    "TransformContext",
    "TransformDef",
    "TransformFailed",
    "get",
    "money_decimal",
    "normalise_cdt",
]
