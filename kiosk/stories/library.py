"""The published stories on this kiosk, as the listen screens read them.

On disk, under the data directory::

    stories/catalog.json        the signed catalog, exact bytes as published
    stories/catalog.json.sig    its signature (idrsig1...), by the pinned publishing key
    stories/<story id>.ogg      each story's audio (Ogg/Opus)
    stories/last_error.json     the last failure, for staff mode: a code and a time
    stories/.lock               held (flock) while the folder is read or changed

**Installing** (:meth:`StoryLibrary.install`) is all or nothing. Everything is checked
before anything the visitors see changes: the signature against the pinned key, the
catalog's rules, a version strictly newer than the installed one, and every story's
audio, copied into a staging folder (``stories/.staging-*``) while it is hashed, so the
bytes checked are the bytes kept. One story whose audio is missing or differs from its
size or SHA-256 refuses the whole catalog: the kiosk keeps the stories it had, the
error goes to ``last_error.json``, and the caller gets a :class:`CatalogError`. A
catalog is the publisher's statement of what is published (a story taken down is a
story that left it), so the kiosk never shows a mix of two catalogs or part of one.

Once everything is checked the staging folder is renamed to ``stories/.commit``: that
rename is the commit point. The new audio files are then renamed into place, then the
signature and the catalog, then the audio of every story that left the catalog is
deleted. A power cut at any point is finished at the next :meth:`load` or
:meth:`install` (a leftover ``.commit`` is rolled forward, a leftover ``.staging-*`` is
deleted), so the catalog and its signature on disk always match.

**Loading** (:meth:`StoryLibrary.load`) verifies the installed catalog again (a kiosk
whose disk was changed must not play it) and checks each story's audio size and SHA-256.
Here one damaged file does not hide the whole exhibit: the catalog itself verified, so
a story whose file is missing or damaged (disk fault, tampering) is left out and
reported, and the rest are shown. With no publishing key pinned nothing is shown.

The version a new catalog must beat is that of the installed catalog *if it verifies
with the currently pinned key*: re-pinning a kiosk to another publisher (the demo key
to the project's real key) starts that publisher's versions afresh.

All reads for the screens (:meth:`stories`, :meth:`filter`, ...) work on an immutable
snapshot in memory, replaced whole by :meth:`load` and :meth:`install`, so a screen
reading while the sync thread installs sees one catalog or the other, never a mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sync import catalog as catalog_mod
from sync.catalog import (
    BadAudio,
    BadSignature,
    Catalog,
    CatalogError,
    Malformed,
    StaleCatalog,
    Story,
)

from .. import logs
from ..countries import codes as country_codes
from ..vault.layout import fsync_dir, make_dir_durably

log = logging.getLogger("kiosk.stories")

STORIES_DIR = "stories"
CATALOG_FILE = "catalog.json"
SIGNATURE_FILE = "catalog.json.sig"
LAST_ERROR_FILE = "last_error.json"
LOCK_FILE = ".lock"
STAGING_PREFIX = ".staging-"
COMMIT_DIR = ".commit"
AUDIO_SUFFIX = ".ogg"
#: Free disk an install must leave: recordings come before stories.
DEFAULT_MIN_FREE_BYTES = 256 * 1024 * 1024
#: Most bytes the stories may take unless the config says (``[stories] quota_bytes``).
DEFAULT_QUOTA_BYTES = 2 * 1024**3
_CHUNK = 1024 * 1024
_MAX_SIGNATURE_BYTES = 4096


class NotPinned(CatalogError):
    """No publishing key is pinned in the config: no catalog can be trusted."""


class StorageError(CatalogError):
    """The disk refused a read or write (full, read-only, I/O error)."""


class QuotaExceeded(StorageError):
    """The catalog's stories would take more than ``[stories] quota_bytes``."""


class MixedRecipients(CatalogError):
    """The catalog mixes post-quantum and classic recipients and the config does not
    allow it (``allow_classic_recipients``): sealing to it would undo the post-quantum
    protection, so the catalog is refused and the installed one kept."""


def error_code(exc: BaseException) -> str:
    """What ``last_error.json`` and :class:`LoadResult` call a failure."""
    if isinstance(exc, NotPinned):
        return "no_publisher_key"
    if isinstance(exc, BadSignature):
        return "bad_signature"
    if isinstance(exc, Malformed):
        return "malformed"
    if isinstance(exc, StaleCatalog):
        return "stale_catalog"
    if isinstance(exc, BadAudio):
        return "audio_missing" if exc.missing else "audio_mismatch"
    if isinstance(exc, QuotaExceeded):
        return "quota_exceeded"
    if isinstance(exc, MixedRecipients):
        return "mixed_recipients"
    if isinstance(exc, StorageError):
        return "storage"
    if isinstance(exc, CatalogError):
        return "bad_publisher_key"
    return "unexpected"


@dataclass(frozen=True)
class StoryProblem:
    """A story left out at load: its audio file is missing or damaged."""

    story_id: str
    code: str  # "audio_missing" or "audio_mismatch"
    message: str


@dataclass(frozen=True)
class LoadResult:
    #: The catalog version shown; None when none is (none installed, or refused).
    version: int | None
    #: How many stories the screens can now show.
    shown: int
    #: Why no catalog is shown, for staff (None: shown, or simply none installed yet).
    error: str | None = None
    error_code: str | None = None
    #: Stories of the shown catalog that were left out.
    left_out: tuple[StoryProblem, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None and not self.left_out


@dataclass(frozen=True)
class InstallResult:
    version: int
    #: The version it replaced (None: there was none, or it was another key's).
    previous_version: int | None
    added: tuple[str, ...] = ()
    #: Stories that left the catalog; their audio is deleted.
    removed: tuple[str, ...] = ()
    #: Stories kept whose audio was replaced.
    replaced: tuple[str, ...] = ()
    #: The very same catalog was installed again (files were checked, and repaired from
    #: ``audio_files`` where given).
    unchanged: bool = False


@dataclass(frozen=True)
class LastError:
    """The last failure, for staff mode: a code and a time, nothing personal."""

    code: str
    at: str
    #: "install", "load" or "sync" (fetching a new catalog and its audio).
    during: str
    story_id: str | None = None
    version: int | None = None


@dataclass(frozen=True)
class Highlight:
    """A story shown on the attract screen."""

    story: Story
    title: str
    display_name: str
    #: The transcript's first line, cut to a sentence or about 140 characters.
    line: str


def _sort_key(text: str) -> tuple[str, str]:
    return (text.casefold(), text)


@dataclass(frozen=True)
class _Snapshot:
    catalog: Catalog | None = None
    stories: tuple[Story, ...] = ()
    by_id: dict[str, Story] = field(default_factory=dict)
    regions: tuple[str, ...] = ()
    themes: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()

    @classmethod
    def of(cls, catalog: Catalog, stories: tuple[Story, ...]) -> _Snapshot:
        return cls(
            catalog=catalog, stories=stories, by_id={s.id: s for s in stories},
            regions=tuple(sorted({s.region for s in stories}, key=_sort_key)),
            themes=tuple(sorted({t for s in stories for t in s.themes}, key=_sort_key)),
            languages=tuple(sorted({s.language for s in stories})))


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def check_for_kiosk(catalog: Catalog) -> None:
    """The kiosk's own rules on top of the format's: every country must be one the
    country screens can name (kiosk/countries.py)."""
    known = country_codes()
    for i, story in enumerate(catalog.stories):
        if story.country not in known:
            raise Malformed(f"stories[{i}].country",
                            f"{story.country!r} is not a country code the kiosk knows")


def _first_line(transcript: str, limit: int = 140) -> str:
    line = next((ln.strip() for ln in transcript.splitlines() if ln.strip()), "")
    if len(line) <= limit:
        return line
    ends = [line.find(mark, 10, limit) for mark in (". ", "! ", "? ", "؟ ", "。")]
    ends = [e for e in ends if e != -1]
    if ends:
        return line[:min(ends) + 1]
    cut = line.rfind(" ", 0, limit)
    return line[:cut if cut > 0 else limit].rstrip() + "…"


class StoryLibrary:
    """The stories under ``data_dir/stories``, verified against ``publisher_key``."""

    def __init__(self, data_dir: Path, publisher_key: str | None, *,
                 clock: Callable[[], datetime] = _utc_now,
                 min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
                 quota_bytes: int = DEFAULT_QUOTA_BYTES) -> None:
        self.data_dir = Path(data_dir)
        self.directory = self.data_dir / STORIES_DIR
        self.publisher_key = publisher_key
        self._clock = clock
        self._min_free_bytes = min_free_bytes
        self.quota_bytes = quota_bytes
        self._snapshot = _Snapshot()
        #: (inode, size, mtime) of catalog.json when the snapshot was made: another
        #: process (``kiosk sync --once``) may install a newer one meanwhile.
        self._seen: tuple[int, int, int] | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> StoryLibrary:
        """The library of a :class:`kiosk.config.KioskConfig` (its quota included)."""
        stories = getattr(cfg, "stories", None)
        quota = getattr(stories, "quota_bytes", DEFAULT_QUOTA_BYTES)
        return cls(cfg.data_dir, cfg.publisher_key, quota_bytes=quota)

    # ---------------------------------------------------------------- reads for screens

    @property
    def version(self) -> int | None:
        catalog = self._snapshot.catalog
        return catalog.version if catalog is not None else None

    @property
    def catalog(self) -> Catalog | None:
        """The shown catalog (its recipients and prompts too); None when none is."""
        return self._snapshot.catalog

    def stories(self) -> tuple[Story, ...]:
        """The stories that can be played, in the catalog's order."""
        return self._snapshot.stories

    def get(self, story_id: str) -> Story | None:
        return self._snapshot.by_id.get(story_id)

    def filter(self, region: str | None = None, theme: str | None = None,
               language: str | None = None, *, country: str | None = None
               ) -> tuple[Story, ...]:
        """The stories matching every criterion given (None: any), in catalog order."""
        return tuple(s for s in self._snapshot.stories
                     if (region is None or s.region == region)
                     and (theme is None or theme in s.themes)
                     and (language is None or s.language == language)
                     and (country is None or s.country == country))

    def regions(self) -> tuple[str, ...]:
        return self._snapshot.regions

    def themes(self) -> tuple[str, ...]:
        return self._snapshot.themes

    def languages(self) -> tuple[str, ...]:
        return self._snapshot.languages

    def audio_path(self, story: Story | str) -> Path:
        story_id = story if isinstance(story, str) else story.id
        return self.directory / f"{story_id}{AUDIO_SUFFIX}"

    def highlights(self, n: int) -> list[Highlight]:
        """Up to ``n`` stories for the attract screen, taking the languages in turn."""
        by_language: dict[str, list[Story]] = {}
        for story in self._snapshot.stories:
            by_language.setdefault(story.language, []).append(story)
        queues = list(by_language.values())
        picked: list[Story] = []
        depth = 0
        while len(picked) < n and any(depth < len(q) for q in queues):
            picked.extend(q[depth] for q in queues if depth < len(q))
            depth += 1
        return [Highlight(story=s, title=s.title, display_name=s.display_name,
                          line=_first_line(s.transcript)) for s in picked[:max(n, 0)]]

    def installed_version(self) -> int | None:
        """The version of the installed catalog if it verifies with the pinned key (its
        audio is not checked); None otherwise. What a new catalog must be newer than."""
        if not self.publisher_key or not (self.directory / CATALOG_FILE).exists():
            return None
        with self._locked():
            self._recover()
            installed = self._installed_catalog(self.publisher_key)
        return installed[1].version if installed is not None else None

    def installed(self) -> tuple[bytes, Catalog] | None:
        """The installed catalog's exact bytes and content if it verifies with the
        pinned key (its audio is not checked); None otherwise."""
        if not self.publisher_key or not (self.directory / CATALOG_FILE).exists():
            return None
        with self._locked():
            self._recover()
            return self._installed_catalog(self.publisher_key)

    def changed_on_disk(self) -> bool:
        """Whether catalog.json changed since this library last loaded or installed it
        (another process installed a catalog): the app then loads again."""
        return self._stat() != self._seen

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.directory / CATALOG_FILE)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def record_error(self, exc: BaseException, *, during: str = "sync") -> None:
        """Keep ``exc`` as the last error for staff (a refused or unreachable catalog
        found while syncing, before any install was tried)."""
        self._record(exc, during=during)

    def record_error_code(self, code: str, *, during: str = "sync") -> None:
        """Keep a machine code (``network``, ``server_error``...) as the last error."""
        self._record_code(code, during=during)

    def clear_error(self) -> None:
        """The catalog on the service is the installed one: no sync or install error is
        left to show (a load error, a damaged file, stays until the next load)."""
        last = self.last_error()
        if last is not None and last.during in ("sync", "install"):
            self._clear_error()

    def last_error(self) -> LastError | None:
        try:
            raw = json.loads((self.directory / LAST_ERROR_FILE).read_text(encoding="utf-8"))
            return LastError(code=str(raw["code"]), at=str(raw["at"]),
                             during=str(raw["during"]), story_id=raw.get("story_id"),
                             version=raw.get("version"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # ------------------------------------------------------------------------- load

    def load(self) -> LoadResult:
        """Verify and read the installed catalog and check every story's audio."""
        try:
            result = self._load()
        except OSError as exc:
            self._snapshot = _Snapshot()
            error = StorageError(f"cannot read the stories: {exc.strerror or exc}")
            self._record(error, during="load")
            return LoadResult(version=None, shown=0, error=str(error),
                              error_code=error_code(error))
        return result

    def _load(self) -> LoadResult:
        try:
            key = self._pinned_key()
        except CatalogError as exc:
            self._snapshot = _Snapshot()
            self._record(exc, during="load")
            return LoadResult(version=None, shown=0, error=str(exc), error_code=error_code(exc))
        if not self.directory.is_dir():
            self._snapshot = _Snapshot()
            return LoadResult(version=None, shown=0)
        with self._locked():
            self._recover()
            try:
                data, signature = self._read_installed()
            except FileNotFoundError:
                self._snapshot = _Snapshot()
                return LoadResult(version=None, shown=0)
            except CatalogError as exc:
                self._snapshot = _Snapshot()
                self._record(exc, during="load")
                return LoadResult(version=None, shown=0, error=str(exc),
                                  error_code=error_code(exc))
            try:
                catalog = catalog_mod.verify(data, signature, key)
                check_for_kiosk(catalog)
            except CatalogError as exc:
                self._snapshot = _Snapshot()
                self._record(exc, during="load")
                return LoadResult(version=None, shown=0, error=str(exc),
                                  error_code=error_code(exc))
            shown: list[Story] = []
            problems: list[StoryProblem] = []
            for story in catalog.stories:
                try:
                    self._check_file(story, self.audio_path(story))
                except BadAudio as exc:
                    problems.append(StoryProblem(story.id, error_code(exc), str(exc)))
                    continue
                except OSError as exc:
                    problems.append(StoryProblem(
                        story.id, "audio_missing",
                        f"story {story.id}: cannot read its audio: {exc.strerror or exc}"))
                    continue
                shown.append(story)
        self._snapshot = _Snapshot.of(catalog, tuple(shown))
        self._seen = self._stat()
        for problem in problems:
            logs.event(log, "story_left_out", story=problem.story_id, code=problem.code)
        if problems:
            self._record_code(problems[0].code, during="load", story_id=problems[0].story_id,
                              version=catalog.version)
        else:
            self._clear_error(only_during="load")
        logs.event(log, "stories_loaded", version=catalog.version, shown=len(shown),
                   left_out=len(problems))
        return LoadResult(version=catalog.version, shown=len(shown), left_out=tuple(problems))

    # ---------------------------------------------------------------------- install

    def install(self, catalog_bytes: bytes, sig_text: str,
                audio_files: Mapping[str, str | os.PathLike[str]], *,
                move: bool = False) -> InstallResult:
        """Check everything, then replace the installed catalog atomically.

        ``audio_files`` maps story ids to files to copy in; a story not in it keeps the
        file it has (checked against the new catalog's size and SHA-256). ``move``:
        the files are renamed in instead of copied (the catalog puller's downloads,
        on the same file system: a story is then never written twice); they are
        checked after the rename, so the bytes checked are still the bytes kept.
        Stories that left the catalog are deleted with their audio in the same
        switch (a takedown). A catalog whose stories would take more than
        :attr:`quota_bytes` is refused (:class:`QuotaExceeded`). On any failure
        the installed stories stay as they were, the error is recorded for staff
        (:meth:`last_error`) and raised: :class:`NotPinned`, ``BadSignature``,
        ``Malformed``, ``StaleCatalog``, ``BadAudio`` or :class:`StorageError`, all
        :class:`~sync.catalog.CatalogError`.
        """
        try:
            with self._locked(create=True):
                self._recover()
                result = self._install(bytes(catalog_bytes), sig_text, audio_files,
                                       move=move)
        except CatalogError as exc:
            self._record(exc, during="install")
            raise
        except OSError as exc:
            error = StorageError(f"cannot install the stories: {exc.strerror or exc}")
            self._record(error, during="install")
            raise error from exc
        self._clear_error()
        logs.event(log, "stories_installed", version=result.version,
                   previous=result.previous_version, added=len(result.added),
                   removed=len(result.removed), replaced=len(result.replaced),
                   unchanged=result.unchanged)
        return result

    def _install(self, data: bytes, sig_text: str,
                 audio_files: Mapping[str, str | os.PathLike[str]], *,
                 move: bool = False) -> InstallResult:
        key = self._pinned_key()
        catalog = catalog_mod.verify(data, sig_text, key)
        check_for_kiosk(catalog)
        ids = {story.id for story in catalog.stories}
        extra = sorted(set(audio_files) - ids)
        if extra:
            raise ValueError(f"audio given for {extra[0]!r}, which is not in the catalog")
        current = self._installed_catalog(key)
        unchanged = current is not None and current[0] == data
        previous = current[1] if current is not None else None
        if not unchanged:
            catalog_mod.check_newer(catalog, previous.version if previous else None)
        self.check_room(catalog, len(data), () if move else audio_files)

        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.directory))
        try:
            replaced = self._stage(catalog, data, sig_text, audio_files, staging, move=move)
            os.rename(staging, self.directory / COMMIT_DIR)  # the commit point
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(self.directory)
        self._finish_commit()
        self._snapshot = _Snapshot.of(catalog, catalog.stories)
        self._seen = self._stat()

        old_ids = {s.id for s in previous.stories} if previous else set()
        added = tuple(s.id for s in catalog.stories if s.id not in old_ids)
        removed = tuple(s.id for s in previous.stories if s.id not in ids) if previous else ()
        return InstallResult(
            version=catalog.version, previous_version=previous.version if previous else None,
            added=added, removed=removed,
            replaced=tuple(i for i in replaced if i in old_ids), unchanged=unchanged)

    def check_room(self, catalog: Catalog, catalog_size: int,
                   to_write: Iterable[str]) -> None:
        """:class:`QuotaExceeded` if ``catalog``'s stories and the catalog itself take
        more than :attr:`quota_bytes`; :class:`StorageError` if writing the stories in
        ``to_write`` (ids) would leave less free disk than recordings need."""
        total = catalog_size + sum(s.size for s in catalog.stories)
        if total > self.quota_bytes:
            raise QuotaExceeded(
                f"catalog version {catalog.version} takes {total} bytes, more than the"
                f" {self.quota_bytes} allowed for stories on this kiosk"
                " ([stories] quota_bytes); the installed stories are kept")
        wanted = set(to_write)
        needed = catalog_size + sum(s.size for s in catalog.stories if s.id in wanted)
        where = self.directory if self.directory.is_dir() else self.data_dir
        free = shutil.disk_usage(where).free
        if free - needed < self._min_free_bytes:
            raise StorageError(
                f"not enough free disk for the stories: {needed} bytes needed, {free} free,"
                f" and {self._min_free_bytes} are kept for recordings")

    def _stage(self, catalog: Catalog, data: bytes, sig_text: str,
               audio_files: Mapping[str, str | os.PathLike[str]], staging: Path, *,
               move: bool = False) -> list[str]:
        """Copy (or move) and check every story's audio and write the catalog into
        ``staging``; return the ids whose audio is brought in."""
        copied: list[str] = []
        for story in catalog.stories:
            source = audio_files.get(story.id)
            if source is None:
                # Kept from before: it must match this catalog's size and hash too.
                self._check_file(story, self.audio_path(story))
                continue
            target = staging / f"{story.id}{AUDIO_SUFFIX}"
            if move:
                try:
                    os.rename(source, target)
                except FileNotFoundError:
                    raise BadAudio(story.id, "the audio file given does not exist",
                                   missing=True) from None
                self._check_file(story, target)
            else:
                self._copy_checked(story, Path(source), target)
            copied.append(story.id)
        _write_durably(staging / SIGNATURE_FILE, sig_text.strip().encode("ascii") + b"\n")
        _write_durably(staging / CATALOG_FILE, data)
        fsync_dir(staging)
        return copied

    @staticmethod
    def _copy_checked(story: Story, source: Path, target: Path) -> None:
        digest = hashlib.sha256()
        size = 0
        try:
            reader = source.open("rb")
        except FileNotFoundError:
            raise BadAudio(story.id, f"the audio file given ({source.name}) does not exist",
                           missing=True) from None
        with reader, target.open("xb") as writer:
            while size <= story.size:
                # Read at most one byte past the expected size: a longer file is wrong.
                block = reader.read(min(_CHUNK, story.size + 1 - size))
                if not block:
                    break
                digest.update(block)
                writer.write(block)
                size += len(block)
            writer.flush()
            os.fsync(writer.fileno())
        _match(story, size, digest.hexdigest())

    @staticmethod
    def _check_file(story: Story, path: Path) -> None:
        try:
            reader = path.open("rb")
        except FileNotFoundError:
            raise BadAudio(story.id, "its audio file is missing", missing=True) from None
        with reader:
            size = os.fstat(reader.fileno()).st_size
            if size != story.size:
                _match(story, size, "")
            digest = hashlib.sha256()
            while block := reader.read(_CHUNK):
                digest.update(block)
                size = reader.tell()
        _match(story, size, digest.hexdigest())

    # -------------------------------------------------------------- on-disk plumbing

    def _pinned_key(self) -> str:
        if not self.publisher_key:
            raise NotPinned("no publishing key pinned: set publisher_key in the config"
                            " (kiosk demo-stories pins a demo key)")
        return self.publisher_key

    def _read_installed(self) -> tuple[bytes, str]:
        """The installed catalog's bytes and signature text; FileNotFoundError when no
        catalog is installed, BadSignature when its signature file is missing."""
        data = (self.directory / CATALOG_FILE).read_bytes()
        try:
            with (self.directory / SIGNATURE_FILE).open("rb") as f:
                raw = f.read(_MAX_SIGNATURE_BYTES)
        except FileNotFoundError:
            raise BadSignature("the installed catalog has no signature file") from None
        return data, raw.decode("ascii", errors="replace")

    def _installed_catalog(self, key: str) -> tuple[bytes, Catalog] | None:
        """The installed catalog's bytes and content, if it verifies with ``key``."""
        try:
            data, signature = self._read_installed()
            return data, catalog_mod.verify(data, signature, key)
        except FileNotFoundError:
            return None
        except CatalogError:
            return None

    @contextlib.contextmanager
    def _locked(self, *, create: bool = False) -> Iterator[None]:
        if create and not self.directory.is_dir():
            make_dir_durably(self.directory)
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _recover(self) -> None:
        """Finish an install that passed its commit point; drop one that did not."""
        for leftover in self.directory.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if (self.directory / COMMIT_DIR).is_dir():
            logs.event(log, "stories_install_resumed")
            self._finish_commit()

    def _finish_commit(self) -> None:
        """Move ``.commit``'s files into place, then delete the audio that left.

        Every step can be run again after a crash: a file already moved is skipped.
        The signature moves before the catalog; the catalog's own rename ends the switch.
        """
        commit = self.directory / COMMIT_DIR
        for path in sorted(commit.glob(f"*{AUDIO_SUFFIX}")):
            os.replace(path, self.directory / path.name)
        for name in (SIGNATURE_FILE, CATALOG_FILE):
            if (commit / name).exists():
                os.replace(commit / name, self.directory / name)
        fsync_dir(self.directory)
        try:
            keep = {s.id for s in catalog_mod.parse(
                (self.directory / CATALOG_FILE).read_bytes()).stories}
        except (OSError, CatalogError):
            keep = None  # never delete audio on a guess
        if keep is not None:
            for path in self.directory.glob(f"*{AUDIO_SUFFIX}"):
                if path.stem not in keep and path.is_file():
                    path.unlink()
        shutil.rmtree(commit, ignore_errors=True)
        fsync_dir(self.directory)

    # ----------------------------------------------------------------- last error

    def _record(self, exc: BaseException, *, during: str) -> None:
        story_id = exc.story_id if isinstance(exc, BadAudio) else None
        self._record_code(error_code(exc), during=during, story_id=story_id)

    def _record_code(self, code: str, *, during: str, story_id: str | None = None,
                     version: int | None = None) -> None:
        logs.event(log, "stories_error", code=code, during=during, story=story_id)
        record: dict[str, Any] = {"code": code, "at": _stamp(self._clock()), "during": during}
        if story_id is not None:
            record["story_id"] = story_id
        if version is not None:
            record["version"] = version
        try:
            if not self.directory.is_dir():
                make_dir_durably(self.directory)
            _write_durably(self.directory / LAST_ERROR_FILE,
                           json.dumps(record, sort_keys=True).encode("utf-8") + b"\n",
                           replace=True)
        except OSError as exc:
            # A full disk must not turn a refused catalog into a crash.
            logs.event(log, "stories_error_unrecorded", errno=exc.errno or 0)

    def _clear_error(self, *, only_during: str | None = None) -> None:
        if only_during is not None:
            last = self.last_error()
            if last is None or last.during != only_during:
                return
        with contextlib.suppress(FileNotFoundError):
            (self.directory / LAST_ERROR_FILE).unlink()
            fsync_dir(self.directory)


def _match(story: Story, size: int, sha256: str) -> None:
    if size != story.size:
        raise BadAudio(story.id, f"audio is {size} bytes, the catalog says {story.size}")
    if sha256 != story.audio_sha256:
        raise BadAudio(story.id, "audio SHA-256 differs from the catalog's")


def _write_durably(path: Path, data: bytes, *, replace: bool = False) -> None:
    """Write ``data`` to ``path``: temp file, fsync, rename, fsync the folder."""
    if not replace:
        with path.open("xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_dir(path.parent)


__all__ = [
    "DEFAULT_MIN_FREE_BYTES",
    "DEFAULT_QUOTA_BYTES",
    "Highlight",
    "InstallResult",
    "LastError",
    "LoadResult",
    "MixedRecipients",
    "NotPinned",
    "QuotaExceeded",
    "StorageError",
    "StoryLibrary",
    "StoryProblem",
    "check_for_kiosk",
    "error_code",
]
