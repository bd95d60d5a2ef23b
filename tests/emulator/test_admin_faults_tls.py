"""§11 test endpoints (reset, snapshot/restore, dump, counters), fault injection (5xx, dropped connections),
persistence across a killed process, and HTTPS with the generated certificate."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from emulator.config import EmulatorConfig
from emulator.testing import RunningEmulator, run_emulator
from tests.emulator.helpers import add_source_key, entity_id, ok


def test_dump_is_deterministic_and_snapshot_restore_round_trips(emu: RunningEmulator, api: httpx.Client) -> None:
    assert emu.dump() == emu.dump()
    add_source_key(api, "contact")
    ok(api.patch("contacts(bw_sourceid='P-1')", json={"lastname": "A"}), 204)
    snap = emu.snapshot()
    before = emu.dump()
    ok(api.patch("contacts(bw_sourceid='P-1')", json={"lastname": "B"}), 204)
    ok(api.patch("contacts(bw_sourceid='P-2')", json={"lastname": "C"}), 204)
    assert emu.dump() != before
    emu.restore(snap)
    assert emu.dump() == before
    # key indexes are rebuilt: the restored row is still found by its key, the dropped one is gone
    assert api.get("contacts(bw_sourceid='P-1')").json()["lastname"] == "A"
    assert api.get("contacts(bw_sourceid='P-2')").status_code == 404
    json.dumps(emu.dump())  # plain JSON all the way down
    emu.reset()
    assert emu.rows("contact") == {}
    assert api.get("EntityDefinitions(LogicalName='contact')/Keys").json()["value"] == []


def test_same_requests_on_a_fresh_environment_give_the_same_dump(emu: RunningEmulator, api: httpx.Client) -> None:
    def scenario() -> dict:
        emu.reset()
        ok(api.post("contacts", json={"lastname": "A"}), 204)
        ok(api.post("accounts", json={"name": "B"}), 204)
        state = emu.dump()
        for table in state["rows"].values():  # wall-clock stamps differ between runs; everything else must not
            for row in table.values():
                row.pop("createdon", None)
                row.pop("modifiedon", None)
        return state

    assert scenario() == scenario()


def test_counters_per_user(emu: RunningEmulator) -> None:
    for user, n in (("app-1", 2), ("app-2", 1)):
        for _ in range(n):
            httpx.get(emu.api_url + "WhoAmI", headers=emu.headers_for(user))
    all_users = emu.counters()
    assert all_users["app-1"]["requests"] == 2 and all_users["app-2"]["requests"] == 1
    emu.reset_counters()
    assert emu.counters("app-1")["requests"] == 0


def test_injected_5xx_every_nth_request(emu: RunningEmulator, api: httpx.Client) -> None:
    emu.configure(faults=[{"kind": "status", "status": 503, "every": 2, "times": 2, "retry_after_seconds": 1}])
    codes = [api.get("WhoAmI").status_code for _ in range(6)]
    assert codes == [200, 503, 200, 503, 200, 200]


def test_dropped_connection_before_and_after_the_write(emu: RunningEmulator, api: httpx.Client) -> None:
    emu.configure(faults=[{"kind": "drop_before", "methods": ["POST"], "times": 1}])
    with pytest.raises(httpx.TransportError):
        api.post("contacts", json={"lastname": "lost"})
    assert emu.rows("contact") == {}
    emu.configure(faults=[{"kind": "drop_after", "methods": ["POST"], "times": 1}])
    with pytest.raises(httpx.TransportError):
        api.post("contacts", json={"lastname": "written"})
    assert [r["lastname"] for r in emu.rows("contact").values()] == ["written"]
    ok(api.post("contacts", json={"lastname": "next"}), 204)


def test_state_survives_kill_and_restart_of_the_process(tmp_path: Path) -> None:
    cfg = EmulatorConfig(time_scale=1000.0, state_file=str(tmp_path / "state.json"))
    with run_emulator(cfg, subprocess=True) as emu:
        c = httpx.Client(base_url=emu.api_url, headers=emu.headers_for("app-1"), timeout=30)
        add_source_key(c, "contact")
        ok(c.patch("contacts(bw_sourceid='P-1')", json={"lastname": "A"}), 204)
        deadline = time.monotonic() + 10
        while "P-1" not in (Path(cfg.state_file).read_text() if Path(cfg.state_file).exists() else ""):
            assert time.monotonic() < deadline, "state was never saved"
            time.sleep(0.1)
        emu.kill()
        with pytest.raises(httpx.TransportError):
            c.get("WhoAmI")
        emu.restart()
        c = httpx.Client(base_url=emu.api_url, headers=emu.headers_for("app-1"), timeout=30)
        assert c.get("contacts(bw_sourceid='P-1')").json()["lastname"] == "A"
        ok(c.patch("contacts(bw_sourceid='P-2')", json={"lastname": "B"}), 204)
        emu.stop()  # a clean stop saves at once
        emu.restart()
        c = httpx.Client(base_url=emu.api_url, headers=emu.headers_for("app-1"), timeout=30)
        assert len(c.get("contacts").json()["value"]) == 2


def test_tls_serves_https_with_the_generated_certificate() -> None:
    with run_emulator({"time_scale": 1000.0}, tls=True) as emu:
        assert emu.base_url.startswith("https://127.0.0.1:")
        r = httpx.get(emu.api_url + "WhoAmI", headers=emu.headers_for("app-1"), verify=emu.verify)
        assert r.status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(emu.api_url + "WhoAmI", headers=emu.headers_for("app-1"))  # untrusted without the CA file
        cid = entity_id(ok(httpx.post(emu.api_url + "contacts", json={"lastname": "T"},
                                      headers=emu.headers_for("app-1"), verify=emu.verify), 204))
        assert httpx.get(emu.api_url + f"contacts({cid})", headers=emu.headers_for("app-1"),
                         verify=emu.verify).json()["lastname"] == "T"


def test_injected_customization_lock_and_custom_codes(emu: RunningEmulator, api: httpx.Client) -> None:
    emu.configure(faults=[
        {"kind": "customization_lock", "path_prefix": "/api/data/v9.2/EntityDefinitions", "methods": ["POST"],
         "times": 1},
        {"kind": "status", "status": 400, "code": "0x80060891", "message": "Metadata cache not ready.",
         "path_prefix": "/api/data/v9.2/contacts", "times": 1}])
    r = api.post("EntityDefinitions(LogicalName='contact')/Attributes", json={})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80071151"
    r = api.get("contacts")
    assert r.json()["error"] == {"code": "0x80060891", "message": "Metadata cache not ready."}
    ok(api.get("contacts"), 200)
