"""``kiosk import DIR``: the service's receipts and a signed catalog, from a stick.

**Receipts.** Every receipt ``central import`` wrote back into a bundle (sync/bundle.py)
for a submission this kiosk holds is checked by
:meth:`kiosk.vault.outbox.StoreOutbox.import_receipt`: under the service key pinned at
enrolment, for exactly the index the kiosk's store rebuilds (the check a purge makes
again later). A receipt that verifies acknowledges its submission through the outbox
state machine (``receipt_imported``), keeping the receipt's text and signature; the
ciphertext is purged only after the retention, as on the network path. A receipt that
does not verify is refused and its submission stays pending. Receipts of other kiosks'
submissions (one stick, several kiosks) are left alone.

**Catalog.** ``DIR/idefendrights/catalog`` (``central export-catalog``) is checked
exactly as network sync checks a catalog, by the same functions: the signature under
the pinned publishing key and a version newer than the installed one
(:func:`sync.client.catalog.verify_new`), the kiosk's rules, quota and free disk
(:func:`kiosk.stories.pull.check_new`), each story's audio copied into the stories'
download folder and checked against the catalog's size and SHA-256
(:func:`sync.client.catalog.check_audio_file`), then the library's all-or-nothing
install, which checks every file again. Any refusal leaves the installed stories as
they were and goes to the library's ``last_error.json`` (``during`` "usb") for staff.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from sync import bundle
from sync import catalog as catalog_mod
from sync.catalog import BadAudio, BadSignature, CatalogError, Story
from sync.client.catalog import check_audio_file, verify_new

from .. import logs
from ..config import KioskConfig
from ..device import DeviceError, load_enrolment
from ..stories.library import StorageError, StoryLibrary, error_code
from ..stories.pull import DOWNLOAD_DIR, check_new
from ..sync_runner import _pass_lock
from ..vault.outbox import IllegalMove, StoreOutbox
from ..vault.store import ACKNOWLEDGED, PENDING_STATES, PURGED, Store
from .progress import ProgressFn, UsbProgress

log = logging.getLogger("kiosk.usb")
MAX_SIGNATURE_BYTES = 4096
USB_SUFFIX = ".usb"


@dataclass(frozen=True)
class ImportResult:
    #: None, or a code that stopped everything: busy, no_bundle (nothing on the stick).
    error: str | None = None
    #: Submissions acknowledged by receipts from the stick.
    acknowledged: int = 0
    #: Receipts for submissions acknowledged already (by the network, or an earlier import).
    already: int = 0
    #: Receipts that did not verify (their submissions stay pending).
    refused: int = 0
    #: This kiosk's submissions the service refused at ``central import`` (result.json).
    refused_by_service: int = 0
    #: This kiosk's exported submissions with no receipt on the stick yet.
    waiting: int = 0
    #: Why receipts were not looked at (not_enrolled, device_broken), else None.
    receipts_error: str | None = None
    #: "installed", "unchanged", "none" (no catalog on the stick), "refused",
    #: "not_pinned" (no publishing key in the config).
    catalog: str = "none"
    catalog_version: int | None = None
    #: The library's code for a refused catalog (bad_signature, audio_mismatch...).
    catalog_error: str | None = None


def import_bundle(cfg: KioskConfig, store: Store, folder: Path, *,
                  progress: ProgressFn | None = None,
                  library: StoryLibrary | None = None,
                  now: Callable[[], float] = time.time) -> ImportResult:
    """Take the receipts, then the catalog, from ``folder`` (module doc)."""
    folder = Path(folder)
    data_dir = Path(cfg.data_dir)
    if not bundle.root(folder).is_dir():
        return ImportResult("no_bundle")
    with _pass_lock(data_dir) as locked:
        if not locked:
            return ImportResult("busy")
        receipts = _receipts(data_dir, store, folder, progress=progress, now=now)
        catalog = import_catalog(cfg, folder, progress=progress, library=library)
    result = replace(receipts, catalog=catalog.catalog, catalog_version=catalog.catalog_version,
                     catalog_error=catalog.catalog_error)
    logs.event(log, "usb_import", acknowledged=result.acknowledged, already=result.already,
               refused=result.refused, refused_by_service=result.refused_by_service,
               waiting=result.waiting, receipts_error=result.receipts_error,
               catalog=result.catalog, catalog_version=result.catalog_version,
               catalog_error=result.catalog_error)
    return result


def _receipts(data_dir: Path, store: Store, folder: Path, *, progress: ProgressFn | None,
              now: Callable[[], float]) -> ImportResult:
    try:
        enrolment = load_enrolment(data_dir)
    except DeviceError:
        return ImportResult(receipts_error="device_broken")
    if enrolment is None:
        # No pinned service key: no receipt can be trusted.
        return ImportResult(receipts_error="not_enrolled")
    outbox = StoreOutbox(data_dir, store, now=now, receipt_key=enrolment.service_key)
    # Every bundle, whatever device folder: a kiosk enrolled again since its export has
    # a new device id, and its receipts name the old one (the check is the same).
    found = bundle.find_bundles(folder)
    mine: dict[str, list[bundle.Bundle]] = {}
    refused_by_service: set[str] = set()
    for b in found.bundles:
        for sid in b.submissions:
            if store.outbox_row(sid) is not None:
                mine.setdefault(sid, []).append(b)
        refused_by_service |= _service_refusals(b) & set(b.submissions)
    counts = {"acknowledged": 0, "already": 0, "refused": 0, "waiting": 0,
              "refused_by_service": 0}
    total = len(mine)
    for done, (sid, bundles) in enumerate(sorted(mine.items())):
        if progress is not None:
            progress(UsbProgress("receipts", 0, 0, done, total))
        outcome = _take_receipt(outbox, store, sid, bundles)
        if outcome == "waiting" and sid in refused_by_service:
            outcome = "refused_by_service"
        counts[outcome] += 1
    if progress is not None:
        progress(UsbProgress("receipts", 0, 0, total, total))
    return ImportResult(**counts)


def _service_refusals(b: bundle.Bundle) -> set[str]:
    try:
        doc = bundle.read_json(b.path / bundle.RESULT_FILE, "result.json")
    except bundle.BadBundle:
        return set()
    refused = doc.get("refused")
    return {k for k in refused if isinstance(k, str)} if isinstance(refused, dict) else set()


def _take_receipt(outbox: StoreOutbox, store: Store, sid: str,
                  bundles: list[bundle.Bundle]) -> str:
    """"acknowledged", "already", "refused" or "waiting" for one submission."""
    row = store.outbox_row(sid)
    assert row is not None
    present = [b.receipt_path(sid) for b in bundles if b.receipt_path(sid).exists()]
    if row.state in (ACKNOWLEDGED, PURGED):
        return "already"
    if not present:
        return "waiting" if row.state in PENDING_STATES else "already"
    if row.state not in PENDING_STATES:
        return "already"  # rejected on this kiosk: staff see it; nothing to move
    for path in present:
        try:
            signed = bundle.read_signed(path, "receipt", f"receipts/{sid}.json")
            text = signed.data.decode("utf-8")
        except (bundle.BadBundle, UnicodeDecodeError):
            continue
        try:
            if outbox.import_receipt(sid, receipt=text, signature=signed.signature):
                return "acknowledged"
        except IllegalMove:
            return "already"  # a sync pass acknowledged it meanwhile
    logs.event(log, "usb_receipt_refused", submission=sid)
    return "refused"


# -- the catalog -------------------------------------------------------------------------

@dataclass(frozen=True)
class CatalogImport:
    catalog: str
    catalog_version: int | None = None
    catalog_error: str | None = None


def import_catalog(cfg: KioskConfig, folder: Path, *, progress: ProgressFn | None = None,
                   library: StoryLibrary | None = None) -> CatalogImport:
    """Install ``DIR/idefendrights/catalog`` if it is new and checks out (module doc)."""
    source = bundle.catalog_dir(folder)
    if not source.is_dir():
        return CatalogImport("none")
    library = library if library is not None else StoryLibrary.from_config(cfg)
    key = library.publisher_key
    if not key:
        return CatalogImport("not_pinned", catalog_error="no_publisher_key")
    current = library.installed()
    version = current[1].version if current is not None else None
    copies: list[Path] = []
    try:
        try:
            data, signature = _read_catalog(source)
            if current is not None and current[0] == data:
                return CatalogImport("unchanged", version)
            catalog = verify_new(data, signature, key, version)
            needed = check_new(cfg, library, catalog, len(data),
                               current[1] if current is not None else None)
            files = _copy_audio(source, library.directory / DOWNLOAD_DIR, needed, copies,
                                progress)
        except CatalogError as exc:
            library.record_error(exc, during="usb")
            return CatalogImport("refused", version, error_code(exc))
        except OSError as exc:
            error = StorageError(f"cannot copy the stories from the stick:"
                                 f" {exc.strerror or exc}")
            library.record_error(error, during="usb")
            return CatalogImport("refused", version, error_code(error))
        try:
            installed = library.install(data, signature, files, move=True)
        except CatalogError as exc:  # recorded by the library, "during install"
            return CatalogImport("refused", version, error_code(exc))
    finally:
        for path in copies:
            path.unlink(missing_ok=True)  # moved in, or refused: none is kept
    logs.event(log, "usb_catalog", version=installed.version, added=len(installed.added),
               removed=len(installed.removed))
    return CatalogImport("installed", installed.version)


def _read_catalog(source: Path) -> tuple[bytes, str]:
    try:
        with (source / bundle.CATALOG_FILE).open("rb") as f:
            data = f.read(catalog_mod.MAX_CATALOG_BYTES + 1)
    except FileNotFoundError:
        raise catalog_mod.Malformed("", "catalog.json is missing from the stick") from None
    try:
        with (source / bundle.SIGNATURE_FILE).open("rb") as f:
            raw = f.read(MAX_SIGNATURE_BYTES)
    except FileNotFoundError:
        raise BadSignature("the catalog on the stick has no signature file") from None
    try:
        return data, raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise BadSignature("the catalog's signature is not text") from None


def _copy_audio(source: Path, download_dir: Path, needed: list[Story], copies: list[Path],
                progress: ProgressFn | None) -> dict[str, Path]:
    """Each needed story's audio, copied from the stick and checked; {id: file}."""
    download_dir.mkdir(parents=True, exist_ok=True)
    total = sum(s.size for s in needed)
    done_bytes = 0

    def landed(n: int) -> None:
        nonlocal done_bytes
        done_bytes += n
        if progress is not None:
            progress(UsbProgress("catalog", done_bytes, total, len(files), len(needed)))

    files: dict[str, Path] = {}
    for story in needed:
        target = download_dir / f"{story.id}.{story.audio_sha256[:16]}{USB_SUFFIX}"
        target.unlink(missing_ok=True)
        copies.append(target)
        try:
            bundle.copy_hashed(source / bundle.AUDIO / f"{story.id}.ogg", target,
                               limit=story.size, progress=landed)
        except FileNotFoundError:
            raise BadAudio(story.id, "its audio is missing from the stick",
                           missing=True) from None
        check_audio_file(story, target)
        files[story.id] = target
    return files
