"""The load estimate: the emulator's throughput bound, applied to real request mixes and several users."""

from __future__ import annotations

import math

import pytest

from emulator.config import Costs, EmulatorConfig, Limits
from emulator.throttle import upper_bound_records_per_second
from shared.discovery.estimate import EstimateSettings, WriteLoad, estimate_load, fits_destination


@pytest.mark.parametrize(
    "per_record,chunk,latency", [(0.01, 1000, 0.02), (0.001, 100, 0.02), (0.0001, 10, 0.5), (0.002, 1, 0.01)]
)
def test_full_chunks_run_at_exactly_the_emulators_upper_bound(
    per_record: float, chunk: int, latency: float
) -> None:
    settings = EstimateSettings(
        per_record_seconds=per_record, records_per_request=chunk, network_latency_seconds=latency
    )
    config = EmulatorConfig(
        limits=Limits(),
        costs=Costs(
            per_request_seconds=settings.per_request_seconds,
            per_record_seconds=per_record,
            network_latency_seconds=latency,
        ),
    )
    records = chunk * 600
    est = estimate_load([WriteLoad(name="contact", records=records)], settings)
    bound = upper_bound_records_per_second(config, chunk)
    assert est.records_per_second == pytest.approx(bound, rel=1e-3)
    assert est.seconds == pytest.approx(records / bound, rel=1e-3)


def test_each_limit_can_be_the_one_that_binds() -> None:
    load = [WriteLoad(name="t", records=100_000)]
    assert estimate_load(load, EstimateSettings()).bound == "execution_time"
    assert (
        estimate_load(
            load, EstimateSettings(records_per_request=1, per_record_seconds=0.0001, per_request_seconds=0.0)
        ).bound
        == "requests"
    )
    assert (
        estimate_load(load, EstimateSettings(concurrency_per_user=1, network_latency_seconds=5)).bound
        == "concurrency"
    )


def test_more_application_users_divide_the_time() -> None:
    load = [WriteLoad(name="a", records=50_000), WriteLoad(name="b", records=1_234)]
    one = estimate_load(load, EstimateSettings(app_users=1))
    four = estimate_load(load, EstimateSettings(app_users=4))
    assert four.seconds == pytest.approx(one.seconds / 4, rel=1e-3)
    assert (four.records, four.requests) == (one.records, one.requests)


def test_partial_chunks_cost_a_request_each() -> None:
    settings = EstimateSettings(records_per_request=1000)
    est = estimate_load(
        [WriteLoad(name="a", records=1001), WriteLoad(name="b", records=1), WriteLoad(name="c", records=0)],
        settings,
    )
    assert (est.records, est.requests) == (1002, 3)
    assert est.server_seconds == pytest.approx(3 * 0.05 + 1002 * 0.01)


def test_an_empty_load_takes_no_time() -> None:
    est = estimate_load([], EstimateSettings())
    assert (est.seconds, est.requests, est.bound) == (0.0, 0, "none")


def test_note_attachments_measure_the_base64_size_and_sharepoint_the_raw_size() -> None:
    notes = EstimateSettings(attachment_destination="notes", note_max_upload_bytes=4000)
    assert fits_destination(3000, notes)  # base64 4000
    assert not fits_destination(3001, notes)  # base64 4004
    sharepoint = EstimateSettings(sharepoint_max_file_bytes=3001)
    assert fits_destination(3001, sharepoint) and not fits_destination(3002, sharepoint)
    assert 4 * math.ceil(3001 / 3) > 4000


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        EstimateSettings(app_users=0)
    with pytest.raises(ValueError):
        EstimateSettings(per_record_seconds=0)
