"""Where a Dentrix field becomes a Dataverse column: the field map as data, its checks and approval,
the transforms, the proposer, the load order and the schema plan."""

from __future__ import annotations

from shared.mapping.graph import DeferredLookup, LoadPlan, plan_loads
from shared.mapping.proposer import (
    ColumnFacts,
    DiscoveryFacts,
    FieldProposal,
    Proposal,
    TableFacts,
    max_lengths_for,
    propose,
    source_contract_for,
)
from shared.mapping.rows import (
    final_state,
    make_context,
    record_ref,
    reference_tables,
    split_deferred,
    transform_row,
)
from shared.mapping.schema_plan import (
    ProviderRef,
    SchemaPlan,
    SystemUserRef,
    build_schema_spec,
    plan_schema,
    providers_from_rows,
)
from shared.mapping.spec import (
    ApprovedMapping,
    FieldError,
    FieldMap,
    MappingSpec,
    TableMap,
    approve,
    check_mapping,
    default_mapping,
    load_approved,
    parse_mapping,
)
from shared.mapping.transforms import TransformContext

__all__ = [
    "ApprovedMapping",
    "ColumnFacts",
    "DeferredLookup",
    "DiscoveryFacts",
    "FieldError",
    "FieldMap",
    "FieldProposal",
    "LoadPlan",
    "MappingSpec",
    "Proposal",
    "ProviderRef",
    "SchemaPlan",
    "SystemUserRef",
    "TableFacts",
    "TableMap",
    "TransformContext",
    "approve",
    "build_schema_spec",
    "check_mapping",
    "default_mapping",
    "final_state",
    "load_approved",
    "make_context",
    "max_lengths_for",
    "parse_mapping",
    "plan_loads",
    "plan_schema",
    "propose",
    "providers_from_rows",
    "record_ref",
    "reference_tables",
    "source_contract_for",
    "split_deferred",
    "transform_row",
]
