"""The migration as visible stages, each one entry function returning a small `...Info` of ids and counts.

    bundle.py       open the uploaded export bundle of a migration
    discovery.py    profile the bundle -> discovery report (JSON + summary) in Blob
    mapping.py      propose the field map, keep the user's draft, freeze an approved version
    schema.py       plan the Dataverse schema from the approved map, then build it
    load.py         plan the dependency waves, load one bundle part, bind second-pass lookups
    in_flight.py    the process's budget of bundle bytes its load batches hold at once (its memory bound)
    attachments.py  copy the bundle's files to SharePoint (or note attachments)
    finish.py       the final per-object report, the audit CSV and the rollback watermark
    audit.py        the journal as CSV (the audit log), streamed by the API and kept in Blob
    rollback.py     the compensating rollback from the journal (plan, one table per step, verification)
    sample.py       the field-level diff of a stratified patient sample (JSON, CSV, HTML)

Activities call exactly one of these; documents live in Blob (`shared/state/artifacts.py`), records in
Dataverse, and what happened to each record in the journal (`shared/state/journal.py`).
"""
