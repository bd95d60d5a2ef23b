"""Names of the orchestrators, activities and events, in one place, so calls and registrations agree."""

from __future__ import annotations

MIGRATION_ORCHESTRATOR = "migration_orchestrator"
LOAD_TABLE_ORCHESTRATOR = "load_table_orchestrator"

RECORD_PROGRESS = "record_progress"
DISCOVER = "discover"
PROPOSE_MAPPING = "propose_mapping"
PLAN_SCHEMA = "plan_schema"
BUILD_SCHEMA = "build_schema"
PLAN_LOAD = "plan_load"
LOAD_BATCH = "load_batch"
BIND_DEFERRED = "bind_deferred"
COPY_ATTACHMENTS = "copy_attachments"
FINISH_MIGRATION = "finish_migration"

MAPPING_APPROVED_EVENT = "MappingApproved"
SCHEMA_APPROVED_EVENT = "SchemaApproved"

ROLLBACK_ORCHESTRATOR = "rollback_orchestrator"
PLAN_ROLLBACK = "plan_rollback"
ROLLBACK_TABLE = "rollback_table"
VERIFY_ROLLBACK = "verify_rollback"
SAMPLE_DIFF_ORCHESTRATOR = "sample_diff_orchestrator"
SAMPLE_DIFF = "sample_diff"

# The sample run before the full run (shared/pipeline/sample_run.py).
REOPEN_AFTER_REJECTION = "reopen_after_rejection"
PREPARE_SAMPLE = "prepare_sample"
SAMPLE_RUN_DIFF = "sample_run_diff"
SAMPLE_APPROVED_EVENT = "SampleApproved"
SAMPLE_REJECTED_EVENT = "SampleRejected"

# cutover, delta pickups and go-live reconciliation (functions/cutover.py)
CUTOVER_ORCHESTRATOR = "cutover_orchestrator"
RECONCILE_ORCHESTRATOR = "reconcile_orchestrator"
CUTOVER_PICKUP_TIMER = "cutover_pickup_timer"
CUTOVER_WINDOW = "cutover_window"
PENDING_DELTAS = "pending_deltas"
PLAN_DELTA = "plan_delta"
DELTA_LOAD_BATCH = "delta_load_batch"
DELTA_BIND_DEFERRED = "delta_bind_deferred"
APPLY_DELETIONS = "apply_deletions"
COMMIT_DELTA = "commit_delta"
CLOSE_CUTOVER = "close_cutover"
RECONCILE = "reconcile"
DELTAS_ARRIVED_EVENT = "DeltasArrived"
GO_LIVE_EVENT = "GoLive"
REMOVE_SCHEMA = "remove_schema"
