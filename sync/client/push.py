"""One pass over the kiosk's outbox: upload what is pending, hand over each index.

This is the sync's logic without the kiosk: the outbox comes in through the
:class:`Outbox` protocol (the kiosk's store implements it in kiosk/vault/outbox.py),
so that this package never imports ``kiosk`` and the tests drive it with a fake
outbox and ``httpx.MockTransport``.

For each pending submission, oldest first:

1. ``sealed``/``uploading``: every file is checked against the store's size and
   SHA-256 (a damaged or missing file -> rejected, never uploaded), then uploaded
   with tus, resuming from the service's offset (:func:`sync.client.tus.upload_file`);
2. ``finalizing``: the index, rebuilt from the store (deterministic bytes, and Ed25519
   signatures are deterministic too, so every retry sends the same request), goes to
   ``POST /submissions``; a verified receipt -> ``acknowledged``; 422 -> the named
   parts are uploaded again and the index retried.

A busy or unreachable service stops the pass (nothing changes state); a permanent
refusal rejects that one submission; a 401 stops everything (revoked).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from sync.signing import SigningKey, VerifyKey
from sync.wire import PartEntry, SignedDocument, SubmissionIndex

from .errors import BadReceipt, Rejected, Revoked, Stopped, Transient
from .http import Timeouts
from .submit import PartsNotUploaded, post_index
from .tus import LocalFile, TusClient, UploadCounters, check_local_file, upload_file

SEALED, UPLOADING, FINALIZING = "sealed", "uploading", "finalizing"
#: Rounds of "422 parts_not_uploaded -> upload them again" within one pass.
REUPLOAD_ROUNDS = 2


@dataclass(frozen=True)
class Pending:
    submission_id: str
    state: str
    files: tuple[LocalFile, ...]
    #: sync/withdrawal.py's key of the receipt code, carried in the index (None: none).
    withdrawal_key: str | None = None
    #: The signed catalog version whose recipients it was sealed to (0: the config's).
    recipients_version: int = 0


def sign_index(item: Pending, *, device_id: str, signing_key: SigningKey) -> SignedDocument:
    """The device-signed index of ``item``, the same bytes every time (the network path
    and a USB export both send exactly this)."""
    index = SubmissionIndex.build(
        submission_id=item.submission_id, device_id=device_id,
        recipients_version=item.recipients_version,
        parts=[PartEntry(f.name, f.size, f.sha256) for f in item.files],
        withdrawal_key=item.withdrawal_key)
    return index.sign(signing_key)


class Outbox(Protocol):
    """What a sync pass needs of the kiosk's outbox. Every write is one committed
    transaction before the method returns."""

    def pending(self) -> list[Pending]: ...
    def upload_url(self, submission_id: str, name: str) -> str | None: ...
    def remember_upload_url(self, submission_id: str, name: str, url: str) -> None: ...
    def forget_upload_url(self, submission_id: str, name: str) -> None: ...
    #: sealed -> uploading
    def start_uploading(self, submission_id: str) -> None: ...
    #: uploading -> finalizing, with the SHA-256 of the index about to be sent
    def uploaded(self, submission_id: str, index_sha256: str) -> None: ...
    #: finalizing -> acknowledged, keeping the receipt's exact text and signature
    def acknowledge(self, submission_id: str, *, receipt: str, signature: str) -> None: ...
    #: finalizing -> uploading, forgetting those parts' upload URLs
    def reupload(self, submission_id: str, names: tuple[str, ...]) -> None: ...
    #: -> rejected with ``error``
    def reject(self, submission_id: str, error: str) -> None: ...
    #: state unchanged; attempts + 1, last_error = ``error``
    def attempt_failed(self, submission_id: str, error: str) -> None: ...


@dataclass(frozen=True)
class PushProgress:
    phase: str
    sent_bytes: int
    total_bytes: int
    done: int
    total: int


@dataclass
class PushResult:
    acknowledged: int = 0
    rejected: int = 0
    #: Submissions still pending after the pass.
    pending: int = 0
    error: str | None = None
    revoked: bool = False
    retry_after: float | None = None
    sent_bytes: int = 0
    resent_chunks: int = 0
    #: (submission_id, code) of the submissions rejected in this pass.
    rejections: list[tuple[str, str]] = field(default_factory=list)


class Pusher:
    def __init__(self, client: httpx.Client, *, device_id: str, signing_key: SigningKey,
                 service_key: VerifyKey, chunk_bytes: int, timeouts: Timeouts,
                 max_chunk_bytes: int | None = None,
                 stop: threading.Event | None = None,
                 progress: Callable[[PushProgress], None] | None = None) -> None:
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be positive")
        self.client = client
        self.tus = TusClient(client, timeouts=timeouts)
        self.device_id = device_id
        self.signing_key = signing_key
        self.service_key = service_key
        self.chunk_bytes = chunk_bytes
        self.max_chunk_bytes = max_chunk_bytes
        self.timeouts = timeouts
        self.stop = stop
        self.progress = progress
        self.counters = UploadCounters()
        self._done_bytes = 0  # bytes of this pass's files the service holds
        self._total_bytes = 0
        self._done = 0
        self._total = 0

    def index_for(self, item: Pending) -> SignedDocument:
        return sign_index(item, device_id=self.device_id, signing_key=self.signing_key)

    def _report(self, phase: str) -> None:
        if self.progress is not None:
            self.progress(PushProgress(phase, min(self._done_bytes, self._total_bytes),
                                       self._total_bytes, self._done, self._total))

    def run(self, outbox: Outbox) -> PushResult:
        items = outbox.pending()
        result = PushResult()
        self._total = len(items)
        self._total_bytes = sum(f.size for item in items if item.state != FINALIZING
                                for f in item.files)
        self._report("upload")
        for position, item in enumerate(items):
            if self.stop is not None and self.stop.is_set():
                result.error = "stopped"
                result.pending = len(items) - position
                break
            try:
                try:
                    self._one(outbox, item)
                except FileNotFoundError:
                    # Gone between the check and the read (a staff wipe, a disk fault).
                    raise Rejected("local_file_missing") from None
                except OSError:
                    raise Transient("local_io_error") from None
                result.acknowledged += 1
            except Rejected as exc:
                outbox.reject(item.submission_id, exc.code)
                result.rejected += 1
                result.rejections.append((item.submission_id, exc.code))
            except BadReceipt as exc:
                outbox.attempt_failed(item.submission_id, exc.code)
                result.error = exc.code
                result.pending += 1
            except Revoked as exc:
                result.error, result.revoked = exc.code, True
                result.pending = len(items) - position
                break
            except Stopped:
                result.error = "stopped"
                result.pending = len(items) - position
                break
            except Transient as exc:
                outbox.attempt_failed(item.submission_id, exc.code)
                result.error, result.retry_after = exc.code, exc.retry_after
                result.pending = len(items) - position
                break
            self._done += 1
            self._report("upload")
        result.sent_bytes = self.counters.sent_bytes
        result.resent_chunks = self.counters.resent_chunks
        return result

    # -- one submission ---------------------------------------------------------------
    def _one(self, outbox: Outbox, item: Pending) -> None:
        sid = item.submission_id
        signed = self.index_for(item)
        state = item.state
        if state in (SEALED, UPLOADING):
            self._upload(outbox, item, item.files)
            outbox.uploaded(sid, signed.sha256)
        for _ in range(REUPLOAD_ROUNDS):
            try:
                ack = post_index(self.client, signed, service_key=self.service_key,
                                 timeouts=self.timeouts)
            except PartsNotUploaded as exc:
                names = exc.parts or tuple(f.name for f in item.files)
                again = tuple(f for f in item.files if f.name in names)
                for file in again:
                    # The service's copy is not what the index says: if the local
                    # file is not either, it is damaged (staff must see it), and
                    # sending it again would never end.
                    check_local_file(file, stop=self.stop)
                outbox.reupload(sid, names)
                self._upload(outbox, Pending(sid, UPLOADING, item.files, item.withdrawal_key,
                                             recipients_version=item.recipients_version),
                             again)
                outbox.uploaded(sid, signed.sha256)
                continue
            outbox.acknowledge(sid, receipt=ack.signed.data.decode("utf-8"),
                               signature=ack.signed.signature)
            return
        raise Transient("parts_not_uploaded", status=422)

    def _upload(self, outbox: Outbox, item: Pending, files: tuple[LocalFile, ...]) -> None:
        sid = item.submission_id
        # Every file that fits in a chunk first (cheap: they are small, and most parts
        # are), so a damaged one rejects the submission before a byte goes. A longer
        # file is not read twice: the service checks it against the index, and a part
        # it refuses is checked here before it goes again (_one).
        for file in files:
            if file.size <= self.chunk_bytes:
                check_local_file(file, stop=self.stop)
        if item.state == SEALED:
            outbox.start_uploading(sid)
        for file in files:
            base = self._done_bytes

            def on_offset(offset: int, base: int = base) -> None:
                self._done_bytes = base + offset
                self._report("upload")

            upload_file(
                self.tus, file, submission_id=sid,
                url=outbox.upload_url(sid, file.name),
                remember=lambda url, name=file.name: outbox.remember_upload_url(sid, name, url),
                forget=lambda name=file.name: outbox.forget_upload_url(sid, name),
                chunk_bytes=self.chunk_bytes, max_chunk_bytes=self.max_chunk_bytes,
                counters=self.counters, stop=self.stop,
                on_offset=on_offset)
            self._done_bytes = base + file.size
