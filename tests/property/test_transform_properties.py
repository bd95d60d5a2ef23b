"""Properties of the value transforms (shared/mapping/transforms.py) and of whole-row transforms
(shared/mapping/rows.py) over generated values.

Totality: every transform, with the arguments the default map gives it, maps any JSON value to a
value of its declared output kind or raises `TransformFailed` with a code; `transform_row` maps any
row of JSON-typed values to a payload and field errors. Never another exception (a crash in a load
batch fails the batch, not one row). Round trips: money cents, dates and local times through the
practice's zone, teeth, surfaces and their flags, picklist codes.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from shared.dentrix import normalise as dn
from shared.dentrix.tables import JSON_TYPE_OF_KIND, get_table
from shared.mapping import transforms as tf
from shared.mapping.rows import make_context, transform_row
from shared.mapping.spec import default_mapping

SPEC = default_mapping()
ZONES = ["America/Denver", "America/New_York", "America/St_Johns", "Australia/Lord_Howe", "Pacific/Chatham",
         "Europe/London", "Asia/Kolkata", "UTC"]

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=6)
"""What a bundle's JSON can hold (floats include NaN and infinities: Python's json reads them)."""


def _uses() -> list[tuple[str, dict[str, Any], int]]:
    """(transform, args, number of sources) for every field of the default map, plus each registered
    transform with no arguments at its smallest and largest arity."""
    uses = {(f.transform.name, json.dumps(f.transform.args, sort_keys=True), len(f.source))
            for t in SPEC.tables for f in t.fields}
    for name, definition in tf.REGISTRY.items():
        if definition.needs_picklist:
            continue
        for arity in {definition.min_sources, definition.max_sources or definition.min_sources + 3}:
            uses.add((name, "{}", arity))
    return [(name, json.loads(args), arity) for name, args, arity in sorted(uses)]


USES = _uses()

_OUTPUT_CHECK = {
    "string": lambda v: isinstance(v, str), "memo": lambda v: isinstance(v, str),
    "integer": lambda v: type(v) is int, "picklist": lambda v: type(v) is int,
    "decimal": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "money": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "boolean": lambda v: type(v) is bool,
    "date": lambda v: isinstance(v, str) and dn.is_date(v),
    "datetime": lambda v: isinstance(v, str) and v.endswith("Z") and dn.is_local_datetime(v[:-1]),
}


def _context(zone: str = "America/Denver") -> tf.TransformContext:
    return make_context(SPEC, zone)


MANY = settings(max_examples=settings().max_examples * 4)
"""For a property that samples what it tests (a transform use, a table map) per example."""


@MANY
@given(data=st.data())
def test_every_transform_is_total_over_json_values(data: st.DataObject):
    name, args, arity = data.draw(st.sampled_from(USES), label="use")
    definition = tf.REGISTRY[name]
    values = data.draw(st.lists(JSON_VALUES, min_size=arity, max_size=arity), label="values")
    zone = data.draw(st.sampled_from(ZONES), label="zone")
    try:
        out = definition.fn(values, args, _context(zone))
    except tf.TransformFailed as failure:
        assert failure.code and failure.code.replace("_", "").isalpha()
        return
    if out is None or name in ("constant", "copy"):
        return
    assert any(_OUTPUT_CHECK[kind](out) for kind in definition.outputs), f"{name} gave a {type(out).__name__}"


@example(values=["2024-01-15", float("inf"), 0])
@example(values=["2024-01-15", 9, float("nan")])
@given(values=st.tuples(st.one_of(st.dates().map(str), st.text(max_size=12)), JSON_SCALARS, JSON_SCALARS))
def test_appointment_start_refuses_any_hour_or_minute_it_cannot_read(values: tuple[Any, Any, Any]):
    """Regression (found while fuzzing the transforms): an infinite hour raised OverflowError out of
    `int()` instead of the transform's `bad_appointment_time`."""
    try:
        out = tf.REGISTRY["appointment_start"].fn(list(values), {}, _context())
    except tf.TransformFailed:
        return
    assert out is None or _OUTPUT_CHECK["datetime"](out)


@example(cents=10**28)
@example(cents=7425827786939054)
@example(cents=tf.MONEY_LIMIT_CENTS + 1)
@example(cents=-(10**40))
@given(cents=st.integers())
def test_money_is_sent_exactly_or_refused_as_this_rows_problem_never_a_crash(cents: int):
    """Regressions (long profile): 1e28 cents raised decimal.InvalidOperation out of cents_to_money,
    failing the whole batch; 7425827786939054 cents became 74258277869390.55 (a double has 15-16
    significant digits), a changed amount sent silently."""
    try:
        amount = tf.REGISTRY["cents_to_money"].fn([cents], {}, _context())
    except tf.TransformFailed as failure:
        assert failure.code == "money_out_of_range" and abs(cents) > tf.MONEY_LIMIT_CENTS
        return
    assert abs(cents) <= tf.MONEY_LIMIT_CENTS and tf.money_decimal(amount) * 100 == Decimal(cents)


# -- round trips -----------------------------------------------------------------------------------

@given(st.integers(min_value=-(10**13), max_value=10**13))
def test_money_round_trips_cents_to_amount_and_back(cents: int):
    amount = tf.REGISTRY["cents_to_money"].fn([cents], {}, _context())
    assert dn.to_cents(json.dumps(amount), "dollars") == cents
    assert tf.money_decimal(amount) * 100 == Decimal(cents)


@given(st.dates(min_value=dt.date(1753, 1, 1)), st.sampled_from(ZONES))
def test_a_calendar_date_is_the_same_day_whatever_the_zone(day: dt.date, zone: str):
    out = tf.REGISTRY["date_only"].fn([day.isoformat()], {}, _context(zone))
    assert out == (None if day in dn.SENTINEL_DATES else day.isoformat())


@given(st.datetimes(min_value=dt.datetime(1800, 1, 1), max_value=dt.datetime(2100, 12, 31)), st.sampled_from(ZONES))
def test_local_times_come_back_to_the_same_wall_clock_or_later_in_a_gap(local: dt.datetime, zone: str):
    local = local.replace(microsecond=0)
    assume(local.date() not in dn.SENTINEL_DATES)
    out = tf.REGISTRY["local_to_utc"].fn([local.isoformat()], {}, _context(zone))
    back = dt.datetime.fromisoformat(out.replace("Z", "+00:00")).astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    assert back == local or dt.timedelta(0) < back - local <= dt.timedelta(hours=2)


@given(st.sampled_from(sorted(dn.VALID_TEETH)), st.sampled_from(["{}", " {} ", "{} ", "0{}", "{}.0"]))
def test_every_tooth_reads_back_as_itself_whatever_its_padding(tooth: str, shape: str):
    if not tooth.isdigit() and shape in ("0{}", "{}.0"):
        shape = "{}"
    value: Any = shape.format(tooth)
    if shape == "{}.0":
        value = float(tooth)
    assert tf.REGISTRY["tooth"].fn([value], {}, _context()) == tooth
    assert tf.REGISTRY["tooth"].fn([value.lower() if isinstance(value, str) else value], {}, _context()) == tooth


@given(st.text(max_size=4))
@example("²")
def test_a_tooth_outside_the_charts_is_refused(text: str):
    assume(dn.normalise_text(text) is not None)
    stripped = text.strip().upper()
    canonical = str(int(stripped)) if stripped.isdecimal() else stripped  # "²" is a digit, not a number
    assume(canonical not in dn.VALID_TEETH and canonical not in ("", "0"))
    with pytest.raises(tf.TransformFailed) as caught:
        tf.REGISTRY["tooth"].fn([text], {}, _context())
    assert caught.value.code == "invalid_tooth"


@given(st.lists(st.sampled_from("MODLF5BIVmodlf5biv"), min_size=1, max_size=10))
def test_surfaces_come_out_in_modlf5_order_once_each_and_agree_with_their_flags(letters: list[str]):
    out = tf.REGISTRY["surface"].fn(["".join(letters)], {}, _context())
    folded = {{"B": "F", "I": "O", "V": "5"}.get(c.upper(), c.upper()) for c in letters}
    assert out == "".join(c for c in "MODLF5" if c in folded)
    flags = dn.flags_from_surface(out)
    both = [out, *(flags[name] for name in dn.SURFACE_FLAGS)]
    assert tf.REGISTRY["surface"].fn(both, {}, _context()) == out
    assert tf.REGISTRY["surface"].fn([None, *both[1:]], {}, _context()) == out
    other = [not flags[name] for name in dn.SURFACE_FLAGS]
    if any(other):
        with pytest.raises(tf.TransformFailed) as caught:
            tf.REGISTRY["surface"].fn([out, *other], {}, _context())
        assert caught.value.code == "surface_mismatch"


PICKLIST_CODES = [(name, option.value, code) for name, picklist in sorted(SPEC.picklists.items())
                  for option in picklist.options for code in option.codes]


@given(st.sampled_from(PICKLIST_CODES), st.sampled_from(["{}", " {} ", "UPPER", "lower"]))
def test_every_picklist_code_maps_to_its_option_and_its_label(entry: tuple[str, int, Any], shape: str):
    name, value, code = entry
    text = str(code)
    variant: Any = code
    if isinstance(code, str):
        variant = text.upper() if shape == "UPPER" else text.lower() if shape == "lower" else shape.format(text)
    ctx = _context()
    codes = ctx.codes_for(name)
    assume(codes.get(tf._code_key(variant)) == value)  # a code listed under two options maps to the first
    assert tf.REGISTRY["picklist"].fn([variant], {"picklist": name}, ctx) == value
    assert tf.REGISTRY["picklist_label"].fn([variant], {"picklist": name}, ctx) == SPEC.picklists[name].label_of(value)


@given(st.sampled_from(sorted(SPEC.picklists)), st.text(min_size=1, max_size=8))
def test_an_unknown_picklist_code_takes_the_default_or_is_refused(name: str, code: str):
    ctx = _context()
    assume(code.strip() and tf._code_key(code) not in ctx.codes_for(name))
    with pytest.raises(tf.TransformFailed) as caught:
        tf.REGISTRY["picklist"].fn([code], {"picklist": name}, ctx)
    assert caught.value.code == "unknown_picklist_code"
    default = min(SPEC.picklists[name].values)
    assert tf.REGISTRY["picklist"].fn([code], {"picklist": name, "default": default}, ctx) == default


# -- whole rows ------------------------------------------------------------------------------------

_BY_JSON_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(max_size=20), "integer": st.integers(), "number": st.floats(allow_nan=False),
    "boolean": st.booleans(), "object": st.dictionaries(st.text(max_size=4), JSON_SCALARS, max_size=3),
}
LOADED_MAPS = [t for t in SPEC.enabled_tables() if t.action in ("upsert", "update", "attachment")]


@MANY
@given(data=st.data())
def test_transform_row_is_total_over_rows_of_the_declared_json_types(data: st.DataObject):
    table_map = data.draw(st.sampled_from(LOADED_MAPS), label="map")
    table = get_table(table_map.source_table)
    row = {c.name: data.draw(st.one_of(st.none(), _BY_JSON_TYPE[JSON_TYPE_OF_KIND[c.kind]]), label=c.name)
           for c in table.columns}
    payload, errors = transform_row(table_map, row, _context(data.draw(st.sampled_from(ZONES), label="zone")))
    assert isinstance(payload, dict)
    for error in errors:
        assert error.loc[0] == table_map.name and error.code
    json.dumps(payload, allow_nan=False)  # the payload is JSON Dataverse can read: no NaN, no infinity
