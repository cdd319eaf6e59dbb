"""Key custody for one defender's session: the file keys of its parts, in one place.

Every part is sealed to the vetting team, and also openable with its own random file
key, which the kiosk needs for "listen back". Those keys live only here, in RAM, in
mutable buffers, for as long as the session lasts:

* :meth:`SessionCustody.discard` (abandon, idle timeout, "start again") deletes the
  session's parts and store rows and drops the keys;
* :meth:`SessionCustody.submit` seals the manifest, commits the submission, and drops
  the keys.

Custody also owns everything that holds a key derived from them: every review reader
it opened (a reader holds the payload key inside a ``cryptography`` object) and every
player it loaded. Submitting or discarding stops those players and closes those
readers before the keys are zeroed.

After either, the parts open only with the team's identity. "Drops" means the key
buffers are zeroed and forgotten; Python cannot promise that no transient copy was
left in freed memory (swap is off on deployed kiosks, see DESIGN.md), but no live
object of the kiosk can open a part any more, which tests/test_custody.py checks.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from sync.envelope import parse_recipient

from .. import logs
from ..audio.player import SealedPart
from ..audio.recorder import Recorder, Take, TakeResult
from ..ids import new_submission_id
from .layout import OUTBOX, make_dir_durably
from .manifest import build_manifest, seal_manifest
from .store import PartRecord, Store

log = logging.getLogger("kiosk.custody")

_PROMPT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class _Stoppable(Protocol):
    def stop(self) -> None: ...


class _Loads(_Stoppable, Protocol):
    def load(self, source: Any) -> float: ...


class CustodyClosed(RuntimeError):
    """The session was submitted or discarded: its keys are gone."""


class ReviewSource:
    """A part to play back to the defender; every reader it opens belongs to custody."""

    def __init__(self, custody: SessionCustody, name: str) -> None:
        self._custody = custody
        self.name = name

    def open(self) -> BinaryIO:
        return self._custody._open_reader(self.name)


class SessionCustody:
    """The parts and file keys of one submission in the making."""

    def __init__(self, *, data_dir: Path, store: Store, recipients: Iterable[Any],
                 allow_mixed: bool = False, submission_id: str | None = None,
                 clock: Callable[[], float] = time.time,
                 recipients_version: int = 0) -> None:
        self.submission_id = submission_id or new_submission_id()
        self.directory = data_dir / OUTBOX / self.submission_id
        self.store = store
        self.recipients = [parse_recipient(r) if isinstance(r, str) else r
                           for r in recipients]
        if not self.recipients:
            raise ValueError("no recipients to seal to")
        if len({r.post_quantum for r in self.recipients}) > 1 and not allow_mixed:
            # Refused here, before anything is recorded, rather than at every take.
            raise ValueError("refusing to mix post-quantum and classic recipients")
        self.allow_mixed = allow_mixed
        #: Where ``recipients`` came from: the signed catalog's version, 0 the config.
        self.recipients_version = recipients_version
        self.clock = clock
        self._lock = threading.RLock()
        self._keys: dict[str, bytearray] = {}
        self._takes: dict[str, Take] = {}  # recording now, or not yet handed over
        self._readers: list[BinaryIO] = []  # review readers handed out, open or closed
        self._players: list[_Stoppable] = []  # players loaded with a review source
        self._counter = 0
        self._closed: str | None = None  # "submitted" or "discarded"
        self._opened = False

    # -- recording -------------------------------------------------------------------
    def record(self, recorder: Recorder, prompt_id: str, *,
               on_end: Callable[[str, TakeResult], None] | None = None) -> tuple[str, Take]:
        """Start a take for ``prompt_id``; returns the part's name and the take.

        ``on_end(name, result)`` runs on the take's writer thread once the part is
        sealed and recorded here (or found to be lost).
        """
        if not _PROMPT_ID.match(prompt_id):
            raise ValueError("prompt ids are short lower-case identifiers")
        with self._lock:
            self._check_open()
            if not self._opened:
                # The row first: a crash from here on leaves a part that the start-up
                # sweep knows belongs to an unsubmitted submission.
                self.store.open_submission(self.submission_id, now=self.clock())
                make_dir_durably(self.directory)
                self._opened = True
            self._counter += 1
            name = f"{prompt_id}-{self._counter}"
            path = self.directory / f"{name}.age"

            def ended(result: TakeResult) -> None:
                self._take_ended(name, prompt_id, result)
                if on_end is not None:
                    on_end(name, result)

            take = recorder.start(path, self.recipients, on_end=ended,
                                  allow_mixed=self.allow_mixed)
            # The key goes into custody now (a copy that custody owns and zeroes), so
            # that a discard mid-take drops it too.
            self._keys[name] = take.file_key
            self._takes[name] = take
            return name, take

    def _take_ended(self, name: str, prompt_id: str, result: TakeResult) -> None:
        with self._lock:
            self._takes.pop(name, None)
            if result.sealed is None or self._closed is not None:
                self._drop_key(name)
                return
            self.store.add_part(PartRecord(
                submission_id=self.submission_id, name=name, prompt_id=prompt_id,
                duration_s=round(result.duration_s, 3), sample_rate=result.samplerate,
                frames=result.frames, overflows=result.overflows, size=result.sealed.size,
                sha256=result.sealed.sha256, opus_bytes=result.opus_bytes,
                end_reason=result.reason.value, silent=result.silent,
                created_at=self.clock()))

    # -- review and re-record -----------------------------------------------------------
    def parts(self) -> list[PartRecord]:
        return self.store.parts(self.submission_id)

    def review_source(self, name: str) -> ReviewSource:
        """What the player needs to play part ``name`` back to the defender.

        Every reader it opens is closed when the session is submitted or discarded.
        """
        with self._lock:
            self._check_reviewable(name)
            return ReviewSource(self, name)

    def play_back(self, name: str, player: _Loads) -> float:
        """Load part ``name`` into ``player`` (returns its duration in seconds).

        The player is stopped when the session is submitted or discarded.
        """
        source = self.review_source(name)
        with self._lock:
            self._players.append(player)
        return player.load(source)

    def _check_reviewable(self, name: str) -> None:
        self._check_open()
        if name not in self._keys or name in self._takes:
            raise KeyError(name)

    def _open_reader(self, name: str) -> BinaryIO:
        with self._lock:
            self._check_reviewable(name)
            reader = SealedPart(self.directory / f"{name}.age", self._keys[name]).open()
            # Forget readers already closed (a screen that reviewed many times).
            self._readers = [r for r in self._readers if not r.closed]
            self._readers.append(reader)
            return reader

    def drop_part(self, name: str) -> None:
        """Delete one part (the defender re-records that answer)."""
        with self._lock:
            self._check_open()
            take = self._takes.pop(name, None)
        if take is not None:
            take.abort()
        with self._lock:
            (self.directory / f"{name}.age").unlink(missing_ok=True)
            (self.directory / f"{name}.age.part").unlink(missing_ok=True)
            self.store.remove_part(self.submission_id, name)
            self._drop_key(name)

    # -- the two ways a session ends ----------------------------------------------------
    def discard(self) -> None:
        """Delete every part of this session, its rows, and its keys."""
        with self._lock:
            if self._closed == "discarded":
                return
            if self._closed == "submitted":
                raise CustodyClosed("a submitted session cannot be discarded")
            self._closed = "discarded"
            takes = list(self._takes.values())
            self._takes.clear()
        self._revoke()
        for take in takes:
            take.abort()
        with self._lock:
            self._drop_all_keys()
            shutil.rmtree(self.directory, ignore_errors=True)
            self.store.delete_submission(self.submission_id)
        logs.event(log, "session_discarded", submission=self.submission_id)

    def submit(self, manifest: Mapping[str, Any], *, receipt_hash: str | None = None,
               withdrawal_key: str | None = None) -> Path:
        """Seal ``manifest`` with the parts' metadata, commit, drop every key.

        Returns the sealed manifest's path. The manifest holds what the defender gave
        (name or "Anonymous", consent, answers' metadata...): it exists in clear only
        in RAM and is written sealed to the same recipients as the parts.
        ``receipt_hash`` (a slow hash of the receipt code) and ``withdrawal_key``
        (sync.withdrawal's key of the same code, which the submission index carries)
        are committed with the row.
        """
        with self._lock:
            self._check_open()
            if self._takes:
                raise RuntimeError("a take is still recording; stop it before submitting")
            parts = self.parts()
            if not parts:
                raise RuntimeError("nothing was recorded")
            document = build_manifest(self.submission_id, manifest, parts)
            sealed = seal_manifest(self.directory, document, self.recipients,
                                   allow_mixed=self.allow_mixed)
            del document
            self.store.mark_submitted(self.submission_id, manifest_size=sealed.size,
                                      manifest_sha256=sealed.sha256, now=self.clock(),
                                      receipt_hash=receipt_hash,
                                      withdrawal_key=withdrawal_key,
                                      recipients_version=self.recipients_version)
            self._closed = "submitted"
        self._revoke()
        with self._lock:
            self._drop_all_keys()
        logs.event(log, "session_submitted", submission=self.submission_id, parts=len(parts))
        return sealed.path

    @property
    def closed(self) -> bool:
        return self._closed is not None

    # -- keys -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed is not None:
            raise CustodyClosed(f"this session was {self._closed}; its keys are gone")

    def _revoke(self) -> None:
        """Stop every review player and close every review reader (outside the lock:
        a player's feeder thread may be waiting for it)."""
        with self._lock:
            players, self._players = self._players, []
            readers, self._readers = self._readers, []
        for player in players:
            try:
                player.stop()
            except Exception as exc:
                logs.event(log, "review_player_stop_failed", error=type(exc).__name__)
        for reader in readers:
            reader.close()  # the sealed reader wipes its payload key here

    def _drop_key(self, name: str) -> None:
        key = self._keys.pop(name, None)
        if key is not None:
            key[:] = bytes(len(key))

    def _drop_all_keys(self) -> None:
        for name in list(self._keys):
            self._drop_key(name)
