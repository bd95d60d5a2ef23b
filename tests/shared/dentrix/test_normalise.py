"""Property tests for the value normalisers: money, dates, times and time zones, teeth, surfaces."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.dentrix import normalise as n

ZONES = st.sampled_from(
    [
        "America/Denver",
        "America/New_York",
        "America/Phoenix",
        "Pacific/Honolulu",
        "Europe/Berlin",
        "Australia/Lord_Howe",
        "UTC",
    ]
)
settings.register_profile("bridgework", max_examples=150, deadline=None)
settings.load_profile("bridgework")


# -- money ------------------------------------------------------------------------------------


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_cents_pass_through_whatever_the_source_type(cents: int):
    assert n.to_cents(cents, "cents") == cents
    assert n.to_cents(float(cents), "cents") == cents if abs(cents) < 2**53 else True
    assert n.to_cents(str(cents), "cents") == cents
    assert n.to_cents(Decimal(cents), "cents") == cents


@given(st.integers(min_value=-(10**10), max_value=10**10))
def test_dollars_become_exact_cents(cents: int):
    dollars = Decimal(cents) / 100
    assert n.to_cents(dollars, "dollars") == cents
    assert n.to_cents(str(dollars), "dollars") == cents
    assert n.to_cents(float(dollars), "dollars") == cents  # float noise (0.1+0.2) never leaks in
    assert n.cents_to_decimal(cents) == dollars


@given(st.decimals(min_value=-(10**6), max_value=10**6, places=4, allow_nan=False))
def test_dollars_round_half_even_to_the_cent(amount: Decimal):
    cents = n.to_cents(amount, "dollars")
    assert abs(Decimal(cents) - amount * 100) <= Decimal("0.5")


@given(st.integers(min_value=-(10**6), max_value=10**6), st.integers(min_value=1, max_value=99))
def test_fractional_cents_are_refused_not_rounded(whole: int, tenth: int):
    with pytest.raises(ValueError, match="fraction of a cent"):
        n.to_cents(Decimal(whole) + Decimal(tenth) / 100, "cents")


def test_money_rejects_non_numbers_and_keeps_none():
    assert n.to_cents(None, "cents") is None and n.to_cents("  ", "dollars") is None
    for bad in ("12,50", "abc", True, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            n.to_cents(bad, "dollars")


# -- dates, times, time zones -----------------------------------------------------------------


@given(st.dates(min_value=dt.date(1901, 1, 1), max_value=dt.date(9998, 12, 31)))
def test_dates_normalise_from_any_source_shape(day: dt.date):
    iso = day.isoformat()
    assert n.normalise_date(day) == iso
    assert n.normalise_date(dt.datetime.combine(day, dt.time(13, 5))) == iso
    assert n.normalise_date(f"{iso} 00:00:00.000") == iso
    assert n.is_date(iso)


@pytest.mark.parametrize("sentinel", ["1900-01-01", "9999-12-31", dt.date(1899, 12, 30), "", "0", None])
def test_sentinel_dates_become_null(sentinel):
    assert n.normalise_date(sentinel) is None


@given(st.datetimes(min_value=dt.datetime(1901, 1, 1), max_value=dt.datetime(9998, 1, 1)), ZONES)
def test_naive_local_datetimes_keep_their_wall_time(moment: dt.datetime, zone: str):
    text = n.normalise_local_datetime(moment, ZoneInfo(zone))
    assert text == moment.replace(microsecond=0).isoformat()
    assert n.is_local_datetime(text)
    assert n.normalise_local_datetime(moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], ZoneInfo(zone)) == text


@given(
    st.datetimes(
        min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC)
    ),
    ZONES,
)
def test_aware_instants_become_practice_local_and_round_trip_to_utc(instant: dt.datetime, zone: str):
    local = n.normalise_local_datetime(instant, ZoneInfo(zone))
    back = n.local_to_utc(local, zone)
    # the wall time is unambiguous except in the hour clocks go back: then the first one is taken
    assert back == instant.replace(microsecond=0) or abs(
        back - instant.replace(microsecond=0)
    ) <= dt.timedelta(hours=1)
    assert back.tzinfo is not None


@given(st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2100, 1, 1)), ZONES)
def test_local_to_utc_is_monotonic_and_total(wall: dt.datetime, zone: str):
    a = n.local_to_utc(wall.replace(microsecond=0).isoformat(), zone)
    b = n.local_to_utc((wall.replace(microsecond=0) + dt.timedelta(hours=3)).isoformat(), zone)
    assert a < b


def test_dst_gap_and_overlap_in_denver():
    # 2026-03-08 02:30 does not exist in Denver: it means 03:30 MDT = 09:30 UTC
    assert n.local_to_utc("2026-03-08T02:30:00", "America/Denver") == dt.datetime(
        2026, 3, 8, 9, 30, tzinfo=dt.UTC
    )
    # 2026-11-01 01:30 happens twice: the first (MDT) is taken
    assert n.local_to_utc("2026-11-01T01:30:00", "America/Denver") == dt.datetime(
        2026, 11, 1, 7, 30, tzinfo=dt.UTC
    )


@given(
    st.dates(min_value=dt.date(1901, 1, 1), max_value=dt.date(9998, 1, 1)),
    st.integers(0, 23),
    st.sampled_from(range(0, 60, 5)),
)
def test_appointment_start_joins_split_date_hour_minute(day: dt.date, hour: int, minute: int):
    start = n.appointment_start(day.isoformat(), hour, minute)
    assert dt.datetime.fromisoformat(start) == dt.datetime.combine(day, dt.time(hour, minute))
    with pytest.raises(ValueError):
        n.appointment_start(day.isoformat(), hour + 24, minute)


# -- teeth and surfaces -----------------------------------------------------------------------


@given(st.integers(1, 32) | st.integers(51, 82))
def test_numeric_teeth_in_any_source_form(tooth: int):
    for form in (tooth, str(tooth), f" {tooth:02d} ", float(tooth)):
        assert n.normalise_tooth(form) == str(tooth)


@given(st.sampled_from(n.PRIMARY_TEETH), st.booleans())
def test_primary_teeth_and_their_supernumeraries(letter: str, lower: bool):
    assert n.normalise_tooth(letter.lower() if lower else letter) == letter
    assert n.normalise_tooth(f"{letter}S") == f"{letter}S"


@given(st.integers(33, 50) | st.integers(83, 10_000) | st.integers(-100, -1))
def test_teeth_outside_the_charts_are_refused(tooth: int):
    with pytest.raises(ValueError, match="tooth"):
        n.normalise_tooth(tooth)


@pytest.mark.parametrize("none", [None, 0, "0", "", "  "])
def test_no_tooth(none):
    assert n.normalise_tooth(none) is None


@given(st.lists(st.sampled_from("MODLF5BIVmodlf"), min_size=1, max_size=8))
def test_surface_string_and_flags_agree_both_ways(letters: list[str]):
    surface = n.normalise_surface("".join(letters))
    assert surface is not None and list(surface) == sorted(set(surface), key=n.SURFACE_ORDER.index)
    flags = n.flags_from_surface(surface)
    assert n.surface_from_flags(flags) == surface
    assert n.normalise_surface(surface) == surface  # idempotent


@given(
    st.text(min_size=1, max_size=5).filter(
        lambda t: any(c.upper() not in "MODLF5BIV" and not c.isspace() for c in t)
    )
)
def test_unknown_surface_letters_are_refused(text: str):
    with pytest.raises(ValueError):
        n.normalise_surface(text)


@given(st.text(max_size=40))
def test_text_is_trimmed_and_inner_line_breaks_kept(text: str):
    out = n.normalise_text(f"  {text}\r\n  ")
    if out is not None:
        assert out == out.strip(" \t\r\n\x00") and out in text
