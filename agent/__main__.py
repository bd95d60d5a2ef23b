"""The agent's command line: `python -m agent synth|extract|validate|upload` (see agent/README.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from shared.dentrix.manifest import DEFAULT_PART_ROWS
from shared.errors import BridgeworkError


def _synth(args: argparse.Namespace) -> int:
    from agent.synth import synthesize

    info = synthesize(Path(args.out), args.patients, args.seed)
    print(f"wrote {args.out}: {sum(info.rows.values())} rows in {len(info.rows)} views, {info.files} files under {info.files_root}")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from agent.extract import extract

    info = extract(args.source, Path(args.out), timezone=args.timezone, money_unit=args.money_unit,
                   files_root=Path(args.files_root) if args.files_root else None, part_rows=args.part_rows,
                   base=Path(args.base) if args.base else None, since=args.since, bundle_id=args.bundle_id,
                   text_encoding=args.encoding)
    print(f"bundle {info.bundle_id} ({info.kind}): {sum(info.rows.values())} rows, {info.files} files -> {info.bundle_dir}")
    for warning in info.warnings:
        print(f"warning {warning.code} [{warning.table or '-'}] x{warning.count}: {warning.message}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from agent.validate import validate_directory

    return validate_directory(Path(args.bundle), out=sys.stdout)


def _upload(args: argparse.Namespace) -> int:
    from agent.upload import upload_bundle

    hook = None
    if args.fail_after is not None:  # fault knob for the resume test: die hard, as a killed process would
        seen = [0]

        def hook(_path: str) -> None:
            seen[0] += 1
            if seen[0] >= args.fail_after:
                os._exit(70)

    report = upload_bundle(Path(args.bundle), args.sas_url, migration_id=args.migration_id,
                           concurrency=args.concurrency, progress=None, on_blob_done=hook)
    print(f"uploaded {report.uploaded} blobs ({report.uploaded_bytes} bytes), skipped {report.skipped} "
          f"already present; manifest committed at {report.prefix}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agent", description="Bridgework on-prem agent for Dentrix.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic Dentrix G practice (SQLite + files)")
    p.add_argument("--patients", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True, help="SQLite file to write, e.g. practice.db")
    p.set_defaults(run=_synth)

    p = sub.add_parser("extract", help="extract a bundle from Dentrix (ODBC) or a SQLite practice")
    p.add_argument("--source", required=True, help="ODBC connection string, or path to a SQLite practice")
    p.add_argument("--out", required=True, help="new folder for the bundle")
    p.add_argument("--since", help="delta: local datetime watermark (default: the base bundle's)")
    p.add_argument("--base", help="delta: the previous bundle folder (its keys and row hashes)")
    p.add_argument("--timezone", help="practice IANA time zone, e.g. America/Denver")
    p.add_argument("--money-unit", choices=["cents", "dollars"], default="cents", help="unit Dentrix stores money in")
    p.add_argument("--files-root", help="Dentrix document / image folder")
    p.add_argument("--part-rows", type=int, default=DEFAULT_PART_ROWS)
    p.add_argument("--bundle-id")
    p.add_argument("--encoding", default="cp1252", help="text encoding of the ODBC source")
    p.set_defaults(run=_extract)

    p = sub.add_parser("validate", help="check a bundle against its manifest and schema")
    p.add_argument("bundle")
    p.set_defaults(run=_validate)

    p = sub.add_parser("upload", help="upload a bundle with a SAS URL (resumable)")
    p.add_argument("--bundle", required=True)
    p.add_argument("--sas-url", required=True, help="container SAS URL (create + write); never an account key")
    p.add_argument("--migration-id", help="blob prefix; default: the path after the container in the SAS URL")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--fail-after", type=int, help=argparse.SUPPRESS)
    p.set_defaults(run=_upload)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except BridgeworkError as exc:
        print(f"error [{exc.code}]: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
