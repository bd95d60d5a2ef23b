"""The whole product on this machine: Azurite, the Dataverse + Graph emulator and the local host running
`function_app:app`, wired by configuration alone (the same settings name a real environment in Azure).

`LocalStack` starts the three; `drive_migration` then does what a practice and its operator do: upload
the agent's bundle with the SAS the API handed out, start, approve the map, approve the schema plan
(choosing a fallback owner when providers have no active user), approve the sample run's diff, and
wait for the end.
Used by `make demo`, the end-to-end tests and the benchmarks.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from agent.extract import extract
from agent.synth import synthesize
from agent.upload import upload_bundle
from devhost.testing import RunningHost, run_host
from devtools import azurite
from emulator.testing import RunningEmulator, run_emulator
from shared.dentrix.manifest import DEFAULT_PART_ROWS
from shared.identity import principal_header
from shared.runtime import Runtime
from shared.settings import Settings

OFFICE_MANAGER = "00000000-0000-0000-0000-0000000007ff"
OPERATOR = principal_header("practice-group-1", "operator-1", ["operator"])

FAST_EMULATOR: dict[str, Any] = {"time_scale": 300.0, "key_activation_seconds": 0.0}
"""Emulator settings for tests whose subject is not Dataverse's timing: emulated server costs at 1/300 of
real time, and alternate keys Active as soon as they are created (the schema build polls pending keys every
2 s, twice per build; the key wait itself is tested in tests/shared/dataverse and by the chaos run)."""


@dataclass
class LocalStack:
    storage: azurite.AzuriteProcess
    emulator: RunningEmulator
    host: RunningHost
    prefix: str

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call Bridgework's API as the signed-in operator; the response as it is (for tests of refusals)."""
        return self.host.http().request(method, f"/api{path}", headers={"x-ms-client-principal": OPERATOR}, **kwargs)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call Bridgework's API as the signed-in operator; raises on an error status."""
        response = self.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def runtime(self) -> Runtime:
        """The engine's runtime against this stack's storage and emulator, as the host's activities build it:
        for tests and benchmarks that call shared/pipeline directly or read the journal."""
        return emulator_runtime(self.storage.connection_string, self.prefix)


def emulator_runtime(storage_connection_string: str, table_prefix: str) -> Runtime:
    """The engine's runtime on this storage under `table_prefix`, with the emulator's Dataverse and Graph
    credentials: `LocalStack.runtime()`, and tests that start only Azurite and an emulator (no host)."""
    return Runtime.create(Settings(
        AzureWebJobsStorage=storage_connection_string, table_prefix=table_prefix,
        dataverse_auth_mode="factory", dataverse_credential_factory="emulator.credentials:EmulatorTokenCredential"))


@contextlib.contextmanager
def local_stack(work_dir: Path, *, emulator_config: dict[str, Any] | None = None,
                storage: azurite.AzuriteProcess | None = None, clock: str = "real",
                host_env: dict[str, str] | None = None) -> Iterator[LocalStack]:
    """Start Azurite (unless given), the emulator and the local host; stop them all on exit."""
    work_dir.mkdir(parents=True, exist_ok=True)
    own_storage = storage is None
    storage = storage or azurite.start(log_file=work_dir / "azurite.log")
    prefix = "bw" + uuid.uuid4().hex[:8]
    config = {"time_scale": 60.0, "key_activation_seconds": 2.0, **(emulator_config or {})}
    try:
        with run_emulator(config) as emulator:
            env = {
                "BRIDGEWORK_TABLE_PREFIX": prefix,
                "BRIDGEWORK_DATAVERSE_AUTH_MODE": "factory",
                "BRIDGEWORK_DATAVERSE_CREDENTIAL_FACTORY": "emulator.credentials:EmulatorTokenCredential",
                **(host_env or {}),
            }
            with run_host("function_app:app", storage.connection_string, prefix, clock=clock, env=env,
                          log_path=work_dir / "host.log") as host:
                yield LocalStack(storage, emulator, host, prefix)
    finally:
        if own_storage:
            storage.stop()


def users_for_practice(database: Path) -> list[dict[str, Any]]:
    """Dynamics users for a synthetic practice's providers, as its IT would have set them up: most
    providers have an active user with their e-mail, one has a disabled user (a former hygienist),
    one has none at all; both of those fall to the fallback owner chosen at plan review."""
    from agent.synth import iter_source_rows

    emails = sorted({str(row["email"]).strip().lower() for row in iter_source_rows(database, "provider")
                     if row.get("email")})
    users = []
    for number, email in enumerate(emails[:-1]):  # the last provider has no Dynamics user
        users.append({"systemuserid": f"00000000-0000-0000-0000-{number + 0x500:012x}",
                      "fullname": f"Practice user {number + 1}", "internalemailaddress": email,
                      "isdisabled": number == 0})
    users.append({"systemuserid": "00000000-0000-0000-0000-0000000007ff", "fullname": "Office manager",
                  "internalemailaddress": "office.manager@practice.example"})
    return users


def fresh_environment(stack: LocalStack, practice: Path) -> LocalStack:
    """Give a running stack a new, empty Dynamics environment and SharePoint site whose users are this
    practice's (as `practice_stack` starts one), so one stack serves several practices one after another.
    What the host keeps (migrations, journal, artifacts) stays: each migration has its own id."""
    stack.emulator.configure(users=users_for_practice(practice))
    stack.emulator.reset()
    return stack


def synthetic_practice(work_dir: Path, patients: int, seed: int, *, part_rows: int = DEFAULT_PART_ROWS
                       ) -> tuple[Path, Path]:
    """Synthesise a practice in `work_dir` and extract its bundle: (practice database, bundle folder)."""
    practice = work_dir / "practice.db"
    synth = synthesize(practice, patients, seed)
    bundle = extract(str(practice), work_dir / "bundle", files_root=synth.files_root, part_rows=part_rows)
    return practice, bundle.bundle_dir


def practice_stack(work_dir: Path, practice: Path, storage: azurite.AzuriteProcess | None = None,
                   emulator_config: dict[str, Any] | None = None,
                   **options: Any) -> contextlib.AbstractContextManager[LocalStack]:
    """The local stack with the emulator's Dynamics users set up for this practice's providers
    (`emulator_config`, e.g. FAST_EMULATOR, adds to that)."""
    return local_stack(work_dir / "stack", storage=storage,
                       emulator_config={**(emulator_config or {}), "users": users_for_practice(practice)}, **options)


def target_for(stack: LocalStack, **overrides: Any) -> dict[str, Any]:
    """The migration's target: the emulator's environment and SharePoint site."""
    site = stack.emulator.config.sharepoint
    return {
        "environment_url": stack.emulator.base_url,
        "tenant_id": "customer-tenant",
        "graph_url": stack.emulator.graph_url,
        "sharepoint_site": f"{site.hostname}:/{site.site_path}",
        "licence": "sales_professional",
        "application_users": ["app-1"],
        **overrides,
    }


def wait_for_stage(stack: LocalStack, migration_id: str, stages: set[str], timeout: float = 300,
                   on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Poll the API until the orchestration's custom status reaches one of `stages` (or it ends)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            view = stack.api("GET", f"/migrations/{migration_id}")
        except httpx.TransportError:  # the host is restarting (a kill test): keep polling
            time.sleep(0.2)
            continue
        status = view.get("custom_status") or {}
        if on_progress and status != last:
            on_progress(view)
            last = status
        if status.get("stage") in stages or view.get("runtime_status") in ("Completed", "Failed", "Terminated"):
            return view
        time.sleep(0.2)
    raise TimeoutError(f"migration {migration_id} did not reach {sorted(stages)} in {timeout:.0f} s")


class QuietProgress:
    """Upload progress for a script that reports on its own."""

    def advance(self) -> None:
        pass

    def close(self) -> None:
        pass


def create_and_start(stack: LocalStack, bundle_dir: Path, *, name: str = "practice",
                     target: dict[str, Any] | None = None, **options: Any) -> tuple[str, str]:
    """Create a migration, upload the bundle with the SAS the API returned, and start it, as a user
    would. Returns (migration id, bundle id). `options` go into the create request."""
    created = stack.api("POST", "/migrations", json={"name": name, "target": target or target_for(stack), **options})
    migration_id = created["migration"]["migration_id"]
    upload = upload_bundle(bundle_dir, created["upload"]["upload_url"], progress=QuietProgress())
    bundle_id = upload.prefix.rstrip("/").split("/")[-1]
    stack.api("POST", f"/migrations/{migration_id}/start", json={"bundle_id": bundle_id})
    return migration_id, bundle_id


def approve_until_sample(stack: LocalStack, migration_id: str, timeout: float = 600,
                         on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """From a started migration: approve the map and the schema plan as an operator would, and wait until
    the sample waits for its decision (or the run is done, with no sample stage). Returns {"view", "plan",
    "stopped"}; `stopped` when the run cannot go on by approvals alone (a refused plan, a failure)."""
    view = wait_for_stage(stack, migration_id, {"awaiting_mapping_approval"}, timeout, on_progress)
    if view.get("runtime_status") != "Running":
        return {"view": view, "plan": None, "stopped": True}
    stack.api("POST", f"/migrations/{migration_id}/mapping/approve")
    view = wait_for_stage(stack, migration_id, {"awaiting_schema_approval"}, timeout, on_progress)
    plan = stack.api("GET", f"/migrations/{migration_id}/schema-plan")
    if plan["report"]["problems"]:
        codes = {p["code"] for p in plan["report"]["problems"]}
        if codes != {"owners_unresolved"} or not plan["report"]["fallback_owner_choices"]:
            return {"view": view, "plan": plan, "stopped": True}
        # As an operator would: a person (the office manager if there is one, never the application
        # user the migration runs as) stands in for providers without an active user.
        choices = plan["report"]["fallback_owner_choices"]
        fallback = OFFICE_MANAGER if OFFICE_MANAGER in choices else choices[-1]
        stack.api("POST", f"/migrations/{migration_id}/schema-plan/approve", json={"fallback_owner": fallback})
        deadline = time.monotonic() + timeout
        while plan["report"]["fallback_owner"] != fallback:
            if time.monotonic() > deadline:
                raise TimeoutError(f"migration {migration_id} was not planned again with the fallback owner")
            time.sleep(0.2)
            plan = stack.api("GET", f"/migrations/{migration_id}/schema-plan")
        wait_for_stage(stack, migration_id, {"awaiting_schema_approval"}, timeout, on_progress)
    stack.api("POST", f"/migrations/{migration_id}/schema-plan/approve", json={})
    view = wait_for_stage(stack, migration_id, {"awaiting_sample_approval", "done"}, timeout, on_progress)
    return {"view": view, "plan": plan, "stopped": view.get("runtime_status") != "Running"
            and (view.get("custom_status") or {}).get("stage") != "done"}


def drive_migration(stack: LocalStack, bundle_dir: Path, *, name: str = "practice",
                    target: dict[str, Any] | None = None, timeout: float = 600,
                    on_progress: Callable[[dict[str, Any]], None] | None = None,
                    sample_patients: int | None = None) -> dict[str, Any]:
    """Run one migration through the API as a user would; returns the final view and report, and the
    sample run's diff summary under `sample` (approved as it comes: counts and match rate).
    `sample_patients` goes into the create request (None: the API's default; 0: no sample stage)."""
    options = {} if sample_patients is None else {"sample_patients": sample_patients}
    migration_id, bundle_id = create_and_start(stack, bundle_dir, name=name, target=target, **options)
    reviewed = approve_until_sample(stack, migration_id, timeout, on_progress)
    view, plan = reviewed["view"], reviewed["plan"]
    if reviewed["stopped"]:
        return {"migration_id": migration_id, "view": view, **({"plan": plan} if plan else {})}
    sample = (view.get("custom_status") or {}).get("sample")
    if (view.get("custom_status") or {}).get("stage") == "awaiting_sample_approval":
        stack.api("POST", f"/migrations/{migration_id}/sample/approve")
    view = wait_for_stage(stack, migration_id, {"done"}, timeout, on_progress)
    result: dict[str, Any] = {"migration_id": migration_id, "view": view, "plan": plan,
                              "bundle_id": bundle_id, "sample": sample}
    if view.get("runtime_status") == "Completed":
        result["report"] = stack.api("GET", f"/migrations/{migration_id}/report")
    return result
