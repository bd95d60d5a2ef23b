"""The named transforms: each rule, and properties over many values."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.mapping import transforms as tf
from shared.mapping.spec import default_mapping

CTX = tf.TransformContext(practice_timezone="America/Denver")


def run(name, *values, ctx=CTX, **args):
    return tf.REGISTRY[name].fn(list(values), args, ctx)


@pytest.fixture(scope="module")
def pctx():
    spec = default_mapping()
    return tf.TransformContext(
        practice_timezone="America/Denver", picklists=spec.picklists, cdt_categories=spec.cdt_categories
    )


def test_cents_become_two_place_money():
    assert run("cents_to_money", 12345) == 123.45
    assert run("cents_to_money", -5) == -0.05
    assert run("cents_to_money", 0) == 0.0
    assert run("cents_to_money", None) is None
    with pytest.raises(tf.TransformFailed) as info:
        run("cents_to_money", "12.5")
    assert info.value.code == "not_cents"


@settings(max_examples=300)
@given(st.integers(min_value=-(10**13), max_value=10**13))
def test_money_json_has_exactly_the_cents_digits(cents):
    value = run("cents_to_money", cents)
    assert Decimal(json.dumps(value)) == Decimal(cents) / 100
    assert tf.money_decimal(value) == (Decimal(cents) / 100).quantize(Decimal("0.01"))


def test_remaining_benefits_never_negative_and_treats_missing_used_as_zero():
    assert run("cents_difference", 150000, 40000) == 1100.0
    assert run("cents_difference", 1000, 5000) == 0.0
    assert run("cents_difference", 1000, None) == 10.0
    assert run("cents_difference", None, 5) is None


def test_local_time_to_utc_uses_the_practice_zone_and_dst():
    assert run("local_to_utc", "2024-01-15T09:30:00") == "2024-01-15T16:30:00Z"  # MST -7
    assert run("local_to_utc", "2024-07-15T09:30:00") == "2024-07-15T15:30:00Z"  # MDT -6
    # the skipped hour (02:30 does not exist on 10 March 2024) moves forward by the gap
    assert run("local_to_utc", "2024-03-10T02:30:00") == "2024-03-10T09:30:00Z"
    # the repeated hour takes its first occurrence (still MDT)
    assert run("local_to_utc", "2024-11-03T01:30:00") == "2024-11-03T07:30:00Z"
    assert run("local_to_utc", "2024-01-15") == "2024-01-15T07:00:00Z"
    assert run("local_to_utc", "1900-01-01T00:00:00") is None  # Dentrix "no date"
    assert run("local_to_utc", "2024-01-15T09:30:00Z") == "2024-01-15T09:30:00Z"
    with pytest.raises(tf.TransformFailed):
        run("local_to_utc", "15/01/2024 09:30")
    bad_zone = tf.TransformContext(practice_timezone="Mars/Olympus")
    with pytest.raises(tf.TransformFailed) as info:
        run("local_to_utc", "2024-01-15T09:30:00", ctx=bad_zone)
    assert info.value.code == "unknown_time_zone"


@settings(max_examples=300)
@given(
    st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2035, 12, 31)),
    st.sampled_from(["America/Denver", "America/New_York", "Europe/Paris", "Australia/Lord_Howe", "UTC"]),
)
def test_utc_conversion_round_trips_to_the_same_wall_clock_outside_gaps(local, zone):
    local = local.replace(microsecond=0)
    text = local.isoformat(timespec="seconds")
    ctx = tf.TransformContext(practice_timezone=zone)
    out = run("local_to_utc", text, ctx=ctx)
    assert out.endswith("Z")
    back = (
        dt.datetime.fromisoformat(out.replace("Z", "+00:00")).astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    )
    in_gap = (
        local.replace(tzinfo=ZoneInfo(zone))
        .astimezone(dt.UTC)
        .astimezone(ZoneInfo(zone))
        .replace(tzinfo=None)
        != local
    )
    if in_gap:
        assert back > local  # shifted forward, never backward
    else:
        assert back == local


def test_appointment_split_start_and_end_keep_real_duration_across_dst():
    assert run("appointment_start", "2024-01-15", 9, 5) == "2024-01-15T16:05:00Z"
    assert run("appointment_start", None, 9, 5) is None
    with pytest.raises(tf.TransformFailed):
        run("appointment_start", "2024-01-15", 25, 0)
    # 01:30 + 60 min on the night clocks go back is 60 real minutes later
    assert run("add_minutes", "2024-11-03", 1, 30, 60) == "2024-11-03T08:30:00Z"
    assert run("add_minutes", "2024-11-03T01:30:00", 60) == "2024-11-03T08:30:00Z"


def test_date_only_keeps_the_calendar_day_and_drops_sentinels():
    assert run("date_only", "1984-02-29") == "1984-02-29"
    assert run("date_only", "1984-02-29T23:59:00") == "1984-02-29"
    assert run("date_only", "1900-01-01") is None
    assert run("date_only", "9999-12-31") is None
    with pytest.raises(tf.TransformFailed):
        run("date_only", "1984-02-30")
    with pytest.raises(tf.TransformFailed) as info:
        run("date_only", "1699-05-01")  # before Dataverse's 1753 lower bound
    assert info.value.code == "date_out_of_range"
    with pytest.raises(tf.TransformFailed) as info:
        run("local_to_utc", "0999-01-01T00:00:00")
    assert info.value.code == "date_out_of_range"
    assert (
        run("local_to_utc", "9999-12-30T12:00:00", ctx=tf.TransformContext(practice_timezone="UTC"))
        == "9999-12-30T12:00:00Z"
    )


def test_picklist_codes_defaults_and_composite_fallback(pctx):
    assert run("picklist", 2, ctx=pctx, picklist="patient_status") == 727000001
    assert run("picklist", None, ctx=pctx, picklist="patient_status") is None
    with pytest.raises(tf.TransformFailed) as info:
        run("picklist", 77, ctx=pctx, picklist="patient_status")
    assert info.value.code == "unknown_picklist_code"
    assert run("picklist", 77, ctx=pctx, picklist="patient_status", default=727000002) == 727000002
    assert run("picklist", 77, ctx=pctx, picklist="patient_status", codes={"77": 727000003}) == 727000003
    # ledger: chart status + class, unknown class falls back to the chart status alone
    assert run("picklist", 90, 3, ctx=pctx, picklist="ledger_type") == 727000003  # insurance payment
    assert run("picklist", 90, 0, ctx=pctx, picklist="ledger_type") == 727000005  # balance forward
    assert run("picklist", 90, 8, ctx=pctx, picklist="ledger_type") == 727000004  # write-off
    assert run("picklist", 90, 5, ctx=pctx, picklist="ledger_type") == 727000002  # adjustment
    assert run("picklist", 102, 0, ctx=pctx, picklist="ledger_type") == 727000000  # charge
    # labels match case-insensitively
    assert run("picklist", " Perio Chart ", ctx=pctx, picklist="note_type") == 727000002
    assert (
        run("picklist_label", "EXAM", ctx=pctx, picklist="note_type", prefix="Clinical note: ")
        == "Clinical note: Exam"
    )


def test_cdt_codes_normalise_and_categorise(pctx):
    assert run("cdt_code", " d0120 ") == "D0120"
    assert run("cdt_code", "0120") == "D0120"
    assert run("cdt_code", "D2392.1") == "D2392"
    with pytest.raises(tf.TransformFailed) as info:
        run("cdt_code", "X123")
    assert info.value.code == "invalid_cdt_code"
    assert run("cdt_category", "D1110", ctx=pctx) == 727000001  # preventive
    assert run("cdt_category", "D6010", ctx=pctx) == 727000007  # implant services
    assert run("cdt_category", "D6750", ctx=pctx) == 727000008  # fixed prosthodontics
    with pytest.raises(tf.TransformFailed):
        run("cdt_category", "D0050", ctx=pctx)
    assert run("cdt_list", ["d0120", "D1110", "LAB1", "D0120"]) == "D0120, D1110"
    assert run("cdt_list", []) is None


@given(st.integers(min_value=100, max_value=9999))
def test_every_cdt_code_has_exactly_one_category(number):
    spec = default_mapping()
    hits = [c for c in spec.cdt_categories if c.low <= number <= c.high]
    assert len(hits) == 1


def test_teeth_and_surfaces_follow_dentrix_rules():
    assert run("tooth", "03") == "3"
    assert run("tooth", 3, 5) == "3-5"
    assert run("tooth", "14", "14") == "14"
    assert run("tooth", "as") == "AS"
    assert run("tooth", 0) is None
    with pytest.raises(tf.TransformFailed):
        run("tooth", "33")
    assert run("surface", "dom") == "MOD"
    assert run("surface", "B") == "F"
    assert run("surface", None, True, True, False, False, False, False) == "MO"
    assert run("surface", "MO", True, True, False, False, False, False) == "MO"
    with pytest.raises(tf.TransformFailed) as info:
        run("surface", "MOD", True, False, False, False, False, False)
    assert info.value.code == "surface_mismatch"
    with pytest.raises(tf.TransformFailed):
        run("surface", "MXZ")


@given(st.sets(st.sampled_from("MODLF5"), min_size=1))
def test_surface_order_is_canonical_whatever_the_input_order(letters):
    out = run("surface", "".join(sorted(letters, reverse=True)))
    assert out == "".join(c for c in "MODLF5" if c in letters)


def test_phone_cleaning():
    assert run("phone", "(303) 555-0123") == "+13035550123"
    assert run("phone", "1-303-555-0123 ext 42") == "+13035550123 x42"
    assert run("phone", "+44 20 7946 0958") == "+442079460958"
    assert run("phone", "555-0123") == "5550123"
    assert run("phone", "   ") is None
    with pytest.raises(tf.TransformFailed) as info:
        run("phone", "12")
    assert info.value.code == "invalid_phone"


def test_email_cleaning():
    assert run("email", "  Ana.Ruiz@Example.COM ") == "Ana.Ruiz@example.com"
    assert run("email", "mailto:a@b.org") == "a@b.org"
    assert run("email", "") is None
    with pytest.raises(tf.TransformFailed) as info:
        run("email", "ana at example dot com")
    assert info.value.code == "invalid_email"


def test_trim_flags_and_text_helpers():
    assert run("trim", "  Smith   ") == "Smith"
    assert run("trim", "   ") is None
    assert run("trim", "line1\r\nline2  ") == "line1\r\nline2"
    assert run("boolean", "Y") is True and run("boolean", 0) is False
    assert run("bit_flag", 2, bit=2) is True and run("bit_flag", 2, bit=1) is False
    assert run("concat", "D2391", None, " MO ") == "D2391 MO"
    assert run("first_nonempty", None, "  ", "x") == "x"
    assert run("first_nonempty", None, default="Appointment") == "Appointment"
    assert run("json_text", {"3": [3, 2, 3], "2": [2, 2, 2]}) == '{"2":[2,2,2],"3":[3,2,3]}'
    assert run("date_on_or_after", "2024-05-02", "2024-05-01") is True
    assert run("date_on_or_after", None, "2024-05-01") is False


def test_failures_carry_a_code_never_the_value():
    secret = "ana.ruiz-at-example"
    with pytest.raises(tf.TransformFailed) as info:
        run("email", secret)
    assert secret not in str(info.value) and info.value.code == "invalid_email"


def test_every_registered_transform_declares_outputs_and_a_docstring():
    for name, d in tf.REGISTRY.items():
        assert d.outputs, name
        assert d.doc, name
