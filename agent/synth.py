"""Write a realistic, deterministic synthetic Dentrix G practice as a SQLite database plus its files.

The database holds tables named after the Dentrix G views the agent queries (`v_patient`,
`v_appt`, ...). Opened with `ATTACH '<db>' AS admin` they answer the same schema-qualified SQL as a
real c-treeACE `DentrixSQL` server (`SELECT * FROM admin.v_patient`). Values imitate the real quirks
(dentrix.md §4, §7): padded text, ids as integers, 0 for "no id", split appointment times, sentinel
dates, 0/1 flags, money in integer cents, CR/LF and non-ASCII notes, practice custom columns, and
document paths in Windows form under a document root.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agent import sample_files
from shared.dentrix.normalise import SURFACE_FLAGS, SURFACE_ORDER
from shared.dentrix.tables import TABLES

TODAY = dt.date(2026, 6, 30)
"""Fixed "today" so a seed always yields the same practice."""

DATA_VERSION = "17.2.0"
TIME_ZONE = "America/Denver"

# Source-only columns the agent consumes (not bundle columns) and practice custom columns.
SOURCE_EXTRA_COLUMNS: dict[str, tuple[str, ...]] = {"document": ("file_path",)}
CUSTOM_COLUMNS: dict[str, tuple[str, ...]] = {
    "patient": ("custom_referral_source", "custom_vip", "custom_balance_note"),
    "appointment": ("custom_confirmed_by",),
}
DERIVED_COLUMNS: dict[str, tuple[str, ...]] = {
    "appointment": ("start_at",),
    "document": ("file_name", "file_sha256", "file_bytes", "media_type"),
}
"""Bundle columns the agent computes (no source column)."""

FIRST = ["James", "Mary", "José", "Zoë", "Renée", "Björn", "Li", "Aisha", "Noah", "Emma", "Olivia", "Liam",
         "Sofía", "Mateo", "Françoise", "Jürgen", "Chloé", "Ethan", "Ava", "Lucas", "Mia", "Amélie", "Iñigo",
         "Grace", "Henry", "Chen", "Fatima", "Oscar", "Ruth", "Walter"]
LAST = ["Smith", "Johnson", "Muñoz", "Müller", "García", "Núñez", "O'Brien", "Nguyen", "Brown", "Lefèvre",
        "Kowalski", "Patel", "Williams", "Jones", "Davis", "Martínez", "Schröder", "Peña", "Taylor", "Clark",
        "Lewis", "Walker", "Young", "Allen", "Ibáñez", "Dubois", "Åberg", "Hall", "King", "Wright"]
CITIES = [("Denver", "CO", "80203"), ("Aurora", "CO", "80012"), ("Boulder", "CO", "80302"),
          ("Lakewood", "CO", "80226"), ("Golden", "CO", "80401")]
STREETS = ["Main St", "Colfax Ave", "Broadway", "Pearl St", "Elm Ct", "Cañon Rd", "Oak Dr"]

# (CDT code, description, fee cents, treatment area, category, minutes)
PROC_CODES = [
    ("D0120", "Periodic oral evaluation", 5500, "mouth", 1, 10), ("D0150", "Comprehensive oral evaluation", 9500, "mouth", 1, 20),
    ("D0210", "Intraoral complete series", 14000, "mouth", 2, 20), ("D0274", "Bitewings - four films", 7000, "mouth", 2, 10),
    ("D0330", "Panoramic image", 12000, "mouth", 2, 10), ("D1110", "Prophylaxis - adult", 10500, "mouth", 3, 40),
    ("D1120", "Prophylaxis - child", 7500, "mouth", 3, 30), ("D1208", "Topical fluoride", 4000, "mouth", 3, 10),
    ("D1351", "Sealant - per tooth", 5500, "tooth", 3, 10), ("D2140", "Amalgam - one surface", 14000, "surface", 4, 30),
    ("D2150", "Amalgam - two surfaces", 17500, "surface", 4, 40), ("D2160", "Amalgam - three surfaces", 21000, "surface", 4, 50),
    ("D2330", "Resin - one surface, anterior", 16000, "surface", 4, 30), ("D2391", "Resin - one surface, posterior", 17500, "surface", 4, 30),
    ("D2392", "Resin - two surfaces, posterior", 22000, "surface", 4, 40), ("D2740", "Crown - porcelain/ceramic", 120000, "tooth", 5, 90),
    ("D2750", "Crown - porcelain fused to high noble", 110000, "tooth", 5, 90), ("D2950", "Core buildup", 28000, "tooth", 5, 30),
    ("D3310", "Endodontic therapy, anterior", 85000, "tooth", 6, 60), ("D3330", "Endodontic therapy, molar", 125000, "tooth", 6, 90),
    ("D4341", "Scaling and root planing - 4+ teeth per quadrant", 25000, "quad", 7, 60),
    ("D4342", "Scaling and root planing - 1-3 teeth", 18000, "quad", 7, 40), ("D4910", "Periodontal maintenance", 14000, "mouth", 7, 60),
    ("D5110", "Complete denture - maxillary", 180000, "mouth", 8, 60), ("D6010", "Implant body", 250000, "tooth", 9, 90),
    ("D6240", "Pontic - porcelain fused to high noble", 110000, "range", 10, 90), ("D7140", "Extraction, erupted tooth", 18000, "tooth", 11, 30),
    ("D7210", "Surgical extraction", 32000, "tooth", 11, 60), ("D9110", "Palliative treatment", 9000, "mouth", 12, 20),
    ("D9944", "Occlusal guard - hard appliance", 45000, "mouth", 12, 30),
]
LAB_CODES = {"D2740", "D2750", "D6240", "D5110"}
PERIO_CODES = {"D4341", "D4342", "D4910"}
POSTERIOR = [1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 28, 29, 30, 31, 32]
ANTERIOR = list(range(6, 12)) + list(range(22, 28))
PRIMARY = [chr(c) for c in range(ord("A"), ord("T") + 1)]

DEFS: list[tuple[int, int, str, str]] = [  # (def_id, def_type, abbrev, descript)
    (100, 1, "NP", "New patient exam"), (101, 1, "HYG", "Hygiene"), (102, 1, "RST", "Restorative"),
    (103, 1, "CRN", "Crown & bridge"), (104, 1, "EMR", "Emergency"),
    (150, 2, "??????", "Unconfirmed"), (151, 2, "FIRM", "Confirmed"), (152, 2, "LMM", "Left message on machine"),
    (153, 2, "HERE", "Here"), (154, 2, "COMP", "Complete"),
    (900, 9, "CASH", "Cash payment"), (901, 9, "CHK", "Check payment"), (902, 9, "CC", "Credit card payment"),
    (903, 9, "INSCHK", "Insurance check"), (904, 9, "WO", "Insurance write-off (PPO)"),
    (905, 9, "DISC", "Courtesy discount"), (906, 9, "FIN", "Finance charge"),
    (1200, 12, "XRAY", "X-rays"), (1201, 12, "CONS", "Consent forms"), (1202, 12, "INS", "Insurance cards"),
    (2500, 25, "GEN", "General dentist"), (2501, 25, "HYG", "Dental hygienist"), (2502, 25, "ORAL", "Oral surgeon"),
    (3000, 30, "EXAM", "Exam"), (3001, 30, "PROG", "Progress note"), (3002, 30, "PERIO", "Perio chart note"),
    (3100, 31, "PROP", "Proposed"), (3101, 31, "ACC", "Accepted"), (3102, 31, "REJ", "Rejected"),
    (3200, 32, "SENT", "Sent to lab"), (3201, 32, "RECV", "Received"), (3202, 32, "SEAT", "Seated"),
]
NOTE_LINES = [
    "Pt presents for recall.", "No changes to medical history.", "Patient reports sensitivity on #{t}.",
    "Discussed treatment options; pt prefers to wait.", "Anesthesia: 1 carp 2% lido 1:100k epi.",
    "Señora Muñoz accompanied the patient.", "Pt's café-au-lait spots noted, referred for eval.",
    "Ortho consult with Dr. Müller recommended.", "OHI given; pt to floss daily.", "Tolerated procedure well.",
]
DRUGS = [("Amoxicillin", "500 mg capsule", "21", 0, "Take 1 capsule three times daily for 7 days"),
         ("Ibuprofen", "600 mg tablet", "20", 0, "Take 1 tablet every 6 hours as needed for pain"),
         ("Chlorhexidine gluconate", "0.12% oral rinse", "473 mL", 1, "Rinse with 15 mL twice daily"),
         ("Clindamycin", "300 mg capsule", "28", 0, "Take 1 capsule four times daily"),
         ("Hydrocodone/APAP", "5/325 mg tablet", "12", 0, "Take 1 tablet every 6 hours as needed")]


@dataclass
class SynthInfo:
    """What `synthesize` wrote: row counts per source table and the number of files."""

    database: Path
    files_root: Path
    rows: dict[str, int] = field(default_factory=dict)
    files: int = 0


def files_root_for(database: Path) -> Path:
    """Where the synthetic practice keeps its document and image files (the 'document path')."""
    return database.with_name(database.stem + "-files")


def source_columns(table: str) -> list[str]:
    """The columns the synthetic view has for a bundle table (source names, extras, custom)."""
    spec = next(t for t in TABLES if t.name == table)
    cols = [c.source_name for c in spec.columns if c.name not in DERIVED_COLUMNS.get(table, ())]
    return cols + list(SOURCE_EXTRA_COLUMNS.get(table, ())) + list(CUSTOM_COLUMNS.get(table, ()))


def view_name(table: str) -> str:
    return next(t for t in TABLES if t.name == table).source_view.split(".", 1)[1]


_DECLARED = {"text": "TEXT", "tooth": "TEXT", "surface": "TEXT", "date": "TEXT", "datetime": "TEXT", "json": "TEXT",
             "int": "INTEGER", "bool": "INTEGER", "money": "INTEGER"}


def create_schema(conn: sqlite3.Connection, schema: str = "main") -> None:
    """Create the Dentrix-shaped views (as SQLite tables) and admin.options."""
    for spec in TABLES:
        kinds = {c.source_name: c.kind for c in spec.columns}
        # Declared types matter to ODBC drivers, which type a column from its declaration: an
        # undeclared column holding 3 and "B" (teeth) loses the letters through the SQLite ODBC driver.
        cols = ", ".join(f'"{c}" {_DECLARED.get(kinds.get(c, ""), "")}'.rstrip() for c in source_columns(spec.name))
        conn.execute(f'CREATE TABLE IF NOT EXISTS {schema}."{view_name(spec.name)}" ({cols})')
    conn.execute(f"CREATE TABLE IF NOT EXISTS {schema}.options (optionsection, optionkey, optionvalue)")


class _Writer:
    """Buffers rows per table and writes them in batches (flat memory at any practice size)."""

    def __init__(self, conn: sqlite3.Connection, batch: int = 5000) -> None:
        self.conn, self.batch = conn, batch
        self.buffers: dict[str, list[tuple[object, ...]]] = {}
        self.counts: dict[str, int] = {}
        self.columns = {t.name: source_columns(t.name) for t in TABLES}

    def add(self, table: str, row: dict[str, object]) -> None:
        self.buffers.setdefault(table, []).append(tuple(row.get(c) for c in self.columns[table]))
        self.counts[table] = self.counts.get(table, 0) + 1
        if len(self.buffers[table]) >= self.batch:
            self.flush(table)

    def flush(self, table: str | None = None) -> None:
        for name in [table] if table else list(self.buffers):
            rows = self.buffers.get(name)
            if rows:
                marks = ", ".join("?" * len(self.columns[name]))
                self.conn.executemany(f'INSERT INTO "{view_name(name)}" VALUES ({marks})', rows)
                rows.clear()


def _pad(text: str, rng: random.Random) -> str:
    """Dentrix text columns are often fixed width: pad some values like the real ones."""
    return text + " " * rng.choice((0, 0, 1, 3, 8)) if rng.random() < 0.4 else text


def _stamp(rng: random.Random, start: dt.date, end: dt.date) -> str:
    days = max((end - start).days, 0)
    moment = dt.datetime.combine(start, dt.time()) + dt.timedelta(days=rng.randint(0, days), seconds=rng.randint(0, 86399))
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{rng.randint(0, 999):03d}"


def synthesize(database: Path, patients: int, seed: int) -> SynthInfo:
    """Write a practice of about `patients` patients to `database` (replaced) and its files.

    Raises ValueError for a patient count outside 10..100,000.
    """
    if not 10 <= patients <= 100_000:
        raise ValueError("patients must be between 10 and 100,000")
    database = Path(database)
    if database.exists():
        database.unlink()
    root = files_root_for(database)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    conn = sqlite3.connect(database)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    create_schema(conn)
    conn.executemany("INSERT INTO options VALUES (?, ?, ?)", [
        ("General", "Data_Version", DATA_VERSION),
        ("General", "PracticeTimeZone", TIME_ZONE),  # synthetic convenience; real practices pass --timezone
    ])
    w = _Writer(conn)
    info = SynthInfo(database, root)
    _Practice(rng, w, root, patients, info).run()
    w.flush()
    conn.commit()
    conn.close()
    info.rows = dict(w.counts)
    return info


class _Practice:
    """The generator: reference data first, then one family at a time."""

    def __init__(self, rng: random.Random, w: _Writer, root: Path, patients: int, info: SynthInfo) -> None:
        self.rng, self.w, self.root, self.target, self.info = rng, w, root, patients, info
        self.ids: dict[str, int] = {}
        self.block = rng.choice((10, 15))
        self.pri_pct = rng.uniform(0.30, 0.60)
        self.sec_pct = rng.uniform(0.05, 0.10)
        self.written_files: set[str] = set()

    def next_id(self, kind: str, start: int = 1) -> int:
        self.ids[kind] = self.ids.get(kind, start - 1) + 1
        return self.ids[kind]

    def stamp(self, start: dt.date | None = None) -> str:
        return _stamp(self.rng, start or TODAY - dt.timedelta(days=900), TODAY)

    # -- reference data -----------------------------------------------------------------------
    def run(self) -> None:
        r, w = self.rng, self.w
        w.add("practice", {"practice_id": 1, "practice_name": _pad("Bridgework Family Dental", r),
                           "address_line1": "100 Main St", "city": "Denver", "state": "CO", "zip_code": "80203",
                           "phone": "303-555-0100", "modified_at": self.stamp()})
        for def_id, def_type, abbrev, descript in DEFS:
            w.add("definition", {"def_id": def_id, "def_type": def_type, "abbrev": abbrev, "descript": _pad(descript, r),
                                 "inactive": 0, "modified_at": self.stamp()})
        w.add("fee_schedule", {"fee_sched_id": 1, "fee_sched_name": "UCR", "modified_at": self.stamp()})
        w.add("fee_schedule", {"fee_sched_id": 2, "fee_sched_name": "PPO Delta", "modified_at": self.stamp()})
        n_prov = r.randint(3, 8)
        self.providers: list[str] = []
        self.hygienists: list[str] = []
        for i in range(n_prov):
            hyg = i >= max(1, n_prov // 2)
            code = f"{'HYG' if hyg else 'DDS'}{i + 1}"
            (self.hygienists if hyg else self.providers).append(code)
            w.add("provider", {
                "provider_id": _pad(code, r), "rsc_type": 1, "first_name": r.choice(FIRST), "last_name": r.choice(LAST),
                "title": "RDH" if hyg else "DDS", "specialty_id": 2501 if hyg else 2500,
                "npi": f"1{r.randint(100000000, 999999999)}", "tin": f"84-{r.randint(1000000, 9999999)}",
                "state_license": f"CO{r.randint(10000, 99999)}", "work_phone": "303-555-0100",
                "email": f"{code.lower()}@bridgework-dental.example", "is_secondary_provider": int(hyg),
                "is_non_person": 0, "inactive": int(i == n_prov - 1 and n_prov > 4), "fee_sched_id": 1,
                "modified_at": self.stamp()})
        for code in ("DEF_PROV", "Walk-In"):
            w.add("provider", {"provider_id": code, "rsc_type": 1, "last_name": code, "is_non_person": 1,
                               "is_secondary_provider": 0, "inactive": 0, "modified_at": self.stamp()})
        self.ops = list(range(1, r.randint(3, 7)))
        for op in self.ops:
            w.add("operatory", {"op_id": op, "op_title": f"OP{op}", "clinic_id": 1, "inactive": 0, "modified_at": self.stamp()})
        recall_types = [(1, "PROPHY", "Prophy recall", 6), (2, "PERIO", "Perio maintenance", 4),
                        (3, "BW", "Bitewings", 12), (4, "FMX", "Full mouth x-rays", 36)]
        for rid, name, desc, months in recall_types:
            w.add("recall_type", {"recall_type_id": rid, "name": name, "descript": desc,
                                  "interval_months": months, "modified_at": self.stamp()})
        for i, (code, desc, fee, _area, cat, minutes) in enumerate(PROC_CODES, start=1):
            auto = 1 if code in ("D1110", "D1120") else 2 if code == "D4910" else None
            w.add("proc_code", {"proc_code_id": i, "ada_code": _pad(code, r), "abbrev_descript": desc[:20],
                                "description": desc, "category": cat, "default_appt_type": 101 if cat == 3 else 102,
                                "min_len": minutes, "auto_recall_id": auto, "is_active": 1, "modified_at": self.stamp()})
            w.add("fee_schedule_item", {"fee_id": f"1|{i}", "fee_sched_id": 1, "proc_code_id": i, "amount": fee,
                                        "modified_at": self.stamp()})
            w.add("fee_schedule_item", {"fee_id": f"2|{i}", "fee_sched_id": 2, "proc_code_id": i,
                                        "amount": fee * 8 // 10, "modified_at": self.stamp()})
        n_emp = max(3, self.target // 200)
        for e in range(1, n_emp + 1):
            city, state, z = r.choice(CITIES)
            w.add("employer", {"employer_id": e, "employer_name": f"{r.choice(LAST)} {r.choice(['Inc', 'LLC', 'Co'])}",
                               "address_line1": f"{r.randint(1, 9999)} {r.choice(STREETS)}", "city": city, "state": state,
                               "zip_code": z, "modified_at": self.stamp()})
        self.carriers = list(range(1, max(4, self.target // 50) + 1))
        for c in self.carriers:
            city, state, z = r.choice(CITIES)
            w.add("insurance_carrier", {
                "ins_id": c, "ins_co_name": r.choice(["Delta Dental", "MetLife", "Cigna", "Aetna", "Guardian", "United Concordia"]),
                "group_name": f"Group {c}", "group_number": f"G{r.randint(10000, 99999)}", "payor_id": f"{r.randint(10000, 99999)}",
                "address_line1": f"PO Box {r.randint(100, 9999)}", "city": city, "state": state, "zip_code": z,
                "employer_id": r.randint(1, n_emp), "fee_sched_id": r.choice((1, 2)),
                "max_cov_person": r.choice((100000, 150000, 200000)), "max_cov_family": None,
                "ded_per_person": r.choice((5000, 7500, 10000)), "ded_per_family": 15000,
                "renewal_month": r.choice((1, 1, 1, 7)), "modified_at": self.stamp()})
        self.n_emp = n_emp
        made = 0
        while made < self.target:
            made += self._family(min(self.rng.randint(1, 6), self.target - made))

    # -- one family -----------------------------------------------------------------------------
    def _person(self, last: str, age: int, guar: int | None, status: int, fampos: int, gender: int) -> dict[str, object]:
        r = self.rng
        pid = self.next_id("patient")
        birth = TODAY - dt.timedelta(days=age * 365 + r.randint(0, 364))
        city, state, z = self.address
        first_visit = TODAY - dt.timedelta(days=r.randint(30, 3000))
        return {
            "patient_id": pid, "patient_guid": f"{{{r.getrandbits(128):032X}}}", "chart_num": _pad(f"{last[:4].upper()}{pid:05d}", r),
            "last_name": _pad(last, r), "first_name": _pad(r.choice(FIRST), r), "mi": r.choice(("", "A", "J", "M")),
            "gender": gender, "birth_date": birth.isoformat(), "status": status, "fampos": fampos,
            "guar_id": guar if guar is not None else pid, "fam_id": self.fam_id,
            "is_guar": int(guar is None), "is_head_of_house": int(guar is None),
            "address_line1": self.street, "city": city, "state": state, "zip_code": z,
            "home_phone": self.phone, "work_phone": f"303-555-{r.randint(1000, 9999)}" if r.random() < 0.3 else "",
            "mobile_phone": f"720-555-{r.randint(1000, 9999)}", "email": f"p{pid}@mail.example" if r.random() < 0.7 else None,
            "pri_provider_id": r.choice(self.providers), "sec_provider_id": r.choice(self.hygienists) if self.hygienists else None,
            "first_visit_date": first_visit.isoformat() if status != 2 else "1900-01-01",
            "last_visit_date": "1900-01-01", "employer_id": r.randint(1, self.n_emp) if age >= 18 and r.random() < 0.6 else 0,
            "privacy_flags": r.choice((0, 0, 0, 1, 2, 3)), "premed": int(r.random() < 0.03),
            "ssn_last4": f"{r.randint(0, 9999):04d}" if r.random() < 0.5 else None,
            "image_id": f"IMG{pid:06d}", "clinic_id": 1, "pri_insured_id": 0, "sec_insured_id": 0,
            "pri_ins_rel": 0, "sec_ins_rel": 0, "created_at": _stamp(r, first_visit, first_visit),
            "modified_at": self.stamp(), "custom_referral_source": r.choice((None, "Google", "Friend", "Insurance list", "Señal TV")),
            "custom_vip": r.choice((0, 0, 0, 1)), "custom_balance_note": None,
        }

    def _family(self, size: int) -> int:
        r = self.rng
        self.fam_id = self.next_id("family")
        last = r.choice(LAST)
        self.address = r.choice(CITIES)
        self.street = f"{r.randint(1, 9999)} {r.choice(STREETS)}"
        self.phone = f"303-555-{r.randint(1000, 9999)}"
        guarantor_is_patient = r.random() > 0.15 or size == 1
        head = self._person(last, r.randint(25, 80), None, 1 if guarantor_is_patient else 2, 2 if size > 1 else 1,
                            r.choice((1, 2)))
        members = [head]
        gid = head["patient_id"]
        if size > 1 and r.random() < 0.7:
            members.append(self._person(last, r.randint(25, 80), gid, 1, 2, r.choice((1, 2))))
        while len(members) < size + (0 if guarantor_is_patient else 1):
            members.append(self._person(last, r.randint(1, 22), gid, 1, 3, r.choice((1, 2))))
        patients = [m for m in members if m["status"] != 2]
        # insurance: subscriber is the guarantor (or the spouse); children ride on it
        if r.random() < self.pri_pct:
            subscriber = members[1] if len(members) > 1 and members[1]["fampos"] == 2 and r.random() < 0.3 else head
            plan = r.choice(self.carriers)
            insured = self._insured(plan, subscriber)
            for m in patients:
                rel = 1 if m is subscriber else 2 if m["fampos"] == 2 else 3
                m["pri_insured_id"], m["pri_ins_rel"] = insured, rel
                self.w.add("patient_insurance", {"pat_ins_id": f"{m['patient_id']}|1", "patient_id": m["patient_id"], "rank": 1,
                                                 "insured_id": insured, "relationship_code": rel,
                                                 "benefits_used": r.randint(0, 80) * 1000, "deductible_used": r.choice((0, 5000)),
                                                 "modified_at": self.stamp()})
            if r.random() < self.sec_pct / self.pri_pct:
                plan2 = r.choice([c for c in self.carriers if c != plan] or self.carriers)
                sub2 = members[1] if len(members) > 1 else head
                insured2 = self._insured(plan2, sub2)
                for m in patients:
                    rel = 1 if m is sub2 else 2 if m["fampos"] == 2 else 3
                    m["sec_insured_id"], m["sec_ins_rel"] = insured2, rel
                    self.w.add("patient_insurance", {"pat_ins_id": f"{m['patient_id']}|2", "patient_id": m["patient_id"], "rank": 2,
                                                     "insured_id": insured2, "relationship_code": rel,
                                                     "benefits_used": 0, "deductible_used": 0, "modified_at": self.stamp()})
        for m in members:
            age = (TODAY - dt.date.fromisoformat(str(m["birth_date"]))).days // 365
            if age < 18 and m is not head:
                self.w.add("guardian", {"guardian_link_id": self.next_id("guardian"), "patient_id": m["patient_id"],
                                        "guardian_id": gid, "relationship": 1, "is_responsible_party": 1,
                                        "modified_at": self.stamp()})
        for m in patients:
            self._clinical(m)
        for m in members:
            self.w.add("patient", m)
        # about 2% duplicates: the same person entered twice (new-patient appointment converted again)
        for m in patients:
            if r.random() < 0.02:
                dup = dict(m)
                dup["patient_id"] = self.next_id("patient")
                dup["chart_num"] = f"{str(m['last_name']).strip()[:4].upper()}{dup['patient_id']:05d}"
                dup["first_name"] = str(m["first_name"]).strip() + "  "
                dup["pri_insured_id"] = dup["sec_insured_id"] = 0
                dup["pri_ins_rel"] = dup["sec_ins_rel"] = 0
                dup["modified_at"] = self.stamp()
                self.w.add("patient", dup)
        return len(patients)

    def _insured(self, plan: int, subscriber: dict[str, object]) -> int:
        iid = self.next_id("insured")
        r = self.rng
        self.w.add("insured", {"insured_id": iid, "ins_plan_id": plan, "ins_party_id": subscriber["patient_id"],
                               "id_num": f"{r.randint(100000000, 999999999)}", "ins_type": 0,
                               "effective_date": (TODAY - dt.timedelta(days=r.randint(30, 2000))).isoformat(),
                               "last_verified": (TODAY - dt.timedelta(days=r.randint(0, 400))).isoformat(),
                               "modified_at": self.stamp()})
        return iid

    # -- clinical history of one patient --------------------------------------------------------
    def _tooth(self, area: str, child: bool) -> tuple[object, object, str | None]:
        r = self.rng
        if area in ("mouth",):
            return 0, 0, None
        if area == "quad":
            q = r.randint(1, 4)
            return [1, 9, 17, 25][q - 1], [8, 16, 24, 32][q - 1], None
        if area == "range":
            s = r.choice([3, 4, 12, 13, 19, 20, 28, 29])
            return s, s + 2, None
        roll = r.random()
        tooth: object
        if child and roll < 0.6:
            tooth = r.choice(PRIMARY)
        elif roll < 0.03:
            tooth = r.randint(51, 82)  # supernumerary
        else:
            tooth = r.choice(POSTERIOR + ANTERIOR)
        return tooth, tooth, None

    def _surfaces(self, code: str) -> str:
        n = {"D2140": 1, "D2330": 1, "D2391": 1, "D2150": 2, "D2392": 2, "D2160": 3}.get(code, 1)
        letters = self.rng.sample("MODLF5", n)
        return "".join(ch for ch in SURFACE_ORDER if ch in letters)

    def _clinical(self, m: dict[str, object]) -> None:
        r, w = self.rng, self.w
        pid, guar = m["patient_id"], m["guar_id"]
        child = (TODAY - dt.date.fromisoformat(str(m["birth_date"]))).days < 13 * 365
        insured = bool(m["pri_insured_id"])
        visits = r.randint(1, 8)
        last_visit: dt.date | None = None
        tx_case: int | None = None
        for _ in range(visits):
            day = TODAY - dt.timedelta(days=r.randint(-60, 1100))
            future = day > TODAY
            codes = r.sample(range(1, len(PROC_CODES) + 1), r.randint(1, 3))
            if r.random() < 0.5:
                codes[0] = 6 if not child else 7  # a cleaning
            hour = r.randint(7, 16)
            minute = r.choice(range(0, 60, self.block))
            appt_id = self.next_id("appt")
            status = 150 if future else 154
            new_patient = r.random() < 0.03
            broken = not future and r.random() < 0.05
            length = sum(PROC_CODES[c - 1][5] for c in codes)
            length = max(self.block, (length + self.block - 1) // self.block * self.block)
            provider = r.choice(self.hygienists if codes[0] in (6, 7) and self.hygienists else self.providers)
            visit_fee = 0
            proc_ids: list[int] = []
            if not future and not broken:
                last_visit = max(last_visit or day, day)
                claim_id = self.next_id("claim") if insured else None
                for c in codes:
                    code, desc, fee, area, _cat, _min = PROC_CODES[c - 1]
                    start, end, _ = self._tooth(area, child)
                    surf = self._surfaces(code) if area == "surface" else ""
                    proc_id = self.next_id("proc")
                    proc_ids.append(proc_id)
                    visit_fee += fee
                    self._proc(pid, guar, proc_id, 102, 0, day, c, code, provider, fee, start, end, surf,
                               claim_id, None, r.random() < 0.2)
                    if code in LAB_CODES:
                        self._lab(pid, provider, None, day)
                if insured and claim_id is not None:
                    unpaid = r.random() < 0.12 or day > TODAY - dt.timedelta(days=20)
                    received = 0 if unpaid else visit_fee * r.choice((50, 60, 80)) // 100
                    w.add("claim", {"claim_id": claim_id, "patient_id": pid, "claim_type": 0, "prim_claim_id": 0,
                                    "ins_id": 0, "insured_id": m["pri_insured_id"], "provider_id": provider,
                                    "date_of_claim": day.isoformat(),
                                    "date_received": None if unpaid else (day + dt.timedelta(days=r.randint(10, 40))).isoformat(),
                                    "date_resent": None, "total_billed": visit_fee, "total_received": received,
                                    "note_text": None, "modified_at": self.stamp(day)})
                    if received:
                        self._ledger(pid, guar, 3, 903, day + dt.timedelta(days=30), received, claim_id, provider)
                        writeoff = (visit_fee - received) // 3
                        if writeoff:
                            self._ledger(pid, guar, 2, 904, day + dt.timedelta(days=30), -writeoff, claim_id, provider)
                    if m["sec_insured_id"] and received:
                        sec = self.next_id("claim")
                        w.add("claim", {"claim_id": sec, "patient_id": pid, "claim_type": 0, "prim_claim_id": claim_id,
                                        "insured_id": m["sec_insured_id"], "provider_id": provider,
                                        "date_of_claim": (day + dt.timedelta(days=31)).isoformat(),
                                        "total_billed": visit_fee - received, "total_received": 0,
                                        "modified_at": self.stamp(day)})
                if r.random() < 0.7:
                    self._ledger(pid, guar, 1, r.choice((900, 901, 902)), day, visit_fee // r.choice((1, 2, 4)), None, provider)
                if r.random() < 0.05:
                    self._ledger(pid, guar, 2, 905, day, -r.randint(1, 50) * 100, None, provider)
                if r.random() < 0.5:
                    self._note(pid, provider, day)
            w.add("appointment", {
                "appointment_id": appt_id, "patient_id": 0 if new_patient else pid,
                "patient_name": f"{str(m['last_name']).strip()}, {str(m['first_name']).strip()}" if new_patient else None,
                "new_pat_phone": self.phone if new_patient else None, "appointment_date": day.isoformat(),
                "start_hour": hour, "start_minute": minute, "length": length, "operatory_id": r.choice(self.ops),
                "provider_id": provider, "addtnl_provider_id": None, "status_id": status,
                "appt_type_id": 101 if codes[0] in (6, 7) else 102, "reason": _pad(PROC_CODES[codes[0] - 1][1], r),
                "note": "Pt asked for a morning slot.\r\nCall before 9." if r.random() < 0.1 else None,
                "amount": visit_fee or sum(PROC_CODES[c - 1][2] for c in codes), "broken": int(broken),
                "broken_date": day.isoformat() if broken else None,
                "created_at": _stamp(r, day - dt.timedelta(days=60), day), "modified_at": self.stamp(),
                "custom_confirmed_by": r.choice((None, "text", "phone", "e-mail")),
            })
            for seq, c in enumerate(codes, start=1):
                charted = seq <= len(proc_ids)
                w.add("appointment_procedure", {"appt_proc_id": f"{appt_id}|{seq}", "appointment_id": appt_id, "seq": seq,
                                                "code_type": 1 if charted else 0,
                                                "proc_id": proc_ids[seq - 1] if charted else 0,
                                                "proc_code_id": c, "modified_at": self.stamp()})
            w.add("appointment_history", {"appt_hist_id": self.next_id("appthist"), "parent_appt_id": appt_id,
                                          "status": status, "deleted_flag": 0, "op_id": self.ops[0], "provider_id": provider,
                                          "modified_at": self.stamp()})
            if r.random() < 0.02:  # a deleted appointment: only its history remains
                gone = self.next_id("appt")
                w.add("appointment_history", {"appt_hist_id": self.next_id("appthist"), "parent_appt_id": gone,
                                              "status": 150, "deleted_flag": 1, "op_id": self.ops[0],
                                              "provider_id": provider, "modified_at": self.stamp()})
        # treatment planned and existing work
        if r.random() < 0.35:
            tx_case = self.next_id("txcase")
            w.add("tx_case", {"tx_case_id": tx_case, "patient_id": pid, "provider_id": self.providers[0],
                              "case_name": _pad("Restorative plan", r), "status_id": r.choice((3100, 3101, 3102)),
                              "created_date": (TODAY - dt.timedelta(days=r.randint(1, 300))).isoformat(),
                              "accepted_date": None, "modified_at": self.stamp()})
            for c in r.sample(range(9, 28), r.randint(1, 3)):
                code, desc, fee, area, _cat, _min = PROC_CODES[c - 1]
                start, end, _ = self._tooth(area, child)
                surf = self._surfaces(code) if area == "surface" else ""
                self._proc(pid, guar, self.next_id("proc"), 105, 0, TODAY - dt.timedelta(days=r.randint(1, 300)),
                           c, code, self.providers[0], fee, start, end, surf, None, tx_case, False)
                if code in LAB_CODES and r.random() < 0.5:
                    self._lab(pid, self.providers[0], tx_case, TODAY - dt.timedelta(days=r.randint(1, 30)))
            if insured and r.random() < 0.3:  # predetermination
                w.add("claim", {"claim_id": self.next_id("claim"), "patient_id": pid, "claim_type": 1,
                                "insured_id": m["pri_insured_id"], "provider_id": self.providers[0],
                                "date_of_claim": (TODAY - dt.timedelta(days=10)).isoformat(), "total_billed": 120000,
                                "total_received": 0, "modified_at": self.stamp()})
        for _ in range(r.choice((0, 0, 1, 2))):
            c = r.choice([16, 17, 10, 11])
            code, _d, _fee, area, _cat, _min = PROC_CODES[c - 1]
            start, end, _ = self._tooth(area, False)
            surf = self._surfaces(code) if area == "surface" else ""
            self._proc(pid, guar, self.next_id("proc"), r.choice((101, 103)), 0, TODAY - dt.timedelta(days=r.randint(400, 4000)),
                       c, code, "DEF_PROV", 0, start, end, surf, None, None, False)
        if last_visit:
            m["last_visit_date"] = last_visit.isoformat()
        # recalls, prescriptions, perio, documents
        if r.random() < 0.85:
            rtype = 2 if r.random() < 0.15 else 1
            due = (last_visit or TODAY) + dt.timedelta(days=30 * (4 if rtype == 2 else 6))
            w.add("recall", {"recall_id": f"{pid}|{rtype}", "patient_id": pid, "recall_type_id": rtype,
                             "due_date": due.isoformat(), "prior_date": last_visit.isoformat() if last_visit else None,
                             "provider_id": r.choice(self.hygienists or self.providers), "modified_at": self.stamp()})
        if r.random() < 0.15:
            drug, descript, qty, daw, sig = r.choice(DRUGS)
            w.add("prescription", {"rx_id": self.next_id("rx"), "patient_id": pid, "provider_id": self.providers[0],
                                   "rx_date": (TODAY - dt.timedelta(days=r.randint(1, 900))).isoformat(), "drug_name": drug,
                                   "descript": descript, "dispense": qty, "refills": r.choice((0, 0, 1)),
                                   "dispense_as_written": daw, "sig_text": sig, "note_text": None, "modified_at": self.stamp()})
        if r.random() < 0.1:
            readings = {str(t): [r.randint(1, 6) for _ in range(6)] for t in POSTERIOR[:r.randint(4, 16)]}
            w.add("perio_exam", {"exam_id": self.next_id("perio"), "patient_id": pid, "provider_id": r.choice(self.hygienists or self.providers),
                                 "exam_date": (TODAY - dt.timedelta(days=r.randint(1, 700))).isoformat(),
                                 "readings": json.dumps(readings), "modified_at": self.stamp()})
        if r.random() < 0.45:
            self._document(pid)

    def _proc(self, pid: object, guar: object, proc_id: int, chart_status: int, proc_class: int, day: dt.date,
              code_id: int, code: str, provider: str, fee: int, start: object, end: object, surf: str,
              claim_id: int | None, tx_case: int | None, with_note: bool) -> None:
        r = self.rng
        flags = {name: int(letter in surf) for letter, name in zip(SURFACE_ORDER, SURFACE_FLAGS, strict=True)}
        self.w.add("proc_log", {
            "proc_id": proc_id, "patient_id": pid, "guar_id": guar, "chart_status": chart_status, "proc_class": proc_class,
            "ord": 0, "proc_date": day.isoformat(), "create_date": _stamp(r, day, day),
            "completion_date": day.isoformat() if chart_status == 102 else None, "proc_code_id": code_id,
            "ada_code": code, "provider_id": provider, "clinic_id": 1, "amount": fee,
            "amt_prim_ins_paid": 0, "amt_sec_ins_paid": 0, "tooth_range_start": start, "tooth_range_end": end,
            "surface_string": _pad(surf, r) if surf else "", **flags, "claim_id": claim_id or 0, "tx_case_id": tx_case or 0,
            "check_num": None, "history": 0,
            "note_text": "Tooth prepped, shade A2.\r\nTemporary placed — pt comfortable." if with_note else None,
            "modified_at": self.stamp(day)})

    def _ledger(self, pid: object, guar: object, proc_class: int, ord_def: int, day: dt.date, amount: int,
                claim_id: int | None, provider: str) -> None:
        r = self.rng
        self.w.add("proc_log", {
            "proc_id": self.next_id("proc"), "patient_id": pid, "guar_id": guar, "chart_status": 90,
            "proc_class": proc_class, "ord": ord_def, "proc_date": day.isoformat(), "create_date": _stamp(r, day, day),
            "proc_code_id": 0, "provider_id": provider, "clinic_id": 1, "amount": amount, "amt_prim_ins_paid": 0,
            "amt_sec_ins_paid": 0, "tooth_range_start": 0, "tooth_range_end": 0, "surface_string": "",
            **{name: 0 for name in SURFACE_FLAGS}, "claim_id": claim_id or 0, "tx_case_id": 0,
            "check_num": f"{r.randint(1000, 9999)}" if ord_def in (901, 903) else None, "history": 0,
            "modified_at": self.stamp(day)})

    def _lab(self, pid: object, provider: str, tx_case: int | None, day: dt.date) -> None:
        r = self.rng
        received = day + dt.timedelta(days=r.randint(7, 14))
        self.w.add("lab_case", {"lab_case_id": self.next_id("lab"), "patient_id": pid, "provider_id": provider,
                                "tx_case_id": tx_case or 0, "lab_name": r.choice(["Glidewell", "Denver Dental Lab", "Peña Ceramics"]),
                                "description": "Crown, zirconia, shade A2", "status_id": 3201 if received <= TODAY else 3200,
                                "sent_date": day.isoformat(), "due_date": (day + dt.timedelta(days=14)).isoformat(),
                                "received_date": received.isoformat() if received <= TODAY else None,
                                "cost": r.choice((9500, 12000, 15500)), "modified_at": self.stamp(day)})

    def _note(self, pid: object, provider: str, day: dt.date) -> None:
        r = self.rng
        lines = [line.format(t=r.randint(1, 32)) for line in r.sample(NOTE_LINES, r.randint(1, 4))]
        self.w.add("clinical_note", {"note_id": self.next_id("note"), "patient_id": pid, "provider_id": provider,
                                     "note_date": _stamp(r, day, day), "note_type_id": r.choice((3000, 3001, 3002)),
                                     "note_text": "\r\n".join(lines) + ("   " if r.random() < 0.3 else ""),
                                     "modified_at": self.stamp(day)})

    def _document(self, pid: object) -> None:
        r = self.rng
        kind = r.choice(("jpeg", "jpeg", "pdf", "tiff", "dicom"))
        maker = {"jpeg": sample_files.jpeg, "pdf": sample_files.pdf, "tiff": sample_files.tiff, "dicom": sample_files.dicom}[kind]
        ext = {"jpeg": "jpg", "pdf": "pdf", "tiff": "tif", "dicom": "dcm"}[kind]
        # a few files are shared (the same consent form scanned for a family): content addressing dedupes them
        tag = f"consent-{r.randint(1, 20)}" if kind == "pdf" and r.random() < 0.3 else f"{kind}-{pid}-{self.next_id('doctag')}"
        folder = f"P{int(str(pid)) // 1000:03d}"
        name = f"{tag}.{ext}"
        rel = f"{folder}\\{name}"
        path = self.root / folder / name
        if rel not in self.written_files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(maker(tag))
            self.written_files.add(rel)
            self.info.files += 1
        image = kind in ("jpeg", "dicom", "tiff")
        self.w.add("document", {
            "doc_id": self.next_id("doc"), "attach_type": "patient", "patient_id": pid, "attach_id": None,
            "category_id": 1200 if image else 1201, "description": _pad("Bitewings" if image else "Signed consent", r),
            "doc_date": (TODAY - dt.timedelta(days=r.randint(1, 900))).isoformat(), "doc_kind": "image" if image else "document",
            "image_type": r.choice(("bitewing", "periapical", "panoramic", "intraoral photo")) if image else None,
            "tooth_numbers": ",".join(str(t) for t in sorted(r.sample(POSTERIOR, 2))) if image else None,
            "file_path": rel, "modified_at": self.stamp()})


def iter_source_rows(database: Path, table: str) -> Iterator[dict[str, object]]:
    """Read a synthetic view back as dicts (tests compare the bundle with it)."""
    conn = sqlite3.connect(database)
    conn.row_factory = sqlite3.Row
    try:
        for row in conn.execute(f'SELECT * FROM "{view_name(table)}"'):
            yield dict(row)
    finally:
        conn.close()
