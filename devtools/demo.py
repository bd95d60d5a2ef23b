"""`make demo`: the main job, end to end on this machine.

Today (the walking skeleton of the foundation issue) it starts Azurite and the local host running
`function_app:app`, creates a migration through the HTTP API as a signed-in user would, follows it
to completion and prints what happened. As the migration stages land, this grows into the whole
migration of a synthetic practice (synthesise, extract, upload, approve, load, verify).
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

from devhost.testing import run_host
from devtools import azurite
from shared.identity import principal_header

DEMO_DIR = Path(__file__).resolve().parent.parent / ".demo"


def main() -> int:
    DEMO_DIR.mkdir(exist_ok=True)
    started = time.monotonic()
    storage = azurite.start(log_file=DEMO_DIR / "azurite.log")
    print(f"azurite     running (pid {storage.pid})")
    hub = "demo" + uuid.uuid4().hex[:8]
    principal = principal_header("demo-tenant", "demo-user", ["operator"])
    try:
        with run_host("function_app:app", storage.connection_string, hub,
                      env={"DEVHOST_PRINCIPAL": principal}, log_path=DEMO_DIR / "host.log") as host:
            print(f"local host  {host.url} (task hub {hub}, log {DEMO_DIR / 'host.log'})")
            created = host.http().post("/api/migrations", json={"name": "demo practice"})
            created.raise_for_status()
            migration = created.json()
            print(f"migration   {migration['migration_id']} created, orchestration started")
            status = host.wait_for(migration["instance_id"], timeout=60)
            view = host.http().get(f"/api/migrations/{migration['migration_id']}").json()
            history = host.status(migration["instance_id"], history=True)["historyEvents"]
    finally:
        storage.stop()
    print(f"orchestration {status['runtimeStatus']} after {len(history)} history events")
    for progress in view["progress"]:
        print(f"progress    stage {progress['stage']}: {progress['status']}")
    print(f"done in {time.monotonic() - started:.1f} s (walking skeleton: the migration stages are not built yet)")
    return 0 if status["runtimeStatus"] == "Completed" and view["progress"] else 1


if __name__ == "__main__":
    sys.exit(main())
