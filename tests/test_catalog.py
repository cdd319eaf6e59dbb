"""The signed catalog (sync/catalog.py): canonical bytes, signature, strict parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sync import catalog
from sync.catalog import (
    BadSignature,
    Catalog,
    CatalogError,
    Malformed,
    StaleCatalog,
    Story,
)
from sync.envelope import X25519Identity
from sync.signing import SigningKey

KEY = SigningKey(bytes(range(32)))
OTHER_KEY = SigningKey(bytes(range(1, 33)))
RECIPIENT = str(X25519Identity(bytes(range(32))).recipient())


def story(index: int = 0, **changes: Any) -> Story:
    values: dict[str, Any] = dict(
        id=f"story-{index}", title=f"Story {index}", display_name="Anonymous", country="KE",
        region="Africa", themes=("land", "water"), language="en", duration_s=12.5,
        transcript="I defend the land.\nEvery day.", audio_sha256=f"{index:064x}",
        size=1000 + index, url=f"stories/story-{index}.ogg")
    values.update(changes)
    return Story(**values)


def make(version: int = 3, stories: tuple[Story, ...] | None = None) -> Catalog:
    return Catalog(version=version, issued_at="2026-11-28T10:00:00Z", recipients=(RECIPIENT,),
                   prompts=("work", "why"),
                   stories=(story(0), story(1, language="ar", title="قصة", demo=True))
                   if stories is None else stories)


def test_build_is_canonical_and_round_trips() -> None:
    cat = make()
    data = catalog.build(cat)
    assert catalog.parse(data) == cat
    # Canonical: sorted keys, no spaces, raw UTF-8, so building again gives the same bytes.
    assert data == json.dumps(json.loads(data), sort_keys=True, ensure_ascii=False,
                              separators=(",", ":")).encode("utf-8")
    assert "قصة".encode() in data
    assert catalog.build(catalog.parse(data)) == data
    assert data.startswith(b'{"issued_at":"2026-11-28T10:00:00Z","prompts":["work","why"]')


def test_whole_seconds_and_a_missing_demo_flag_read_back_the_same() -> None:
    cat = make(stories=(story(0, duration_s=12),))
    data = catalog.build(cat)
    assert b'"duration_s":12.0' in data
    parsed = catalog.parse(data)
    assert parsed.stories[0].duration_s == 12.0 and isinstance(parsed.stories[0].duration_s,
                                                               float)
    raw = json.loads(data)
    del raw["stories"][0]["demo"]
    assert catalog.parse(json.dumps(raw).encode()).stories[0].demo is False


def test_an_empty_catalog_is_valid() -> None:
    cat = make(stories=())
    assert catalog.parse(catalog.build(cat)) == cat


def test_signed_catalog_verifies() -> None:
    data = catalog.build(make())
    signature = catalog.sign(data, KEY)
    assert signature.startswith("idrsig1")
    assert catalog.verify(data, signature, KEY.verify_key) == make()
    # The pinned key as the config holds it (text), and a signature file's newline.
    assert catalog.verify(data, signature + "\n", str(KEY.verify_key)) == make()


@pytest.mark.parametrize("case", ["garbage", "truncated", "other key", "other context",
                                  "empty"])
def test_bad_signatures_are_refused(case: str) -> None:
    data = catalog.build(make())
    good = catalog.sign(data, KEY)
    signature = {
        "garbage": "not a signature",
        "truncated": good[:-4],
        "other key": catalog.sign(data, OTHER_KEY),
        "other context": str(KEY.sign(data, context="receipt")),
        "empty": "",
    }[case]
    with pytest.raises(BadSignature):
        catalog.verify(data, signature, KEY.verify_key)


@pytest.mark.parametrize("position", [0, 1, 40, -2, -1])
def test_a_tampered_byte_is_refused(position: int) -> None:
    data = catalog.build(make())
    signature = catalog.sign(data, KEY)
    tampered = bytearray(data)
    tampered[position] ^= 0x01
    with pytest.raises(BadSignature):
        catalog.verify(bytes(tampered), signature, KEY.verify_key)
    with pytest.raises(BadSignature):
        catalog.verify(data + b"\n", signature, KEY.verify_key)


def test_the_signature_is_checked_before_the_content() -> None:
    garbage = b"\xff not json"
    with pytest.raises(BadSignature):
        catalog.verify(garbage, catalog.sign(garbage, OTHER_KEY), KEY.verify_key)
    # Only once the signature holds is the content judged.
    with pytest.raises(Malformed):
        catalog.verify(garbage, catalog.sign(garbage, KEY), KEY.verify_key)


def test_a_bad_pinned_key_is_a_catalog_error() -> None:
    data = catalog.build(make())
    with pytest.raises(CatalogError, match="pinned publishing key"):
        catalog.verify(data, catalog.sign(data, KEY), "idrverify1nonsense")


def _set(path: str, value: Any) -> Any:
    def change(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = raw
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value
    return change


def _delete(path: str) -> Any:
    def change(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = raw
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        del target[last]
    return change


def _duplicate_story(raw: dict[str, Any]) -> None:
    raw["stories"][1]["id"] = raw["stories"][0]["id"]


MALFORMED = [
    # (change to a good catalog, the field the error must name)
    (_delete("version"), "version"),
    (_set("extra", 1), "extra"),
    (_set("version", 0), "version"),
    (_set("version", -4), "version"),
    (_set("version", "4"), "version"),
    (_set("version", True), "version"),
    (_set("version", 4.0), "version"),
    (_set("version", 2**60), "version"),
    (_set("issued_at", "2026-11-28 10:00:00"), "issued_at"),
    (_set("issued_at", "2026-11-28T10:00:00+01:00"), "issued_at"),
    (_set("issued_at", "2026-13-40T10:00:00Z"), "issued_at"),
    (_set("recipients", []), "recipients"),
    (_set("recipients", "age1..."), "recipients"),
    (_set("recipients", ["age1notarecipient"]), "recipients[0]"),
    (_set("recipients", [RECIPIENT, RECIPIENT]), "recipients[1]"),
    (_set("prompts", ["Why Not"]), "prompts[0]"),
    (_set("prompts", ["work", 3]), "prompts[1]"),
    (_set("stories", {}), "stories"),
    (_set("stories.0", "story"), "stories[0]"),
    (_delete("stories.0.title"), "stories[0].title"),
    (_delete("stories.1.audio_sha256"), "stories[1].audio_sha256"),
    (_set("stories.0.colour", "red"), "stories[0].colour"),
    (_set("stories.0.id", "../../etc/passwd"), "stories[0].id"),
    (_set("stories.0.id", "Story-0"), "stories[0].id"),
    (_set("stories.0.id", ""), "stories[0].id"),
    (_set("stories.0.id", 7), "stories[0].id"),
    (_duplicate_story, "stories[1].id"),
    (_set("stories.0.title", ""), "stories[0].title"),
    (_set("stories.0.title", "a\x00b"), "stories[0].title"),
    (_set("stories.0.title", None), "stories[0].title"),
    (_set("stories.0.display_name", "x" * 101), "stories[0].display_name"),
    (_set("stories.0.country", "Kenya"), "stories[0].country"),
    (_set("stories.0.country", "ke"), "stories[0].country"),
    (_set("stories.0.region", 5), "stories[0].region"),
    (_set("stories.0.themes", "land"), "stories[0].themes"),
    (_set("stories.0.themes", ["land", 1]), "stories[0].themes[1]"),
    (_set("stories.0.themes", ["land", "land"]), "stories[0].themes[1]"),
    (_set("stories.0.language", "EN"), "stories[0].language"),
    (_set("stories.0.duration_s", -1), "stories[0].duration_s"),
    (_set("stories.0.duration_s", 0), "stories[0].duration_s"),
    (_set("stories.0.duration_s", "12"), "stories[0].duration_s"),
    (_set("stories.0.transcript", ["x"]), "stories[0].transcript"),
    (_set("stories.0.transcript", "bell\x07"), "stories[0].transcript"),
    (_set("stories.0.audio_sha256", "xyz"), "stories[0].audio_sha256"),
    (_set("stories.0.audio_sha256", "A" * 64), "stories[0].audio_sha256"),
    (_set("stories.0.audio_sha256", "0" * 63), "stories[0].audio_sha256"),
    (_set("stories.0.size", -1), "stories[0].size"),
    (_set("stories.0.size", 0), "stories[0].size"),
    (_set("stories.0.size", "1000"), "stories[0].size"),
    (_set("stories.0.size", 1000.0), "stories[0].size"),
    (_set("stories.0.url", "/etc/passwd"), "stories[0].url"),
    (_set("stories.0.url", "../story-0.ogg"), "stories[0].url"),
    (_set("stories.0.url", "stories/../../x.ogg"), "stories[0].url"),
    (_set("stories.0.url", "http://cdn.example/x.ogg"), "stories[0].url"),
    (_set("stories.0.url", "file:///etc/passwd"), "stories[0].url"),
    (_set("stories.0.url", "stories\\x.ogg"), "stories[0].url"),
    (_set("stories.0.demo", "yes"), "stories[0].demo"),
]


@pytest.mark.parametrize(("change", "field"), MALFORMED,
                         ids=[f"{i}-{field}" for i, (_c, field) in enumerate(MALFORMED)])
def test_malformed_fields_are_named(change: Any, field: str) -> None:
    raw = json.loads(catalog.build(make()))
    change(raw)
    with pytest.raises(Malformed) as caught:
        catalog.parse(json.dumps(raw, ensure_ascii=False).encode("utf-8"))
    assert caught.value.field == field
    assert field in str(caught.value)


def test_https_urls_are_accepted() -> None:
    cat = make(stories=(story(0, url="https://cdn.example.org/a/story-0.ogg"),))
    assert catalog.parse(catalog.build(cat)) == cat


@pytest.mark.parametrize(("data", "words"), [
    (b"", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"version": NaN}', "NaN"),
    (b'{"version": Infinity}', "Infinity"),
    (b'{"version": 1, "version": 2}', "twice"),
    (b'\xef\xbb\xbf{}', "byte order mark"),
    (b'{"title": "\xff"}', "not UTF-8"),
    (b"[" * 100_000, "nested too deeply"),
])
def test_bytes_that_are_not_a_catalog(data: bytes, words: str) -> None:
    with pytest.raises(Malformed, match=words):
        catalog.parse(data)


def test_an_oversized_catalog_is_refused_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    data = catalog.build(make())
    monkeypatch.setattr(catalog, "MAX_CATALOG_BYTES", len(data) - 1)
    with pytest.raises(Malformed, match="bytes"):
        catalog.parse(data)


def test_build_refuses_what_kiosks_would_refuse() -> None:
    with pytest.raises(Malformed) as caught:
        catalog.build(make(stories=(story(0), story(0))))
    assert caught.value.field == "stories[1].id"
    with pytest.raises(Malformed, match="stories\\[0\\].duration_s"):
        catalog.build(make(stories=(story(0, duration_s=float("nan")),)))
    with pytest.raises(Malformed):
        catalog.build(make(version=0))


def test_older_and_equal_versions_are_stale() -> None:
    cat = make(version=5)
    catalog.check_newer(cat, None)
    catalog.check_newer(cat, 4)
    for current in (5, 6, 100):
        with pytest.raises(StaleCatalog, match="not newer"):
            catalog.check_newer(cat, current)


def test_every_refusal_is_a_catalog_error() -> None:
    for cls in (BadSignature, Malformed, StaleCatalog, catalog.BadAudio):
        assert issubclass(cls, CatalogError)
