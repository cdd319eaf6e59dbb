"""What the page asks of the vetting tool, as one narrow interface.

:class:`Backend` is all the web layer needs. :class:`VetBackend` implements it on top
of the ``vet`` modules (``workspace``, ``client``, ``publish``, ``audio``), which hold
the real logic: this file only adapts their shapes to the page's and keeps the
unlocked keys in memory for the server's life. Tests give the app a fake or the real
one over a real home and a real service.

Plaintext (the manifest, the audio) exists here only as bytes in memory: it is read
from the sealed files in ``pulled/`` on each request and never written anywhere.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sync.envelope import SealedReader


class BackendError(Exception):
    """A refusal the page shows as is: ``status`` and a machine ``code``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class PublishForm:
    """The publish form, validated by the app."""

    title: str | None
    display_name: str | None
    anonymous: bool
    #: Part index (in the manifest's order) -> (start s, end s); end 0 means "to the end".
    trims: Mapping[int, tuple[float, float]] = field(default_factory=dict)
    disguise: bool = False


@dataclass(frozen=True)
class PreparedPreview:
    ogg_bytes: bytes
    duration_s: float


class Backend(Protocol):
    def info(self) -> dict[str, Any]:
        """``{"server": url|None, "reject_reasons": [...], "approve_reasons": [...],
        "can_publish": bool, "can_preview": bool}``"""

    def queue(self, *, state: str | None = None) -> dict[str, Any]:
        """``{"submissions": [{"id", "state", "reason", "story_id", "received_at",
        "pulled": bool, "parts": n}], "error": code|None}``"""

    def pull(self) -> dict[str, Any]:
        """Download what is not pulled yet: ``{"pulled": n, ...}``."""

    def submission(self, submission_id: str) -> dict[str, Any]:
        """``{"id", "state", "reason", "story_id", "manifest": {...}, "audio": [names],
        "note": str|None}``; BackendError 404 when not pulled."""

    def open_audio(self, submission_id: str, part: str) -> SealedReader:
        """A seekable plaintext view of one pulled audio part (decrypts per read)."""

    def decide(self, submission_id: str, *, decision: str, reason: str | None,
               note: str | None) -> dict[str, Any]:
        """Record approve/reject with the service (and the note locally)."""

    def preview(self, submission_id: str, *, trims: Mapping[int, tuple[float, float]],
                disguise: bool) -> PreparedPreview:
        """The story's audio as it would be published, in memory."""

    def publish(self, submission_id: str, form: PublishForm) -> dict[str, Any]:
        """Publish: ``{"story_id", "catalog_version", ...}``."""


def reasons() -> tuple[Sequence[str], Sequence[str]]:
    """(reject reasons, approve reasons): the codes the service accepts."""
    from sync import vetting

    return vetting.REJECT_REASONS, vetting.APPROVE_REASONS


# -- the real one: over sync.vet.session.Vet -------------------------------------------------

MANIFEST = "manifest.json.age"


class VetBackend:
    """The page's backend over G's :class:`sync.vet.session.Vet` (keys already unlocked).

    Reading (queue, manifest, audio, preview) runs in parallel; what changes the
    service or the home (pull, decide, publish) is serialised, so that two clicks never
    race for the same catalog version.
    """

    def __init__(self, vet: Any) -> None:
        self.vet = vet
        self.home = vet.home
        self._writing = threading.Lock()

    # -- errors ----------------------------------------------------------------------------
    @staticmethod
    def _error_of(exc: Exception) -> BackendError:
        from sync.vet.client import ServiceError
        from sync.vet.session import VetError
        from sync.vet.workspace import WorkspaceError

        if isinstance(exc, BackendError):
            return exc
        if isinstance(exc, ServiceError):
            status = exc.status
            if exc.transient or status is None or not 400 <= status < 500:
                return BackendError(502, exc.code, str(exc))
            return BackendError(409 if status == 401 else status, exc.code, str(exc))
        if isinstance(exc, VetError):
            return BackendError(409, "refused", str(exc))
        if isinstance(exc, WorkspaceError):
            return BackendError(409, "workspace", str(exc))
        audio_error = _audio_error_type()
        if audio_error is not None and isinstance(exc, audio_error):
            return BackendError(422, "bad_audio", str(exc))
        raise exc

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            raise self._error_of(exc) from None

    def _require_pulled(self, submission_id: str) -> None:
        if not self.home.is_pulled(submission_id):
            raise BackendError(409, "not_pulled",
                               "this submission is not pulled yet: pull it first")

    # -- Backend ---------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        from sync.vet.workspace import WorkspaceError

        reject, approve = reasons()
        try:
            server: str | None = self.home.config()["server"]
        except WorkspaceError:
            server = None
        return {"server": server, "reject_reasons": list(reject),
                "approve_reasons": list(approve),
                "can_publish": self.home.publisher_key.exists(),
                "can_preview": _audio_api() is not None}

    def queue(self, *, state: str | None = None) -> dict[str, Any]:
        from sync.vet.workspace import WorkspaceError

        error: str | None = None
        try:
            self.home.config()
            entries = self.vet.queue(state)
        except WorkspaceError:
            error = "not_logged_in"
            entries = [e for e in self.vet.saved_queue()
                       if state is None or e.get("state") == state]
        except Exception as exc:
            error = self._error_of(exc).code
            entries = [e for e in self.vet.saved_queue()
                       if state is None or e.get("state") == state]
        listed = []
        for e in entries:
            sid = e.get("id")
            if not isinstance(sid, str):
                continue
            listed.append({"id": sid, "state": e.get("state"), "reason": e.get("reason"),
                           "story_id": e.get("story_id"), "received_at": e.get("received_at"),
                           "parts": len(e.get("parts") or []),
                           "pulled": self.home.is_pulled(sid)})
        return {"submissions": listed, "error": error}

    def pull(self) -> dict[str, Any]:
        from sync.vet.client import IntegrityError

        with self._writing:
            try:
                result = self.vet.pull()
            except IntegrityError as exc:
                partial = getattr(exc, "result", None)
                raise BackendError(502, exc.code, str(exc) + (
                    f" ({partial.pulled} other submissions were pulled)" if partial else "")
                    ) from None
            except Exception as exc:
                raise self._error_of(exc) from None
        return {"pulled": result.pulled, "bytes": result.bytes,
                "removed_withdrawn": result.removed_withdrawn, "failed": list(result.failed)}

    def _entry(self, submission_id: str) -> dict[str, Any]:
        # The queue the page listed last (Vet saves it): no service round trip per click.
        for entry in self.vet.saved_queue():
            if entry.get("id") == submission_id:
                return entry
        return {}

    def submission(self, submission_id: str) -> dict[str, Any]:
        self._require_pulled(submission_id)
        manifest = self._call(self.vet.manifest, submission_id)
        names = self._call(self.vet.audio_part_names, submission_id, manifest)
        by_file: dict[str, Mapping[str, Any]] = {}
        for item in manifest.get("parts") or []:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                by_file[item.get("file") if isinstance(item.get("file"), str)
                        else f"{item['name']}.age"] = item
        audio = []
        for name in names:
            item = by_file.get(name, {})
            duration = item.get("duration_s")
            audio.append({"file": name, "name": item.get("name", name.removesuffix(".age")),
                          "prompt_id": item.get("prompt_id"),
                          "duration_s": float(duration)
                          if isinstance(duration, (int, float)) else None})
        entry = self._entry(submission_id)
        note = None
        try:
            doc = self.home.read_json(self.home.decision_path(submission_id))
            decisions = doc.get("decisions") if isinstance(doc, dict) else None
            if decisions and isinstance(decisions[-1], dict):
                note = decisions[-1].get("note")
        except Exception:  # a damaged notes file must not hide the submission
            note = None
        return {"id": submission_id, "state": entry.get("state"),
                "reason": entry.get("reason"), "story_id": entry.get("story_id"),
                "manifest": manifest, "audio": audio, "note": note}

    def open_audio(self, submission_id: str, part: str) -> SealedReader:
        from sync.envelope import EnvelopeError, open_sealed

        self._require_pulled(submission_id)
        names = self._call(self.vet.audio_part_names, submission_id)
        if part not in names:
            raise BackendError(404, "not_found", "no such audio part")
        try:
            # Seekable: a Range request decrypts (and authenticates) only its chunks.
            return open_sealed(self.home.part_path(submission_id, part),
                               identities=self.vet.team_identities())
        except EnvelopeError as exc:
            raise BackendError(422, "cannot_decrypt",
                               f"the part does not open with the team's key ({exc})") from None

    def decide(self, submission_id: str, *, decision: str, reason: str | None,
               note: str | None) -> dict[str, Any]:
        with self._writing:
            reply = self._call(self.vet.decide, submission_id, decision, reason=reason,
                               note=note)
            self._refresh_saved_queue()
        return {"id": submission_id, "state": reply.get("state"),
                "reason": reply.get("reason"), "story_id": reply.get("story_id")}

    def _refresh_saved_queue(self) -> None:
        try:
            self.vet.queue()
        except Exception:  # the decision is recorded; the list refreshes next time
            pass

    def _plain_parts(self, submission_id: str) -> list[bytes]:
        self._require_pulled(submission_id)
        return [plain for _name, plain in self._call(self.vet.audio, submission_id)]

    def _full_trims(self, parts: Sequence[bytes], trims: Mapping[int, tuple[float, float]]
                    ) -> dict[int, tuple[float, float]]:
        """The page's "end 0" (to the end) made the part's exact length, as P's pipeline
        wants a span."""
        import io

        import soundfile as sf

        out: dict[int, tuple[float, float]] = {}
        for index, (start, end) in trims.items():
            if end == 0 and 0 <= index < len(parts):
                info = sf.info(io.BytesIO(parts[index]))
                end = info.frames / info.samplerate
            out[index] = (start, end)
        return out

    def preview(self, submission_id: str, *, trims: Mapping[int, tuple[float, float]],
                disguise: bool) -> PreparedPreview:
        prepare = _audio_api()
        if prepare is None:
            raise BackendError(501, "not_available", "the audio pipeline is not available")
        parts = self._plain_parts(submission_id)
        try:
            spans = self._full_trims(parts, trims)
            made = self._call(prepare, parts, trims=spans or None, disguise=disguise)
        finally:
            parts.clear()
        return PreparedPreview(ogg_bytes=bytes(made.ogg_bytes),
                               duration_s=float(made.duration_s))

    def publish(self, submission_id: str, form: PublishForm) -> dict[str, Any]:
        import io

        from sync.vet import publish as publishing

        trims: dict[int, tuple[float, float]] = {}
        if any(end == 0 for _start, end in form.trims.values()):
            parts = self._plain_parts(submission_id)
            try:
                trims = self._full_trims(parts, form.trims)
            finally:
                parts.clear()
        else:
            trims = dict(form.trims)
        options = publishing.PublishOptions(title=form.title, display_name=form.display_name,
                                            anonymous=form.anonymous, trims=trims,
                                            disguise=form.disguise)
        warnings = io.StringIO()
        with self._writing:
            result = self._call(publishing.publish, self.vet, submission_id, options,
                                warn=warnings)
            self._refresh_saved_queue()
        story = result.story
        return {"id": submission_id, "state": "published",
                "story_id": story.id if story is not None else None,
                "title": story.title if story is not None else None,
                "display_name": story.display_name if story is not None else None,
                "duration_s": story.duration_s if story is not None else None,
                "catalog_version": result.version, "stories": result.stories,
                "lufs": result.lufs, "true_peak_dbtp": result.true_peak_dbtp,
                "warnings": warnings.getvalue().strip() or None}


def _audio_api() -> Any:
    try:
        from sync.vet.audio import prepare_story_audio
    except ImportError:
        return None
    return prepare_story_audio


def _audio_error_type() -> type[Exception] | None:
    try:
        from sync.vet.audio import PublishAudioError
    except ImportError:
        return None
    return PublishAudioError
