"""Neither the JSON report nor the summary carries a patient's name, birth date, contact detail or note."""

from __future__ import annotations

import json
import re

from shared.discovery.summary import render_summary
from tests.agent.test_pipeline import _source_rows
from tests.shared.discovery.conftest import Case

NOTE_TABLES = {
    "clinical_note": ("note_text",),
    "appointment": ("note", "patient_name", "reason"),
    "proc_log": ("note_text",),
    "claim": ("note_text",),
    "prescription": ("sig_text", "note_text"),
}


def _phi_values(case: Case) -> set[str]:
    values: set[str] = set()
    for raw in _source_rows(case.db, "patient"):
        first, last = str(raw["first_name"] or "").strip(), str(raw["last_name"] or "").strip()
        values |= {first, last, f"{first} {last}", f"{last}, {first}", str(raw["birth_date"])}
        for column in (
            "email",
            "home_phone",
            "mobile_phone",
            "work_phone",
            "address_line1",
            "patient_guid",
            "custom_referral_source",
        ):
            if raw[column]:
                values.add(str(raw[column]).strip())
    for table, columns in NOTE_TABLES.items():
        for raw in _source_rows(case.db, table):
            for column in columns:
                text = str(raw[column] or "").strip()
                if text:
                    values.add(text)
                    values |= {line.strip() for line in text.splitlines() if len(line.strip()) > 8}
    return {v for v in values if v}


def _found(values: set[str], text: str) -> list[str]:
    # Whole-word, case-sensitive: "Li" must not match inside "Limit", a name is a name. One alternation,
    # longest first, so "Mary Smith" is reported rather than "Mary".
    alternatives = "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
    return sorted(set(re.findall(rf"(?<![\w-])(?:{alternatives})(?![\w-])", text)))


def test_no_patient_name_birth_date_contact_or_note_appears_in_the_report_or_summary(case: Case) -> None:
    values = _phi_values(case)
    assert len(values) > 200
    json_text = case.report.model_dump_json()
    summary = render_summary(case.report)
    assert _found(values, json_text) == []
    assert _found(values, summary) == []
    # Birth dates as plain substrings too (also inside datetimes). The only dates a report holds are the
    # min/max of non-identifying date columns (a change stamp can fall on someone's birthday by chance),
    # so those bounds are blanked first; test_profile checks birth_date itself never gets a range.
    birth_dates = {v for v in values if re.fullmatch(r"\d{4}-\d{2}-\d{2}", v)}
    data = case.report.model_dump(mode="json")
    for table in data["tables"]:
        for column in table["columns"]:
            assert column["min"] is None or column["kind"] in ("date", "datetime")
            column["min"] = column["max"] = None
    blanked = json.dumps(data)
    assert birth_dates and [d for d in birth_dates if d in blanked or d in summary] == []


def test_the_scan_would_catch_a_leak(case: Case) -> None:
    values = _phi_values(case)
    leaked = case.report.model_copy(
        update={"bundle_id": next(v for v in values if " " in v and "," not in v)}
    )
    assert _found(values, leaked.model_dump_json())
