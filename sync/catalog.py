"""The signed catalog of published stories: build, sign, parse, verify.

``catalog.json`` is canonical JSON (sorted keys, no spaces, UTF-8, no NaN) with a
detached signature (``catalog.json.sig``, the ``idrsig1...`` text) by the project's
publishing key over its exact bytes, in the ``"catalog"`` context (sync/signing.py).
Kiosks pin the publishing key; a compromised service can serve old catalogs but cannot
forge one, so kiosks also refuse any catalog whose version is not strictly newer than
the one they have (:func:`check_newer`).

The document::

    {"issued_at": "2026-11-28T10:00:00Z",      # ISO 8601, UTC, "Z"
     "prompts": ["journey", ...],              # prompt ids defenders are asked
     "recipients": ["age1pq1...", ...],        # what kiosks seal submissions to (>= 1)
     "stories": [{"audio_sha256": "<64 hex>", "country": "KE", "demo": false,
                  "display_name": "Anonymous", "duration_s": 41.5, "id": "<id>",
                  "language": "en", "region": "Africa", "size": 166112,
                  "themes": ["land"], "title": "...", "transcript": "...",
                  "url": "stories/<id>.ogg"}, ...],
     "version": 7}                             # > 0, strictly increasing

:func:`parse` is strict: an unknown or missing field, a wrong type, a repeated JSON key
or story id, bad hex, a size that is not positive... each raise :class:`Malformed`
with a message naming the field (``stories[3].audio_sha256``). Only ``demo`` may be
left out (it means ``false``); :func:`build` always writes it. Story ids become file
names on kiosks (``stories/<id>.ogg``), so they are lower-case letters, digits, ``-``
and ``_`` only.

This module never imports ``kiosk``: the vetting tool and the service use it too.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sync.envelope import KeyFormatError, parse_recipient
from sync.signing import BadSignatureError, SigningKey, VerifyKey

__all__ = [
    "CONTEXT",
    "MAX_CATALOG_BYTES",
    "BadAudio",
    "BadSignature",
    "Catalog",
    "CatalogError",
    "Malformed",
    "StaleCatalog",
    "Story",
    "build",
    "check_newer",
    "parse",
    "sign",
    "verify",
]

#: The signing context of a catalog signature (see sync/signing.py).
CONTEXT = "catalog"
#: A catalog larger than this is refused before it is decoded (500 stories with long
#: transcripts take a few MB).
MAX_CATALOG_BYTES = 64 * 1024 * 1024
#: Kept within what every JSON reader holds exactly (JavaScript's safe integers).
_MAX_INT = 2**53 - 1

_STORY_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_PROMPT_ID = re.compile(r"[a-z][a-z0-9_]{0,31}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_LANGUAGE = re.compile(r"[a-z]{2,3}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ISSUED_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")
_URL_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
#: C0 controls, DEL and C1 controls; a transcript may still hold newlines and tabs.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TRANSCRIPT_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

#: Longest value of each text field, in characters.
_TEXT_LIMITS = {"title": 200, "display_name": 100, "region": 64, "theme": 64,
                "transcript": 100_000, "url": 2048}
_MAX_DURATION_S = 24 * 3600.0


class CatalogError(Exception):
    """A catalog that must not be shown (or installed)."""


class BadSignature(CatalogError):
    """The signature is malformed, or not the pinned publishing key's over these bytes."""


class Malformed(CatalogError):
    """The catalog's bytes are not a valid catalog; ``field`` names what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"catalog {field}: {problem}" if field else f"catalog: {problem}")
        self.field = field


class StaleCatalog(CatalogError):
    """The catalog is not newer than the one already held."""


class BadAudio(CatalogError):
    """A story's audio is missing, or differs from the catalog's size or SHA-256."""

    def __init__(self, story_id: str, problem: str, *, missing: bool = False) -> None:
        super().__init__(f"story {story_id}: {problem}")
        self.story_id = story_id
        self.missing = missing


@dataclass(frozen=True)
class Story:
    id: str
    title: str
    #: The name the defender chose to publish under, or "Anonymous" (the data value;
    #: the screens translate it).
    display_name: str
    #: ISO 3166-1 alpha-2.
    country: str
    region: str
    themes: tuple[str, ...]
    #: ISO 639-1 (or -3) code of the spoken language.
    language: str
    duration_s: float
    transcript: str
    audio_sha256: str
    #: Bytes of the audio file.
    size: int
    #: Where the audio is fetched from: a path relative to the catalog
    #: (``stories/<id>.ogg``) or an https URL.
    url: str
    #: A demo story, not a real testimony: the screens mark it as such.
    demo: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "display_name": self.display_name,
                "country": self.country, "region": self.region, "themes": list(self.themes),
                "language": self.language, "duration_s": float(self.duration_s),
                "transcript": self.transcript, "audio_sha256": self.audio_sha256,
                "size": self.size, "url": self.url, "demo": self.demo}


@dataclass(frozen=True)
class Catalog:
    version: int
    #: ISO 8601 in UTC with a ``Z`` (``2026-11-28T10:00:00Z``).
    issued_at: str
    #: age recipients (``age1...``/``age1pq1...``) that kiosks seal submissions to.
    recipients: tuple[str, ...]
    #: The prompt ids defenders are asked.
    prompts: tuple[str, ...]
    stories: tuple[Story, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "issued_at": self.issued_at,
                "recipients": list(self.recipients), "prompts": list(self.prompts),
                "stories": [story.as_json() for story in self.stories]}

    def story(self, story_id: str) -> Story | None:
        for story in self.stories:
            if story.id == story_id:
                return story
        return None


#: Field name -> whether it may be left out.
_STORY_FIELDS = {name: name == "demo" for name in Story.__dataclass_fields__}
_CATALOG_FIELDS = set(Catalog.__dataclass_fields__)


# ---------------------------------------------------------------------------------------
# Build and sign (the vetting tool's side)


def build(catalog: Catalog) -> bytes:
    """The canonical bytes of ``catalog``; :class:`Malformed` if it would not parse."""
    for i, story in enumerate(catalog.stories):  # NaN would not even reach the JSON
        _duration(f"stories[{i}].duration_s", story.duration_s)
    try:
        data = json.dumps(catalog.as_json(), sort_keys=True, ensure_ascii=False,
                          allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError, AttributeError) as exc:
        raise Malformed("", f"cannot be written as JSON: {exc}") from None
    parse(data)  # the same rules on both ends: never publish what kiosks would refuse
    return data


def sign(data: bytes, signing_key: SigningKey) -> str:
    """The signature text (``idrsig1...``) of ``data`` in the catalog context."""
    return str(signing_key.sign(data, context=CONTEXT))


# ---------------------------------------------------------------------------------------
# Verify and parse (the kiosk's and the service's side)


def verify(data: bytes, signature_text: str, verify_key: VerifyKey | str) -> Catalog:
    """Check the signature over the exact bytes first, then :func:`parse` them."""
    if isinstance(verify_key, str):
        try:
            verify_key = VerifyKey.parse(verify_key.strip())
        except KeyFormatError as exc:
            raise CatalogError(f"the pinned publishing key is not valid: {exc}") from None
    if not isinstance(signature_text, str):
        raise BadSignature("catalog signature must be text (idrsig1...)")
    try:
        verify_key.verify(bytes(data), signature_text.strip(), context=CONTEXT)
    except BadSignatureError as exc:
        raise BadSignature(f"catalog signature refused: {exc}") from None
    return parse(data)


def check_newer(new: Catalog, current_version: int | None) -> None:
    """:class:`StaleCatalog` unless ``new`` is strictly newer than ``current_version``.

    An equal version is refused too: the same version with other bytes is a replay or
    a publishing mistake, and the same bytes are nothing new (callers that want to
    accept the very same catalog again compare the bytes first).
    """
    if current_version is not None and new.version <= current_version:
        raise StaleCatalog(f"catalog version {new.version} is not newer than the installed"
                           f" version {current_version}")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise Malformed(key, "appears twice in one JSON object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise Malformed("", f"{name} is not allowed in a catalog")


def parse(data: bytes) -> Catalog:
    """The catalog in ``data``; :class:`Malformed` naming the field for anything amiss.

    This does not check the signature: use :func:`verify` on anything received.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise Malformed("", f"must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_CATALOG_BYTES:
        raise Malformed("", f"is {len(data)} bytes, more than the {MAX_CATALOG_BYTES} allowed")
    if data.startswith(b"\xef\xbb\xbf"):
        raise Malformed("", "starts with a byte order mark")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed("", f"is not UTF-8 (byte {exc.start})") from None
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicate_keys,
                         parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise Malformed("", f"is not valid JSON: {exc.msg} (line {exc.lineno},"
                            f" column {exc.colno})") from None
    except RecursionError:
        raise Malformed("", "is nested too deeply") from None
    return _catalog(raw)


def _catalog(raw: Any) -> Catalog:
    if not isinstance(raw, dict):
        raise Malformed("", f"must be a JSON object, got {_json_type(raw)}")
    _check_fields("", raw, {name: False for name in _CATALOG_FIELDS})
    version = _integer("version", raw["version"], minimum=1)
    issued_at = _issued_at("issued_at", raw["issued_at"])
    recipients = _string_list("recipients", raw["recipients"])
    if not recipients:
        raise Malformed("recipients", "must name at least one age recipient")
    for i, text in enumerate(recipients):
        try:
            parse_recipient(text)
        except KeyFormatError:
            raise Malformed(f"recipients[{i}]", "is not an age recipient (age1... or"
                                                " age1pq1...)") from None
    _unique("recipients", recipients)
    prompts = _string_list("prompts", raw["prompts"])
    for i, pid in enumerate(prompts):
        if not _PROMPT_ID.fullmatch(pid):
            raise Malformed(f"prompts[{i}]", f"must be a prompt id (a short lower-case word),"
                                             f" got {pid[:40]!r}")
    _unique("prompts", prompts)
    if not isinstance(raw["stories"], list):
        raise Malformed("stories", f"must be a list, got {_json_type(raw['stories'])}")
    stories = tuple(_story(i, entry) for i, entry in enumerate(raw["stories"]))
    seen: set[str] = set()
    for i, story in enumerate(stories):
        if story.id in seen:
            raise Malformed(f"stories[{i}].id", f"{story.id!r} is used by an earlier story")
        seen.add(story.id)
    return Catalog(version=version, issued_at=issued_at, recipients=recipients,
                   prompts=prompts, stories=stories)


def _story(index: int, raw: Any) -> Story:
    where = f"stories[{index}]"
    if not isinstance(raw, dict):
        raise Malformed(where, f"must be a JSON object, got {_json_type(raw)}")
    story_id = raw.get("id")
    if not isinstance(story_id, str) or not _STORY_ID.fullmatch(story_id):
        shown = repr(story_id[:40]) if isinstance(story_id, str) else _json_type(story_id)
        raise Malformed(f"{where}.id", "must be 1 to 64 lower-case letters, digits, '-' or"
                                       f" '_' (it names a file), got {shown}")
    _check_fields(where, raw, _STORY_FIELDS)
    themes = _string_list(f"{where}.themes", raw["themes"])
    for i, theme in enumerate(themes):
        _text(f"{where}.themes[{i}]", theme, limit=_TEXT_LIMITS["theme"])
    _unique(f"{where}.themes", themes)
    country = _string(f"{where}.country", raw["country"])
    if not _COUNTRY.fullmatch(country):
        raise Malformed(f"{where}.country", f"must be an ISO 3166 alpha-2 code (two capital"
                                            f" letters), got {country[:20]!r}")
    language = _string(f"{where}.language", raw["language"])
    if not _LANGUAGE.fullmatch(language):
        raise Malformed(f"{where}.language", f"must be an ISO 639 code (two or three"
                                              f" lower-case letters), got {language[:20]!r}")
    transcript = raw["transcript"]
    if not isinstance(transcript, str):
        raise Malformed(f"{where}.transcript", f"must be a string, got"
                                                f" {_json_type(transcript)}")
    if len(transcript) > _TEXT_LIMITS["transcript"]:
        raise Malformed(f"{where}.transcript", f"is longer than {_TEXT_LIMITS['transcript']}"
                                                " characters")
    if _TRANSCRIPT_CONTROL.search(transcript):
        raise Malformed(f"{where}.transcript", "holds a control character")
    digest = _string(f"{where}.audio_sha256", raw["audio_sha256"])
    if not _SHA256.fullmatch(digest):
        raise Malformed(f"{where}.audio_sha256", "must be 64 lower-case hex digits")
    demo = raw.get("demo", False)
    if not isinstance(demo, bool):
        raise Malformed(f"{where}.demo", f"must be true or false, got {_json_type(demo)}")
    return Story(
        id=story_id,
        title=_text(f"{where}.title", raw["title"], limit=_TEXT_LIMITS["title"]),
        display_name=_text(f"{where}.display_name", raw["display_name"],
                           limit=_TEXT_LIMITS["display_name"]),
        country=country,
        region=_text(f"{where}.region", raw["region"], limit=_TEXT_LIMITS["region"]),
        themes=themes,
        language=language,
        duration_s=_duration(f"{where}.duration_s", raw["duration_s"]),
        transcript=transcript,
        audio_sha256=digest,
        size=_integer(f"{where}.size", raw["size"], minimum=1),
        url=_url(f"{where}.url", raw["url"]),
        demo=demo,
    )


# ---------------------------------------------------------------------------------------
# Field checks


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _check_fields(where: str, raw: dict[str, Any], known: dict[str, bool]) -> None:
    prefix = f"{where}." if where else ""
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise Malformed(f"{prefix}{unknown[0]}", "is not a catalog field")
    missing = sorted(name for name, optional in known.items()
                     if not optional and name not in raw)
    if missing:
        raise Malformed(f"{prefix}{missing[0]}", "is missing")


def _integer(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Malformed(name, f"must be an integer, got {_json_type(value)}")
    if not minimum <= value <= _MAX_INT:
        raise Malformed(name, f"must be from {minimum} to {_MAX_INT}, got {value}")
    return value


def _duration(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Malformed(name, f"must be a number of seconds, got {_json_type(value)}")
    if not math.isfinite(value) or not 0 < value <= _MAX_DURATION_S:
        raise Malformed(name, f"must be more than 0 and at most {_MAX_DURATION_S:g} seconds,"
                              f" got {value}")
    return float(value)


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise Malformed(name, f"must be a string, got {_json_type(value)}")
    return value


def _text(name: str, value: Any, *, limit: int) -> str:
    text = _string(name, value)
    if not text.strip():
        raise Malformed(name, "must not be empty")
    if len(text) > limit:
        raise Malformed(name, f"is longer than {limit} characters")
    if _CONTROL.search(text):
        raise Malformed(name, "holds a control character")
    return text


def _string_list(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Malformed(name, f"must be a list of strings, got {_json_type(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise Malformed(f"{name}[{i}]", f"must be a string, got {_json_type(item)}")
    return tuple(value)


def _unique(name: str, values: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise Malformed(f"{name}[{i}]", f"repeats {value[:40]!r}")
        seen.add(value)


def _issued_at(name: str, value: Any) -> str:
    text = _string(name, value)
    if not _ISSUED_AT.fullmatch(text):
        raise Malformed(name, f"must be an ISO 8601 UTC time like 2026-11-28T10:00:00Z,"
                              f" got {text[:40]!r}")
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Malformed(name, f"is not a real date and time: {text!r}") from None
    return text


def _url(name: str, value: Any) -> str:
    url = _text(name, value, limit=_TEXT_LIMITS["url"])
    if url.startswith("https://"):
        host = url[len("https://"):].split("/", 1)[0]
        if not host or any(ch.isspace() for ch in url):
            raise Malformed(name, "is not a valid https URL")
        return url
    if "://" in url or url.startswith("/") or "\\" in url:
        raise Malformed(name, "must be an https URL or a relative path like stories/<id>.ogg")
    for segment in url.split("/"):
        if not _URL_SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise Malformed(name, f"has a bad path segment {segment[:40]!r} (a relative path"
                                  " of plain names, like stories/<id>.ogg)")
    return url
