"""The vet tool's workflow as a Python API: one :class:`Vet` per home folder.

The CLI (``cli.py``) and the local web page (``web/``) both drive this class; it holds
the logic and the seams (the HTTP ``transport``, the passphrase source, the audio
pipeline). Keys are unlocked once per :class:`Vet` and kept in memory only.

Errors: :class:`VetError` is a refusal with a one-line message (the CLI exits 2);
:class:`~sync.vet.client.ServiceError` comes from the service (exit 1 when
``transient``, else 2).

Plaintext (manifests, audio) is returned as bytes in memory and never written: the
only way to a file is ``vet play --out``, which the vetter asks for on purpose.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from sync import vetting
from sync.envelope import EnvelopeError, Identity, NoIdentityMatchError, open_bytes
from sync.signing import SigningKey
from sync.wire import is_part_name, is_submission_id

from . import keys
from .client import IntegrityError, ServiceError, VetClient
from .workspace import Home, WorkspaceError

__all__ = ["MANIFEST_PART", "PullResult", "Vet", "VetError"]

MANIFEST_PART = "manifest.json.age"


class VetError(Exception):
    """A refusal the vetter can act on; the message is one line."""


@dataclass(frozen=True)
class PullResult:
    pulled: int
    bytes: int
    removed_withdrawn: int
    failed: tuple[str, ...] = ()


def _now_text() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class Vet:
    """The workflow over one home folder."""

    def __init__(self, home: Home, *, passphrase: Callable[[], str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.home = home
        self._passphrase_source = passphrase
        self._passphrase: str | None = None
        self.transport = transport
        self._team: list[Identity] | None = None
        self._signing: SigningKey | None = None

    # -- secrets -------------------------------------------------------------------------
    def passphrase(self) -> str:
        if self._passphrase is None:
            if self._passphrase_source is None:
                raise VetError("a passphrase is needed: set VET_PASSPHRASE")
            value = self._passphrase_source()
            if not value:
                raise VetError("an empty passphrase: nothing to unlock the keys with")
            self._passphrase = value
        return self._passphrase

    def _read_key_file(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise VetError(f"no {path.relative_to(self.home.root)} in {self.home.root}:"
                           " run `vet keygen` first (or give the right --home)") from None

    def team_identities(self) -> list[Identity]:
        if self._team is None:
            data = self._read_key_file(self.home.team_key)
            try:
                self._team = keys.read_identities(data, self.passphrase(), "keys/team.age")
            except keys.WrongPassphrase:
                raise VetError("wrong passphrase for keys/team.age") from None
            except keys.KeyFileError as exc:
                raise VetError(str(exc)) from None
        return self._team

    def signing_key(self) -> SigningKey:
        if self._signing is None:
            data = self._read_key_file(self.home.publisher_key)
            try:
                self._signing = keys.read_signing_key(data, self.passphrase(),
                                                      "keys/publisher.age")
            except keys.WrongPassphrase:
                raise VetError("wrong passphrase for keys/publisher.age") from None
            except keys.KeyFileError as exc:
                raise VetError(str(exc)) from None
        return self._signing

    # -- service -------------------------------------------------------------------------
    def client(self) -> VetClient:
        try:
            config = self.home.config()
        except WorkspaceError as exc:
            raise VetError(str(exc)) from None
        return VetClient(config["server"], config["token"], transport=self.transport)

    def queue(self, state: str | None = None) -> list[dict[str, Any]]:
        """The service's queue (saved in the home for `vet list` without a network)."""
        with self.client() as client:
            entries = client.queue()
        self.home.ensure()
        self.home.write_json(self.home.queue_path, {"saved_at": _now_text(),
                                                    "submissions": entries})
        if state:
            entries = [e for e in entries if e.get("state") == state]
        return entries

    def saved_queue(self) -> list[dict[str, Any]]:
        doc = self.home.read_json(self.home.queue_path, {"submissions": []})
        entries = doc.get("submissions") if isinstance(doc, dict) else None
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []

    def entry(self, submission_id: str, queue: list[dict[str, Any]] | None = None
              ) -> dict[str, Any]:
        """The queue entry of ``submission_id`` (from the service); VetError if unknown."""
        self.check_id(submission_id)
        for entry in (queue if queue is not None else self.queue()):
            if entry.get("id") == submission_id:
                return entry
        raise VetError(f"unknown submission {submission_id}: the service's queue does not"
                       " hold it")

    @staticmethod
    def check_id(submission_id: str) -> None:
        if not is_submission_id(submission_id):
            raise VetError(f"unknown submission {submission_id[:60]!r}: not a submission id")

    # -- pull ----------------------------------------------------------------------------
    def pull(self, *, progress: Callable[[int], None] | None = None) -> PullResult:
        """Download every submission not pulled yet (resuming), checking each SHA-256."""
        with self.home.lock(), self.client() as client:
            queue = client.queue()
            self.home.write_json(self.home.queue_path, {"saved_at": _now_text(),
                                                        "submissions": queue})
            pulled = fetched = removed = 0
            failed: list[str] = []
            first_error: IntegrityError | None = None
            for entry in queue:
                sid = entry.get("id")
                if not isinstance(sid, str) or not is_submission_id(sid):
                    continue  # never a path from a malformed id
                folder = self.home.submission_dir(sid)
                if entry.get("state") == vetting.WITHDRAWN:
                    # The defender took it back: no copy stays on this workstation.
                    if folder.exists():
                        shutil.rmtree(folder)
                        removed += 1
                    continue
                if self.home.is_pulled(sid):
                    continue
                parts = self._parts_of(entry)
                folder.mkdir(parents=True, exist_ok=True)
                self.home.save_pull_state(sid, {n: h for n, _s, h in parts}, False)
                try:
                    for name, size, digest in parts:
                        fetched += client.fetch_part(sid, name, self.home.part_path(sid, name),
                                                     size=size, sha256=digest,
                                                     progress=progress)
                except IntegrityError as exc:
                    failed.append(sid)
                    first_error = first_error or exc
                    continue
                self.home.save_pull_state(sid, {n: h for n, _s, h in parts}, True)
                pulled += 1
        result = PullResult(pulled, fetched, removed, tuple(failed))
        if first_error is not None:
            first_error.result = result  # type: ignore[attr-defined]
            raise first_error
        return result

    @staticmethod
    def _parts_of(entry: dict[str, Any]) -> list[tuple[str, int, str]]:
        parts = []
        for part in entry.get("parts") or []:
            name, size, digest = part.get("name"), part.get("size"), part.get("sha256")
            if not (is_part_name(name) and isinstance(size, int) and size > 0
                    and isinstance(digest, str) and len(digest) == 64
                    and all(c in "0123456789abcdef" for c in digest)):
                raise ServiceError(f"the queue entry of {entry.get('id')} has a malformed"
                                   " part", code="bad_reply")
            parts.append((name, size, digest))
        return parts

    # -- reading pulled submissions (in memory only) ---------------------------------------
    def _require_pulled(self, submission_id: str) -> dict[str, Any]:
        self.check_id(submission_id)
        state = self.home.pull_state(submission_id)
        if not state or state.get("complete") is not True:
            raise VetError(f"submission {submission_id} is not pulled: run `vet pull` first")
        return state

    def decrypt(self, submission_id: str, name: str) -> bytes:
        """One pulled part's plaintext, in memory."""
        state = self._require_pulled(submission_id)
        if name not in state["parts"]:
            raise VetError(f"submission {submission_id} has no part {name[:60]!r}")
        data = self.home.part_path(submission_id, name).read_bytes()
        try:
            return open_bytes(data, self.team_identities())
        except NoIdentityMatchError:
            raise VetError(f"{submission_id}/{name} was not sealed to this team's key"
                           " (keys/team.age)") from None
        except EnvelopeError as exc:
            raise VetError(f"{submission_id}/{name} cannot be opened: {exc}") from None

    def manifest(self, submission_id: str) -> dict[str, Any]:
        data = self.decrypt(submission_id, MANIFEST_PART)
        try:
            doc = json.loads(data)
        except ValueError:
            raise VetError(f"the manifest of {submission_id} is not JSON") from None
        if not isinstance(doc, dict):
            raise VetError(f"the manifest of {submission_id} is not a JSON object")
        return doc

    def audio_part_names(self, submission_id: str,
                         manifest: dict[str, Any] | None = None) -> list[str]:
        """The audio parts in the order the defender answered (the manifest's order)."""
        state = self._require_pulled(submission_id)
        available = [n for n in state["parts"] if n != MANIFEST_PART]
        manifest = manifest if manifest is not None else self.manifest(submission_id)
        files: dict[str, str] = {}
        ordered: list[str] = []
        for part in manifest.get("parts") or []:
            if isinstance(part, dict) and isinstance(part.get("name"), str):
                file = part.get("file") if isinstance(part.get("file"), str) \
                    else f"{part['name']}.age"
                files[part["name"]] = file
                if file in available and file not in ordered:
                    ordered.append(file)
        by_answer: list[str] = []
        for answer in manifest.get("answers") or []:
            if isinstance(answer, dict) and isinstance(answer.get("part"), str) \
                    and not answer.get("skipped"):
                file = files.get(answer["part"], f"{answer['part']}.age")
                if file in available and file not in by_answer:
                    by_answer.append(file)
        names = by_answer or ordered
        names += [n for n in ordered if n not in names]
        names += sorted(n for n in available if n not in names)
        return names

    def resolve_part(self, submission_id: str, which: str,
                     names: list[str] | None = None) -> str:
        """A part given as a 1-based number or a name (with or without ``.age``)."""
        names = names if names is not None else self.audio_part_names(submission_id)
        if which.isdigit():
            index = int(which)
            if not 1 <= index <= len(names):
                raise VetError(f"submission {submission_id} has {len(names)} audio parts;"
                               f" there is no part {index}")
            return names[index - 1]
        for candidate in (which, f"{which}.age"):
            if candidate in names:
                return candidate
        raise VetError(f"submission {submission_id} has no audio part {which[:60]!r}"
                       f" (parts: {', '.join(names)})")

    def audio(self, submission_id: str, which: str | None = None) -> Iterator[tuple[str, bytes]]:
        """(part name, Ogg/Opus plaintext) of one part, or of every audio part in order."""
        names = self.audio_part_names(submission_id)
        if which is not None:
            names = [self.resolve_part(submission_id, which, names)]
        for name in names:
            yield name, self.decrypt(submission_id, name)

    # -- decisions -----------------------------------------------------------------------
    def move(self, client: VetClient, entry: dict[str, Any], target: str, *,
             reason: str | None = None, story_id: str | None = None) -> dict[str, Any]:
        """Post the legal moves that lead from the entry's state to ``target``."""
        sid = entry["id"]
        current = entry.get("state")
        if current == vetting.WITHDRAWN:
            raise VetError(f"submission {sid} was withdrawn by the defender")
        try:
            steps = vetting.path_to(str(current), target)
        except vetting.IllegalTransition:
            raise VetError(f"submission {sid} is {current}; it cannot become {target}") \
                from None
        reply: dict[str, Any] = {"id": sid, "state": current}
        for step in steps:
            reply = client.set_state(
                sid, step,
                reason=(reason or vetting.DEFAULT_APPROVE_REASON) if step == vetting.APPROVED
                else reason if step == vetting.REJECTED else None,
                story_id=story_id if step == vetting.PUBLISHED else None)
        entry["state"] = target
        return reply

    def decide(self, submission_id: str, decision: str, *, reason: str | None = None,
               note: str | None = None) -> dict[str, Any]:
        """approve|reject with a reason code; the note is kept in decisions/ only."""
        self.check_id(submission_id)
        if decision not in ("approve", "reject"):
            raise VetError(f"a decision is approve or reject, not {decision[:20]!r}")
        target = vetting.APPROVED if decision == "approve" else vetting.REJECTED
        try:
            reason = vetting.reason_for(target, reason)
        except vetting.BadReason as exc:
            raise VetError(str(exc)) from None
        with self.client() as client:
            entry = self.entry(submission_id, client.queue())
            reply = self.move(client, entry, target, reason=reason)
        self.home.ensure()
        self.home.add_decision(submission_id, {"at": _now_text(), "decision": decision,
                                               "reason": reason, "note": note})
        return reply
