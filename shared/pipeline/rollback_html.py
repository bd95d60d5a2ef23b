"""The rollback report as one self-contained HTML page a practice manager can read: what was undone
(summary counts first), whether the destination was verified, then every record or file left in
place and why, listed by ids (Dentrix source id, Dynamics table and id): never a row value."""

from __future__ import annotations

import html

from shared.pipeline.rollback import RollbackReport

SUMMARY: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("deleted", "Records deleted", ("deleted",)),
    ("restored", "Records restored to their state before the migration", ("restored",)),
    ("files-deleted", "SharePoint files deleted", ("files_deleted",)),
    ("folders-deleted", "SharePoint folders deleted", ("folders_deleted",)),
    ("locations-deleted", "Document locations deleted", ("locations_deleted", "scaffold_deleted")),
    ("already-gone", "Already gone (someone deleted them, or an earlier attempt did)", ("already_gone",)),
    ("kept-edited", "Kept: edited in Dynamics after the migration", ("kept_edited",)),
    ("kept-files", "Kept: SharePoint files edited after the upload", ("kept_edited_files",)),
    ("kept-no-image", "Kept: no before-image to restore", ("kept_no_before_image",)),
)
"""(element id, label, step count keys summed): the page's summary lines, in order."""


def totals(report: RollbackReport) -> dict[str, int]:
    """Counts summed over the steps (the numbers at the top of the page)."""
    out: dict[str, int] = {}
    for step in report.steps:
        for key, value in step.counts.items():
            out[key] = out.get(key, 0) + value
    return out


def summary_numbers(report: RollbackReport) -> dict[str, int]:
    """Element id -> number, as the page shows them (tests read the rendered page against these)."""
    counts = totals(report)
    numbers = {element: sum(counts.get(k, 0) for k in keys) for element, _, keys in SUMMARY}
    numbers["kept"] = len(report.kept)
    numbers["remaining"] = len(report.remaining)
    numbers["schema-removed"] = len(report.schema_removed)
    return numbers


def render_html(report: RollbackReport) -> str:
    e = html.escape
    numbers = summary_numbers(report)
    verdict = "verified: nothing the migration created is left" if report.verified else \
        "NOT verified: records the migration created are still there (see below)"
    lines = "".join(f'<tr><td>{e(label)}</td><td><span id="{element}">{numbers[element]}</span></td></tr>'
                    for element, label, _ in SUMMARY)
    kept = "".join(f"<tr><td>{e(k.table)}</td><td>{e(k.source_id)}</td><td>{e(k.target_table or '')}</td>"
                   f"<td>{e(k.target_id or '')}</td><td>{e(k.reason)}</td></tr>" for k in report.kept)
    remaining = "".join(f"<tr><td>{e(k.table)}</td><td>{e(k.source_id)}</td><td>{e(k.target_table or '')}</td>"
                        f"<td>{e(k.target_id or '')}</td></tr>" for k in report.remaining)
    steps = "".join(f"<tr><td>{e(s.table)}</td><td>{e(', '.join(f'{k} {v}' for k, v in sorted(s.counts.items())))}"
                    f"</td></tr>" for s in report.steps)
    schema = "".join(f"<li>{e(c)}</li>" for c in report.schema_removed)
    schema_kept = "".join(f"<tr><td>{e(c)}</td><td>{e(why)}</td></tr>" for c, why in sorted(report.schema_kept.items()))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Rollback report: {e(report.migration_id)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}table{{border-collapse:collapse;margin:1rem 0}}
td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}#summary span{{font-size:1.3rem;font-weight:bold}}
.ok{{color:#176b2c}}.bad{{color:#b00020;font-weight:bold}}</style></head>
<body><h1>Rollback report</h1><p>Migration <code>{e(report.migration_id)}</code></p>
<section id="summary"><p class="{'ok' if report.verified else 'bad'}" id="verdict">{e(verdict)}</p>
<table>{lines}
<tr><td>Records kept and listed below</td><td><span id="kept">{numbers['kept']}</span></td></tr>
<tr><td>Created records still present</td><td><span id="remaining">{numbers['remaining']}</span></td></tr>
<tr><td>Schema components removed</td><td><span id="schema-removed">{numbers['schema-removed']}</span></td></tr>
</table></section>
<h2>Kept records</h2><p>Left as they are: someone changed them after the migration wrote them. Roll back again
with <code>override_edited</code> to undo them anyway.</p>
<table id="kept-records"><tr><th>map</th><th>Dentrix id</th><th>Dynamics table</th><th>Dynamics id</th><th>reason</th></tr>
{kept}</table>
<h2>Still present</h2><table id="remaining-records"><tr><th>map</th><th>Dentrix id</th><th>Dynamics table</th>
<th>Dynamics id</th></tr>{remaining}</table>
<h2>Steps</h2><table id="steps"><tr><th>map</th><th>counts</th></tr>{steps}</table>
<h2>Schema removed</h2><ul id="schema">{schema}</ul>
<h2>Schema kept</h2><p>Created by the migration, still holding data: left in place.</p>
<table id="schema-kept"><tr><th>component</th><th>reason</th></tr>{schema_kept}</table>
</body></html>
"""


__all__ = ["SUMMARY", "render_html", "summary_numbers", "totals"]
