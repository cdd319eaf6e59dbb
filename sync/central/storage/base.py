"""The central service's storage interface: metadata and blobs, nothing else.

The default deployment keeps both in one data directory (SQLite and files); the
scale-out issue puts PostgreSQL behind :class:`MetaStore` and S3-compatible object
storage behind :class:`BlobStore`. So the interface says only what both can honour:
no file paths, no file handles, no "rename". Blob reads are iterators of bytes with an
optional byte range; appends state the offset they expect.

Durability words used below:

* **durable** - survives a power cut once the method has returned (fsync on files,
  a committed transaction with ``synchronous=FULL`` on SQLite).
* **atomic** - a reader sees either the state before or the state after, never a mix.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol


class StorageError(Exception):
    """Base class of the errors a store raises on purpose."""


class OffsetMismatch(StorageError):
    """An append expected an offset the stored blob does not have (``actual`` is)."""

    def __init__(self, actual: int) -> None:
        super().__init__(f"stored upload has {actual} durable bytes")
        self.actual = actual


class StorageUnavailable(StorageError):
    """A store could not be reached or did not answer in time (after its retries).
    Nothing was changed; the request may be retried later: the service answers 503."""


class BlobMissing(StorageError):
    """The blob asked for does not exist."""


class Conflict(StorageError):
    """A uniqueness constraint refused the insert (e.g. a second submission per id)."""


class StaleCatalog(Conflict):
    """A catalog whose version is not newer than the newest stored one."""


class ChecksumMismatch(StorageError):
    """Bytes offered under a SHA-256 did not hash to it (nothing was stored)."""


@dataclass(frozen=True)
class AuditEvent:
    """One audit entry to write; ``subject`` holds ids only, never names or bodies."""

    actor: str
    action: str
    subject: str


@dataclass(frozen=True)
class Device:
    id: str
    name: str | None
    public_key: str
    enrolled_at: float
    revoked_at: float | None
    last_heartbeat_at: float | None
    queue_depth: int | None
    free_disk_bytes: int | None
    app_version: str | None
    last_error: str | None


@dataclass(frozen=True)
class Vetter:
    id: str
    name: str
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class Admin:
    """An administrator: reads the fleet view (``central admin add``)."""

    id: str
    name: str
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class Upload:
    id: str
    device_id: str
    submission_id: str
    part: str
    length: int
    offset: int
    created_at: float
    expires_at: float
    finished_at: float | None
    sha256: str | None


@dataclass(frozen=True)
class StoredPart:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class StoredSubmission:
    id: str
    device_id: str
    index: bytes
    index_signature: str
    state: str
    received_at: str
    receipt: bytes
    receipt_signature: str
    parts: tuple[StoredPart, ...]
    #: sync/withdrawal.py's key from the index (None if the kiosk sent none).
    withdrawal_key: str | None = None
    #: The reason code of the last decision (sync/vetting.py), and the catalog story id
    #: once published (kept when unpublished or withdrawn).
    reason: str | None = None
    story_id: str | None = None
    state_changed_at: float | None = None


@dataclass(frozen=True)
class StoredCatalog:
    """One signed catalog, exactly as the publishing team signed it."""

    version: int
    data: bytes
    signature: str
    sha256: str
    created_at: float


@dataclass(frozen=True)
class AuditRow:
    seq: int
    at: str
    actor: str
    action: str
    subject: str
    prev_hash: str
    hash: str


class MetaStore(Protocol):
    """Devices, codes, vetters, uploads, submissions, receipts and the audit log.

    Every write method is durable and atomic when it returns (one transaction). Where a
    method takes ``audit=``, the audit entry is written in that same transaction, so an
    action and its audit line exist together or not at all. Uniqueness (one submission
    per id, one receipt per submission, one device per token) is enforced by the store's
    constraints, never by the caller checking first.
    """

    # -- meta ---------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        """The value stored under ``key``, or None."""
        ...

    def set_meta(self, key: str, value: str, *, audit: AuditEvent | None = None) -> None:
        """Durably store ``value`` under ``key`` (insert or replace)."""
        ...

    # -- enrolment codes and devices -----------------------------------------------
    def add_enrol_code(self, code_hash: str, name: str | None, created_at: float,
                       expires_at: float, *, audit: AuditEvent | None = None) -> int:
        """Durably store a one-time code (only its hash); return its row id."""
        ...

    def enrol_device(self, code_hash: str, now: float, device_id: str, public_key: str,
                     token_hash: str, *, audit: AuditEvent | None = None) -> bool:
        """Redeem the code and insert the device in one transaction.

        The code is taken with one conditional update (unused, unexpired), so two
        requests with one code can never both win. Return False if the code was
        wrong, expired or already used (nothing is written then).
        """
        ...

    def device_by_token(self, token_hash: str) -> Device | None:
        """The device (revoked or not) whose token hashes to ``token_hash``."""
        ...

    def get_device(self, device_id: str) -> Device | None:
        ...

    def list_devices(self) -> list[Device]:
        ...

    def revoke_device(self, device_id: str, now: float, *,
                      audit: AuditEvent | None = None) -> bool:
        """Durably mark the device revoked; False if there is no such device."""
        ...

    def record_heartbeat(self, device_id: str, now: float, queue_depth: int,
                         free_disk_bytes: int | None, app_version: str,
                         last_error: str | None) -> None:
        """Durably store the latest heartbeat (only the latest is kept)."""
        ...

    # -- vetters --------------------------------------------------------------------
    def add_vetter(self, vetter_id: str, name: str, token_hash: str, now: float, *,
                   audit: AuditEvent | None = None) -> None:
        ...

    def vetter_by_token(self, token_hash: str) -> Vetter | None:
        ...

    # -- administrators (the fleet view) ----------------------------------------------
    def add_admin(self, admin_id: str, name: str, token_hash: str, now: float, *,
                  audit: AuditEvent | None = None) -> None:
        """Durably store an administrator (only the token's hash); Conflict if it exists."""
        ...

    def admin_by_token(self, token_hash: str) -> Admin | None:
        """The administrator (revoked or not) whose token hashes to ``token_hash``."""
        ...

    def revoke_admin(self, admin_id: str, now: float, *,
                     audit: AuditEvent | None = None) -> bool:
        """Durably mark the administrator revoked; False if there is no such one."""
        ...

    # -- uploads ----------------------------------------------------------------------
    def create_upload(self, upload: Upload, *, audit: AuditEvent | None = None) -> None:
        """Durably insert a new upload row (offset 0); Conflict if the id exists."""
        ...

    def get_upload(self, upload_id: str) -> Upload | None:
        ...

    def list_uploads(self) -> list[Upload]:
        """Every upload row (start-up reconciliation and the expiry sweep)."""
        ...

    def set_upload_offset(self, upload_id: str, offset: int) -> None:
        """Durably record the committed offset. Call only after the bytes are durable.

        The offset never moves backwards (a smaller value leaves it as it is;
        :meth:`reset_upload` is the one way back), on every store.
        """
        ...

    def reset_upload(self, upload_id: str) -> None:
        """Durably set the offset back to 0 and clear "finished" (reconciliation)."""
        ...

    def finish_upload(self, upload_id: str, sha256: str, now: float, *,
                      audit: AuditEvent | None = None) -> None:
        """Durably mark the upload complete with the SHA-256 of its stored bytes."""
        ...

    def delete_upload(self, upload_id: str, *, audit: AuditEvent | None = None) -> bool:
        """Durably delete the row; False if it did not exist."""
        ...

    def finished_upload_for(self, device_id: str, submission_id: str, part: str, size: int,
                            sha256: str) -> Upload | None:
        """A finished upload of this device matching the part exactly, if any."""
        ...

    def whole_unfinished_uploads(self, device_id: str, submission_id: str, part: str,
                                 size: int) -> list[Upload]:
        """Uploads of this device for the part holding all their bytes (offset = length)
        but never finished: the instance that stored the last bytes died before it
        hashed them. :func:`~sync.central.api.submissions.accept_index` finishes them."""
        ...

    def try_lock_upload(self, upload_id: str) -> bool:
        """Take the upload's lock without waiting; False if someone holds it.

        A second call for a held upload gets False, even from the same thread: the lock
        is not re-entrant. Process-local on SQLite (one ``serve`` per data directory).
        On PostgreSQL a session-level advisory lock on a connection kept until
        :meth:`unlock_upload`: held across instances, and released by the database
        when the holding process dies. A false "locked" is allowed (the client
        retries); two holders of one upload's lock never are.
        """
        ...

    def unlock_upload(self, upload_id: str) -> None:
        ...

    # -- submissions -------------------------------------------------------------------
    def insert_submission(self, submission: StoredSubmission, *,
                          audit: AuditEvent | None = None) -> None:
        """Insert the submission, its parts and its receipt in one transaction.

        Raise :class:`Conflict` (and write nothing) if a submission with this id exists:
        the UNIQUE constraint decides, so concurrent inserts cannot both succeed.
        """
        ...

    def get_submission(self, submission_id: str) -> StoredSubmission | None:
        ...

    def list_submissions(self, state: str | None = None) -> list[StoredSubmission]:
        """All submissions (or those in ``state``), oldest first (the vetting queue)."""
        ...

    def set_submission_state(self, submission_id: str, expect: str, state: str,
                             reason: str | None, story_id: str | None, now: float, *,
                             audit: AuditEvent | None = None) -> bool:
        """Move the submission from ``expect`` to ``state`` with these reason and story id.

        One conditional update (compare-and-set on the state), so two vetters deciding
        at once cannot both win; False if the submission is not in ``expect`` (or does
        not exist). :class:`Conflict` if another submission already has ``story_id``.
        """
        ...

    def withdraw(self, withdrawal_key: str, now: float, *, actor: str) -> tuple[int, list[str]]:
        """Move every submission carrying ``withdrawal_key`` to ``withdrawn``.

        Returns (submissions carrying the key, ids newly withdrawn). One transaction, one
        audit entry per newly withdrawn id (``actor``, "submission_withdrawn", the id).
        """
        ...

    def withdrawn_story_ids(self, story_ids: Iterable[str]) -> set[str]:
        """Those of ``story_ids`` whose submission has been withdrawn."""
        ...

    # -- public audio and catalogs ---------------------------------------------------------
    def add_public_audio(self, story_id: str, sha256: str, size: int, now: float, *,
                         audit: AuditEvent | None = None) -> bool:
        """Record stored public audio (after the blob is durable); False if known."""
        ...

    def public_audio_size(self, story_id: str, sha256: str) -> int | None:
        ...

    def latest_public_audio(self, story_id: str) -> tuple[str, int] | None:
        """(sha256, size) of the story's newest stored audio, or None."""
        ...

    def put_catalog(self, catalog: StoredCatalog, *, audit: AuditEvent | None = None) -> None:
        """Durably store the catalog as the newest.

        :class:`StaleCatalog` (nothing written) unless its version is greater than every
        stored one; the UNIQUE constraint on the version decides between racing writers.
        """
        ...

    def latest_catalog(self, *, with_data: bool = True) -> StoredCatalog | None:
        """The newest catalog (``data`` is b"" when ``with_data`` is False)."""
        ...

    # -- audit -------------------------------------------------------------------------
    def append_audit(self, event: AuditEvent) -> None:
        """Durably append one hash-chained entry (for reads that change nothing else)."""
        ...

    def audit_rows(self) -> Iterator[AuditRow]:
        """Every audit row in ``seq`` order."""
        ...

    def close(self) -> None:
        ...


class UploadAppend(Protocol):
    """One append to an upload blob in progress (see :meth:`BlobStore.open_append`)."""

    def write(self, data: bytes) -> None:
        ...

    def commit(self) -> int:
        """Make the written bytes durable; return the blob's new size. On an error the
        blob is cut back to where the append started and the error re-raised."""
        ...

    def abort(self) -> None:
        """Cut the blob back to where the append started. Safe to call after commit."""
        ...


def append_all(append: UploadAppend, chunks: Iterable[bytes]) -> int:
    """Write ``chunks`` through ``append`` and commit (the new durable size); on any
    error abort, so nothing past the starting offset stays, and re-raise. What every
    store's :meth:`BlobStore.append_upload` is, over its own :meth:`~BlobStore.open_append`."""
    try:
        for chunk in chunks:
            append.write(chunk)
    except BaseException:
        append.abort()
        raise
    return append.commit()


class BlobStore(Protocol):
    """Upload bodies, submission parts and public audio, as opaque bytes.

    Keys are the ids the service makes (32-hex upload ids, UUIDv7 submission ids,
    SHA-256 hex), never anything a device chose; public audio adds the catalog story id
    a vetter chose, checked against the catalog's story-id syntax (letters, digits,
    ``-``, ``_``: never a path) before it is used.
    """

    # -- upload bodies, which grow by appends --------------------------------------------
    def create_upload(self, upload_id: str) -> None:
        """Durably create an empty upload blob (replacing any leftover of that id)."""
        ...

    def upload_size(self, upload_id: str) -> int | None:
        """Bytes currently stored for the upload (may exceed the committed offset after a
        crash), or None if there is no such blob."""
        ...

    def open_append(self, upload_id: str, expected_offset: int) -> UploadAppend:
        """Start appending at ``expected_offset`` (as :meth:`append_upload`, by parts).

        Bytes past ``expected_offset`` are dropped first; fewer stored bytes raise
        :class:`OffsetMismatch`. The caller writes, then commits (durable) or aborts.
        """
        ...

    def append_upload(self, upload_id: str, expected_offset: int,
                      chunks: Iterable[bytes]) -> int:
        """Append ``chunks`` at ``expected_offset``; return the new durable size.

        Bytes past ``expected_offset`` from an earlier failed append are dropped first.
        If fewer than ``expected_offset`` bytes are stored, raise :class:`OffsetMismatch`.
        If anything fails (the chunk source raises, the disk is full), the blob is cut
        back to ``expected_offset`` and the error re-raised: nothing past the durable
        offset is left. On return every appended byte is durable.
        """
        ...

    def truncate_upload(self, upload_id: str, size: int) -> None:
        """Durably cut the upload blob back to ``size`` bytes (reconciliation)."""
        ...

    def read_upload(self, upload_id: str, start: int = 0,
                    end: int | None = None) -> Iterator[bytes]:
        """The bytes ``[start, end)`` of the upload blob (BlobMissing if absent)."""
        ...

    def delete_upload(self, upload_id: str) -> None:
        """Durably delete the upload blob; no error if it is already gone."""
        ...

    def list_uploads(self) -> list[str]:
        """Ids of every upload blob."""
        ...

    # -- submission parts, written once, content-addressed -------------------------------
    def put_part_from_upload(self, upload_id: str, submission_id: str, sha256: str) -> None:
        """Durably store the upload's bytes as part ``(submission_id, sha256)``.

        All or nothing: a reader never sees a partial part. The upload is finished (it
        never changes again) and the caller has checked the SHA-256 recorded when it
        finished against ``sha256``. A store that can take the upload's bytes as they
        are (a hard link, a server-side copy) does; one that copies them hashes them
        while copying, and if they do not hash to ``sha256`` nothing is stored and
        :class:`StorageError` is raised. A part that already exists is left as it is
        (same key, same content).
        """
        ...

    def part_size(self, submission_id: str, sha256: str) -> int | None:
        ...

    def read_part(self, submission_id: str, sha256: str, start: int = 0,
                  end: int | None = None) -> Iterator[bytes]:
        """The bytes ``[start, end)`` of the part (BlobMissing if absent)."""
        ...

    def list_parts(self) -> list[tuple[str, str, float]]:
        """(submission_id, sha256, last-modified unix time) of every stored part."""
        ...

    def delete_part(self, submission_id: str, sha256: str) -> None:
        ...

    # -- public audio, written once, content-addressed by (story id, SHA-256) ------------
    def put_public_audio(self, story_id: str, sha256: str, chunks: Iterable[bytes]) -> int:
        """Durably store ``chunks`` as the story's audio with this SHA-256; its size.

        All or nothing: the bytes are hashed while written and :class:`ChecksumMismatch`
        is raised (nothing stored) if they do not hash to ``sha256``. Audio already
        stored under the key is never overwritten (same key, same content).
        """
        ...

    def public_audio_size(self, story_id: str, sha256: str) -> int | None:
        ...

    def read_public_audio(self, story_id: str, sha256: str, start: int = 0,
                          end: int | None = None) -> Iterator[bytes]:
        """The bytes ``[start, end)`` of the audio (BlobMissing if absent)."""
        ...
