"""An in-memory central service for ``httpx.MockTransport``, and kiosk-side helpers that
make submitted submissions from plain bytes (no audio, no sealing: the sync moves
ciphertext it never opens, so any bytes will do).

:class:`FakeCentral` speaks the spec's API (enrol, heartbeat, tus create/HEAD/PATCH with
crc32 checksums, POST /submissions with signed receipts). ``faults`` is a list of
callables ``(request, central) -> httpx.Response | None`` tried in order before the
normal handling: a test appends one to cut, refuse or delay exactly the request it
means, and every request is recorded in ``log``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from kiosk.config import KioskConfig, SyncConfig
from kiosk.device import enrol_device
from kiosk.ids import new_submission_id
from kiosk.vault.layout import OUTBOX
from kiosk.vault.store import PartRecord, Store
from sync.signing import SigningKey, VerifyKey
from sync.wire import (
    BadIndex,
    Receipt,
    SignedDocument,
    SubmissionIndex,
    decode_metadata,
    parse_checksum_header,
)

API = "/api/v1"
TUS = {"Tus-Resumable": "1.0.0"}
CODE = "K7QPM-3XH2W-ABCDE-FGHJK"

Fault = Callable[[httpx.Request, "FakeCentral"], "httpx.Response | None"]


def _error(status: int, code: str, **extra: object) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "detail": code, **extra})


@dataclass
class Upload:
    device_id: str
    length: int
    submission_id: str
    part: str
    data: bytearray = field(default_factory=bytearray)
    gone: int | None = None  # 404 or 410 once "expired"


class FakeCentral:
    def __init__(self) -> None:
        self.key = SigningKey.generate()
        self.codes = {CODE}
        self.tokens: dict[str, str] = {}  # token -> device id
        self.device_keys: dict[str, VerifyKey] = {}
        self.revoked: set[str] = set()
        self.uploads: dict[str, Upload] = {}
        self.stored: dict[str, tuple[bytes, SignedDocument]] = {}
        self.heartbeats: list[dict] = []
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, int]] = []  # (method, path, status)
        self.patched_bytes = 0
        #: Tamper with every receipt (a bad service or a man in the middle).
        self.bad_receipts = False

    @property
    def service_key(self) -> VerifyKey:
        return self.key.verify_key

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        response = None
        for fault in list(self.faults):
            response = fault(request, self)
            if response is not None:
                break
        if response is None:
            response = self._route(request)
        self.log.append((request.method, request.url.path, response.status_code))
        return response

    def requests(self, method: str, prefix: str = "") -> list[tuple[str, str, int]]:
        return [r for r in self.log if r[0] == method and r[1].startswith(API + prefix)]

    # -- routing ------------------------------------------------------------------------
    def _device(self, request: httpx.Request) -> str | httpx.Response:
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        device = self.tokens.get(token)
        if device is None:
            return _error(401, "unauthorized")
        if device in self.revoked:
            return _error(401, "revoked")
        return device

    def _route(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        if path == f"{API}/devices/enrol" and method == "POST":
            return self._enrol(request)
        device = self._device(request)
        if isinstance(device, httpx.Response):
            return device
        if path == f"{API}/devices/heartbeat" and method == "POST":
            self.heartbeats.append(json.loads(request.content))
            return httpx.Response(204)
        if path == f"{API}/uploads/" and method == "POST":
            return self._create(request, device)
        if path.startswith(f"{API}/uploads/"):
            upload_id = path.rsplit("/", 1)[1]
            upload = self.uploads.get(upload_id)
            if upload is None:
                return httpx.Response(404, headers=TUS)
            if upload.gone:
                return httpx.Response(upload.gone, headers=TUS)
            if upload.device_id != device:
                return httpx.Response(403, headers=TUS)
            if method == "HEAD":
                return httpx.Response(200, headers={**TUS, "Upload-Offset": str(len(upload.data)),
                                                    "Upload-Length": str(upload.length)})
            if method == "PATCH":
                return self._patch(request, upload)
        if path == f"{API}/submissions" and method == "POST":
            return self._submit(request, device)
        return _error(404, "not_found")

    def _enrol(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body.get("code") not in self.codes:
            return _error(403, "enrol_code_refused")
        self.codes.discard(body["code"])
        device = "dev-" + secrets.token_hex(8)
        token = "idrdev_" + secrets.token_urlsafe(32)
        self.tokens[token] = device
        self.device_keys[device] = VerifyKey.parse(body["public_key"])
        return httpx.Response(201, json={"device_id": device, "token": token,
                                         "service_key": str(self.service_key)})

    def _create(self, request: httpx.Request, device: str) -> httpx.Response:
        meta = decode_metadata(request.headers["upload-metadata"])
        upload_id = secrets.token_hex(16)
        self.uploads[upload_id] = Upload(device, int(request.headers["upload-length"]),
                                         meta["submission_id"], meta["part"])
        return httpx.Response(201, headers={**TUS, "Location": f"{API}/uploads/{upload_id}"})

    def _patch(self, request: httpx.Request, upload: Upload) -> httpx.Response:
        offset = int(request.headers["upload-offset"])
        if offset != len(upload.data):
            return httpx.Response(409, headers={**TUS, "Upload-Offset": str(len(upload.data))})
        body = request.content
        algorithm, digest = parse_checksum_header(request.headers["upload-checksum"])
        assert algorithm == "crc32"
        if zlib.crc32(body).to_bytes(4, "big") != digest:
            return _error(460, "checksum_mismatch")
        if offset + len(body) > upload.length:
            return _error(413, "too_large")
        upload.data += body
        self.patched_bytes += len(body)
        return httpx.Response(204, headers={**TUS, "Upload-Offset": str(len(upload.data))})

    def finished(self, device: str, submission_id: str, name: str, size: int,
                 sha256: str) -> bool:
        return any(u.device_id == device and u.submission_id == submission_id
                   and u.part == name and len(u.data) == u.length == size
                   and hashlib.sha256(u.data).hexdigest() == sha256
                   for u in self.uploads.values())

    def _submit(self, request: httpx.Request, device: str) -> httpx.Response:
        body = json.loads(request.content)
        signed = SignedDocument(body["index"].encode("utf-8"), body["signature"])
        try:
            index = SubmissionIndex.verify(signed, self.device_keys[device])
        except BadIndex:
            return _error(400, "bad_signature")
        if index.device_id != device:
            return _error(403, "forbidden")
        missing = [p.name for p in index.parts
                   if not self.finished(device, index.submission_id, p.name, p.size, p.sha256)]
        if missing:
            return _error(422, "parts_not_uploaded", parts=missing)
        stored = self.stored.get(index.submission_id)
        if stored is not None:
            if stored[0] != signed.data:
                return _error(409, "index_conflict")
            receipt, status = stored[1], 200
        else:
            receipt = Receipt.for_index(index, signed.data,
                                        received_at=datetime.now(UTC)).sign(self.key)
            self.stored[index.submission_id] = (signed.data, receipt)
            status = 201
        text = receipt.data.decode("utf-8")
        signature = receipt.signature
        if self.bad_receipts:  # the right text, signed by someone else
            signature = str(SigningKey.generate().sign(receipt.data, context="receipt"))
        return httpx.Response(status, json={"receipt": text, "signature": signature})

    def blob(self, submission_id: str, name: str) -> bytes:
        (upload,) = [u for u in self.uploads.values() if u.submission_id == submission_id
                     and u.part == name and len(u.data) == u.length]
        return bytes(upload.data)


# -- the kiosk's side -------------------------------------------------------------------------

def kiosk_config(data_dir: Path, **sync: object) -> KioskConfig:
    # Chunks of exactly chunk_bytes unless a test asks for growth: these tests count
    # PATCHes and resent bytes in chunks.
    sync.setdefault("max_chunk_bytes", sync.get("chunk_bytes", SyncConfig().chunk_bytes))
    return KioskConfig(data_dir=data_dir, sync=SyncConfig(**sync))  # type: ignore[arg-type]


def make_submission(data_dir: Path, store: Store, sizes: tuple[int, ...] = (3000,), *,
                    manifest_size: int = 500, now: float = 1_800_000_000.0) -> str:
    """A submitted submission whose sealed files are random bytes of ``sizes``."""
    sid = new_submission_id()
    folder = data_dir / OUTBOX / sid
    folder.mkdir(parents=True)
    store.open_submission(sid, now=now)
    for i, size in enumerate(sizes, start=1):
        data = os.urandom(size)
        (folder / f"q{i}-{i}.age").write_bytes(data)
        store.add_part(PartRecord(
            submission_id=sid, name=f"q{i}-{i}", prompt_id=f"q{i}", duration_s=1.0,
            sample_rate=48_000, frames=48_000, overflows=0, size=size,
            sha256=hashlib.sha256(data).hexdigest(), opus_bytes=size, end_reason="stopped",
            silent=False, created_at=now + i))
    manifest = os.urandom(manifest_size)
    (folder / "manifest.json.age").write_bytes(manifest)
    store.mark_submitted(sid, manifest_size=manifest_size,
                         manifest_sha256=hashlib.sha256(manifest).hexdigest(), now=now + 10)
    return sid


def enrolled(data_dir: Path, central: FakeCentral) -> None:
    central.codes.add(CODE)
    enrol_device(data_dir, server_url="http://central.test", code=CODE,
                 transport=central.transport(), force=True)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
