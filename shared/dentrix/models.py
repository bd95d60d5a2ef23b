"""Typed pydantic row models, one per bundle table, built from the registry in `tables.py`.

Models are strict about JSON types (a string where cents belong is an error, not a coercion) and
hide row values in their errors. Practice custom columns pass through as extra fields; the reader
checks them against the types the manifest declares.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    create_model,
    model_validator,
)

from shared.dentrix.normalise import (
    SURFACE_FLAGS,
    VALID_TEETH,
    is_date,
    is_local_datetime,
    normalise_surface,
    surface_from_flags,
)
from shared.dentrix.tables import TABLES, Column, Table, get_table

ROW_CONFIG = ConfigDict(extra="allow", hide_input_in_errors=True, strict=True, frozen=False)


def _check_id(v: str) -> str:
    if not v or v != v.strip():
        raise ValueError("id must be non-empty with no surrounding spaces")
    return v


def _check_text(v: str) -> str:
    if v == "" or v != v.strip(" \t\r\n\x00"):
        raise ValueError("text must be trimmed and non-empty (empty is written as null)")
    return v


def _check_date(v: str) -> str:
    if not is_date(v):
        raise ValueError("date must be YYYY-MM-DD")
    return v


def _check_datetime(v: str) -> str:
    if not is_local_datetime(v):
        raise ValueError("local datetime must be YYYY-MM-DDTHH:MM:SS without offset")
    return v


def _check_tooth(v: str) -> str:
    if v not in VALID_TEETH:
        raise ValueError("tooth must be 1-32, A-T, 51-82 or AS-TS")
    return v


def _check_surface(v: str) -> str:
    try:
        normal = normalise_surface(v)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if normal != v:
        raise ValueError("surface must be letters from MODLF5 in that order")
    return v


def _check_sha256(v: str) -> str:
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    return v


# Trimmed and non-empty, checked by pydantic-core's own regex engine (this runs for every value).
_TRIMMED = r"^[^ \t\r\n\x00](?s:.*[^ \t\r\n\x00])?$"

_STR_KINDS: dict[str, Any] = {
    "id": StringConstraints(pattern=_TRIMMED),
    "text": StringConstraints(pattern=_TRIMMED),
    "date": AfterValidator(_check_date),
    "datetime": AfterValidator(_check_datetime),
    "tooth": AfterValidator(_check_tooth),
    "surface": AfterValidator(_check_surface),
    "sha256": AfterValidator(_check_sha256),
}


def _python_type(column: Column) -> Any:
    if column.kind in _STR_KINDS:
        base: Any = Annotated[str, _STR_KINDS[column.kind]]
    elif column.kind in ("int", "money"):
        base = Annotated[StrictInt, Field(ge=column.ge, le=column.le)]
    elif column.kind == "bool":
        base = StrictBool
    elif column.kind == "json":
        base = dict[str, Any]
    else:  # pragma: no cover - the registry test walks every kind
        raise AssertionError(column.kind)
    return base if column.required else base | None


class RowModel(BaseModel):
    """Base of every row model."""

    model_config = ROW_CONFIG


class _ProcLogRules(RowModel):
    @model_validator(mode="after")
    def _surfaces_agree(self) -> _ProcLogRules:
        flags = {name: getattr(self, name) for name in SURFACE_FLAGS}
        if any(v is not None for v in flags.values()) or self.surface_string is not None:  # type: ignore[attr-defined]
            if surface_from_flags(flags) != self.surface_string:  # type: ignore[attr-defined]
                raise ValueError("surface_string disagrees with the surface flags")
        return self


class _AppointmentRules(RowModel):
    @model_validator(mode="after")
    def _start_agrees(self) -> _AppointmentRules:
        d, h, m, s = self.appointment_date, self.start_hour, self.start_minute, self.start_at  # type: ignore[attr-defined]
        if s is not None and (d is None or h is None or m is None or s != f"{d}T{h:02d}:{m:02d}:00"):
            raise ValueError("start_at disagrees with appointment_date/start_hour/start_minute")
        return self


_BASES: dict[str, type[RowModel]] = {"proc_log": _ProcLogRules, "appointment": _AppointmentRules}


def _model_name(table: str) -> str:
    return "".join(part.capitalize() for part in table.split("_")) + "Row"


@cache
def row_model(table: str) -> type[RowModel]:
    """The pydantic model for one row of `table` (KeyError for an unknown table)."""
    spec: Table = get_table(table)
    fields: dict[str, Any] = {}
    for column in spec.columns:
        default = ... if column.required else None
        fields[column.name] = (_python_type(column), Field(default, description=column.doc))
    model = create_model(_model_name(table), __base__=_BASES.get(table, RowModel), __doc__=spec.doc, **fields)
    return model


ROW_MODELS: dict[str, type[RowModel]] = {t.name: row_model(t.name) for t in TABLES}
