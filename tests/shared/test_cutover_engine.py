"""The cutover engine's decisions without storage: which uploaded deltas apply (the base chain), why the
others wait, and what each deletion policy does to one record."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.pipeline import cutover
from shared.pipeline.cutover import DeltaSeen
from shared.state.cutovers import AppliedDelta, CutoverState
from shared.state.journal import JournalEntry
from shared.state.migrations import Migration, Target

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _migration(applied: list[str] = (), status: str = "open") -> Migration:
    state = CutoverState(opened_at=AT, closes_at=AT + timedelta(hours=48), hours=48, status=status,
                         last_applied_bundle_id=applied[-1] if applied else "full",
                         applied=[AppliedDelta(bundle_id=b, base_bundle_id="x", watermark="w", applied_at=AT,
                                               report="r") for b in applied])
    return Migration(migration_id="m-0000000000000001", tenant_id="t", name="n", created_at=AT,
                     target=Target(environment_url="https://org.example"), bundle_id="full", cutover=state)


def _seen(monkeypatch: pytest.MonkeyPatch, *deltas: tuple[str, str]) -> None:
    found = [DeltaSeen(bundle_id=b, base_bundle_id=base, watermark=f"2026-11-30T{n:02d}") for n, (b, base)
             in enumerate(deltas)]
    monkeypatch.setattr(cutover, "uploaded_deltas", lambda rt, m: found)


def test_deltas_apply_in_the_order_of_their_base_chain_whatever_their_upload_order(monkeypatch):
    _seen(monkeypatch, ("d3", "d2"), ("d1", "full"), ("d2", "d1"))
    pending = cutover.pending_deltas(None, _migration())  # type: ignore[arg-type]
    assert pending.ready == ["d1", "d2", "d3"] and pending.waiting == [] and pending.status == "applying"


def test_a_delta_whose_base_has_not_arrived_waits_and_says_why(monkeypatch):
    _seen(monkeypatch, ("d1", "full"), ("d3", "d2"))
    pending = cutover.pending_deltas(None, _migration())  # type: ignore[arg-type]
    assert pending.ready == ["d1"]
    assert [(w.bundle_id, w.reason) for w in pending.waiting] == [("d3", "waiting_for_base")]


def test_applied_deltas_are_never_offered_again_and_stale_or_forked_ones_are_named(monkeypatch):
    _seen(monkeypatch, ("d1", "full"), ("old", "full"), ("d2", "d1"), ("fork", "d1"))
    pending = cutover.pending_deltas(None, _migration(["d1"]))  # type: ignore[arg-type]
    assert pending.ready == ["d2"]
    assert sorted((w.bundle_id, w.reason) for w in pending.waiting) == [("fork", "forked"), ("old", "base_superseded")]


def test_after_the_window_closed_every_unapplied_delta_is_refused(monkeypatch):
    _seen(monkeypatch, ("d1", "full"), ("d2", "d1"))
    pending = cutover.pending_deltas(None, _migration(["d1"], status="closed"))  # type: ignore[arg-type]
    assert pending.ready == [] and pending.status == "cutover_closed"
    assert [(r.bundle_id, r.reason) for r in pending.refused] == [("d2", "cutover_closed")]


class FakeClient:
    def __init__(self, exists: bool = True) -> None:
        self.exists = exists
        self.calls: list[tuple[str, Any, Any]] = []

    async def delete(self, entity_set: str, key: Any) -> bool:
        self.calls.append(("delete", entity_set, key))
        return self.exists

    async def update(self, entity_set: str, key: Any, body: Any) -> None:
        self.calls.append(("update", entity_set, body))


class Target_:
    def __init__(self, logical_name: str) -> None:
        self.logical_name, self.entity_set, self.key_column = logical_name, f"{logical_name}s", "bw_sourceid"


def _entry(origin: str = "created", action: str = "created") -> JournalEntry:
    return JournalEntry(migration_id="m", table="appointment", source_id="A-1", target_table="appointment",
                        target_id="id-1", action=action, origin=origin, batch="b", at=AT)  # type: ignore[arg-type]


@pytest.mark.parametrize(("policy", "table", "entry", "outcome", "calls"), [
    ("report", "appointment", _entry(), "reported", []),
    ("delete", "appointment", _entry(), "deleted", [("delete", "appointments", "id-1")]),
    ("delete", "contact", _entry(origin="preexisting", action="updated"), "kept_preexisting", []),
    ("delete", "appointment", _entry(action="deleted"), "already_gone", []),
    ("deactivate", "appointment", _entry(), "deactivated", [("update", "appointments", {"statecode": 2, "statuscode": 4})]),
    ("deactivate", "bw_recalltask", _entry(), "deactivated", [("update", "bw_recalltasks", {"statecode": 1, "statuscode": 2})]),
    ("deactivate", "annotation", _entry(), "no_state", []),
    ("delete", "appointment", None, "not_migrated", []),
    ("delete", "appointment", _entry(action="quarantined"), "not_migrated", []),
])
def test_each_deletion_policy_does_exactly_its_part(policy, table, entry, outcome, calls):
    client = FakeClient()
    assert asyncio.run(cutover._delete_one(client, Target_(table), policy, entry, "A-1")) == outcome
    assert client.calls == calls


def test_a_record_already_deleted_in_dynamics_counts_as_already_gone():
    assert asyncio.run(cutover._delete_one(FakeClient(exists=False), Target_("appointment"), "delete", _entry(),
                                           "A-1")) == "already_gone"
