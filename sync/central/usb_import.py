"""``central import DIR`` and ``central export-catalog DIR``: the service's end of a USB
stick (issue 13; the bundle's format is sync/bundle.py).

**Import.** For each complete bundle on the stick, the same checks as the network path,
by the same code:

1. the device must be known and not revoked (the network path's token check);
2. each index goes through :func:`sync.central.api.submissions.accept_index` first:
   its form, the device it names, the device's signature, an index already stored
   under that id (the same index: the stored receipt again, no duplicate; another
   index: refused, as the network's 409). Only an index that passes all that and
   lacks its parts (the network's 422) gets its parts read from the stick;
3. each part is stored as a finished upload of that device, exactly as tus leaves one
   (upload blob, offset, the SHA-256 *of the bytes stored*), and ``accept_index`` is
   asked again: it finds the uploads only if size and SHA-256 match the index, copies
   them into the submission's own content-addressed parts and signs the receipt. A
   part that differs is refused with its name; the uploads made for it are deleted,
   so nothing of it is stored;
4. the signed receipts are written back into the bundle (``receipts/<id>.json``), with
   ``result.json`` saying what was received, known already or refused, and why.

The bundle's ``status.json`` is recorded as the device's heartbeat when it is newer
than the last one (the fleet view shows it). One audit line per bundle (ids and counts;
each stored submission and upload has its own lines, as on the network).

**Catalog.** :func:`export_catalog` writes the newest signed catalog, its signature and
every story's published audio (checked against the catalog's size and SHA-256 while
read) into ``DIR/idefendrights/catalog``, whole or not at all.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from sync import bundle
from sync import catalog as catalog_format
from sync.wire import BadIndex, SignedDocument, SubmissionIndex

from .api.errors import ApiError
from .api.submissions import accept_index
from .core import Central
from .storage.base import AuditEvent, Device, StorageError, Upload

log = logging.getLogger("central")
ACTOR = "usb-import"


@dataclass(frozen=True)
class Refusal:
    device_id: str
    submission_id: str | None
    code: str
    message: str


@dataclass
class ImportReport:
    bundles: int = 0
    #: Submissions stored by this import.
    received: int = 0
    #: Submissions the service held already with this very index (same receipt).
    known: int = 0
    receipts_written: int = 0
    bytes_stored: int = 0
    refused: list[Refusal] = field(default_factory=list)
    #: Folders that are not whole bundles, with the reason.
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ImportProgress:
    done_bytes: int
    total_bytes: int
    done: int
    total: int


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def import_folder(svc: Central, folder: Path, *,
                  progress: Callable[[ImportProgress], None] | None = None) -> ImportReport:
    """Ingest every complete bundle under ``folder`` (module doc)."""
    found = bundle.find_bundles(folder)
    report = ImportReport(skipped=list(found.skipped))
    total = sum(_stick_bytes(b) for b in found.bundles)
    count = sum(len(b.submissions) for b in found.bundles)
    state = {"bytes": 0, "done": 0}

    def tick(n: int = 0, one: bool = False) -> None:
        state["bytes"] += n
        state["done"] += 1 if one else 0
        if progress is not None:
            progress(ImportProgress(min(state["bytes"], total), total, state["done"], count))

    tick()
    for found_bundle in found.bundles:
        report.bundles += 1
        _import_bundle(svc, found_bundle, report, tick)
    log.info("usb_import bundles=%d received=%d known=%d refused=%d skipped=%d",
             report.bundles, report.received, report.known, len(report.refused),
             len(report.skipped))
    return report


def _stick_bytes(found: bundle.Bundle) -> int:
    total = 0
    for sid in found.submissions:
        folder = found.path / bundle.SUBMISSIONS / sid
        try:
            total += sum(p.stat().st_size for p in folder.iterdir()
                         if p.name != bundle.INDEX_FILE and p.is_file())
        except OSError:
            pass
    return total


def _import_bundle(svc: Central, found: bundle.Bundle, report: ImportReport,
                   tick: Callable[..., None]) -> None:
    device = svc.meta.get_device(found.device_id)
    refused_before = len(report.refused)
    received: list[str] = []
    known: list[str] = []
    if device is None or device.revoked_at is not None:
        why = ("unknown_device", f"device {found.device_id} is not enrolled with this"
                                 " service: the bundle is refused, nothing stored") \
            if device is None else \
            ("revoked", f"device {found.device_id} is revoked: its bundle is refused,"
                        " nothing stored")
        report.refused.append(Refusal(found.device_id, None, *why))
        for _ in found.submissions:
            tick(one=True)
    else:
        _record_status(svc, device, found)
        for sid in found.submissions:
            try:
                receipt, created = _one(svc, device, found, sid, report, tick)
            except _Refused as exc:
                report.refused.append(Refusal(device.id, sid, exc.code, exc.message))
                log.warning("usb_import_refused device=%s submission=%s code=%s",
                            device.id, sid, exc.code)
                tick(one=True)
                continue
            try:
                (found.path / bundle.RECEIPTS).mkdir(exist_ok=True)
                bundle.replace_file(found.receipt_path(sid), bundle.signed_json("receipt",
                                                                                receipt))
                report.receipts_written += 1
            except OSError as exc:
                report.refused.append(Refusal(device.id, sid, "stick_error",
                                              f"the receipt could not be written to the"
                                              f" stick ({exc.strerror or exc}); the"
                                              " submission is stored: import again"))
            (received if created else known).append(sid)
            tick(one=True)
    report.received += len(received)
    report.known += len(known)
    refusals = {r.submission_id or "*": r.code for r in report.refused[refused_before:]}
    try:
        bundle.replace_file(found.path / bundle.RESULT_FILE, json.dumps({
            "v": bundle.FORMAT_VERSION, "imported_at": time.time(), "received": received,
            "known": known, "refused": refusals}, sort_keys=True).encode("utf-8"))
    except OSError:
        pass  # the receipts are what matters; the summary is for people
    svc.meta.append_audit(AuditEvent(
        ACTOR, "usb_import", f"{found.device_id} bundle={found.bundle_id}"
        f" received={len(received)} known={len(known)} refused={len(refusals)}"))


def _record_status(svc: Central, device: Device, found: bundle.Bundle) -> None:
    """The bundle's status as the device's heartbeat, if it is newer than the last."""
    try:
        status = bundle.read_status(found.path / bundle.STATUS_FILE)
    except bundle.BadBundle:
        return
    if status.device_id != device.id or status.at > time.time() + 86400:
        return
    if device.last_heartbeat_at is not None and status.at <= device.last_heartbeat_at:
        return
    svc.meta.record_heartbeat(device.id, status.at, status.queue_depth,
                              status.free_disk_bytes, status.app_version, status.last_error)


def _one(svc: Central, device: Device, found: bundle.Bundle, sid: str,
         report: ImportReport, tick: Callable[..., None]) -> tuple[SignedDocument, bool]:
    try:
        signed = bundle.read_signed(found.index_path(sid), "index", f"{sid}/index.json")
        index = SubmissionIndex.parse(signed.data)
    except (bundle.BadBundle, BadIndex) as exc:
        raise _Refused("bad_index", f"submission {sid}: {exc}") from None
    if index.submission_id != sid:
        raise _Refused("bad_index", f"submission {sid}: its index names another submission")
    try:
        got = accept_index(svc, device, signed)  # every check but the parts'
        tick(sum(p.size for p in index.parts))
        return got.receipt, got.created
    except ApiError as exc:
        if exc.status != 422:
            raise _Refused(exc.error, f"submission {sid}: {exc.detail}") from None
    made = _store_parts(svc, device, found, index, tick)
    try:
        got = accept_index(svc, device, signed)
    except ApiError as exc:
        _forget(svc, device, made)
        if exc.status == 422:
            names = ", ".join(exc.extra.get("parts", [])) or "a part"
            raise _Refused("part_mismatch",
                           f"submission {sid}: {names} on the stick differs from its index"
                           " (size or SHA-256): refused, nothing stored") from None
        raise _Refused(exc.error, f"submission {sid}: {exc.detail}") from None
    report.bytes_stored += sum(p.size for p in index.parts)
    return got.receipt, got.created


def _store_parts(svc: Central, device: Device, found: bundle.Bundle,
                 index: SubmissionIndex, tick: Callable[..., None]) -> list[str]:
    """Each part as a finished upload of ``device`` (the tus path's end state); the ids."""
    made: list[str] = []
    try:
        for part in index.parts:
            path = found.part_path(index.submission_id, part.name)
            try:
                length = path.stat().st_size
            except FileNotFoundError:
                raise _Refused("part_missing", f"submission {index.submission_id}:"
                                               f" {part.name} is missing from the stick"
                                               " (refused, nothing stored)") from None
            if not 1 <= length <= svc.settings.max_upload_bytes:
                raise _Refused("part_mismatch", f"submission {index.submission_id}:"
                                                f" {part.name} has a size the service"
                                                " cannot take")
            upload_id = secrets.token_hex(16)
            now = time.time()
            # Blob first, then the row, as tus creation does (a crash leaves a file the
            # start-up reconciliation deletes, never a row pointing at nothing).
            svc.blobs.create_upload(upload_id)
            svc.meta.create_upload(
                Upload(upload_id, device.id, index.submission_id, part.name, length, 0, now,
                       now + svc.settings.upload_expiry, None, None),
                audit=AuditEvent(device.id, "upload_created", upload_id))
            made.append(upload_id)
            digest = hashlib.sha256()
            stored = svc.blobs.append_upload(upload_id, 0,
                                             _hashed(path, length, digest, tick))
            if stored != length:
                raise _Refused("part_mismatch", f"submission {index.submission_id}:"
                                                f" {part.name} changed while it was read")
            svc.meta.set_upload_offset(upload_id, stored)
            # The SHA-256 of the bytes the service stored, never the index's word for it:
            # accept_index then finds the upload only if the two agree.
            svc.meta.finish_upload(upload_id, digest.hexdigest(), time.time(),
                                   audit=AuditEvent(device.id, "upload_finished", upload_id))
    except OSError as exc:
        _forget(svc, device, made)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _Refused("storage_full", "the service is out of disk space") from None
        raise _Refused("stick_error", f"submission {index.submission_id}: reading the stick"
                                      f" failed ({exc.strerror or exc})") from None
    except _Refused:
        _forget(svc, device, made)
        raise
    return made


def _hashed(path: Path, limit: int, digest: hashlib._Hash,
            tick: Callable[..., None]) -> Iterator[bytes]:
    for block in bundle.read_blocks(path, limit=limit, progress=tick):
        digest.update(block)
        yield block


def _forget(svc: Central, device: Device, upload_ids: list[str]) -> None:
    """Delete uploads this import made for a refused submission (row first, as tus)."""
    for upload_id in upload_ids:
        svc.meta.delete_upload(upload_id, audit=AuditEvent(device.id, "upload_terminated",
                                                           upload_id))
        svc.blobs.delete_upload(upload_id)


# -- the catalog onto the stick -----------------------------------------------------------

class NothingPublished(Exception):
    pass


@dataclass(frozen=True)
class CatalogExport:
    version: int
    stories: int
    audio_bytes: int
    path: Path


def export_catalog(svc: Central, folder: Path) -> CatalogExport:
    """Write the newest signed catalog and its audio to ``folder`` (whole or nothing).

    NothingPublished if there is no catalog; StorageError if a story's stored audio is
    missing or differs from the catalog (nothing is written then)."""
    current = svc.meta.latest_catalog(with_data=True)
    if current is None:
        raise NothingPublished("nothing has been published yet: no catalog to export")
    catalog = catalog_format.parse(current.data)
    root = bundle.root(folder)
    temp = bundle.new_temp_dir(root, f"catalog-{secrets.token_hex(4)}")
    written = 0
    try:
        audio = temp / bundle.AUDIO
        audio.mkdir()
        for story in catalog.stories:
            digest = hashlib.sha256()
            size = 0
            with (audio / f"{story.id}.ogg").open("xb") as out:
                try:
                    for block in svc.blobs.read_public_audio(story.id, story.audio_sha256):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
                except StorageError:
                    raise StorageError(f"story {story.id}: its audio is not stored") from None
                out.flush()
                os.fsync(out.fileno())
            if size != story.size or digest.hexdigest() != story.audio_sha256:
                raise StorageError(f"story {story.id}: stored audio differs from the catalog")
            written += size
        bundle.fsync_dir(audio)
        bundle.write_file(temp / bundle.SIGNATURE_FILE,
                          current.signature.strip().encode("ascii") + b"\n")
        bundle.write_file(temp / bundle.CATALOG_FILE, current.data)
        bundle.swap_in(temp, root / bundle.CATALOG)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    svc.meta.append_audit(AuditEvent(ACTOR, "usb_catalog_export",
                                     f"v{catalog.version} stories={len(catalog.stories)}"))
    return CatalogExport(catalog.version, len(catalog.stories), written, root / bundle.CATALOG)


# -- the command ----------------------------------------------------------------------------

def cli_command(svc: Central, args: argparse.Namespace) -> int:
    """``central import DIR [--catalog]`` and ``central export-catalog DIR``.

    Exit 0: all taken (or nothing there); 1: something refused (each named on stderr);
    2: DIR is not a folder, or the catalog could not be written."""
    folder = Path(args.dir)
    if not folder.is_dir():
        print(f"central {args.command}: {folder} is not a folder (is the stick mounted?)",
              file=sys.stderr)
        return 2
    code = 0
    if args.command == "import":
        bar = _Bar(sys.stdout)
        try:
            report = import_folder(svc, folder, progress=bar)
        finally:
            bar.end()
        print(f"bundles {report.bundles}: received {report.received}, already stored"
              f" {report.known} (same receipts), refused {len(report.refused)}, receipts"
              f" written {report.receipts_written}")
        for where, why in report.skipped:
            print(f"central import: skipped {where}: {why}", file=sys.stderr)
        for refusal in report.refused:
            print(f"central import: refused: {refusal.message}", file=sys.stderr)
        if report.refused:
            code = 1
        if not args.catalog:
            return code
    try:
        done = export_catalog(svc, folder)
    except NothingPublished as exc:
        print(f"central {args.command}: {exc}", file=sys.stderr)
        return 2 if args.command == "export-catalog" else code
    except (StorageError, OSError) as exc:
        print(f"central {args.command}: the catalog was not written: {exc}", file=sys.stderr)
        return 2
    print(f"catalog version {done.version} written to {done.path}: {done.stories} stories,"
          f" {done.audio_bytes} bytes of audio")
    return code


class _Bar:
    """One line redrawn on a terminal; nothing when stdout is not one (scripts, tests)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.drawn = False

    def __call__(self, p: ImportProgress) -> None:
        if not self.tty or not p.total:
            return
        share = p.done_bytes / p.total_bytes if p.total_bytes else p.done / p.total
        filled = int(30 * share)
        self.stream.write(f"\rimport [{'#' * filled}{'.' * (30 - filled)}] {share:4.0%}"
                          f"  {p.done_bytes} of {p.total_bytes} bytes  {p.done}/{p.total}")
        self.stream.flush()
        self.drawn = True

    def end(self) -> None:
        if self.drawn:
            self.stream.write("\n")
