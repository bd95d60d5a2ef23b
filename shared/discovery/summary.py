"""Render a discovery report as a short Markdown summary a practice manager can read (counts and ids only)."""

from __future__ import annotations

from shared.discovery.report import DiscoveryReport, DiscoveryWarning

SUMMARY_IDS = 20
"""Ids listed per finding in the summary; the JSON report carries up to its own cap."""

_BOUND_TEXT = {
    "requests": "the request limit ({max_requests:,} requests per 5 minutes per application user)",
    "execution_time": "the server-time limit ({max_execution_seconds:,.0f} s of execution per 5 minutes per "
                      "application user)",
    "concurrency": "the concurrency limit ({concurrency} requests in flight per application user)",
    "none": "nothing (no records to write)",
}


def _duration(seconds: float) -> str:
    if seconds < 60:
        return "under a minute" if seconds >= 1 else "a few seconds"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"about {minutes} minutes"
    hours, rest = divmod(minutes, 60)
    return f"about {hours} h {rest:02d} min"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{n:,} bytes" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{n:,} bytes"  # pragma: no cover


def _money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents) // 100:,}.{abs(cents) % 100:02d}"


def _ids(ids: list[str], count: int) -> str:
    shown = ids[:SUMMARY_IDS]
    more = count - len(shown)
    return ", ".join(shown) + (f" and {more:,} more" if more > 0 else "")


def _line(w: DiscoveryWarning, report: DiscoveryReport) -> str:
    text = f"- {w.message}."
    if w.code == "open_claims":
        oc = report.open_claims
        text = (f"- **{oc.count:,} insurance claims are sent but not paid** ({_money(oc.billed_cents)} billed). "
                f"In-flight claims must clear in Dentrix before cutover. Claim ids: {_ids(oc.ids, oc.count)}.")
    elif w.code == "duplicate_patients":
        d = report.duplicate_patients
        groups = "; ".join(" = ".join(g) for g in d.id_groups[:SUMMARY_IDS])
        more = d.groups - min(len(d.id_groups), SUMMARY_IDS)
        text = (f"- {d.patients:,} patients in {d.groups:,} group{'' if d.groups == 1 else 's'} share a name and birth date (likely entered "
                f"twice). Patient ids: {groups}{f' and {more:,} more groups' if more > 0 else ''}.")
    elif w.code == "appointments_without_patient":
        a = report.appointments_without_patient
        text = f"- {w.message}. Appointment ids: {_ids(a.ids, a.count)}."
    elif w.code == "orphans":
        o = next((o for o in report.orphans if (o.table, o.column) == (w.table, w.column)), None)
        if o is not None:
            text = f"- {w.message}. Ids: {_ids(o.ids, o.count)}."
    elif w.code == "quarantined_rows" and w.table:
        t = report.table(w.table)
        reasons = ", ".join(f"{p.field} ({p.code}) x{p.count}" for p in t.problems[:5])
        text = f"- {w.message}: {reasons}. Ids: {_ids(t.quarantined_ids.ids, t.quarantined_ids.count)}."
    elif w.code == "attachments_over_limit":
        ol = report.estimate.attachments.over_limit
        text = f"- {w.message}. Document ids: {_ids(ol.ids, ol.count)}."
    return text


def render_summary(report: DiscoveryReport) -> str:
    """A short Markdown summary: warnings first, then what the bundle holds, what Dynamics gets, and how long."""
    est = report.estimate
    s = est.settings
    out = [f"# Discovery summary: bundle {report.bundle_id}", "",
           f"Source: {report.source_product} {report.source_version or ''}".rstrip()
           + f" ({report.bundle_kind} bundle), practice time zone {report.practice_timezone}.", ""]
    for severity, title in (("cutover", "Settle before cutover"), ("review", "Review before approving the map"),
                            ("info", "Good to know")):
        items = [w for w in report.warnings if w.severity == severity]
        if items:
            out += [f"## {title}", ""] + [_line(w, report) for w in items] + [""]
    if not report.warnings:
        out += ["No warnings: every row is valid and every reference resolves.", ""]

    total = sum(t.rows for t in report.tables)
    quarantined = sum(t.quarantined for t in report.tables)
    out += ["## What the bundle holds", "",
            f"{total:,} rows in {len(report.tables)} tables; {quarantined:,} quarantined.", "",
            "| Table | Rows | Quarantined | Custom columns |", "|---|---:|---:|---|"]
    for t in report.tables:
        out.append(f"| {t.name} | {t.rows:,} | {t.quarantined:,} | {', '.join(t.custom_columns) or '-'} |")
    out += ["", "## What Dynamics 365 will get", "",
            "| Dentrix object | Map | Dataverse table | Action | Records |", "|---|---|---|---|---:|"]
    for o in est.objects:
        out.append(f"| {o.object} | {o.map} | {o.target_table} | {o.action} | {o.records:,} |")
    att = est.attachments
    where = (f"SharePoint ({att.patient_folders:,} patient folders)" if att.destination == "sharepoint"
             else "Dataverse note attachments")
    out += ["", f"Attachments: {att.documents:,} documents, {att.files:,} distinct files, {_size(att.bytes)}, "
                f"to {where}; {att.over_limit.count:,} over the {_size(att.limit_bytes)} limit.", ""]
    load = est.load
    bound = _BOUND_TEXT[load.bound].format(max_requests=s.max_requests, max_execution_seconds=s.max_execution_seconds,
                                           concurrency=min(s.concurrency_per_user, s.max_concurrent))
    out += ["## Estimated time", "",
            f"- Records: {_duration(load.seconds)} ({load.records:,} writes in {load.requests:,} requests with "
            f"{load.app_users} application user{'s' if load.app_users != 1 else ''}, about "
            f"{load.records_per_second:,.0f} records/s), paced by {bound}.",
            f"- Files: {_duration(att.upload_seconds)}.",
            f"- Assumes {s.per_record_seconds * 1000:g} ms of server time per record and {s.records_per_request:,} "
            f"records per request; a best case: retries and slower server time add to it.", ""]
    return "\n".join(out)
