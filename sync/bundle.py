"""The USB bundle: what a kiosk without a network and the central service hand each
other on a stick (issue 13). Both ends import this module (it never imports ``kiosk``).

On the stick, under the folder staff chose (``DIR``)::

    DIR/idefendrights/devices/<device id>/<bundle id>/     one export of one kiosk
        bundle.json                 {"v", "device_id", "bundle_id", "created_at",
                                     "submissions": [ids]}: what the bundle holds
        status.json                 the kiosk's status, as its heartbeat says it
        submissions/<id>/index.json {"index": "<exact text>", "signature": "idrsig1..."}
        submissions/<id>/<part>.age the sealed files, byte for byte
        receipts/<id>.json          {"receipt": "<exact text>", "signature": ...}
                                    written back by ``central import``
        result.json                 what ``central import`` did: counts and refusals
    DIR/idefendrights/catalog/      written by ``central export-catalog``
        catalog.json, catalog.json.sig, audio/<story id>.ogg

Nothing here is personal: the sealed files are ciphertext, the index and the receipt
carry ids, sizes and hashes (sync/wire.py), the status carries counts and codes.

**A bundle is whole or absent.** An export is written under ``.tmp-<bundle id>``, every
file fsynced, and renamed to ``<bundle id>`` only at the end; a stick pulled out half
way leaves a dot-folder that every reader skips (:func:`find_bundles` names it, so staff
can be told). The same holds for the catalog folder (``.tmp-catalog`` then ``catalog``).
The signed index and receipt travel exactly as on the network (sync/wire.py), so the
checks at each end are the network path's own.

Readers never trust sizes on the stick: every JSON file is read with a limit, names
are checked against the wire's syntax (ids, part names) before they become paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sync.durable import fsync_dir
from sync.wire import (
    MAX_DOCUMENT_BYTES,
    SignedDocument,
    is_device_id,
    is_part_name,
    is_submission_id,
)

ROOT = "idefendrights"
DEVICES = "devices"
CATALOG = "catalog"
AUDIO = "audio"
BUNDLE_FILE = "bundle.json"
STATUS_FILE = "status.json"
INDEX_FILE = "index.json"
RESULT_FILE = "result.json"
SUBMISSIONS = "submissions"
RECEIPTS = "receipts"
CATALOG_FILE = "catalog.json"
SIGNATURE_FILE = "catalog.json.sig"
TMP_PREFIX = ".tmp-"
FORMAT_VERSION = 1
#: A small JSON file on the stick larger than this is refused unread.
MAX_JSON_BYTES = 4 * MAX_DOCUMENT_BYTES
COPY_BYTES = 1024 * 1024
_BUNDLE_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}")
_ERROR_CODE = re.compile(r"[a-z0-9_]{1,64}")
_VERSION = re.compile(r"[0-9A-Za-z.+_-]{1,64}")


class BadBundle(ValueError):
    """A bundle (or a file in it) that is malformed; the message says which and why."""


def root(folder: Path) -> Path:
    return Path(folder) / ROOT


def catalog_dir(folder: Path) -> Path:
    return root(folder) / CATALOG


def device_dir(folder: Path, device_id: str) -> Path:
    if not is_device_id(device_id):
        raise BadBundle(f"not a device id: {device_id!r}")
    return root(folder) / DEVICES / device_id


def new_bundle_id(now: float) -> str:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(4)}"


def is_bundle_id(text: object) -> bool:
    return isinstance(text, str) and _BUNDLE_ID.fullmatch(text) is not None


@dataclass(frozen=True)
class Bundle:
    """A complete bundle found on the stick."""

    path: Path
    device_id: str
    bundle_id: str
    submissions: tuple[str, ...]
    created_at: float

    def index_path(self, submission_id: str) -> Path:
        return self.path / SUBMISSIONS / submission_id / INDEX_FILE

    def part_path(self, submission_id: str, name: str) -> Path:
        if not is_part_name(name):
            raise BadBundle(f"not a part name: {name!r}")
        return self.path / SUBMISSIONS / submission_id / name

    def receipt_path(self, submission_id: str) -> Path:
        return self.path / RECEIPTS / f"{submission_id}.json"


@dataclass(frozen=True)
class Found:
    bundles: tuple[Bundle, ...]
    #: Folders that are not whole bundles (an export cut half way, a bundle.json that
    #: does not parse): relative paths with the reason, for staff.
    skipped: tuple[tuple[str, str], ...]


def find_bundles(folder: Path, *, device_id: str | None = None) -> Found:
    """Every complete bundle under ``folder`` (only ``device_id``'s if given), oldest
    first; half-written ones are skipped and named."""
    base = root(folder) / DEVICES
    bundles: list[Bundle] = []
    skipped: list[tuple[str, str]] = []
    if not base.is_dir():
        return Found((), ())
    for dev in sorted(base.iterdir()):
        if not is_device_id(dev.name) or not dev.is_dir() or dev.is_symlink():
            continue
        if device_id is not None and dev.name != device_id:
            continue
        for entry in sorted(dev.iterdir()):
            where = f"{dev.name}/{entry.name}"
            if entry.name.startswith(TMP_PREFIX):
                skipped.append((where, "an export that did not finish (stick pulled out?)"))
                continue
            if not is_bundle_id(entry.name) or not entry.is_dir() or entry.is_symlink():
                continue
            try:
                bundles.append(read_bundle(entry, dev.name))
            except BadBundle as exc:
                skipped.append((where, str(exc)))
    bundles.sort(key=lambda b: (b.created_at, b.bundle_id))
    return Found(tuple(bundles), tuple(skipped))


def read_bundle(path: Path, device_id: str) -> Bundle:
    doc = read_json(path / BUNDLE_FILE, "bundle.json")
    if set(doc) != {"v", "device_id", "bundle_id", "created_at", "submissions"} \
            or doc["v"] != FORMAT_VERSION:
        raise BadBundle("bundle.json: unknown format")
    if doc["device_id"] != device_id or doc["bundle_id"] != path.name:
        raise BadBundle("bundle.json names another device or bundle than its folder")
    ids = doc["submissions"]
    if not isinstance(ids, list) or not all(is_submission_id(i) for i in ids) \
            or len(set(ids)) != len(ids):
        raise BadBundle("bundle.json: submissions must be distinct submission ids")
    created = doc["created_at"]
    if isinstance(created, bool) or not isinstance(created, int | float):
        raise BadBundle("bundle.json: created_at must be a number")
    return Bundle(path, device_id, path.name, tuple(ids), float(created))


def read_json(path: Path, what: str, *, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """A small JSON object from the stick; BadBundle if missing, too big or malformed."""
    try:
        with path.open("rb") as f:
            raw = f.read(limit + 1)
    except FileNotFoundError:
        raise BadBundle(f"{what} is missing") from None
    except OSError as exc:
        raise BadBundle(f"{what} cannot be read ({exc.strerror or exc})") from None
    if len(raw) > limit:
        raise BadBundle(f"{what} is larger than {limit} bytes")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise BadBundle(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise BadBundle(f"{what} is not a JSON object")
    return doc


def read_signed(path: Path, field: str, what: str) -> SignedDocument:
    """``{"<field>": "<exact text>", "signature": "..."}`` as it travels on the wire."""
    doc = read_json(path, what)
    if set(doc) != {field, "signature"} or not isinstance(doc[field], str) \
            or not isinstance(doc["signature"], str):
        raise BadBundle(f'{what} must be {{"{field}": "<text>", "signature": "<text>"}}')
    try:
        return SignedDocument(doc[field].encode("utf-8"), doc["signature"])
    except UnicodeEncodeError:
        raise BadBundle(f"{what} is not UTF-8 text") from None


def signed_json(field: str, signed: SignedDocument) -> bytes:
    return json.dumps({field: signed.data.decode("utf-8"),
                       "signature": signed.signature}).encode("utf-8")


# -- the device's status -----------------------------------------------------------------

@dataclass(frozen=True)
class Status:
    """What the heartbeat says (counts and codes, nothing personal), as of ``at``."""

    device_id: str
    at: float
    app_version: str
    queue_depth: int
    free_disk_bytes: int | None
    last_error: str | None

    def to_bytes(self) -> bytes:
        return json.dumps({"v": FORMAT_VERSION, "device_id": self.device_id, "at": self.at,
                           "app_version": self.app_version, "queue_depth": self.queue_depth,
                           "free_disk_bytes": self.free_disk_bytes,
                           "last_error": self.last_error}, sort_keys=True).encode("utf-8")


def read_status(path: Path) -> Status:
    doc = read_json(path, "status.json")
    expected = {"v", "device_id", "at", "app_version", "queue_depth", "free_disk_bytes",
                "last_error"}
    if set(doc) != expected or doc["v"] != FORMAT_VERSION:
        raise BadBundle("status.json: unknown format")

    def count(value: Any) -> bool:
        return type(value) is int and 0 <= value < 2**53

    at = doc["at"]
    if not is_device_id(doc["device_id"]) or isinstance(at, bool) \
            or not isinstance(at, int | float) or not count(doc["queue_depth"]) \
            or not (doc["free_disk_bytes"] is None or count(doc["free_disk_bytes"])) \
            or not (isinstance(doc["app_version"], str)
                    and _VERSION.fullmatch(doc["app_version"])) \
            or not (doc["last_error"] is None or (isinstance(doc["last_error"], str)
                                                  and _ERROR_CODE.fullmatch(doc["last_error"]))):
        raise BadBundle("status.json: a field is malformed")
    return Status(doc["device_id"], float(at), doc["app_version"], doc["queue_depth"],
                  doc["free_disk_bytes"], doc["last_error"])


# -- durable writes on the stick ---------------------------------------------------------
# No chmod: a stick is usually FAT, which keeps no modes.

def write_file(path: Path, data: bytes) -> None:
    """Write a new file and fsync it (its folder is fsynced by whoever renames it in)."""
    with path.open("xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def replace_file(path: Path, data: bytes) -> None:
    """Replace ``path`` whole: temp file, fsync, rename, fsync of the folder."""
    temp = path.with_name(f"{TMP_PREFIX}{path.name}.{secrets.token_hex(4)}")
    try:
        write_file(temp, data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    fsync_dir(path.parent)


Progress = Callable[[int], None]


def copy_hashed(source: Path, target: Path, *, limit: int,
                progress: Progress | None = None) -> tuple[int, str]:
    """Copy ``source`` to a new ``target`` (fsynced) while hashing it: (size, SHA-256).

    At most ``limit`` + 1 bytes are copied: a longer file is known wrong without reading
    it all. ``progress`` gets the bytes of each block as they land."""
    digest = hashlib.sha256()
    size = 0
    with source.open("rb") as reader, target.open("xb") as writer:
        while size <= limit:
            block = reader.read(min(COPY_BYTES, limit + 1 - size))
            if not block:
                break
            digest.update(block)
            writer.write(block)
            size += len(block)
            if progress is not None:
                progress(len(block))
        writer.flush()
        os.fsync(writer.fileno())
    return size, digest.hexdigest()


def read_blocks(path: Path, *, limit: int,
              progress: Progress | None = None) -> Iterator[bytes]:
    """The blocks of ``path`` (at most ``limit`` + 1 bytes), for a reader that hashes
    and stores them itself."""
    with path.open("rb") as reader:
        size = 0
        while size <= limit:
            block = reader.read(min(COPY_BYTES, limit + 1 - size))
            if not block:
                return
            size += len(block)
            if progress is not None:
                progress(len(block))
            yield block


def swap_in(temp: Path, final: Path) -> None:
    """Rename the finished ``temp`` folder to ``final`` (replacing an older one: it is
    moved aside first, then deleted), fsyncing the parent."""
    parent = final.parent
    fsync_dir(temp)
    old = None
    if final.exists():
        old = parent / f"{TMP_PREFIX}old-{final.name}-{secrets.token_hex(4)}"
        os.rename(final, old)
    os.rename(temp, final)
    fsync_dir(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def new_temp_dir(parent: Path, name: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    temp = parent / f"{TMP_PREFIX}{name}"
    temp.mkdir()
    return temp
