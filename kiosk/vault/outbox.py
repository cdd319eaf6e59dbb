"""The outbox's state machine: where each submitted submission is on its way to the
vetting queue, and the only moves allowed between states.

::

    sealed --upload_started--> uploading --uploaded--> finalizing --receipt_verified-->
    acknowledged --purged--> purged
                                 finalizing --parts_not_uploaded--> uploading
    sealed | uploading | finalizing --rejected | files_missing--> rejected

A receipt carried back on a USB stick (kiosk/usb/) takes the same moves: once
:func:`receipt_holds` (the very check a purge makes) has verified it, the row goes
sealed -> uploading -> finalizing (the stick carried the bytes and the index) ->
acknowledged, one legal move at a time; a crash in between leaves a pending row that
the next network pass finishes (the service answers the same index with the same
receipt). Exporting is not a move: ``exported_at`` is a mark beside the state, so an
exported submission stays pending for the network too.

``sealed`` is entered in the same transaction as the submission's ``submitted``
(kiosk/vault/store.py). ``attempt_failed`` keeps the state and counts the attempt.
Every move is one transaction that also checks the state it starts from, so two
passes (the app's worker and ``kiosk sync --once``) can never move a row backwards.

The safety rules live here, not in the network code:

* ``acknowledged`` only with the service's receipt text and signature (the caller has
  verified it against the pinned key; :func:`receipt_holds` checks it again before a
  purge);
* ``purged`` only from ``acknowledged``, only once the folder is gone, and never
  before ``acknowledged_at + retention``;
* a submission whose files are missing is ``rejected`` for staff, never dropped.

:class:`StoreOutbox` is the kiosk's implementation of :class:`sync.client.push.Outbox`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sync.client.push import Pending
from sync.client.tus import LocalFile
from sync.signing import VerifyKey
from sync.wire import BadIndex, PartEntry, Receipt, SignedDocument, SubmissionIndex

from .. import logs
from .layout import MANIFEST_FILE, OUTBOX, fsync_dir
from .store import (
    ACKNOWLEDGED,
    FINALIZING,
    PENDING_STATES,
    PURGED,
    REJECTED,
    SEALED,
    UPLOADING,
    OutboxRow,
    Store,
)

log = logging.getLogger("kiosk.outbox")

UPLOAD_STARTED = "upload_started"
UPLOADED = "uploaded"
RECEIPT_VERIFIED = "receipt_verified"
PARTS_NOT_UPLOADED = "parts_not_uploaded"
REJECTED_EVENT = "rejected"
FILES_MISSING = "files_missing"
PURGED_EVENT = "purged"
ATTEMPT_FAILED = "attempt_failed"

#: (state, event) -> next state. Nothing else is a legal move.
TRANSITIONS: dict[tuple[str, str], str] = {
    (SEALED, UPLOAD_STARTED): UPLOADING,
    (UPLOADING, UPLOADED): FINALIZING,
    (FINALIZING, RECEIPT_VERIFIED): ACKNOWLEDGED,
    (FINALIZING, PARTS_NOT_UPLOADED): UPLOADING,
    (ACKNOWLEDGED, PURGED_EVENT): PURGED,
    **{(s, REJECTED_EVENT): REJECTED for s in PENDING_STATES},
    **{(s, FILES_MISSING): REJECTED for s in PENDING_STATES},
    **{(s, ATTEMPT_FAILED): s for s in PENDING_STATES},
}

LOCAL_FILE_MISSING = "local_file_missing"
DAY_S = 86_400.0


class IllegalMove(RuntimeError):
    """An event that does not apply to the row's current state (or no row)."""


def next_state(state: str, event: str) -> str:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalMove(f"{event} does not apply to a submission in state {state}") from None


def sources(event: str) -> tuple[str, ...]:
    return tuple(sorted(s for (s, e) in TRANSITIONS if e == event))


def submission_files(data_dir: Path, store: Store, submission_id: str) -> tuple[LocalFile, ...]:
    """The sealed files of a submitted submission, as the store vouches for them."""
    folder = data_dir / OUTBOX / submission_id
    files = [LocalFile(f"{p.name}.age", folder / f"{p.name}.age", p.size, p.sha256)
             for p in store.parts(submission_id)]
    manifest = store.manifest_entry(submission_id)
    if manifest is not None:
        files.append(LocalFile(MANIFEST_FILE, folder / MANIFEST_FILE, *manifest))
    return tuple(sorted(files, key=lambda f: f.name))


def receipt_holds(store: Store, row: OutboxRow, service_key: VerifyKey | None) -> bool:
    """Whether ``row``'s stored receipt verifies, under ``service_key``, for exactly the
    files the store lists for it. Checked again before any purge."""
    if service_key is None or row.receipt is None or row.receipt_signature is None:
        return False
    signed = SignedDocument(row.receipt.encode("utf-8"), row.receipt_signature)
    try:
        device_id = Receipt.parse(signed.data).device_id
        parts = [PartEntry(f.name, f.size, f.sha256)
                 for f in submission_files(Path("."), store, row.submission_id)]
        index = SubmissionIndex.build(submission_id=row.submission_id, device_id=device_id,
                                      recipients_version=store.recipients_version(
                                          row.submission_id), parts=parts,
                                      withdrawal_key=store.withdrawal_key(row.submission_id))
        Receipt.verify(signed, service_key, expect_index=SignedDocument(index.to_bytes(), ""))
    except (BadIndex, ValueError):
        return False
    return row.index_sha256 is None or row.index_sha256 == signed_index_sha(index)


def signed_index_sha(index: SubmissionIndex) -> str:
    return SignedDocument(index.to_bytes(), "").sha256


class StoreOutbox:
    """The kiosk store as a sync pass's outbox (:class:`sync.client.push.Outbox`)."""

    def __init__(self, data_dir: Path, store: Store, *,
                 now: Callable[[], float], receipt_key: VerifyKey | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.store = store
        self.now = now
        #: The pinned service key, for :meth:`import_receipt` (the network path checks
        #: its receipts in sync/client/submit.py).
        self.receipt_key = receipt_key

    # -- the moves ----------------------------------------------------------------------
    def apply(self, submission_id: str, event: str, *, error: str | None = None,
              extra: dict[str, object] | None = None,
              forget_uploads: tuple[str, ...] = ()) -> str:
        """Make ``event`` happen to ``submission_id`` (one transaction); the new state."""
        row = self.store.outbox_row(submission_id)
        if row is None:
            raise IllegalMove(f"{event}: no outbox row")
        new = next_state(row.state, event)
        changes: dict[str, object] = {"state": new, "updated_at": self.now()}
        if event in (ATTEMPT_FAILED, REJECTED_EVENT, FILES_MISSING, PARTS_NOT_UPLOADED):
            changes["last_error"] = error
        elif event in (RECEIPT_VERIFIED, UPLOADED):
            changes["last_error"] = None
        changes.update(extra or {})
        if not self.store.update_outbox(submission_id, expect=sources(event), changes=changes,
                                        forget_uploads=forget_uploads,
                                        bump_attempts=event == ATTEMPT_FAILED):
            raise IllegalMove(f"{event}: the row moved meanwhile")
        logs.event(log, "outbox_" + event, submission=submission_id, state=new,
                   error=error)
        return new

    # -- sync.client.push.Outbox --------------------------------------------------------
    def pending(self) -> list[Pending]:
        return [Pending(row.submission_id, row.state,
                        submission_files(self.data_dir, self.store, row.submission_id),
                        self.store.withdrawal_key(row.submission_id),
                        recipients_version=self.store.recipients_version(row.submission_id))
                for row in self.store.outbox_rows(PENDING_STATES)]

    def upload_url(self, submission_id: str, name: str) -> str | None:
        return self.store.upload_url(submission_id, name)

    def remember_upload_url(self, submission_id: str, name: str, url: str) -> None:
        self.store.set_upload_url(submission_id, name, url)

    def forget_upload_url(self, submission_id: str, name: str) -> None:
        self.store.forget_upload_url(submission_id, name)

    def start_uploading(self, submission_id: str) -> None:
        self.apply(submission_id, UPLOAD_STARTED)

    def uploaded(self, submission_id: str, index_sha256: str) -> None:
        self.apply(submission_id, UPLOADED, extra={"index_sha256": index_sha256})

    def acknowledge(self, submission_id: str, *, receipt: str, signature: str) -> None:
        # Receipt, signature, time and state in one transaction: an acknowledged row
        # always carries the proof it was acknowledged with.
        self.apply(submission_id, RECEIPT_VERIFIED, extra={
            "receipt": receipt, "receipt_signature": signature,
            "acknowledged_at": self.now()})

    def import_receipt(self, submission_id: str, *, receipt: str, signature: str) -> bool:
        """Acknowledge a pending submission with a receipt from a USB bundle; False (and
        nothing changes) unless the receipt verifies, under the pinned service key, for
        exactly the index the store rebuilds (:func:`receipt_holds`, as before a purge).

        The key is :attr:`receipt_key` (the one pinned at enrolment). The row walks the
        legal moves to ``acknowledged`` (module doc), keeping the receipt's text,
        signature and index hash; its upload URLs are forgotten. IllegalMove if a sync
        pass moved it meanwhile.
        """
        row = self.store.outbox_row(submission_id)
        if row is None or self.receipt_key is None:
            return False
        # The row's own index hash stays in the check: a row that already handed an
        # index to the network takes only a receipt for that very index.
        candidate = replace(row, receipt=receipt, receipt_signature=signature)
        if not receipt_holds(self.store, candidate, self.receipt_key):
            return False
        index_sha = Receipt.parse(receipt.encode("utf-8")).index_sha256
        if row.state == SEALED:
            self.apply(submission_id, UPLOAD_STARTED)
            row = replace(row, state=UPLOADING)
        if row.state == UPLOADING:
            self.apply(submission_id, UPLOADED, extra={"index_sha256": index_sha})
        self.apply(submission_id, RECEIPT_VERIFIED, extra={
            "receipt": receipt, "receipt_signature": signature,
            "acknowledged_at": self.now()},
            forget_uploads=tuple(f.name for f in submission_files(
                self.data_dir, self.store, submission_id)))
        return True

    def reupload(self, submission_id: str, names: tuple[str, ...]) -> None:
        self.apply(submission_id, PARTS_NOT_UPLOADED, error=PARTS_NOT_UPLOADED,
                   forget_uploads=names)

    def reject(self, submission_id: str, error: str) -> None:
        self.apply(submission_id, REJECTED_EVENT, error=error)

    def attempt_failed(self, submission_id: str, error: str) -> None:
        self.apply(submission_id, ATTEMPT_FAILED, error=error)

    # -- after the pass, and at start-up --------------------------------------------------
    def files_missing(self, submission_id: str) -> None:
        self.apply(submission_id, FILES_MISSING, error=LOCAL_FILE_MISSING)

    def purge_due(self, *, retention_days: float, service_key: VerifyKey | None) -> int:
        """Purge every acknowledged submission older than the retention; the count.

        The folder goes first, durably (fsync of outbox/), then the row says
        ``purged``: a power cut in between leaves an acknowledged row without files,
        which the next purge finishes. A stored receipt that no longer verifies is
        never purged (and is logged).
        """
        outbox_dir = self.data_dir / OUTBOX
        limit = self.now() - retention_days * DAY_S
        purged = 0
        for row in self.store.outbox_rows((ACKNOWLEDGED,)):
            if row.acknowledged_at is None or row.acknowledged_at > limit:
                continue
            if not receipt_holds(self.store, row, service_key):
                logs.event(log, "outbox_purge_refused", submission=row.submission_id,
                           reason="receipt_unverified")
                continue
            folder = outbox_dir / row.submission_id
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)
            if outbox_dir.is_dir():
                fsync_dir(outbox_dir)
            self.apply(row.submission_id, PURGED_EVENT, extra={"purged_at": self.now()},
                       forget_uploads=tuple(f.name for f in submission_files(
                           self.data_dir, self.store, row.submission_id)))
            purged += 1
        return purged
