"""`python -m agent upload`: send a bundle to Blob Storage with a SAS URL, resumably, manifest last.

- Credentials: a SAS URL only (create + write is enough). Connection strings and account keys are
  refused: the practice machine must never hold a key to the storage account.
- Layout: `<container>/<migration_id>/<bundle_id>/...` exactly as in the bundle folder.
- Integrity: every request carries an MD5 of its body (`validate_content`: Put Blob, or each Put
  Block of a large blob), and every local file is checked against the manifest's sha256 before it
  is sent.
- Resume: a SAS that can only write cannot list or read, so what is already up is recorded in a
  local journal (`.upload-journal.jsonl`, one line per committed blob) with its sha256. A second run sends
  only the blobs missing from the journal or whose bytes differ from what was recorded.
- The manifest goes last, after every other blob succeeded: the cloud never sees a half bundle.
- Memory: the binaries are taken from the file index one index part at a time, and at most
  `concurrency * 4` uploads are queued at once, so a practice with many images costs no more than
  a small one. (A resumed run holds the previous run's journal lines: one path and hash per blob
  already sent.)
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from shared.dentrix.manifest import MANIFEST_NAME, SUPPORTED_FORMATS, Manifest
from shared.dentrix.reader import BundleReader
from shared.errors import (
    BundleCredentialRefused,
    BundleHashMismatch,
    BundleManifestInvalid,
    BundleUploadFailed,
    ConfigurationError,
)

JOURNAL_NAME = ".upload-journal.jsonl"
BLOCK_SIZE = 4 * 1024 * 1024
ATTEMPTS = 4


@dataclass(frozen=True)
class SasTarget:
    """Where to upload: the container URL carrying the SAS, and the blob prefix."""

    container_url: str
    destination: str
    """Account + container without the SAS: identifies the target in the journal."""
    path_prefix: str
    """Path after the container in the URL (the migration id), may be empty."""
    can_read: bool = False
    """The SAS grants read (`sp` has r): then what the journal claims is also checked in the cloud."""


def parse_sas_url(url: str) -> SasTarget:
    """Check that `url` is a container SAS URL and split it. Raises BundleCredentialRefused otherwise.

    Never echoes the URL: its signature is a credential.
    """
    text = url.strip()
    lowered = text.lower()
    if "accountkey=" in lowered or "defaultendpointsprotocol=" in lowered or "sharedaccesssignature=" in lowered:
        raise BundleCredentialRefused("a connection string or account key was given: the agent accepts only a "
                                      "container SAS URL (https://<account>.blob.core.windows.net/<container>?sv=...&sig=...)")
    parts = urlsplit(text)
    query = parse_qs(parts.query)
    if parts.scheme not in ("https", "http") or not parts.netloc or "sig" not in query:
        raise BundleCredentialRefused("not a SAS URL: expected https://<account>.blob.core.windows.net/<container>"
                                      "?<sas token with sig=...>")
    host = parts.hostname or ""
    try:
        loopback, path_style = ip_address(host).is_loopback, True
    except ValueError:
        loopback = path_style = host == "localhost"
    if parts.scheme == "http" and not loopback:
        raise BundleCredentialRefused("a SAS over plain http is refused outside the local emulator: use https")
    segments = [s for s in parts.path.split("/") if s]
    account_path = ""
    if path_style and segments:  # emulator / IP endpoints put the account first: /devstoreaccount1/<container>
        account_path, segments = "/" + segments[0], segments[1:]
    if not segments:
        raise BundleCredentialRefused("the SAS URL names no container")
    container = segments[0]
    container_url = urlunsplit((parts.scheme, parts.netloc, f"{account_path}/{container}", parts.query, ""))
    permissions = (query.get("sp") or [""])[0]
    return SasTarget(container_url, f"{parts.netloc}{account_path}/{container}", "/".join(segments[1:]),
                     can_read="r" in permissions)


@dataclass
class UploadReport:
    prefix: str
    uploaded: int = 0
    uploaded_bytes: int = 0
    skipped: int = 0


class _Journal:
    """Append-only record of blobs known to be in the destination, with their sha256."""

    def __init__(self, path: Path, destination: str) -> None:
        self.path, self.destination = path, destination
        self.done: dict[str, str] = {}
        self.lock = threading.Lock()
        self._fh: Any = None
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue  # a torn last line after a hard kill: that blob is simply sent again
                if item.get("dest") == destination:
                    self.done[item["blob"]] = item["sha256"]

    def record(self, blob: str, sha256: str) -> None:
        # Written after the blob is committed, and flushed to the OS at once so a killed process
        # keeps it. No fsync per line: a record lost to a power cut only means that blob is sent again.
        with self.lock:
            if self._fh is None:
                self._fh = open(self.path, "a", encoding="utf-8")
            self._fh.write(json.dumps({"dest": self.destination, "blob": blob, "sha256": sha256}) + "\n")
            self._fh.flush()
            # not added to `done`: each blob is visited once per run, and a run must not grow with the files

    def close(self) -> None:
        with self.lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def _sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def _present(container: Any, name: str, sha256: str) -> bool:
    """With a readable SAS: is the blob there with the sha256 we recorded in its metadata?"""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return container.get_blob_client(name).get_blob_properties().metadata.get("sha256") == sha256
    except ResourceNotFoundError:
        return False


def _transient(exc: Exception) -> bool:
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(exc, ServiceRequestError | ServiceResponseError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, HttpResponseError):
        return exc.status_code in (408, 429, 500, 502, 503, 504)
    return False


class _Progress:
    """A tqdm bar on a terminal; otherwise a plain line every 5% (logs and schedulers)."""

    def __init__(self, total: int, stream: Any = None) -> None:
        self.total, self.count = total, 0
        self.stream = stream or sys.stderr
        self.bar = None
        self.lock = threading.Lock()
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="blob", file=self.stream)
        self.step = max(1, total // 20)

    def advance(self) -> None:
        with self.lock:
            self.count += 1
            if self.bar is not None:
                self.bar.update(1)
            elif self.count % self.step == 0 or self.count == self.total:
                print(f"upload: {self.count}/{self.total} blobs", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def upload_bundle(
    bundle: Path,
    sas_url: str,
    *,
    migration_id: str | None = None,
    concurrency: int = 4,
    progress: Any = None,
    on_blob_done: Callable[[str], None] | None = None,
) -> UploadReport:
    """Upload the bundle folder `bundle` under `<migration_id>/<bundle_id>/`; manifest last.

    Raises BundleCredentialRefused for anything but a SAS URL, ConfigurationError without a
    migration id, BundleHashMismatch when a local file no longer matches its manifest (validate the
    bundle), BundleUploadFailed when a blob still fails after retries (run again: it resumes).
    """
    from azure.storage.blob import ContainerClient, ContentSettings

    target = parse_sas_url(sas_url)
    bundle = Path(bundle)
    try:
        raw_manifest = json.loads((bundle / MANIFEST_NAME).read_bytes())
        found = raw_manifest.get("format") if isinstance(raw_manifest, dict) else None
        if found not in SUPPORTED_FORMATS:
            # the reader's own refusal, naming the bundle's format and the supported ones
            BundleReader.from_directory(bundle)
        manifest = Manifest.model_validate(raw_manifest)
    except (OSError, ValueError):
        raise BundleManifestInvalid("the bundle folder has no valid manifest.json: run extract again",
                                    file=MANIFEST_NAME) from None
    migration = (migration_id or target.path_prefix).strip("/")
    if not migration or "/" in migration or migration in (".", ".."):
        raise ConfigurationError("no migration id: pass --migration-id or put it after the container in the URL",
                                 code="migration_id_missing")
    prefix = f"{migration}/{manifest.bundle_id}/"
    container = ContainerClient.from_container_url(
        target.container_url, max_single_put_size=BLOCK_SIZE, max_block_size=BLOCK_SIZE,
        retry_total=3, retry_backoff_factor=0.5)
    journal = _Journal(bundle / JOURNAL_NAME, target.destination + "/" + prefix)

    def blobs() -> Iterator[tuple[str, str, str]]:
        """(path, expected sha256, content type) of every blob but the manifest, binaries streamed
        from the file index (each index part checked against the manifest as it is read)."""
        for entry in manifest.tables:
            for part in [*entry.parts, *entry.keys, *entry.changes]:
                yield part.file, part.sha256, "application/gzip"
        for part in manifest.file_index.parts:
            yield part.file, part.sha256, "application/gzip"
        for listed in BundleReader.from_directory(bundle).iter_files():
            yield listed.path, listed.sha256, listed.media_type

    total = (sum(len(t.parts) + len(t.keys) + len(t.changes) for t in manifest.tables)
             + len(manifest.file_index.parts) + manifest.file_index.count + 1)
    report = UploadReport(prefix=prefix)
    bar = progress if progress is not None else _Progress(total)  # blobs done: sent or already there
    lock = threading.Lock()

    def send(path: str, expected: str, content_type: str, data_path: Path) -> None:
        actual = _sha256_file(data_path)
        if actual != expected:
            raise BundleHashMismatch(f"{path} differs from the manifest on disk: run `python -m agent validate` "
                                     f"and extract again", file=path)
        blob = container.get_blob_client(prefix + path)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with open(data_path, "rb") as fh:
                    blob.upload_blob(fh, overwrite=True, validate_content=True, max_concurrency=1,
                                     metadata={"sha256": actual},
                                     content_settings=ContentSettings(content_type=content_type))
                break
            except Exception as exc:  # noqa: BLE001 - classified just below
                if not _transient(exc) or attempt == ATTEMPTS:
                    raise BundleUploadFailed(f"{path} could not be uploaded after {attempt} attempt(s) "
                                             f"({type(exc).__name__}); run the upload again, it resumes",
                                             file=path) from exc
                time.sleep(0.5 * 2 ** (attempt - 1))
        journal.record(path, actual)
        with lock:
            report.uploaded += 1
            report.uploaded_bytes += data_path.stat().st_size
        bar.advance()
        if on_blob_done is not None:
            on_blob_done(path)

    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            window = max(1, concurrency) * 4
            running: set[Future[None]] = set()
            try:
                for path, expected, content_type in blobs():
                    if journal.done.get(path) == expected and (
                            not target.can_read or _present(container, prefix + path, expected)):
                        report.skipped += 1
                        bar.advance()
                        continue
                    running.add(pool.submit(send, path, expected, content_type, bundle / path))
                    if len(running) >= window:
                        finished, running = wait(running, return_when=FIRST_COMPLETED)
                        for future in finished:
                            future.result()
                finished, running = wait(running, return_when=FIRST_EXCEPTION)
                for future in finished:
                    future.result()
            finally:
                for future in running:
                    future.cancel()
        # Everything else is up: now, and only now, commit the bundle.
        manifest_bytes = (bundle / MANIFEST_NAME).read_bytes()
        manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
        if journal.done.get(MANIFEST_NAME) != manifest_sha:
            container.get_blob_client(prefix + MANIFEST_NAME).upload_blob(
                manifest_bytes, overwrite=True, validate_content=True, metadata={"sha256": manifest_sha},
                content_settings=ContentSettings(content_type="application/json"))
            journal.record(MANIFEST_NAME, manifest_sha)
            report.uploaded += 1
            report.uploaded_bytes += len(manifest_bytes)
        else:
            report.skipped += 1
        bar.advance()
    finally:
        journal.close()
        if hasattr(bar, "close"):
            bar.close()
    return report
