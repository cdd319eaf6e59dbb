"""The published stories on this kiosk: the signed catalog and its audio files, as the
listen screens read them (see :mod:`kiosk.stories.library`). Demo stories are made by
:mod:`kiosk.stories.demo` (``kiosk demo-stories``), imported on its own: it needs
espeak-ng and sox."""

from __future__ import annotations

from sync.catalog import (
    BadAudio,
    BadSignature,
    Catalog,
    CatalogError,
    Malformed,
    StaleCatalog,
    Story,
)

from .library import (
    Highlight,
    InstallResult,
    LastError,
    LoadResult,
    MixedRecipients,
    NotPinned,
    QuotaExceeded,
    StorageError,
    StoryLibrary,
    StoryProblem,
)

__all__ = [
    "BadAudio",
    "BadSignature",
    "Catalog",
    "CatalogError",
    "Highlight",
    "InstallResult",
    "LastError",
    "LoadResult",
    "Malformed",
    "MixedRecipients",
    "NotPinned",
    "QuotaExceeded",
    "StaleCatalog",
    "StorageError",
    "Story",
    "StoryLibrary",
    "StoryProblem",
]
