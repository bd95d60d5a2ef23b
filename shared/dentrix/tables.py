"""The bundle table registry: every table a Dentrix export bundle carries, its columns, key and parents.

This is the contract both sides build on: the agent extracts exactly these tables, the cloud reader
validates rows into the models built from them, and the Dentrix -> Dataverse field map
(`shared/mapping/`) names these tables and columns. Names follow Dentrix G's own DDP view / base-table
names in lower snake case (../shared/reference/dentrix.md §3, §7); keep them stable.

Column kinds (the value as it appears in the bundle's JSON Lines, after the agent's normalisation):
    id        string, trimmed, non-empty (Dentrix ids are numbers or short text codes; Enterprise
              `ID|DB` pairs become "123|1")
    text      string or null; trimmed; empty becomes null; inner CR/LF kept as written
    int       integer (codes, counts, flags kept as numbers)
    bool      true / false
    money     integer cents (the agent converts once; manifest `money_source_unit` says from what)
    date      "YYYY-MM-DD"
    datetime  local practice time "YYYY-MM-DDTHH:MM:SS", no offset (manifest `practice_timezone`)
    tooth     "1".."32", "A".."T", supernumerary "51".."82" and "AS".."TS"
    surface   letters from "MODLF5" in that order (M mesial, O occlusal/incisal, D distal,
              L lingual, F facial/buccal, 5 class V)
    sha256    64 lowercase hex digits: a binary under `files/<sha256>` in the bundle
    json      a JSON object (structured readings, e.g. perio charting)

Every column is nullable unless `required`; key columns are always required and unique in a table.
Columns the registry does not know (practice custom columns) are kept in the rows, typed by
inference and listed in the manifest with `custom: true`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TColumnKind = Literal["id", "text", "int", "bool", "money", "date", "datetime", "tooth", "surface", "sha256", "json"]

JSON_TYPE_OF_KIND: dict[str, str] = {
    "id": "string", "text": "string", "int": "integer", "bool": "boolean", "money": "integer",
    "date": "string", "datetime": "string", "tooth": "string", "surface": "string", "sha256": "string",
    "json": "object",
}
"""The JSON type each kind is written as; the manifest declares it per column."""


@dataclass(frozen=True)
class Column:
    """One bundle column."""

    name: str
    kind: TColumnKind
    doc: str
    ref: str | None = None
    """Parent table this column points at (its key column), if any."""
    required: bool = False
    source: str | None = None
    """Column name in the source view when it differs (money columns drop the `_cents` suffix)."""
    ge: int | None = None
    le: int | None = None

    @property
    def source_name(self) -> str:
        if self.source is not None:
            return self.source
        if self.kind == "money" and self.name.endswith("_cents"):
            return self.name[: -len("_cents")]
        return self.name


@dataclass(frozen=True)
class Table:
    """One bundle table: its key column, columns and where the agent reads it."""

    name: str
    key: str
    source_view: str
    """Schema-qualified Dentrix G view or table the agent selects from (same SQL on every driver)."""
    doc: str
    columns: tuple[Column, ...]
    modified_column: str | None = "modified_at"
    """The change stamp the delta compares with the watermark (known to be unreliable: see delta)."""
    confirmed: bool = True
    """False where dentrix.md marks the source view as not found [U]: the name is the agent's own."""
    column_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_names", tuple(c.name for c in self.columns))

    @property
    def parents(self) -> dict[str, str]:
        """column -> parent table, for every reference column."""
        return {c.name: c.ref for c in self.columns if c.ref is not None}

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


def _id(name: str, doc: str, ref: str | None = None, required: bool = False) -> Column:
    return Column(name, "id", doc, ref=ref, required=required)


def _t(name: str, doc: str) -> Column:
    return Column(name, "text", doc)


def _i(name: str, doc: str, ge: int | None = None, le: int | None = None) -> Column:
    return Column(name, "int", doc, ge=ge, le=le)


def _b(name: str, doc: str) -> Column:
    return Column(name, "bool", doc)


def _m(name: str, doc: str) -> Column:
    return Column(name, "money", doc)


def _d(name: str, doc: str) -> Column:
    return Column(name, "date", doc)


def _dt(name: str, doc: str) -> Column:
    return Column(name, "datetime", doc)


_ADDRESS = (
    _t("address_line1", "street line 1"),
    _t("address_line2", "street line 2"),
    _t("city", "city"),
    _t("state", "state / province code"),
    _t("zip_code", "postal code"),
)
_MODIFIED = _dt("modified_at", "Dentrix change stamp (automodifiedtimestamp / DDB_LAST_MOD); unreliable")


TABLES: tuple[Table, ...] = (
    Table("practice", "practice_id", "admin.v_practice", "The practice / clinic rows (admin.rsc rsctype=0).", (
        _id("practice_id", "clinic id (rsc.id1)", required=True),
        _t("practice_name", "practice or clinic name"),
        *_ADDRESS,
        _t("phone", "main phone"),
        _MODIFIED,
    )),
    Table("definition", "def_id", "admin.v_definition",
          "Practice-defined code lists (admin.fulldef): decode every *_id code through def_type.", (
        _id("def_id", "definition id (fulldef.defid)", required=True),
        _i("def_type", "list: 1 appointment type, 2 appointment status, 9 adjustment/payment type, "
                       "12 document category, 25 provider specialty, 30 clinical note type, 31 tx plan status, "
                       "32 lab case status", ge=0),
        _t("abbrev", "short label"),
        _t("descript", "label shown in Dentrix"),
        _b("inactive", "hidden from new entries"),
        _MODIFIED,
    ), modified_column="modified_at"),
    Table("employer", "employer_id", "admin.v_employers", "Employers of patients and insurance groups.", (
        _id("employer_id", "employer id", required=True),
        _t("employer_name", "employer name"),
        *_ADDRESS,
        _t("phone", "phone"),
        _MODIFIED,
    )),
    Table("fee_schedule", "fee_sched_id", "admin.v_fee_schedule", "Fee schedules (UCR, PPO ...).", (
        _id("fee_sched_id", "fee schedule id", required=True),
        _t("fee_sched_name", "name"),
        _MODIFIED,
    ), confirmed=False),
    Table("provider", "provider_id", "admin.v_provider", "Providers and staff (admin.rsc rsctype 1/2).", (
        _id("provider_id", "short text code, e.g. DDS1 (rsc.rscid)", required=True),
        _i("rsc_type", "1 provider, 2 staff", ge=0),
        _t("first_name", "first name"),
        _t("last_name", "last name"),
        _t("mi", "middle initial"),
        _t("suffix", "name suffix"),
        _t("title", "title, e.g. DDS, RDH"),
        _id("specialty_id", "specialty code", ref="definition"),
        _t("npi", "NPI (Enterprise rsc.ID1)"),
        _t("tin", "tax id (Enterprise rsc.ADA)"),
        _t("state_license", "state licence number"),
        _t("dea", "DEA number"),
        *_ADDRESS,
        _t("work_phone", "phone"),
        _t("email", "e-mail; the key to a Dataverse systemuser"),
        _b("is_secondary_provider", "hygienist-type secondary provider (issecondaryprovider)"),
        _b("is_non_person", "placeholder provider such as DEF_PROV or Walk-In"),
        _b("inactive", "no longer active"),
        _id("fee_sched_id", "fee schedule", ref="fee_schedule"),
        _MODIFIED,
    )),
    Table("operatory", "op_id", "admin.v_operatory", "Operatories (chairs) appointments are booked in.", (
        _id("op_id", "operatory id", required=True),
        _t("op_title", "operatory name"),
        _id("clinic_id", "clinic", ref="practice"),
        _b("inactive", "no longer used"),
        _MODIFIED,
    )),
    Table("recall_type", "recall_type_id", "admin.v_recalltype", "Recall types (admin.recalltype, patid=0).", (
        _id("recall_type_id", "recall type id (recalltype.recallid)", required=True),
        _t("name", "short name, e.g. PROPHY"),
        _t("descript", "description"),
        _i("interval_months", "interval in months; not seen in any Dentrix view [U]", ge=0, le=120),
        _MODIFIED,
    )),
    Table("proc_code", "proc_code_id", "admin.v_proccode", "Procedure codes (admin.proccode): CDT and practice codes.", (
        _id("proc_code_id", "procedure code id (proccode.proccodeid)", required=True),
        _t("ada_code", "CDT code, e.g. D1110"),
        _t("abbrev_descript", "short description"),
        _t("description", "description"),
        _i("category", "procedure category code", ge=0),
        _id("default_appt_type", "default appointment type", ref="definition"),
        _i("min_len", "default length in minutes", ge=0),
        _id("auto_recall_id", "recall type set when completed", ref="recall_type"),
        _b("is_active", "active"),
        _MODIFIED,
    )),
    Table("fee_schedule_item", "fee_id", "admin.v_feeschedule", "Fees per schedule and procedure code.", (
        _id("fee_id", "'<fee_sched_id>|<proc_code_id>'", required=True),
        _id("fee_sched_id", "fee schedule", ref="fee_schedule", required=True),
        _id("proc_code_id", "procedure code", ref="proc_code", required=True),
        _m("amount_cents", "fee"),
        _MODIFIED,
    )),
    Table("insurance_carrier", "ins_id", "admin.v_insurance_plans",
          "Insurance carriers / employer-group plans (admin.inscarrier).", (
        _id("ins_id", "plan id (inscarrier.insid)", required=True),
        _t("ins_co_name", "carrier name"),
        _t("group_name", "group name"),
        _t("group_number", "group number"),
        _t("payor_id", "EDI payer id"),
        *_ADDRESS,
        _t("phone", "phone"),
        _id("employer_id", "employer of the group", ref="employer"),
        _id("fee_sched_id", "fee schedule", ref="fee_schedule"),
        _id("claim_format", "claim format code", ref="definition"),
        _m("max_cov_person_cents", "annual maximum per person"),
        _m("max_cov_family_cents", "annual maximum per family"),
        _m("ded_per_person_cents", "deductible per person"),
        _m("ded_per_family_cents", "deductible per family"),
        _i("renewal_month", "benefit year start month", ge=1, le=12),
        _MODIFIED,
    )),
    Table("patient", "patient_id", "admin.v_patient", "Patients and non-patient guarantors (admin.patient).", (
        _id("patient_id", "patient id (patid)", required=True),
        _t("patient_guid", "patient guid"),
        _t("chart_num", "chart number"),
        _t("last_name", "last name"),
        _t("first_name", "first name"),
        _t("mi", "middle initial"),
        _t("preferred_name", "preferred name"),
        _t("salutation", "salutation"),
        _i("gender", "1 male, 2 female, other unknown", ge=0),
        _d("birth_date", "date of birth"),
        _i("status", "1 active, 2 non-patient (e.g. guarantor only), 3 inactive, 4 archived [U]", ge=0),
        _i("fampos", "1 single, 2 married, 3 child, 4 other", ge=0),
        _id("guar_id", "guarantor of the family account (a patient row)", ref="patient"),
        _id("fam_id", "family id"),
        _b("is_guar", "is a guarantor"),
        _b("is_head_of_house", "head of household"),
        *_ADDRESS,
        _t("home_phone", "home phone (address.phone)"),
        _t("work_phone", "work phone"),
        _t("mobile_phone", "mobile phone (pager column in G base tables)"),
        _t("email", "e-mail"),
        _id("pri_provider_id", "primary provider", ref="provider"),
        _id("sec_provider_id", "secondary provider (hygienist)", ref="provider"),
        _d("first_visit_date", "first visit"),
        _d("last_visit_date", "last visit"),
        _id("employer_id", "employer", ref="employer"),
        _i("privacy_flags", "bit 1 no voice calls, bit 2 no SMS/e-mail", ge=0),
        _b("premed", "premedication required"),
        _t("ssn_last4", "last four digits of the SSN only"),
        _t("image_id", "imaging id (PATIMAGEID)"),
        _id("clinic_id", "clinic", ref="practice"),
        _id("pri_insured_id", "primary dental insured (subscriber) row", ref="insured"),
        _id("sec_insured_id", "secondary dental insured row", ref="insured"),
        _i("pri_ins_rel", "relationship to the primary subscriber: 1 self [I], 2 spouse, 3 child, 4 other [U]", ge=0),
        _i("sec_ins_rel", "relationship to the secondary subscriber", ge=0),
        _dt("created_at", "record created"),
        _MODIFIED,
    )),
    Table("guardian", "guardian_link_id", "admin.v_patient_guardian",
          "Guardians / responsible parties of a patient (minors); the guardian is a patient row.", (
        _id("guardian_link_id", "link id", required=True),
        _id("patient_id", "the patient (usually a minor)", ref="patient", required=True),
        _id("guardian_id", "the guardian or responsible party", ref="patient", required=True),
        _i("relationship", "1 parent, 2 legal guardian, 3 other responsible party [U]", ge=0),
        _b("is_responsible_party", "financially responsible"),
        _MODIFIED,
    ), confirmed=False),
    Table("insured", "insured_id", "admin.v_insured", "Insured (subscriber) rows: who holds which plan.", (
        _id("insured_id", "insured id", required=True),
        _id("ins_plan_id", "the plan", ref="insurance_carrier", required=True),
        _id("ins_party_id", "the subscriber (a patient row)", ref="patient", required=True),
        _t("id_num", "subscriber id"),
        _i("ins_type", "0 dental, 1 medical [I]", ge=0),
        _d("effective_date", "coverage start"),
        _d("last_verified", "benefits last verified"),
        _MODIFIED,
    )),
    Table("patient_insurance", "pat_ins_id", "admin.v_patient_insurance",
          "A patient's coverage by rank (1 primary, 2 secondary, 3-4 Enterprise only).", (
        _id("pat_ins_id", "'<patient_id>|<rank>'", required=True),
        _id("patient_id", "the patient", ref="patient", required=True),
        _i("rank", "1 primary, 2 secondary, 3 tertiary, 4 quaternary", ge=1, le=4),
        _id("insured_id", "the insured (subscriber) row", ref="insured", required=True),
        _i("relationship_code", "relationship to the subscriber (priminsrel / secinsrel)", ge=0),
        _m("benefits_used_cents", "benefits used this year (PRBENEFITS) [I]"),
        _m("deductible_used_cents", "deductible met this year [I]"),
        _MODIFIED,
    )),
    Table("tx_case", "tx_case_id", "admin.v_txcase", "Treatment plans (cases); procedures point here.", (
        _id("tx_case_id", "treatment case id", required=True),
        _id("patient_id", "the patient", ref="patient", required=True),
        _id("provider_id", "planning provider", ref="provider"),
        _t("case_name", "case name"),
        _id("status_id", "case status", ref="definition"),
        _d("created_date", "created"),
        _d("accepted_date", "accepted by the patient"),
        _MODIFIED,
    ), confirmed=False),
    Table("claim", "claim_id", "admin.v_claim", "Insurance claims and predeterminations.", (
        _id("claim_id", "claim id", required=True),
        _id("patient_id", "the patient", ref="patient", required=True),
        _i("claim_type", "0 claim, 1 predetermination", ge=0, le=1),
        _id("prim_claim_id", "a secondary claim's primary claim", ref="claim"),
        _id("ins_id", "billed plan", ref="insurance_carrier"),
        _id("insured_id", "billed insured row", ref="insured"),
        _id("provider_id", "billing provider", ref="provider"),
        _d("date_of_claim", "sent"),
        _d("date_received", "payment received; null while in flight"),
        _d("date_resent", "resent"),
        _m("total_billed_cents", "billed"),
        _m("total_received_cents", "received"),
        _t("note_text", "claim note"),
        _MODIFIED,
    )),
    Table("proc_log", "proc_id", "admin.v_proclog",
          "The procedure log (admin.fullproclog): procedures and ledger transactions in one table.", (
        _id("proc_id", "procedure log id", required=True),
        _id("patient_id", "the patient", ref="patient", required=True),
        _id("guar_id", "the guarantor account", ref="patient"),
        _i("chart_status", "102 completed, 105 treatment planned [I], 101 existing, 103 existing other [U], "
                           "90 ledger transaction", ge=0),
        _i("proc_class", "with chart_status 90: 1 patient payment, 3 insurance payment, 0/2/7/9 adjustments "
                         "(8 write-off here [U]); else 0", ge=0),
        _id("ord", "payment/adjustment type (definition type 9)", ref="definition"),
        _d("proc_date", "service or deposit date"),
        _dt("create_date", "posted"),
        _d("completion_date", "completed"),
        _id("proc_code_id", "procedure code", ref="proc_code"),
        _t("ada_code", "CDT code as recorded"),
        _id("provider_id", "provider", ref="provider"),
        _id("clinic_id", "clinic", ref="practice"),
        _m("amount_cents", "charge (procedures) or amount (payments/adjustments, credits negative)"),
        _m("amt_prim_ins_paid_cents", "paid by primary insurance"),
        _m("amt_sec_ins_paid_cents", "paid by secondary insurance"),
        Column("tooth_range_start", "tooth", "first tooth"),
        Column("tooth_range_end", "tooth", "last tooth (= start for one tooth)"),
        Column("surface_string", "surface", "surfaces; equals the flags below in MODLF5 order"),
        _b("surf_m", "mesial"),
        _b("surf_o", "occlusal / incisal"),
        _b("surf_d", "distal"),
        _b("surf_l", "lingual"),
        _b("surf_f", "facial / buccal"),
        _b("surf_5", "class V"),
        _id("claim_id", "claim", ref="claim"),
        _id("tx_case_id", "treatment plan", ref="tx_case"),
        _t("check_num", "check number (payments)"),
        _b("history", "history row (reports filter history = false) [I]"),
        _t("note_text", "procedure note"),
        _MODIFIED,
    )),
    Table("appointment", "appointment_id", "admin.v_appt", "Appointments (admin.appt).", (
        _id("appointment_id", "appointment id", required=True),
        _id("patient_id", "the patient; null for a new-patient appointment (patid 0)", ref="patient"),
        _t("patient_name", "name typed for a new-patient appointment"),
        _t("new_pat_phone", "phone typed for a new-patient appointment"),
        _d("appointment_date", "date"),
        _i("start_hour", "start hour 0-23 (local)", ge=0, le=23),
        _i("start_minute", "start minute 0-59", ge=0, le=59),
        _dt("start_at", "appointment_date + start_hour:start_minute (derived by the agent)"),
        _i("length", "length in minutes", ge=0, le=1440),
        _id("operatory_id", "operatory", ref="operatory"),
        _id("provider_id", "provider", ref="provider"),
        _id("addtnl_provider_id", "second provider", ref="provider"),
        _id("status_id", "appointment status", ref="definition"),
        _id("appt_type_id", "appointment type", ref="definition"),
        _t("reason", "reason"),
        _t("note", "appointment note"),
        _m("amount_cents", "scheduled production"),
        _b("broken", "broken appointment"),
        _d("broken_date", "broken on"),
        _dt("created_at", "created"),
        _MODIFIED,
    )),
    Table("appointment_procedure", "appt_proc_id", "admin.v_appt_proc",
          "Procedures attached to an appointment (appt.codeid1..20 / codetype1..20).", (
        _id("appt_proc_id", "'<appointment_id>|<seq>'", required=True),
        _id("appointment_id", "appointment", ref="appointment", required=True),
        _i("seq", "slot 1-20", ge=1, le=20),
        _i("code_type", "1 charted procedure (proc_id set), else a procedure code (proc_code_id set)", ge=0),
        _id("proc_id", "charted procedure", ref="proc_log"),
        _id("proc_code_id", "procedure code", ref="proc_code"),
        _MODIFIED,
    )),
    Table("appointment_history", "appt_hist_id", "admin.v_appthist",
          "Appointment history (admin.appthist); deleted appointments only appear here.", (
        _id("appt_hist_id", "history row id", required=True),
        _id("parent_appt_id", "the appointment (may no longer exist when deleted)", required=True),
        _i("status", "status at that time"),
        _b("deleted_flag", "the appointment was deleted"),
        _id("op_id", "operatory", ref="operatory"),
        _id("provider_id", "provider", ref="provider"),
        _dt("modified_at", "when this change happened"),
    )),
    Table("recall", "recall_id", "admin.v_recallpending", "Recalls due per patient (admin.recallpending).", (
        _id("recall_id", "'<patient_id>|<recall_type_id>'", required=True),
        _id("patient_id", "the patient", ref="patient", required=True),
        _id("recall_type_id", "recall type", ref="recall_type", required=True),
        _d("due_date", "due"),
        _d("prior_date", "last done"),
        _id("provider_id", "provider", ref="provider"),
        _MODIFIED,
    )),
    Table("prescription", "rx_id", "admin.v_rxrec", "Prescriptions (admin.rxrec, G6.2+; RxPatient before).", (
        _id("rx_id", "prescription id", required=True),
        _id("patient_id", "the patient", ref="patient", required=True),
        _id("provider_id", "prescriber", ref="provider"),
        _d("rx_date", "prescribed"),
        _t("drug_name", "drug"),
        _t("descript", "strength / form"),
        _t("dispense", "quantity"),
        _i("refills", "refills", ge=0),
        _b("dispense_as_written", "no substitution"),
        _t("sig_text", "directions"),
        _t("note_text", "note"),
        _MODIFIED,
    )),
    Table("clinical_note", "note_id", "admin.v_clinicalnote", "Clinical / progress notes [U source].", (
        _id("note_id", "note id", required=True),
        _id("patient_id", "the patient", ref="patient", required=True),
        _id("provider_id", "author", ref="provider"),
        _dt("note_date", "written"),
        _id("note_type_id", "note type (exam, narrative, perio ...)", ref="definition"),
        _t("note_text", "the note (CR/LF kept)"),
        _MODIFIED,
    ), confirmed=False),
    Table("perio_exam", "exam_id", "admin.v_perioexam", "Periodontal charting exams [U source].", (
        _id("exam_id", "exam id", required=True),
        _id("patient_id", "the patient", ref="patient", required=True),
        _id("provider_id", "examiner", ref="provider"),
        _d("exam_date", "exam date"),
        Column("readings", "json", "{tooth: [six pocket depths in mm]}"),
        _MODIFIED,
    ), confirmed=False),
    Table("lab_case", "lab_case_id", "admin.v_labcase", "Lab cases [U source].", (
        _id("lab_case_id", "lab case id", required=True),
        _id("patient_id", "the patient", ref="patient", required=True),
        _id("provider_id", "provider", ref="provider"),
        _id("tx_case_id", "treatment plan", ref="tx_case"),
        _t("lab_name", "laboratory"),
        _t("description", "what is made"),
        _id("status_id", "lab case status", ref="definition"),
        _d("sent_date", "sent"),
        _d("due_date", "due back"),
        _d("received_date", "received"),
        _m("cost_cents", "lab fee"),
        _MODIFIED,
    ), confirmed=False),
    Table("document", "doc_id", "admin.v_document", "Document Center entries and images, with their file.", (
        _id("doc_id", "document id", required=True),
        _t("attach_type", "patient | provider | carrier | unfiled"),
        _id("patient_id", "the patient when attach_type is patient", ref="patient"),
        _t("attach_id", "id of the provider or carrier it is attached to"),
        _id("category_id", "document category", ref="definition"),
        _t("description", "description"),
        _d("doc_date", "document date"),
        _t("doc_kind", "document | image"),
        _t("image_type", "bitewing, panoramic, intraoral photo ... (images)"),
        _t("tooth_numbers", "teeth shown, comma separated (images)"),
        _t("file_name", "original file name (no folders)"),
        Column("file_sha256", "sha256", "content hash: the binary is files/<file_sha256>"),
        _i("file_bytes", "size in bytes", ge=0),
        _t("media_type", "sniffed from magic bytes: image/jpeg, application/pdf, image/tiff, application/dicom"),
        _MODIFIED,
    ), confirmed=False),
)

TABLE_NAMES: tuple[str, ...] = tuple(t.name for t in TABLES)
_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}


def get_table(name: str) -> Table:
    """The registry entry for `name`; KeyError names the unknown table."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown bundle table {name!r}") from None


def parents_of(name: str) -> dict[str, str]:
    """column -> parent table for the table `name`."""
    return get_table(name).parents
