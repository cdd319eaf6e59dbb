"""What crosses the network between a kiosk and the central service.

Both ends import this module (it never imports ``kiosk``), so the two can only
disagree about the format by changing it here, where the tests pin it.

**The submission index** (DESIGN.md, formats) is canonical JSON (sorted keys, no
spaces, UTF-8), signed by the device's Ed25519 key in the ``"submission-index"``
context::

    {"device_id": "dev-0123456789abcdef",
     "parts": [{"name": "manifest.json.age", "sha256": "<64 hex>", "size": 1234}, ...],
     "recipients_version": 0,
     "submission_id": "<UUIDv7>",
     "v": 1,
     "withdrawal_key": "<64 hex>" | null}

``withdrawal_key`` is sync/withdrawal.py's deterministic scrypt of the defender's
receipt code (null when the kiosk made no code): the service stores it with the
submission so that ``POST /withdraw`` finds it; it names no person and the code itself
never leaves the kiosk's screen.

It holds nothing personal and nothing that changes between attempts (no upload URLs,
no times): the kiosk rebuilds the same bytes from its store after any crash, Ed25519
signatures are deterministic, so a retried ``POST /submissions`` sends the exact same
request and gets the same receipt back. Parts are sorted by name.

**The receipt** is the service's signed answer, in the ``"receipt"`` context::

    {"device_id": ..., "index_sha256": "<SHA-256 of the exact index bytes>",
     "parts": [...as in the index...], "received_at": "2026-11-28T10:00:00Z",
     "submission_id": ..., "v": 1}

A kiosk acknowledges a submission only when the receipt verifies under the service key
it pinned at enrolment *and* names its own submission, device and index hash.

On the wire both travel as ``{"index": "<exact JSON text>", "signature": "idrsig1..."}``
and ``{"receipt": "<exact JSON text>", "signature": "idrsig1..."}``: the signed bytes are
carried as a string, never re-encoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sync.signing import BadSignatureError, SigningKey, VerifyKey

__all__ = [
    "API",
    "INDEX_CONTEXT",
    "RECEIPT_CONTEXT",
    "TUS_VERSION",
    "BadIndex",
    "PartEntry",
    "Receipt",
    "SignedDocument",
    "SubmissionIndex",
    "checksum_header",
    "decode_metadata",
    "encode_metadata",
    "is_device_id",
    "is_part_name",
    "is_submission_id",
    "parse_checksum_header",
]

API = "/api/v1"
TUS_VERSION = "1.0.0"
INDEX_CONTEXT = "submission-index"
RECEIPT_CONTEXT = "receipt"
FORMAT_VERSION = 1
#: An index or receipt larger than this is refused before it is decoded.
MAX_DOCUMENT_BYTES = 64 * 1024
MAX_PARTS = 64

_SHA256 = re.compile(r"[0-9a-f]{64}")
# A part is a file of the submission's folder: "<answer>.age" or "manifest.json.age".
# No slashes, no leading dot, so it is safe as a file name on both ends.
_PART_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}(\.json)?\.age")
_DEVICE_ID = re.compile(r"dev-[0-9a-f]{16}")
_WITHDRAWAL_KEY = re.compile(r"[0-9a-f]{64}")
_RECEIVED_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_MAX_INT = 2**53 - 1


class BadIndex(ValueError):
    """An index or receipt that is malformed or whose signature does not verify."""


def is_submission_id(text: object) -> bool:
    """The canonical text of a UUIDv7, as kiosks make them (kiosk/ids.py)."""
    if not isinstance(text, str) or len(text) != 36:
        return False
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        return False
    return parsed.version == 7 and str(parsed) == text


def is_part_name(text: object) -> bool:
    return isinstance(text, str) and _PART_NAME.fullmatch(text) is not None


def is_device_id(text: object) -> bool:
    return isinstance(text, str) and _DEVICE_ID.fullmatch(text) is not None


def canonical_json(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise BadIndex(f"repeated key {key!r}")
        out[key] = value
    return out


def _load(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_DOCUMENT_BYTES:
        raise BadIndex(f"{what} is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_no_duplicate_keys,
                              parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadIndex(f"{what} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadIndex(f"{what} is not a JSON object")
    if canonical_json(document) != bytes(data):
        # One text per document: what is signed is what is parsed, nothing else.
        raise BadIndex(f"{what} is not in canonical form")
    return document


def _refuse_constant(name: str) -> Any:
    raise BadIndex(f"{name} is not allowed")


def _fields(document: dict[str, Any], expected: set[str], what: str) -> None:
    missing = expected - document.keys()
    extra = document.keys() - expected
    if missing:
        raise BadIndex(f"{what}: missing field(s) {', '.join(sorted(missing))}")
    if extra:
        raise BadIndex(f"{what}: unknown field(s) {', '.join(sorted(extra))}")


def _int(value: Any, field: str, *, minimum: int) -> int:
    if type(value) is not int or not minimum <= value <= _MAX_INT:
        raise BadIndex(f"{field} must be an integer >= {minimum}")
    return value


@dataclass(frozen=True)
class PartEntry:
    """One sealed file of a submission, as the index names it."""

    name: str
    size: int
    sha256: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_json(cls, value: Any, where: str) -> PartEntry:
        if not isinstance(value, dict):
            raise BadIndex(f"{where} is not an object")
        _fields(value, {"name", "sha256", "size"}, where)
        if not is_part_name(value["name"]):
            raise BadIndex(f"{where}.name is not a part name")
        if not isinstance(value["sha256"], str) or not _SHA256.fullmatch(value["sha256"]):
            raise BadIndex(f"{where}.sha256 must be 64 lower-case hex digits")
        return cls(name=value["name"], size=_int(value["size"], f"{where}.size", minimum=1),
                   sha256=value["sha256"])


def _parts(value: Any) -> tuple[PartEntry, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_PARTS:
        raise BadIndex(f"parts must be a list of 1 to {MAX_PARTS} entries")
    parts = tuple(PartEntry.from_json(p, f"parts[{i}]") for i, p in enumerate(value))
    names = [p.name for p in parts]
    if names != sorted(set(names)):
        raise BadIndex("parts must be sorted by name, each name once")
    return parts


def _withdrawal_key(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not _WITHDRAWAL_KEY.fullmatch(value)):
        raise BadIndex("withdrawal_key must be null or 64 lower-case hex digits")
    return value


def _check_ids(submission_id: Any, device_id: Any) -> None:
    if not is_submission_id(submission_id):
        raise BadIndex("submission_id is not a UUIDv7")
    if not is_device_id(device_id):
        raise BadIndex("device_id is not a device id")


@dataclass(frozen=True)
class SignedDocument:
    """Exact signed bytes and the signature text, as they travel."""

    data: bytes
    signature: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class SubmissionIndex:
    submission_id: str
    device_id: str
    recipients_version: int
    parts: tuple[PartEntry, ...]
    withdrawal_key: str | None = None

    def __post_init__(self) -> None:
        _check_ids(self.submission_id, self.device_id)
        _int(self.recipients_version, "recipients_version", minimum=0)
        _withdrawal_key(self.withdrawal_key)
        names = [p.name for p in self.parts]
        if names != sorted(set(names)) or not 1 <= len(names) <= MAX_PARTS:
            raise BadIndex("parts must be 1 to 64 entries, sorted by name, each name once")

    @classmethod
    def build(cls, *, submission_id: str, device_id: str, recipients_version: int,
              parts: list[PartEntry], withdrawal_key: str | None = None) -> SubmissionIndex:
        return cls(submission_id, device_id, recipients_version,
                   tuple(sorted(parts, key=lambda p: p.name)), withdrawal_key)

    def to_bytes(self) -> bytes:
        return canonical_json({
            "device_id": self.device_id,
            "parts": [p.as_json() for p in self.parts],
            "recipients_version": self.recipients_version,
            "submission_id": self.submission_id,
            "v": FORMAT_VERSION,
            "withdrawal_key": self.withdrawal_key,
        })

    def sign(self, key: SigningKey) -> SignedDocument:
        data = self.to_bytes()
        return SignedDocument(data, str(key.sign(data, context=INDEX_CONTEXT)))

    @classmethod
    def parse(cls, data: bytes) -> SubmissionIndex:
        document = _load(data, "index")
        _fields(document, {"device_id", "parts", "recipients_version", "submission_id", "v",
                           "withdrawal_key"}, "index")
        if document["v"] != FORMAT_VERSION or type(document["v"]) is not int:
            raise BadIndex(f"index version must be {FORMAT_VERSION}")
        _check_ids(document["submission_id"], document["device_id"])
        return cls(document["submission_id"], document["device_id"],
                   _int(document["recipients_version"], "recipients_version", minimum=0),
                   _parts(document["parts"]), _withdrawal_key(document["withdrawal_key"]))

    @classmethod
    def verify(cls, signed: SignedDocument, key: VerifyKey) -> SubmissionIndex:
        """Parse ``signed.data`` and check its signature by ``key``; raise BadIndex."""
        index = cls.parse(signed.data)
        try:
            key.verify(signed.data, signed.signature, context=INDEX_CONTEXT)
        except BadSignatureError as exc:
            raise BadIndex(f"index signature: {exc}") from None
        return index


def _utc_text(when: datetime) -> str:
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Receipt:
    submission_id: str
    device_id: str
    index_sha256: str
    received_at: str
    parts: tuple[PartEntry, ...]

    def __post_init__(self) -> None:
        _check_ids(self.submission_id, self.device_id)
        if not _SHA256.fullmatch(self.index_sha256):
            raise BadIndex("index_sha256 must be 64 lower-case hex digits")
        if not _RECEIVED_AT.fullmatch(self.received_at):
            raise BadIndex("received_at must be ISO 8601 UTC to the second, with Z")

    @classmethod
    def for_index(cls, index: SubmissionIndex, index_bytes: bytes, *,
                  received_at: datetime) -> Receipt:
        return cls(index.submission_id, index.device_id,
                   hashlib.sha256(index_bytes).hexdigest(), _utc_text(received_at),
                   index.parts)

    def to_bytes(self) -> bytes:
        return canonical_json({
            "device_id": self.device_id,
            "index_sha256": self.index_sha256,
            "parts": [p.as_json() for p in self.parts],
            "received_at": self.received_at,
            "submission_id": self.submission_id,
            "v": FORMAT_VERSION,
        })

    def sign(self, key: SigningKey) -> SignedDocument:
        data = self.to_bytes()
        return SignedDocument(data, str(key.sign(data, context=RECEIPT_CONTEXT)))

    @classmethod
    def parse(cls, data: bytes) -> Receipt:
        document = _load(data, "receipt")
        _fields(document, {"device_id", "index_sha256", "parts", "received_at",
                           "submission_id", "v"}, "receipt")
        if document["v"] != FORMAT_VERSION or type(document["v"]) is not int:
            raise BadIndex(f"receipt version must be {FORMAT_VERSION}")
        for name in ("index_sha256", "received_at"):
            if not isinstance(document[name], str):
                raise BadIndex(f"{name} must be a string")
        _check_ids(document["submission_id"], document["device_id"])
        return cls(document["submission_id"], document["device_id"],
                   document["index_sha256"], document["received_at"],
                   _parts(document["parts"]))

    @classmethod
    def verify(cls, signed: SignedDocument, key: VerifyKey, *,
               expect_index: SignedDocument) -> Receipt:
        """Check a receipt for ``expect_index``: signature, ids, index hash, parts."""
        receipt = cls.parse(signed.data)
        try:
            key.verify(signed.data, signed.signature, context=RECEIPT_CONTEXT)
        except BadSignatureError as exc:
            raise BadIndex(f"receipt signature: {exc}") from None
        index = SubmissionIndex.parse(expect_index.data)
        if (receipt.submission_id, receipt.device_id) != (index.submission_id, index.device_id):
            raise BadIndex("receipt names another submission or device")
        if receipt.index_sha256 != expect_index.sha256 or receipt.parts != index.parts:
            raise BadIndex("receipt is for another index")
        return receipt


# -- tus headers -----------------------------------------------------------------------

def encode_metadata(values: dict[str, str]) -> str:
    """``Upload-Metadata``: comma-separated ``key base64(value)`` pairs (tus 1.0.0)."""
    return ",".join(f"{k} {base64.b64encode(v.encode('utf-8')).decode('ascii')}"
                    for k, v in values.items())


def decode_metadata(header: str) -> dict[str, str]:
    """Parse ``Upload-Metadata``; raise ValueError on a malformed pair or repeated key."""
    out: dict[str, str] = {}
    if not header.strip():
        return out
    for pair in header.split(","):
        bits = pair.strip().split(" ")
        if len(bits) not in (1, 2) or not bits[0] or bits[0] in out:
            raise ValueError("malformed Upload-Metadata")
        try:
            value = base64.b64decode(bits[1], validate=True) if len(bits) == 2 else b""
            out[bits[0]] = value.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError("malformed Upload-Metadata value") from None
    return out


def checksum_header(algorithm: str, digest: bytes) -> str:
    """``Upload-Checksum: sha256 <base64 digest>`` (tus checksum extension)."""
    return f"{algorithm} {base64.b64encode(digest).decode('ascii')}"


def parse_checksum_header(header: str) -> tuple[str, bytes]:
    """(algorithm, digest) of an ``Upload-Checksum`` header; ValueError if malformed."""
    bits = header.strip().split(" ")
    if len(bits) != 2:
        raise ValueError("malformed Upload-Checksum")
    try:
        return bits[0].lower(), base64.b64decode(bits[1], validate=True)
    except binascii.Error:
        raise ValueError("malformed Upload-Checksum digest") from None
