"""The kiosk's one TOML configuration file: load, validate, and fall back to demo defaults.

Every ``kiosk`` command takes ``--config PATH`` or the ``KIOSK_CONFIG`` environment
variable. A bad file stops the kiosk at start with a message that names the key and
what was expected, because a kiosk that silently ignores a typo in its recipients or
its audio device fails later, in front of a defender.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sync.envelope import KeyFormatError, parse_recipient
from sync.signing import VerifyKey

from .audio.opus import DEFAULT_KBPS, MAX_KBPS, MIN_KBPS

ENV_VAR = "KIOSK_CONFIG"
DEFAULT_DATA_DIR = Path("demo-data") / "kiosk"
DEFAULT_SERVER_URL = "http://127.0.0.1:8765"


class ConfigError(Exception):
    """The configuration file is missing, unreadable or has a bad value."""


@dataclass(frozen=True)
class IdleConfig:
    #: Seconds without a touch before the person is asked "are you still there?".
    warn_after_s: float = 60.0
    #: Seconds after the warning before the session is discarded and shredded.
    discard_after_s: float = 30.0


@dataclass(frozen=True)
class RecordingConfig:
    #: Longest answer; reaching it stops the take cleanly and keeps the audio.
    max_answer_s: float = 300.0
    #: A take whose level never rises above this is reported as "we could not hear you".
    silence_threshold_dbfs: float = -50.0
    #: The Opus encoder's target bitrate for speech (see kiosk/audio/opus.py).
    opus_bitrate_kbps: float = DEFAULT_KBPS


@dataclass(frozen=True)
class AudioConfig:
    #: PortAudio device name (substring) or index; None means the system default.
    input_device: str | int | None = None
    output_device: str | int | None = None


@dataclass(frozen=True)
class StaffConfig:
    #: scrypt hash of the staff PIN (``kiosk set-pin`` writes it); None: staff mode is shut.
    pin_hash: str | None = None
    #: Whether staff mode offers "exit to desktop" (a kiosk in a hall: no).
    allow_exit: bool = False


@dataclass(frozen=True)
class DisplayConfig:
    #: Fullscreen, no cursor, Escape and window-close ignored. False for development.
    kiosk_mode: bool = True


@dataclass(frozen=True)
class SyncConfig:
    #: Days an acknowledged submission's ciphertext stays on the kiosk after its receipt.
    retention_days: float = 7.0
    #: Bytes per tus PATCH to start with: a cut costs at most one chunk sent again.
    chunk_bytes: int = 4 * 1024 * 1024
    #: Chunks grow up to this while the link answers them quickly (sync/client/tus.py).
    #: Two chunks are in memory at once during an upload.
    max_chunk_bytes: int = 16 * 1024 * 1024
    connect_timeout_s: float = 10.0
    #: Each read (and each write) of a request must progress within this.
    read_timeout_s: float = 30.0
    #: Overall limit for one request, whatever the network does.
    attempt_deadline_s: float = 120.0
    #: The app's background worker: seconds between passes when all is well.
    interval_s: float = 60.0


@dataclass(frozen=True)
class StoriesConfig:
    #: Most bytes the published stories (audio and catalog) may take on this kiosk: a
    #: catalog that does not fit is refused and the installed one kept.
    quota_bytes: int = 2 * 1024**3


MIN_CHUNK_BYTES = 64 * 1024
MAX_CHUNK_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class KioskConfig:
    data_dir: Path = DEFAULT_DATA_DIR
    server_url: str = DEFAULT_SERVER_URL
    #: age recipients (age1... or age1pq1...) that submissions are sealed to until a
    #: signed catalog supplies them.
    recipients: tuple[str, ...] = ()
    #: Sealing to post-quantum and classic X25519 recipients at once undoes the
    #: post-quantum protection, so a config that mixes them is refused unless this says
    #: it is meant.
    allow_classic_recipients: bool = False
    languages: tuple[str, ...] = ("en", "es", "fr", "ar")
    #: The project's publishing key (``idrverify1...``), pinned: only catalogs it signed
    #: are shown. None until the kiosk is set up (``kiosk demo-stories`` pins a demo key).
    publisher_key: str | None = None
    idle: IdleConfig = field(default_factory=IdleConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    staff: StaffConfig = field(default_factory=StaffConfig)
    display: DisplayConfig = field(default_factory=DisplayConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    stories: StoriesConfig = field(default_factory=StoriesConfig)
    #: Where the file came from, for messages; None for the built-in defaults.
    source: Path | None = None


def _type_name(value: Any) -> str:
    return type(value).__name__


def _positive_number(key: str, value: Any) -> float:
    # bool is an int in Python; a "true" timeout is a typo, not one second.
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{key} must be a positive number of seconds, got {value!r}"
                          f" ({_type_name(value)})")
    return float(value)


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number, got {value!r} ({_type_name(value)})")
    return float(value)


def _non_negative_number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{key} must be a number >= 0, got {value!r} ({_type_name(value)})")
    return float(value)


def _chunk_bytes(key: str, value: Any) -> int:
    if (isinstance(value, bool) or not isinstance(value, int)
            or not MIN_CHUNK_BYTES <= value <= MAX_CHUNK_BYTES):
        raise ConfigError(f"{key} must be a whole number of bytes from {MIN_CHUNK_BYTES} to"
                          f" {MAX_CHUNK_BYTES}, got {value!r} ({_type_name(value)})")
    return value


def _quota_bytes(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a whole number of bytes > 0, got {value!r}"
                          f" ({_type_name(value)})")
    return value


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string, got {value!r}"
                          f" ({_type_name(value)})")
    return value


def _string_list(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key} must be a list of strings, got {value!r}"
                          f" ({_type_name(value)})")
    return tuple(value)


def _bitrate(key: str, value: Any) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not MIN_KBPS <= value <= MAX_KBPS):
        raise ConfigError(f"{key} must be a bitrate in kbit/s from {MIN_KBPS:g} to"
                          f" {MAX_KBPS:g}, got {value!r} ({_type_name(value)})")
    return float(value)


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r} ({_type_name(value)})")
    return value


def _check_recipient_mix(recipients: tuple[str, ...], allow_classic: bool) -> None:
    kinds = {parse_recipient(text).post_quantum for text in recipients}
    if len(kinds) > 1 and not allow_classic:
        raise ConfigError(
            "recipients mixes post-quantum (age1pq1...) and classic X25519 (age1...) keys:"
            " a file sealed to both is only as safe as the classic key, so every recording"
            " would lose its post-quantum protection. Use only age1pq1... recipients, or set"
            " allow_classic_recipients = true if this is meant.")


def _pin_hash(key: str, value: Any) -> str:
    text = _string(key, value)
    if not text.startswith("scrypt$"):
        raise ConfigError(f"{key} must be a PIN hash written by `kiosk set-pin`"
                          " (scrypt$...), not a PIN")
    return text


def _device(key: str, value: Any) -> str | int | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigError(f"{key} must be a device name (string) or index (integer), got"
                          f" {value!r} ({_type_name(value)})")
    return None if value in ("", "default") else value


def _table(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a table ([{key}]), got {value!r}"
                          f" ({_type_name(value)})")
    return value


def _check_keys(prefix: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key {where}{unknown[0]}; expected one of: "
                          + ", ".join(sorted(allowed)))


def _section(name: str, raw: dict[str, Any], cls: type, checks: dict[str, Any]) -> Any:
    table = _table(name, raw.get(name, {}))
    _check_keys(name, table, {f.name for f in fields(cls)})
    return cls(**{k: checks[k](f"{name}.{k}", v) for k, v in table.items()})


def parse(raw: dict[str, Any], *, base_dir: Path, source: Path | None = None) -> KioskConfig:
    """Validate a decoded TOML document; relative paths are taken from ``base_dir``."""
    top = {f.name for f in fields(KioskConfig)} - {"source"}
    _check_keys("", raw, top)
    values: dict[str, Any] = {"source": source}
    if "data_dir" in raw:
        values["data_dir"] = base_dir / _string("data_dir", raw["data_dir"])
    if "server_url" in raw:
        url = _string("server_url", raw["server_url"])
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"server_url must start with http:// or https://, got {url!r}")
        values["server_url"] = url.rstrip("/")
    if "recipients" in raw:
        recipients = _string_list("recipients", raw["recipients"])
        for i, text in enumerate(recipients):
            try:
                parse_recipient(text)
            except KeyFormatError:
                raise ConfigError(f"recipients[{i}] must be an age recipient (age1... or"
                                  f" age1pq1...), got {text[:24]!r}...") from None
        values["recipients"] = recipients
    if "allow_classic_recipients" in raw:
        values["allow_classic_recipients"] = _boolean("allow_classic_recipients",
                                                      raw["allow_classic_recipients"])
    _check_recipient_mix(values.get("recipients", ()),
                         values.get("allow_classic_recipients", False))
    if "publisher_key" in raw:
        text = _string("publisher_key", raw["publisher_key"])
        try:
            VerifyKey.parse(text)
        except KeyFormatError as exc:
            raise ConfigError(f"publisher_key must be a publishing key (idrverify1...): {exc}"
                              ) from None
        values["publisher_key"] = text
    if "languages" in raw:
        values["languages"] = _string_list("languages", raw["languages"])
        if not values["languages"]:
            raise ConfigError("languages must name at least one language")
    values["idle"] = _section("idle", raw, IdleConfig, {
        "warn_after_s": _positive_number, "discard_after_s": _positive_number})
    values["recording"] = _section("recording", raw, RecordingConfig, {
        "max_answer_s": _positive_number, "silence_threshold_dbfs": _number,
        "opus_bitrate_kbps": _bitrate})
    values["audio"] = _section("audio", raw, AudioConfig, {
        "input_device": _device, "output_device": _device})
    values["staff"] = _section("staff", raw, StaffConfig, {
        "pin_hash": _pin_hash, "allow_exit": _boolean})
    values["display"] = _section("display", raw, DisplayConfig, {"kiosk_mode": _boolean})
    values["sync"] = _section("sync", raw, SyncConfig, {
        "retention_days": _non_negative_number, "chunk_bytes": _chunk_bytes,
        "max_chunk_bytes": _chunk_bytes,
        "connect_timeout_s": _positive_number, "read_timeout_s": _positive_number,
        "attempt_deadline_s": _positive_number, "interval_s": _positive_number})
    values["stories"] = _section("stories", raw, StoriesConfig, {"quota_bytes": _quota_bytes})
    return KioskConfig(**values)


def load(path: str | os.PathLike[str] | None = None) -> KioskConfig:
    """Load the file named by ``path``, else by ``$KIOSK_CONFIG``, else the demo defaults."""
    if path is None:
        path = os.environ.get(ENV_VAR) or None
    if path is None:
        return KioskConfig()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {file} is not UTF-8 text") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    try:
        return parse(raw, base_dir=file.resolve().parent, source=file)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
