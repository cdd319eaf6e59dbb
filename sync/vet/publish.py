"""Publishing: public audio, then catalog version n+1, signed and uploaded.

``publish`` runs, in this order, so that a failure leaves nothing half-public:

1. the queue says the submission may be published (not withdrawn, rejected or
   published already), and moves it to ``approved`` if it is not yet (``vet publish``
   is the approval too, as the issue's loop pulls and publishes);
2. the manifest and the audio parts are decrypted in memory; the defender's consent
   decides the display name (a name only when they allowed naming);
3. the audio pipeline (``sync/vet/audio.py``: trim, disguise, -16 LUFS, Opus) makes the
   public file in memory, which is uploaded as ``stories/<story id>.ogg``;
4. catalog version n+1, n the highest of the local and the service's catalog, with the
   previous stories (less every story whose submission was withdrawn) and this one, the
   recipients of ``keys/recipients.json`` and the prompts of ``published/prompts.json``,
   signed with the publishing key and uploaded (the service checks signature, version
   and audio);
5. the submission's state becomes ``published`` with the story id, and the catalog is
   saved in ``published/``.

``unpublish`` and ``publish_catalog`` (set-recipients/set-prompts ``--publish-now``)
make a new version with one story less or the same stories.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sync import catalog as cat
from sync import vetting
from sync.envelope import KeyFormatError, parse_recipient

from .client import ServiceError, VetClient
from .places import country_name, default_region
from .session import Vet, VetError
from .workspace import atomic_write

__all__ = ["PublishOptions", "PublishResult", "default_prompts", "new_story_id",
           "publish", "publish_catalog", "set_prompts", "set_recipients", "unpublish"]

ANONYMOUS = "Anonymous"
_PROMPTS_TOML = Path(__file__).resolve().parents[2] / "assets" / "prompts.toml"
_PROMPT_ID = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class PublishOptions:
    title: str | None = None
    display_name: str | None = None
    anonymous: bool = False
    #: 0-based index of the audio part (the manifest's order) -> (start s, end s).
    trims: Mapping[int, tuple[float, float]] = field(default_factory=dict)
    disguise: bool = False
    disguise_amount: float | None = None
    transcript: str = ""
    region: str | None = None
    themes: tuple[str, ...] = ()
    language: str | None = None
    country: str | None = None


@dataclass(frozen=True)
class PublishResult:
    story: cat.Story | None
    version: int
    stories: int
    #: The pipeline's figures (lufs, true_peak_dbtp, duration_s, sample_rate); None if
    #: no audio was made (unpublish, set-recipients).
    lufs: float | None = None
    true_peak_dbtp: float | None = None
    dropped_withdrawn: tuple[str, ...] = ()


def new_story_id() -> str:
    """``s-`` and 12 random hex digits: names a file on kiosks, says nothing."""
    return "s-" + secrets.token_hex(6)


def default_prompts() -> list[str]:
    """The prompt ids of assets/prompts.toml (the kiosk's own list)."""
    try:
        with _PROMPTS_TOML.open("rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return []
    return [p["id"] for p in doc.get("prompt", []) if isinstance(p, dict)
            and isinstance(p.get("id"), str)]


def _issued_at() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------
# The catalog chain


@dataclass
class _Base:
    version: int
    catalog: cat.Catalog | None


def _local_catalog(vet: Vet) -> cat.Catalog | None:
    try:
        data = vet.home.catalog_path.read_bytes()
        sig = vet.home.catalog_sig_path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    try:
        return cat.verify(data, sig, vet.signing_key().verify_key)
    except cat.CatalogError as exc:
        raise VetError(f"published/catalog.json does not verify with this team's publishing"
                       f" key: {exc}") from None


def _base(vet: Vet, client: VetClient, warn: TextIO) -> _Base:
    """The newest catalog this team signed, and n (the highest version anywhere)."""
    local = _local_catalog(vet)
    best = local
    version = local.version if local else 0
    remote = client.get_catalog()
    if remote is not None:
        data, sig = remote
        try:
            theirs = cat.verify(data, sig, vet.signing_key().verify_key)
        except cat.CatalogError as exc:
            # Signed by another key (a key change) or altered: never build on its stories,
            # but count past its version, or the service would refuse ours as stale.
            print(f"warning: the service's catalog does not verify with this team's"
                  f" publishing key ({exc}); its stories are not carried over", file=warn)
            try:
                version = max(version, cat.parse(data).version)
            except cat.CatalogError:
                pass
        else:
            if best is None or theirs.version > best.version:
                best = theirs
            version = max(version, theirs.version)
    return _Base(version, best)


def _withdrawn_story_ids(vet: Vet, queue: list[dict[str, Any]]) -> set[str]:
    withdrawn = {e.get("id") for e in queue if e.get("state") == vetting.WITHDRAWN}
    stories = {e["story_id"] for e in queue
               if e.get("state") == vetting.WITHDRAWN and isinstance(e.get("story_id"), str)}
    stories |= {story for story, sid in vet.home.story_map().items() if sid in withdrawn}
    return stories


def _recipients(vet: Vet) -> list[str]:
    try:
        return vet.home.recipients()
    except Exception as exc:  # WorkspaceError: missing or damaged
        raise VetError(str(exc)) from None


def _prompts(vet: Vet, base: cat.Catalog | None) -> list[str]:
    prompts = vet.home.prompts()
    if prompts is None:
        prompts = default_prompts() or (list(base.prompts) if base else [])
    if not prompts:
        raise VetError("no prompts for the catalog: run `vet set-prompts ID ...`")
    return prompts


def _build_and_upload(vet: Vet, client: VetClient, base: _Base, stories: list[cat.Story],
                      story_map_update: dict[str, str] | None = None) -> tuple[int, bytes]:
    catalog = cat.Catalog(version=base.version + 1, issued_at=_issued_at(),
                          recipients=tuple(_recipients(vet)),
                          prompts=tuple(_prompts(vet, base.catalog)),
                          stories=tuple(stories))
    try:
        data = cat.build(catalog)
    except cat.Malformed as exc:
        raise VetError(f"the new catalog would be refused by kiosks: {exc}") from None
    signature = cat.sign(data, vet.signing_key())
    client.put_catalog(data, signature)
    vet.home.ensure()
    # Catalogs are public: plain 0644 files.
    atomic_write(vet.home.catalog_path, data)
    atomic_write(vet.home.catalog_sig_path, (signature + "\n").encode("ascii"))
    if story_map_update:
        mapping = vet.home.story_map()
        mapping.update(story_map_update)
        vet.home.save_story_map(mapping)
    return catalog.version, data


# ---------------------------------------------------------------------------------------
# publish


AudioFunc = Callable[..., Any]


def _pipeline() -> AudioFunc:
    try:
        from . import audio
    except ImportError as exc:
        raise VetError(f"the audio pipeline (sync/vet/audio.py) is not available: {exc}") \
            from None
    func = getattr(audio, "prepare_story_audio", None)
    if func is None:
        raise VetError("sync/vet/audio.py has no prepare_story_audio")
    return func


def _audio_errors() -> tuple[type[Exception], ...]:
    try:
        from .audio import PublishAudioError
    except ImportError:
        return (ValueError, RuntimeError)
    return (ValueError, RuntimeError, PublishAudioError)


def _display_name(manifest: dict[str, Any], options: PublishOptions) -> str:
    consent = manifest.get("consent") if isinstance(manifest.get("consent"), dict) else {}
    may_name = consent.get("show_name") is True and manifest.get("anonymous") is not True
    if options.anonymous:
        return ANONYMOUS
    if options.display_name is not None:
        name = options.display_name.strip()
        if name and name != ANONYMOUS and not may_name:
            raise VetError("the defender did not consent to being named: publish with"
                           " --anonymous (or without --display-name)")
        return name or ANONYMOUS
    given = manifest.get("display_name")
    if may_name and isinstance(given, str) and given.strip():
        return given.strip()
    return ANONYMOUS


def _finish_earlier_publish(vet: Vet, client: VetClient, entry: dict[str, Any],
                            base: _Base) -> PublishResult | None:
    """An earlier ``vet publish`` that put its catalog up but failed to record the state
    (the network went away at the last step): record it now, make nothing new."""
    mapping = vet.home.story_map()
    for story in (base.catalog.stories if base.catalog else ()):
        if mapping.get(story.id) == entry["id"]:
            vet.move(client, entry, vetting.PUBLISHED, story_id=story.id)
            return PublishResult(story=story, version=base.version,
                                 stories=len(base.catalog.stories) if base.catalog else 0)
    return None


def publish(vet: Vet, submission_id: str, options: PublishOptions, *,
            prepare_audio: AudioFunc | None = None, warn: TextIO = sys.stderr
            ) -> PublishResult:
    vet.check_id(submission_id)
    vet.signing_key()  # the passphrase is checked before anything moves
    with vet.home.lock(), vet.client() as client:
        queue = client.queue()
        entry = vet.entry(submission_id, queue)
        state = entry.get("state")
        if state == vetting.WITHDRAWN:
            raise VetError(f"submission {submission_id} was withdrawn by the defender; it is"
                           " never published")
        if state == vetting.PUBLISHED:
            raise VetError(f"submission {submission_id} is already published as story"
                           f" {entry.get('story_id')}")
        if state == vetting.REJECTED:
            raise VetError(f"submission {submission_id} was rejected; it cannot be published")
        base = _base(vet, client, warn)
        if state == vetting.APPROVED:
            finished = _finish_earlier_publish(vet, client, entry, base)
            if finished is not None:
                return finished
        manifest = vet.manifest(submission_id)
        consent = manifest.get("consent") if isinstance(manifest.get("consent"), dict) else {}
        if consent.get("publish_voice") is not True:
            raise VetError(f"the defender of {submission_id} did not consent to publishing"
                           " their voice")
        display_name = _display_name(manifest, options)
        country = (options.country or manifest.get("country") or "")
        country = country.upper() if isinstance(country, str) else ""
        if not country:
            raise VetError("the manifest gives no country: publish with --country CC")
        language = options.language or manifest.get("language")
        if not isinstance(language, str) or not language:
            raise VetError("the manifest gives no language: publish with --language L")
        region = options.region or default_region(country)
        if not region:
            raise VetError(f"no region is known for {country}: publish with --region R")
        title = options.title or (f"A defender from {country_name(country)}")
        names = vet.audio_part_names(submission_id, manifest)
        if not names:
            raise VetError(f"submission {submission_id} has no audio part")
        for index in options.trims:
            if not 0 <= index < len(names):
                raise VetError(f"--trim names part {index + 1}, but there are {len(names)}")
        parts = [vet.decrypt(submission_id, name) for name in names]
        func = prepare_audio or _pipeline()
        kwargs: dict[str, Any] = {"trims": dict(options.trims) or None,
                                  "disguise": options.disguise}
        if options.disguise_amount is not None:
            kwargs["disguise_amount"] = options.disguise_amount
        try:
            prepared = func(parts, **kwargs)
        except _audio_errors() as exc:
            raise VetError(f"the audio of {submission_id} could not be prepared: {exc}") \
                from None
        finally:
            parts.clear()
        ogg = bytes(prepared.ogg_bytes)
        story_id = new_story_id()
        story = cat.Story(
            id=story_id, title=title, display_name=display_name, country=country,
            region=region, themes=tuple(options.themes), language=language,
            duration_s=round(float(prepared.duration_s), 3), transcript=options.transcript,
            audio_sha256=hashlib.sha256(ogg).hexdigest(), size=len(ogg),
            url=f"stories/{story_id}.ogg")
        dropped = _withdrawn_story_ids(vet, queue)
        previous = [s for s in (base.catalog.stories if base.catalog else ())
                    if s.id not in dropped]
        # Checked before the upload: a catalog kiosks would refuse is never half-made.
        try:
            cat.build(cat.Catalog(version=base.version + 1, issued_at=_issued_at(),
                                  recipients=tuple(_recipients(vet)),
                                  prompts=tuple(_prompts(vet, base.catalog)),
                                  stories=(*previous, story)))
        except cat.Malformed as exc:
            raise VetError(f"the story would be refused by kiosks: {exc}") from None
        # Moving to approved before anything public exists: publishing is a decision.
        if state in (vetting.RECEIVED, vetting.IN_REVIEW):
            vet.move(client, entry, vetting.APPROVED, reason=vetting.DEFAULT_APPROVE_REASON)
            vet.home.ensure()
            vet.home.add_decision(submission_id, {"at": _issued_at(), "decision": "approve",
                                                  "reason": vetting.DEFAULT_APPROVE_REASON,
                                                  "note": None, "by": "publish"})
        client.put_story_audio(story_id, ogg)
        version, _ = _build_and_upload(vet, client, base, [*previous, story],
                                       {story_id: submission_id})
        try:
            vet.move(client, entry, vetting.PUBLISHED, story_id=story_id)
        except ServiceError as exc:
            raise ServiceError(f"story {story_id} is in catalog version {version}, but the"
                               f" service did not record the state ({exc}); run `vet"
                               " publish` again to record it", code=exc.code,
                               status=exc.status, transient=exc.transient) from None
    return PublishResult(story=story, version=version, stories=len(previous) + 1,
                         lufs=getattr(prepared, "lufs", None),
                         true_peak_dbtp=getattr(prepared, "true_peak_dbtp", None),
                         dropped_withdrawn=tuple(sorted(dropped & {
                             s.id for s in (base.catalog.stories if base.catalog else ())})))


# ---------------------------------------------------------------------------------------
# unpublish, and a new version with the same stories


def unpublish(vet: Vet, story_id: str, *, warn: TextIO = sys.stderr) -> PublishResult:
    if not vetting.is_story_id(story_id):
        raise VetError(f"unknown story {story_id[:60]!r}: not a story id")
    vet.signing_key()
    with vet.home.lock(), vet.client() as client:
        queue = client.queue()
        base = _base(vet, client, warn)
        current = base.catalog
        if current is None or current.story(story_id) is None:
            raise VetError(f"unknown story {story_id}: the current catalog does not hold it")
        dropped = _withdrawn_story_ids(vet, queue)
        stories = [s for s in current.stories if s.id != story_id and s.id not in dropped]
        version, _ = _build_and_upload(vet, client, base, stories)
        submission = vet.home.story_map().get(story_id)
        entry = next((e for e in queue if e.get("story_id") == story_id
                      and e.get("state") == vetting.PUBLISHED), None)
        if entry is None and submission:
            entry = next((e for e in queue if e.get("id") == submission), None)
        if entry is not None and entry.get("state") == vetting.PUBLISHED:
            vet.move(client, entry, vetting.UNPUBLISHED)
    return PublishResult(story=None, version=version, stories=len(stories),
                         dropped_withdrawn=tuple(sorted(dropped & {
                             s.id for s in current.stories})))


def publish_catalog(vet: Vet, *, warn: TextIO = sys.stderr) -> PublishResult:
    """A new version with the same stories (new recipients or prompts take effect)."""
    vet.signing_key()
    with vet.home.lock(), vet.client() as client:
        queue = client.queue()
        base = _base(vet, client, warn)
        dropped = _withdrawn_story_ids(vet, queue)
        stories = [s for s in (base.catalog.stories if base.catalog else ())
                   if s.id not in dropped]
        version, _ = _build_and_upload(vet, client, base, stories)
    return PublishResult(story=None, version=version, stories=len(stories))


def set_recipients(vet: Vet, recipients: list[str], *, allow_classic: bool = False) -> None:
    """Validate and store the recipients the next catalog carries."""
    if not recipients:
        raise VetError("give at least one recipient (age1pq1...)")
    seen: set[str] = set()
    classic = 0
    for text in recipients:
        try:
            parse_recipient(text)
        except KeyFormatError as exc:
            raise VetError(f"not an age recipient: {text[:24]}... ({exc})") from None
        if text in seen:
            raise VetError(f"recipient listed twice: {text[:24]}...")
        seen.add(text)
        if not text.startswith("age1pq1"):
            classic += 1
    if classic and not allow_classic:
        raise VetError("classic X25519 recipients (age1...) are not post-quantum: testimonies"
                       " must stay sealed for decades; use age1pq1... recipients, or give"
                       " --allow-classic on purpose")
    vet.home.ensure()
    vet.home.save_recipients(list(recipients))


def set_prompts(vet: Vet, prompts: list[str]) -> None:
    """Validate and store the prompt ids the next catalog carries."""
    if not prompts:
        raise VetError("give at least one prompt id")
    known = default_prompts()
    seen: set[str] = set()
    for pid in prompts:
        if not _PROMPT_ID.fullmatch(pid):
            raise VetError(f"not a prompt id: {pid[:40]!r}")
        if known and pid not in known:
            raise VetError(f"unknown prompt {pid!r}: kiosks only know {', '.join(known)}"
                           " (assets/prompts.toml)")
        if pid in seen:
            raise VetError(f"prompt listed twice: {pid}")
        seen.add(pid)
    vet.home.ensure()
    vet.home.save_prompts(list(prompts))
