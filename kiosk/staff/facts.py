"""What staff see about this kiosk, gathered once for ``kiosk status`` and the staff screen.

:func:`gather` reads; it never changes anything and never raises for a missing or
broken piece (no catalog yet, a device never enrolled, an unreadable sync state): each
shows as such, because the staff screen is where staff go when something is wrong.

Nothing personal is gathered: counts, ids, versions, times and the kiosk's own error
messages (DESIGN.md, threat model 1).

Files read under the data directory, written by other parts of the kiosk:

* ``sync-state.json``: ``{"last_sync_at": <unix time or ISO text>, "last_error": <code
  or null>, "revoked": <bool>, "last_attempt_at": <unix time or null>}`` (the sync,
  kiosk/sync_runner.py);
* ``device.json``: ``{"device_id": "...", "server_url": "...", ...}`` (enrolment,
  kiosk/device.py; the token in it is never read here).
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.request import pathname2url

from .. import __version__
from ..config import KioskConfig
from ..i18n import N_
from ..status import human_bytes, sealing_status, submissions_summary, when
from ..vault.store import Store

SYNC_STATE_FILE = "sync-state.json"
DEVICE_FILE = "device.json"
DISTRIBUTION = "idefendrights-kiosk"

NO_CATALOG = "no catalog"
NOT_ENROLLED = "not enrolled"
NEVER = "never"


class Library(Protocol):
    """The local story catalog as facts need it (kiosk/stories provides the real one)."""

    @property
    def version(self) -> int | None: ...

    def stories(self) -> Any: ...


@dataclass(frozen=True)
class StaffFacts:
    data_dir: str
    server_url: str
    #: Number of submissions in each state the store holds ("open", "submitted", ...).
    submissions: dict[str, int]
    #: :func:`kiosk.status.sealing_status`: recipients, post_quantum, summary.
    sealing: dict[str, object]
    #: The catalog's version and number of stories; None for both: no catalog.
    catalog_version: int | None
    catalog_stories: int | None
    catalog_error: str | None
    #: Unix time (or ISO text) of the last successful sync; None: never.
    last_sync_at: float | str | None
    last_sync_error: str | None
    #: Bytes free for the kiosk in the data directory's file system; None: unknown.
    free_disk_bytes: int | None
    #: None: not enrolled (or ``device.json`` unreadable, then ``device_error`` says so).
    device_id: str | None
    device_error: str | None
    #: :meth:`Store.recording_health`: parts, overflows, parts_with_overflows.
    recording: dict[str, int]
    version: str
    gathered_at: float = field(default=0.0)
    #: Number of submitted submissions in each outbox state (sealed, acknowledged...).
    outbox: dict[str, int] = field(default_factory=dict)
    #: The service this kiosk is enrolled with (device.json); None: not enrolled.
    enrolled_url: str | None = None
    #: The service refused this device's token: uploads stopped, queue kept.
    revoked: bool = False
    last_attempt_at: float | None = None
    #: Exported to a USB stick, receipt not back yet (kept until it is).
    exported_waiting: int = 0

    def as_dict(self) -> dict[str, Any]:
        """For ``kiosk status --json`` (and a heartbeat): plain JSON types only."""
        return {
            "data_dir": self.data_dir,
            "server_url": self.server_url,
            "sealing": self.sealing,
            "submissions": dict(self.submissions),
            "outbox": dict(self.outbox),
            "exported_waiting": self.exported_waiting,
            "catalog": {"version": self.catalog_version, "stories": self.catalog_stories,
                        "error": self.catalog_error},
            "sync": {"last_sync_at": self.last_sync_at, "last_error": self.last_sync_error,
                     "revoked": self.revoked, "last_attempt_at": self.last_attempt_at},
            "free_disk_bytes": self.free_disk_bytes,
            "device": {"id": self.device_id, "error": self.device_error,
                       "server_url": self.enrolled_url, "revoked": self.revoked},
            "recording": dict(self.recording),
            "version": self.version,
            "gathered_at": self.gathered_at,
        }

    def lines(self) -> list[tuple[str, str]]:
        """(label, value) rows, in English; the staff screen translates the labels."""
        if self.catalog_version is None:
            catalog = NO_CATALOG
        else:
            catalog = f"version {self.catalog_version}, {self.catalog_stories} stories"
        device = self.device_id or (f"unreadable: {self.device_error}" if self.device_error
                                    else NOT_ENROLLED)
        if self.revoked:
            device += " (REVOKED by the central service: uploads stopped, queue kept)"
        rec = self.recording
        recording = (f"{rec.get('parts', 0)} parts kept, {rec.get('overflows', 0)} input"
                     f" overflows in {rec.get('parts_with_overflows', 0)} of them")
        return [
            (N_("Data directory"), self.data_dir),
            (N_("Central service"), self.server_url),
            (N_("Sealing"), str(self.sealing["summary"])),
            (N_("Submissions"), submissions_summary(self.submissions)),
            (N_("Outbox"), submissions_summary(self.outbox)),
            (N_("Exported by USB"), f"{self.exported_waiting} waiting for receipts"
             if self.exported_waiting else "none waiting"),
            (N_("Catalog"), catalog),
            (N_("Catalog error"), self.catalog_error or "none"),
            (N_("Last sync"), when(self.last_sync_at, never=NEVER)),
            (N_("Last sync error"), self.last_sync_error or "none"),
            (N_("Free disk"), human_bytes(self.free_disk_bytes)),
            (N_("Device"), device),
            (N_("Enrolled service"), self.enrolled_url or NOT_ENROLLED),
            (N_("Recording"), recording),
            (N_("Version"), self.version),
        ]


def gather(cfg: KioskConfig, *, store: Store, library: Library | None = None,
           now: float | None = None) -> StaffFacts:
    """Everything staff see, as of ``now`` (default: the wall clock)."""
    data_dir = Path(cfg.data_dir)
    version, stories, catalog_error = _catalog(library)
    recipients, recipients_version = _recipients(cfg, library)
    last_sync_at, last_sync_error, revoked, last_attempt_at = _sync_state(data_dir)
    device_id, device_error, enrolled_url = _device(data_dir)
    return StaffFacts(
        data_dir=str(data_dir), server_url=cfg.server_url,
        submissions=submission_counts(store),
        sealing={**sealing_status(recipients), "recipients_version": recipients_version},
        catalog_version=version, catalog_stories=stories, catalog_error=catalog_error,
        last_sync_at=last_sync_at, last_sync_error=last_sync_error,
        free_disk_bytes=_free_disk(data_dir),
        device_id=device_id, device_error=device_error,
        recording=store.recording_health(),
        version=app_version(),
        gathered_at=time.time() if now is None else now,
        outbox=store.outbox_counts(), enrolled_url=enrolled_url, revoked=revoked,
        last_attempt_at=last_attempt_at, exported_waiting=store.exported_waiting())


def submission_counts(store: Store) -> dict[str, int]:
    """{state: count} over the store's submissions, whatever states it holds."""
    # A connection of its own, read-only: it sees committed rows only, and does not
    # share the store's connection (and its lock) with the recorder's writer thread.
    uri = f"file:{pathname2url(str(store.path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        rows = conn.execute("select state, count(*) from submissions group by state"
                            " order by state").fetchall()
    finally:
        conn.close()
    return {str(state): int(n) for state, n in rows}


def app_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return __version__  # run from a source tree that was never installed


def _catalog(library: Library | None) -> tuple[int | None, int | None, str | None]:
    if library is None:
        return None, None, None
    # The staff screen must open even when the catalog code is what is broken.
    try:
        last_error = getattr(library, "last_error", None)
        error = last_error() if callable(last_error) else last_error
        version = library.version
        stories = None if version is None else len(list(library.stories()))
    except Exception as exc:  # whatever it is, staff are told instead
        return None, None, f"catalog unreadable ({type(exc).__name__})"
    return version, stories, _error_text(error)


def _recipients(cfg: KioskConfig, library: Library | None) -> tuple[tuple[str, ...], int]:
    """What the next session seals to, and the catalog version it came from (0: the
    config), as kiosk/stories/session.py decides it."""
    from ..stories.session import session_setup

    try:
        catalog = getattr(library, "catalog", None)
        if catalog is not None and not hasattr(catalog, "recipients"):
            catalog = None
        setup = session_setup(recipients=cfg.recipients,
                              allow_classic=cfg.allow_classic_recipients, catalog=catalog,
                              default_prompts=())
    except Exception:  # the staff screen opens whatever the catalog holds
        return tuple(cfg.recipients), 0
    return setup.recipients, setup.recipients_version


def _error_text(error: object) -> str | None:
    """The library's last error as one line: ``bad_signature during sync at <time>``.

    kiosk.stories gives an object with ``code``, ``during`` and ``at``; anything else
    is shown as its text.
    """
    if error is None:
        return None
    code = getattr(error, "code", None)
    if code is None:
        return str(error)
    text = str(code)
    for word, attr in (("during", "during"), ("at", "at"), ("story", "story_id")):
        value = getattr(error, attr, None)
        if value not in (None, ""):
            text += f" {word} {value}"
    return text


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(document, None), (None, None) when absent, (None, problem) when unreadable."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{path.name} unreadable ({exc.strerror})"
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, f"{path.name} is not JSON"
    if not isinstance(doc, dict):
        return None, f"{path.name} is not a JSON object"
    return doc, None


def _sync_state(data_dir: Path
                ) -> tuple[float | str | None, str | None, bool, float | None]:
    """(last_sync_at, last_error, revoked, last_attempt_at)."""
    doc, problem = _read_json(data_dir / SYNC_STATE_FILE)
    if doc is None:
        return None, problem, False, None
    at = doc.get("last_sync_at")
    if isinstance(at, bool) or not isinstance(at, int | float | str):
        at = None
    attempt = doc.get("last_attempt_at")
    if isinstance(attempt, bool) or not isinstance(attempt, int | float):
        attempt = None
    error = doc.get("last_error")
    return (at, None if error in (None, "") else str(error), doc.get("revoked") is True,
            attempt)


def _device(data_dir: Path) -> tuple[str | None, str | None, str | None]:
    """(device_id, problem, server_url)."""
    doc, problem = _read_json(data_dir / DEVICE_FILE)
    if doc is None:
        return None, problem, None
    url = doc.get("server_url")
    url = url if isinstance(url, str) and url else None
    device_id = doc.get("device_id")
    if not isinstance(device_id, str) or not device_id:
        return None, f"{DEVICE_FILE} has no device_id", url
    return device_id, None, url


def _free_disk(data_dir: Path) -> int | None:
    try:
        return shutil.disk_usage(data_dir).free
    except OSError:
        return None

