"""This kiosk's identity with the central service, and what the last sync said.

Three files under the data directory (docs: /work/spec/sync-spec.md, "Kiosk side"):

* ``device.key``: the device's Ed25519 signing key (it signs every submission index);
  a secret, mode 0600;
* ``device.json``: ``{"device_id", "server_url", "service_key", "token",
  "enrolled_at"}``; the token is a secret too, so the file is 0600. ``service_key`` is
  the service's public key, pinned at enrolment: every receipt must verify under it;
* ``sync-state.json``: ``{"last_sync_at", "last_error", "revoked",
  "last_attempt_at"}``, for staff (``kiosk status``, the staff screen) and the
  heartbeat.

Each is written whole and durably: a temporary file in the same folder (created 0600
for secrets, so the secret never sits in a readable file even for a moment), fsync,
rename over the old one, fsync of the folder. A power cut leaves the old file or the
new one, never half of either.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from sync import durable
from sync.client.enrol import enrol
from sync.client.http import DEFAULT_TIMEOUTS, Timeouts
from sync.envelope.errors import KeyFormatError
from sync.signing import SigningKey, VerifyKey, format_signing_key_file, parse_signing_key_file
from sync.wire import is_device_id

from .vault.layout import make_dir_durably

DEVICE_KEY_FILE = "device.key"
DEVICE_FILE = "device.json"
SYNC_STATE_FILE = "sync-state.json"

_ERROR_CODE = re.compile(r"[a-z0-9_]{1,64}")


class DeviceError(Exception):
    """``device.json`` or ``device.key`` is unreadable or malformed."""


class AlreadyEnrolled(Exception):
    """The kiosk is enrolled already; ``--force`` replaces the enrolment."""


def write_durably(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` durably (sync/durable.py), its folder made durably."""
    make_dir_durably(path.parent)
    durable.write_durably(path, data, mode=mode)


@dataclass(frozen=True)
class Enrolment:
    device_id: str
    server_url: str
    service_key: VerifyKey
    token: str
    enrolled_at: float
    #: The public key of ``device.key`` as enrolled (None in a file without it).
    public_key: VerifyKey | None = None

    def __repr__(self) -> str:  # never the token
        return (f"Enrolment(device_id={self.device_id!r}, server_url={self.server_url!r},"
                f" service_key={str(self.service_key)!r})")

    def as_json(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "server_url": self.server_url,
                "service_key": str(self.service_key), "token": self.token,
                "enrolled_at": self.enrolled_at,
                "public_key": None if self.public_key is None else str(self.public_key)}


def load_enrolment(data_dir: Path) -> Enrolment | None:
    """The enrolment in ``device.json``; None if the kiosk was never enrolled."""
    path = Path(data_dir) / DEVICE_FILE
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DeviceError(f"{DEVICE_FILE} unreadable ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DeviceError(f"{DEVICE_FILE} is not JSON") from None
    if not isinstance(doc, dict):
        raise DeviceError(f"{DEVICE_FILE} is not a JSON object")
    device_id, url, key, token = (doc.get(k) for k in ("device_id", "server_url",
                                                        "service_key", "token"))
    if not is_device_id(device_id):
        raise DeviceError(f"{DEVICE_FILE} has no valid device_id")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise DeviceError(f"{DEVICE_FILE} has no valid server_url")
    if not isinstance(token, str) or not token:
        raise DeviceError(f"{DEVICE_FILE} has no token")
    try:
        service_key = VerifyKey.parse(key) if isinstance(key, str) else None
    except KeyFormatError:
        service_key = None
    if service_key is None:
        raise DeviceError(f"{DEVICE_FILE} has no valid service_key")
    at = doc.get("enrolled_at")
    enrolled_at = float(at) if isinstance(at, int | float) and not isinstance(at, bool) else 0.0
    public = doc.get("public_key")
    try:
        public_key = VerifyKey.parse(public) if isinstance(public, str) else None
    except KeyFormatError:
        raise DeviceError(f"{DEVICE_FILE} has a malformed public_key") from None
    return Enrolment(device_id, url, service_key, token, enrolled_at, public_key)


def load_device(data_dir: Path) -> tuple[Enrolment, SigningKey] | None:
    """The enrolment and its signing key; None if not enrolled; DeviceError if they are
    broken or do not belong together."""
    enrolment = load_enrolment(data_dir)
    if enrolment is None:
        return None
    key = load_signing_key(data_dir)
    if enrolment.public_key is not None and key.verify_key != enrolment.public_key:
        raise DeviceError(f"{DEVICE_KEY_FILE} is not the key enrolled in {DEVICE_FILE}:"
                          " enrol again")
    return enrolment, key


def load_signing_key(data_dir: Path) -> SigningKey:
    path = Path(data_dir) / DEVICE_KEY_FILE
    try:
        return parse_signing_key_file(path.read_text(encoding="ascii"))
    except FileNotFoundError:
        raise DeviceError(f"{DEVICE_KEY_FILE} is missing") from None
    except (OSError, UnicodeDecodeError, KeyFormatError):
        raise DeviceError(f"{DEVICE_KEY_FILE} is unreadable or not a signing key") from None


def enrol_device(data_dir: Path, *, server_url: str, code: str, force: bool = False,
                 transport: httpx.BaseTransport | None = None,
                 timeouts: Timeouts = DEFAULT_TIMEOUTS, now: float | None = None) -> Enrolment:
    """Make a device key, enrol it with ``code``, pin the service key; write the files.

    Raises AlreadyEnrolled (unless ``force``), and sync.client.enrol's EnrolRefused or
    EnrolFailed. A new enrolment forgets the old device's upload URLs and clears the
    "revoked" mark (the caller does the former: it owns the store).
    """
    data_dir = Path(data_dir)
    server_url = server_url.rstrip("/")
    if not server_url.startswith(("http://", "https://")):
        raise ValueError("the server URL must start with http:// or https://")
    if not force and (data_dir / DEVICE_FILE).exists():
        raise AlreadyEnrolled(str(data_dir / DEVICE_FILE))
    key = SigningKey.generate()
    # Enrol first, write after: a refused code leaves an existing enrolment (--force)
    # whole. device.json names the public key of device.key, so a crash between the two
    # writes is seen as "key and enrolment do not match" (re-enrol), never as
    # submissions signed with a key the service does not know.
    answer = enrol(server_url, code=code, public_key=key.verify_key, timeouts=timeouts,
                   transport=transport)
    enrolment = Enrolment(answer.device_id, server_url, answer.service_key, answer.token,
                          time.time() if now is None else now, key.verify_key)
    write_durably(data_dir / DEVICE_KEY_FILE, format_signing_key_file(key).encode("ascii"),
                  mode=0o600)
    write_durably(data_dir / DEVICE_FILE,
                  json.dumps(enrolment.as_json(), indent=1).encode("utf-8"), mode=0o600)
    state = read_sync_state(data_dir)
    write_sync_state(data_dir, SyncState(last_sync_at=state.last_sync_at, last_error=None,
                                         revoked=False, last_attempt_at=state.last_attempt_at))
    return enrolment


@dataclass(frozen=True)
class SyncState:
    last_sync_at: float | None = None
    last_error: str | None = None
    revoked: bool = False
    last_attempt_at: float | None = None


def _time(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def read_sync_state(data_dir: Path) -> SyncState:
    """What the last sync wrote; the defaults if nothing (or nothing readable) is there."""
    try:
        doc = json.loads((Path(data_dir) / SYNC_STATE_FILE).read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return SyncState()
    if not isinstance(doc, dict):
        return SyncState()
    error = doc.get("last_error")
    return SyncState(
        last_sync_at=_time(doc.get("last_sync_at")),
        last_error=error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else None,
        revoked=doc.get("revoked") is True,
        last_attempt_at=_time(doc.get("last_attempt_at")))


def write_sync_state(data_dir: Path, state: SyncState) -> None:
    write_durably(Path(data_dir) / SYNC_STATE_FILE,
                  json.dumps(asdict(state), sort_keys=True).encode("utf-8"))


def utc_text(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
