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
