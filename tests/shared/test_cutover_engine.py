"""The cutover engine's decisions without storage: which uploaded deltas apply (the base chain), why the
others wait, and what each deletion policy does to one record."""

from __future__ import annotations

import asyncio
import dataclasses
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


# -- update maps: a deleted row clears the columns its map wrote, never the record -------------------------

class RejectingClient(FakeClient):
    async def update(self, entity_set: str, key: Any, body: Any) -> None:
        from shared.errors import DataverseRecordRejected

        raise DataverseRecordRejected("gone", status=404)


def _insurance_entry(action: str = "updated", origin: str = "none", code: str | None = None,
                     batch: str = "full:patient_insurance_primary/0") -> JournalEntry:
    return JournalEntry(migration_id="m", table="patient_insurance_primary", source_id="P-5", target_table="contact",
                        target_id="c-5", action=action, origin=origin, batch=batch, at=AT, code=code)  # type: ignore[arg-type]


def _primary():
    from shared.mapping.spec import default_mapping

    return default_mapping().table("patient_insurance_primary")


def test_clearing_an_update_map_sets_exactly_its_columns_and_lookups_to_null():
    payload = cutover.clearing_payload(_primary())
    assert payload["bw_primarysubscriberid"] is None and payload["bw_PrimaryCarrierId@odata.bind"] is None
    assert set(payload) == {f.target for f in _primary().fields} | {f"{lk.nav}@odata.bind" for lk in _primary().lookups}
    assert not any(column.startswith("bw_secondary") or column in ("statecode", "firstname") for column in payload)


@pytest.mark.parametrize(("policy", "entry", "outcome", "writes"), [
    ("report", _insurance_entry(), "reported", False),
    ("delete", _insurance_entry(), "cleared", True),  # never a delete of the contact: another map's record
    ("deactivate", _insurance_entry(), "cleared", True),  # nor its deactivation
    ("deactivate", _insurance_entry(origin="preexisting"), "cleared", True),  # rollback restores its image
    ("delete", _insurance_entry(code=cutover.CLEARED, batch="d1:deletions"), "cleared", False),  # a retry
    ("delete", _insurance_entry(code=cutover.CLEARED, batch="d0:deletions"), "already_cleared", False),
    ("delete", _insurance_entry(action="quarantined"), "not_migrated", False),
    ("delete", None, "not_migrated", False),
])
def test_each_policy_on_an_update_map_row(policy, entry, outcome, writes):
    client = FakeClient()
    got = asyncio.run(cutover._clear_one(client, Target_("contact"), _primary(), policy, entry, "P-5", "d1:deletions"))
    assert got == outcome
    assert client.calls == ([("update", "contacts", cutover.clearing_payload(_primary()))] if writes else [])
    assert all(call[0] != "delete" for call in client.calls)


def test_clearing_a_record_that_is_gone_counts_as_already_gone():
    assert asyncio.run(cutover._clear_one(RejectingClient(), Target_("contact"), _primary(), "delete",
                                          _insurance_entry(), "P-5", "d1:deletions")) == "already_gone"


def test_a_repeat_of_a_deltas_deletions_reports_what_it_did_and_writes_nothing():
    done = dataclasses.replace(_entry(action="deleted"), batch="d1:deletions", code="source_deleted:deleted")
    client = FakeClient()
    assert asyncio.run(cutover._delete_one(client, Target_("appointment"), "delete", done, "A-1", "d1:deletions")) \
        == "deleted" and client.calls == []
    gone = dataclasses.replace(done, code="source_deleted:deactivated", action="updated")
    assert asyncio.run(cutover._delete_one(client, Target_("appointment"), "deactivate", gone, "A-1",
                                           "d1:deletions")) == "deactivated" and client.calls == []


class Rows:
    def __init__(self, rows: dict[str, dict[str, Any]]) -> None:
        self._rows = rows

    def rows(self, table: str) -> dict[str, dict[str, Any]]:
        return self._rows


def test_deleted_update_map_rows_are_grouped_by_the_record_they_wrote_and_remaining_rows_found():
    from shared.mapping.rows import make_context
    from shared.mapping.spec import default_mapping

    spec = default_mapping()
    guardian = spec.table("guardian")
    ctx = make_context(spec, "America/Denver")
    link = {"patient_id": "7", "guardian_id": "3", "relationship": 1, "is_responsible_party": True}
    before = Rows({"g1": {**link, "guardian_link_id": "g1"}, "g2": {**link, "guardian_link_id": "g2", "guardian_id": "4"},
                   "g3": {**link, "guardian_link_id": "g3", "patient_id": "8"}})
    after = Rows({"g2": before.rows("")["g2"]})
    found = cutover._update_map_records(guardian, ["g1", "g3", "g9"], before, after, ctx)
    assert found.deleted == {"P-7": ["g1"], "P-8": ["g3"]}  # g9: not in the source before (never migrated)
    assert found.remaining == {"P-7": ["g2"]}  # P-7 keeps a guardian: written again, not cleared

    primary = spec.table("patient_insurance_primary")
    coverage = {"patient_id": "5", "insured_id": "i1", "relationship_code": 1}
    before = Rows({"5|1": {**coverage, "pat_ins_id": "5|1", "rank": 1}, "5|2": {**coverage, "pat_ins_id": "5|2", "rank": 2}})
    found = cutover._update_map_records(primary, ["5|2"], before, Rows({}), ctx)
    assert found.deleted == {} and found.remaining == {}  # the secondary row is the secondary map's
    found = cutover._update_map_records(primary, ["5|1"], before, Rows({"5|2": before.rows("")["5|2"]}), ctx)
    assert found.deleted == {"P-5": ["5|1"]} and found.remaining == {}
