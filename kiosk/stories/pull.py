"""Catalog sync on the kiosk: pull the published catalog into the story library.

:func:`pull_catalog` is the part of a sync pass (kiosk/sync_runner.py) that comes after
the outbox. It drives :class:`sync.client.catalog.CatalogPuller` with what the kiosk
holds, applies the kiosk's own rules to a new catalog before any audio is fetched
(every country known to the screens, recipients not mixing post-quantum and classic
keys unless ``allow_classic_recipients``, the ``[stories] quota_bytes`` quota and the
free disk recordings need), downloads the stories the kiosk lacks into
``stories/.download/`` and hands them to :meth:`StoryLibrary.install`, which renames
them in and swaps the catalog atomically, deleting the stories that left it.

Whatever goes wrong, the installed stories stay as they were and the error lands in
the library's ``last_error.json`` (``during`` "sync" for what the pull found, "install"
for what the install found), which staff mode and ``kiosk status`` show. A catalog
error never raises out of here: the pass and its uploads go on.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import httpx

from sync.catalog import Catalog, CatalogError, Story
from sync.client.catalog import CatalogPuller, Installed
from sync.client.errors import Revoked, Stopped, Transient
from sync.client.http import Timeouts
from sync.envelope import parse_recipient

from .. import logs
from ..config import KioskConfig
from .library import (
    InstallResult,
    MixedRecipients,
    StorageError,
    StoryLibrary,
    check_for_kiosk,
    error_code,
)

log = logging.getLogger("kiosk.stories")

#: Under ``stories/``: the puller's ``.part`` files and the ETag of the installed catalog
#: (the same file system as the stories, so an install renames instead of copying).
DOWNLOAD_DIR = ".download"


@dataclass(frozen=True)
class CatalogOutcome:
    #: "installed", "unchanged" (nothing new: one 304), "none" (nothing published),
    #: "refused" (a catalog that must not be installed), "failed" (network, service,
    #: disk), "stopped", "not_pinned" (no publisher_key: nothing is fetched).
    status: str
    #: The installed catalog's version after the pull (None: none).
    version: int | None = None
    #: Machine code of what went wrong (bad_signature, stale_catalog, network...).
    error: str | None = None
    install: InstallResult | None = None
    requests: int = 0
    audio_bytes: int = 0
    resumed_bytes: int = 0
    retry_after: float | None = None
    revoked: bool = False

    @property
    def installed(self) -> bool:
        return self.status == "installed"


def check_recipients(catalog: Catalog, *, allow_classic: bool) -> None:
    """The config's mix rule, for a catalog's recipients (kiosk/config.py)."""
    kinds = {parse_recipient(text).post_quantum for text in catalog.recipients}
    if len(kinds) > 1 and not allow_classic:
        raise MixedRecipients(
            f"catalog version {catalog.version} mixes post-quantum and classic recipients,"
            " which allow_classic_recipients does not allow: refused")


def check_new(cfg: KioskConfig, library: StoryLibrary, catalog: Catalog, size: int,
              held: Catalog | None) -> list[Story]:
    """The kiosk's own rules for a verified new catalog (countries, the recipients' mix,
    quota and free disk), before any audio is fetched; the stories whose audio the kiosk
    lacks. Raises :class:`~sync.catalog.CatalogError`. The network pull and a catalog
    brought by USB (kiosk/usb/import_.py) both call it."""
    check_for_kiosk(catalog)
    check_recipients(catalog, allow_classic=cfg.allow_classic_recipients)
    needed = [s for s in catalog.stories if not _has_audio(library, held, s)]
    library.check_room(catalog, size, [s.id for s in needed])
    return needed


def _has_audio(library: StoryLibrary, installed: Catalog | None, story: Story) -> bool:
    """Whether the kiosk already holds ``story``'s audio (verified when installed)."""
    if installed is None:
        return False
    old = installed.story(story.id)
    if old is None or old.audio_sha256 != story.audio_sha256 or old.size != story.size:
        return False
    try:
        return library.audio_path(story).stat().st_size == story.size
    except OSError:
        return False


def pull_catalog(cfg: KioskConfig, client: httpx.Client, *, timeouts: Timeouts,
                 library: StoryLibrary | None = None,
                 stop: threading.Event | None = None) -> CatalogOutcome:
    """Pull and install the published catalog if it is new (module doc)."""
    library = library if library is not None else StoryLibrary.from_config(cfg)
    key = library.publisher_key
    if not key:
        return CatalogOutcome("not_pinned", error="no_publisher_key")
    puller = CatalogPuller(client, publisher_key=key,
                           download_dir=library.directory / DOWNLOAD_DIR,
                           timeouts=timeouts, stop=stop)

    def outcome(status: str, version: int | None, **extra: object) -> CatalogOutcome:
        c = puller.counters
        result = CatalogOutcome(status, version, requests=c.requests,
                                audio_bytes=c.audio_bytes, resumed_bytes=c.resumed_bytes,
                                **extra)  # type: ignore[arg-type]
        logs.event(log, "catalog_pull", status=status, version=version, error=result.error,
                   requests=c.requests, audio_bytes=c.audio_bytes,
                   resumed_bytes=c.resumed_bytes)
        return result

    current = None
    try:
        current = library.installed()
        version = current[1].version if current is not None else None
        fetched = puller.fetch(Installed(version, current[0] if current else None))
        if fetched.status != "new":
            library.clear_error()  # what the service serves is what is installed
            return outcome(fetched.status, version)
        catalog, data, signature = fetched.catalog, fetched.data, fetched.signature
        assert catalog is not None and data is not None and signature is not None
        needed = check_new(cfg, library, catalog, len(data),
                           current[1] if current is not None else None)
        files = puller.download(needed)
    except CatalogError as exc:
        library.record_error(exc, during="sync")
        return outcome("refused", _version(current), error=error_code(exc))
    except Revoked as exc:
        return outcome("failed", _version(current), error=exc.code, revoked=True)
    except Stopped:
        return outcome("stopped", _version(current), error="stopped")
    except Transient as exc:
        library.record_error_code(exc.code, during="sync")
        return outcome("failed", _version(current), error=exc.code,
                       retry_after=exc.retry_after)
    except OSError as exc:
        error = StorageError(f"cannot write the stories' downloads: {exc.strerror or exc}")
        library.record_error(error, during="sync")
        return outcome("failed", _version(current), error=error_code(error))
    try:
        installed = library.install(data, signature, files, move=True)
    except CatalogError as exc:  # recorded by the library, "during install"
        return outcome("refused", _version(current), error=error_code(exc))
    try:
        puller.remember_etag(fetched.etag, data)
    except OSError:
        pass  # only costs a full GET next time
    return outcome("installed", installed.version, install=installed)


def _version(current: tuple[bytes, Catalog] | None) -> int | None:
    return current[1].version if current is not None else None
