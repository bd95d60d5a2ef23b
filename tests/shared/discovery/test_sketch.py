"""Bounded counters: exact below the cap, flat above it; key sets answer membership exactly."""

from __future__ import annotations

from shared.discovery.sketch import DistinctCounter, IdSample, KeySet


def test_distinct_counter_is_exact_up_to_the_cap_then_says_at_least() -> None:
    c = DistinctCounter(cap=100)
    for i in range(100):
        c.add(str(i))
        c.add(str(i))
    assert (c.count, c.exact) == (100, True)
    c.add("another")
    assert (c.count, c.exact) == (100, False)
    assert len(c._seen) == 0  # memory released once saturated


def test_distinct_counter_tells_types_apart() -> None:
    c = DistinctCounter(cap=10)
    for v in (1, True, "1", 1.5, {"a": [1]}, {"a": [1]}):
        c.add(v)
    assert c.count == 5


def test_key_set_membership() -> None:
    keys = KeySet(str(i) for i in range(0, 10_000, 3))
    assert len(keys) == 3334
    assert "9999" in keys and "3" in keys and "0" in keys
    assert "1" not in keys and "10000" not in keys and 3 not in keys


def test_id_sample_keeps_the_first_ids_and_an_exact_count() -> None:
    s = IdSample(cap=2)
    for i in "abc":
        s.add(i)
    assert (s.count, s.ids, s.truncated) == (3, ["a", "b"], True)
