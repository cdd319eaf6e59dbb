"""The kiosk's local stories (kiosk/stories/): install all or nothing, load, filters, and
the demo stories end to end (espeak-ng, sox, Ogg/Opus, a pinned demo key)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import soundfile as sf

from kiosk import cli
from kiosk import config as kiosk_config
from kiosk.stories import (
    BadAudio,
    BadSignature,
    Catalog,
    Malformed,
    NotPinned,
    StaleCatalog,
    StorageError,
    Story,
    StoryLibrary,
)
from kiosk.stories import demo as demo_mod
from kiosk.stories import library as library_mod
from sync import catalog as catalog_mod
from sync.envelope import X25519Identity
from sync.signing import SigningKey, parse_signing_key_file

KEY = SigningKey(bytes(range(32)))
OTHER_KEY = SigningKey(bytes(range(1, 33)))
RECIPIENT = str(X25519Identity(bytes(range(32))).recipient())
WHEN = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)

REGIONS = ("Africa", "Americas", "Asia", "Europe", "Middle East")
THEMES = ("land", "water", "press freedom", "labour rights", "education", "women's rights")
LANGUAGES = ("en", "es", "fr", "ar")
COUNTRIES = ("KE", "CO", "PH", "FR", "JO")


def audio_bytes(story_id: str, edition: int = 0) -> bytes:
    return f"OggS fake audio of {story_id}, edition {edition}\n".encode() * (3 + edition)


def make_story(i: int, story_id: str | None = None, *, edition: int = 0) -> tuple[Story, bytes]:
    story_id = story_id or f"s{i:03d}"
    audio = audio_bytes(story_id, edition)
    story = Story(
        id=story_id, title=f"Story {i}", display_name="Anonymous" if i % 3 else f"Name {i}",
        country=COUNTRIES[i % len(COUNTRIES)], region=REGIONS[i % len(REGIONS)],
        themes=tuple(THEMES[j] for j in range(len(THEMES)) if (i >> j) & 1) or ("land",),
        language=LANGUAGES[i % len(LANGUAGES)], duration_s=10.0 + i,
        transcript=f"First line of story {i}.\nSecond line.", size=len(audio),
        audio_sha256=hashlib.sha256(audio).hexdigest(), url=f"stories/{story_id}.ogg")
    return story, audio


class Published:
    """A signed catalog as the puller hands it over: bytes, signature, audio files."""

    def __init__(self, folder: Path, version: int, ids: Iterable[str], *,
                 key: SigningKey = KEY, editions: dict[str, int] | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        stories = []
        self.files: dict[str, Path] = {}
        for i, story_id in enumerate(ids):
            story, audio = make_story(i, story_id, edition=(editions or {}).get(story_id, 0))
            stories.append(story)
            path = folder / f"download-{story_id}-v{version}.ogg"
            path.write_bytes(audio)
            self.files[story_id] = path
        self.catalog = Catalog(version=version, issued_at="2026-11-28T10:00:00Z",
                               recipients=(RECIPIENT,), prompts=("work",),
                               stories=tuple(stories))
        self.data = catalog_mod.build(self.catalog)
        self.sig = catalog_mod.sign(self.data, key)


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every regular file under ``directory`` (the lock file aside) and its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name not in (library_mod.LOCK_FILE,
                                              library_mod.LAST_ERROR_FILE)}


def library(data_dir: Path, key: SigningKey | None = KEY) -> StoryLibrary:
    return StoryLibrary(data_dir, str(key.verify_key) if key else None, clock=lambda: WHEN,
                        min_free_bytes=0)


@pytest.fixture
def installed(tmp_path: Path) -> tuple[StoryLibrary, Published]:
    """A library with version 3 of stories a, b, c installed."""
    lib = library(tmp_path / "data")
    first = Published(tmp_path / "dl", 3, ["a", "b", "c"])
    result = lib.install(first.data, first.sig, first.files)
    assert (result.version, result.previous_version, result.added) == (3, None,
                                                                       ("a", "b", "c"))
    return lib, first


# ---------------------------------------------------------------------------- load


def test_without_a_pinned_key_nothing_is_shown(tmp_path: Path) -> None:
    pinned = library(tmp_path / "data")
    pub = Published(tmp_path / "dl", 1, ["a"])
    pinned.install(pub.data, pub.sig, pub.files)
    lib = library(tmp_path / "data", key=None)
    result = lib.load()
    assert result.error is not None and "no publishing key pinned" in result.error
    assert result.error_code == "no_publisher_key"
    assert lib.stories() == () and lib.version is None
    assert lib.last_error().code == "no_publisher_key"  # type: ignore[union-attr]
    with pytest.raises(NotPinned, match="no publishing key pinned"):
        lib.install(pub.data, pub.sig, pub.files)


def test_nothing_installed_is_not_an_error(tmp_path: Path) -> None:
    lib = library(tmp_path / "data")
    result = lib.load()
    assert result.ok and result.version is None and result.shown == 0
    assert lib.stories() == () and lib.regions() == () and lib.highlights(3) == []
    assert lib.last_error() is None
    assert not (tmp_path / "data").exists()  # reading made nothing


def test_install_then_load_in_a_fresh_library(installed: tuple[StoryLibrary, Published],
                                              tmp_path: Path) -> None:
    lib, first = installed
    assert [s.id for s in lib.stories()] == ["a", "b", "c"] and lib.version == 3
    folder = tmp_path / "data" / "stories"
    assert sorted(p.name for p in folder.iterdir()) == [
        ".lock", "a.ogg", "b.ogg", "c.ogg", "catalog.json", "catalog.json.sig"]
    assert (folder / "catalog.json").read_bytes() == first.data
    assert (folder / "catalog.json.sig").read_text() == first.sig + "\n"
    for story_id, path in first.files.items():
        assert lib.audio_path(story_id).read_bytes() == path.read_bytes()
        assert path.exists()  # the caller's file was copied, not taken
    fresh = library(tmp_path / "data")
    result = fresh.load()
    assert result.ok and result.version == 3 and result.shown == 3
    assert fresh.stories() == first.catalog.stories
    assert fresh.catalog == first.catalog
    assert fresh.audio_path(fresh.stories()[0]) == folder / "a.ogg"


@pytest.mark.parametrize("damage", ["missing", "changed", "longer"])
def test_a_damaged_audio_file_leaves_that_story_out(
        installed: tuple[StoryLibrary, Published], tmp_path: Path, damage: str) -> None:
    lib, _first = installed
    path = lib.audio_path("b")
    if damage == "missing":
        path.unlink()
    elif damage == "changed":
        data = bytearray(path.read_bytes())
        data[5] ^= 1
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(path.read_bytes() + b"x")
    fresh = library(tmp_path / "data")
    result = fresh.load()
    assert result.version == 3 and result.shown == 2 and not result.ok
    assert [p.story_id for p in result.left_out] == ["b"]
    code = "audio_missing" if damage == "missing" else "audio_mismatch"
    assert result.left_out[0].code == code
    assert [s.id for s in fresh.stories()] == ["a", "c"]
    last = fresh.last_error()
    assert last is not None
    assert (last.code, last.during, last.story_id, last.version) == (code, "load", "b", 3)


def test_a_tampered_installed_catalog_shows_nothing(
        installed: tuple[StoryLibrary, Published], tmp_path: Path) -> None:
    path = tmp_path / "data" / "stories" / "catalog.json"
    path.write_bytes(path.read_bytes().replace(b"Story 0", b"Story 9"))
    fresh = library(tmp_path / "data")
    result = fresh.load()
    assert result.error_code == "bad_signature" and fresh.stories() == ()
    (tmp_path / "data" / "stories" / "catalog.json.sig").unlink()
    assert library(tmp_path / "data").load().error_code == "bad_signature"


def test_last_error_holds_a_code_and_a_time_only(
        installed: tuple[StoryLibrary, Published], tmp_path: Path) -> None:
    lib, _first = installed
    bad = Published(tmp_path / "dl2", 4, ["a", "b"], key=OTHER_KEY)
    with pytest.raises(BadSignature):
        lib.install(bad.data, bad.sig, bad.files)
    raw = json.loads((tmp_path / "data" / "stories" / "last_error.json").read_text())
    assert raw == {"code": "bad_signature", "at": "2026-11-28T10:00:00Z", "during": "install"}


# ------------------------------------------------------------------------- install


def _bad_signature(tmp: Path) -> tuple[Published, dict[str, Path], type[Exception], str]:
    pub = Published(tmp, 4, ["a", "b", "d"], key=OTHER_KEY)
    return pub, pub.files, BadSignature, "bad_signature"


def _bad_hash(tmp: Path) -> tuple[Published, dict[str, Path], type[Exception], str]:
    pub = Published(tmp, 4, ["a", "b", "d"])
    # Same size, one byte different: only the hash can tell.
    data = bytearray(pub.files["d"].read_bytes())
    data[-2] ^= 0x20
    pub.files["d"].write_bytes(bytes(data))
    return pub, pub.files, BadAudio, "audio_mismatch"


def _wrong_size(tmp: Path) -> tuple[Published, dict[str, Path], type[Exception], str]:
    pub = Published(tmp, 4, ["a", "b", "d"])
    pub.files["d"].write_bytes(pub.files["d"].read_bytes() + b"more")
    return pub, pub.files, BadAudio, "audio_mismatch"


def _missing_audio(tmp: Path) -> tuple[Published, dict[str, Path], type[Exception], str]:
    pub = Published(tmp, 4, ["a", "b", "d"])
    return pub, {k: v for k, v in pub.files.items() if k != "d"}, BadAudio, "audio_missing"


def _missing_file(tmp: Path) -> tuple[Published, dict[str, Path], type[Exception], str]:
    pub = Published(tmp, 4, ["a", "b", "d"])
    pub.files["d"].unlink()
    return pub, pub.files, BadAudio, "audio_missing"


def _changed_kept_audio(tmp: Path) -> tuple[Published, dict[str, Path], type[Exception], str]:
    # "a" is re-published with new audio, but none is supplied: the installed file is old.
    pub = Published(tmp, 4, ["a", "b"], editions={"a": 1})
    return pub, {}, BadAudio, "audio_mismatch"


def _same_version(tmp: Path) -> tuple[Published, dict[str, Path], type[Exception], str]:
    pub = Published(tmp, 3, ["a", "b"])
    return pub, pub.files, StaleCatalog, "stale_catalog"


def _older_version(tmp: Path) -> tuple[Published, dict[str, Path], type[Exception], str]:
    pub = Published(tmp, 2, ["a", "b", "c", "d"])
    return pub, pub.files, StaleCatalog, "stale_catalog"


def _malformed(tmp: Path) -> tuple[Published, dict[str, Path], type[Exception], str]:
    pub = Published(tmp, 4, ["a"])
    pub.data = pub.data.replace(b'"version":4', b'"version":"4"')
    pub.sig = catalog_mod.sign(pub.data, KEY)
    return pub, pub.files, Malformed, "malformed"


def _unknown_country(tmp: Path) -> tuple[Published, dict[str, Path], type[Exception], str]:
    pub = Published(tmp, 4, ["a"])
    pub.data = pub.data.replace(b'"country":"KE"', b'"country":"ZZ"')
    pub.sig = catalog_mod.sign(pub.data, KEY)
    return pub, pub.files, Malformed, "malformed"


BAD_INSTALLS = [_bad_signature, _bad_hash, _wrong_size, _missing_audio, _missing_file,
                _changed_kept_audio, _same_version, _older_version, _malformed,
                _unknown_country]


@pytest.mark.parametrize("bad", BAD_INSTALLS, ids=[f.__name__[1:] for f in BAD_INSTALLS])
def test_a_bad_catalog_leaves_the_installed_stories_in_place(
        installed: tuple[StoryLibrary, Published], tmp_path: Path, bad: object) -> None:
    lib, first = installed
    folder = tmp_path / "data" / "stories"
    before = snapshot(folder)
    pub, files, error, code = bad(tmp_path / "dl2")  # type: ignore[operator]
    with pytest.raises(error):
        lib.install(pub.data, pub.sig, files)
    assert snapshot(folder) == before  # not a byte changed, no staging left behind
    assert lib.version == 3 and lib.stories() == first.catalog.stories
    fresh = library(tmp_path / "data")
    assert fresh.load().ok and fresh.stories() == first.catalog.stories
    last = fresh.last_error()
    assert last is not None and (last.code, last.during) == (code, "install")


def test_not_enough_disk_refuses_and_keeps_the_stories(
        installed: tuple[StoryLibrary, Published], tmp_path: Path) -> None:
    _lib, first = installed
    before = snapshot(tmp_path / "data" / "stories")
    greedy = StoryLibrary(tmp_path / "data", str(KEY.verify_key), min_free_bytes=2**62)
    pub = Published(tmp_path / "dl2", 4, ["a", "d"])
    with pytest.raises(StorageError, match="free disk"):
        greedy.install(pub.data, pub.sig, pub.files)
    assert snapshot(tmp_path / "data" / "stories") == before
    assert greedy.last_error().code == "storage"  # type: ignore[union-attr]


def test_audio_for_a_story_not_in_the_catalog_is_a_caller_error(
        installed: tuple[StoryLibrary, Published], tmp_path: Path) -> None:
    lib, _first = installed
    before = snapshot(tmp_path / "data" / "stories")
    pub = Published(tmp_path / "dl2", 4, ["a"])
    with pytest.raises(ValueError, match="'zz'"):
        lib.install(pub.data, pub.sig, {**pub.files, "zz": pub.files["a"]})
    assert snapshot(tmp_path / "data" / "stories") == before


def test_a_newer_catalog_replaces_and_deletes_the_audio_that_left(
        installed: tuple[StoryLibrary, Published], tmp_path: Path) -> None:
    lib, first = installed
    folder = tmp_path / "data" / "stories"
    # A failed install first: its error is recorded, then cleared by the good one.
    stale = Published(tmp_path / "old", 2, ["a"])
    with pytest.raises(StaleCatalog):
        lib.install(stale.data, stale.sig, stale.files)
    # v5: "a" kept as is (no file given: the installed one is checked and kept), "b"
    # re-published with new audio, "c" taken down, "d" new.
    pub = Published(tmp_path / "dl2", 5, ["a", "b", "d"], editions={"b": 1})
    files = {"b": pub.files["b"], "d": pub.files["d"]}
    result = lib.install(pub.data, pub.sig, files)
    assert (result.version, result.previous_version) == (5, 3)
    assert (result.added, result.removed, result.replaced) == (("d",), ("c",), ("b",))
    assert not result.unchanged
    assert sorted(p.name for p in folder.iterdir()) == [
        ".lock", "a.ogg", "b.ogg", "catalog.json", "catalog.json.sig", "d.ogg"]
    assert (folder / "a.ogg").read_bytes() == first.files["a"].read_bytes()
    assert (folder / "b.ogg").read_bytes() == audio_bytes("b", 1)
    assert lib.version == 5 and [s.id for s in lib.stories()] == ["a", "b", "d"]
    assert lib.last_error() is None
    fresh = library(tmp_path / "data")
    assert fresh.load().ok and fresh.catalog == pub.catalog


def test_the_same_catalog_again_is_accepted_and_repairs_its_files(
        installed: tuple[StoryLibrary, Published], tmp_path: Path) -> None:
    lib, first = installed
    lib.audio_path("b").unlink()
    assert library(tmp_path / "data").load().shown == 2
    result = lib.install(first.data, first.sig, {"b": first.files["b"]})
    assert result.unchanged and result.version == 3 and result.previous_version == 3
    assert library(tmp_path / "data").load().ok


def test_a_crash_after_the_commit_point_is_finished_at_the_next_load(
        installed: tuple[StoryLibrary, Published], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    lib, _first = installed
    folder = tmp_path / "data" / "stories"
    pub = Published(tmp_path / "dl2", 4, ["a", "d"])

    def power_cut(self: StoryLibrary) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(StoryLibrary, "_finish_commit", power_cut)
    with pytest.raises(StorageError):
        lib.install(pub.data, pub.sig, pub.files)
    assert (folder / library_mod.COMMIT_DIR).is_dir()
    (folder / ".staging-leftover").mkdir()  # an install cut before its commit point
    monkeypatch.undo()
    fresh = library(tmp_path / "data")
    assert fresh.load().ok and fresh.version == 4
    assert sorted(p.name for p in folder.iterdir()) == [
        ".lock", "a.ogg", "catalog.json", "catalog.json.sig", "d.ogg", "last_error.json"]


def test_a_new_publishing_key_starts_its_versions_afresh(
        installed: tuple[StoryLibrary, Published], tmp_path: Path) -> None:
    _lib, _first = installed
    repinned = library(tmp_path / "data", key=OTHER_KEY)
    assert repinned.load().error_code == "bad_signature"
    assert repinned.installed_version() is None
    pub = Published(tmp_path / "dl2", 1, ["x"], key=OTHER_KEY)
    result = repinned.install(pub.data, pub.sig, pub.files)
    assert (result.version, result.previous_version, result.added) == (1, None, ("x",))
    assert [p.name for p in sorted((tmp_path / "data" / "stories").glob("*.ogg"))] == ["x.ogg"]


# ------------------------------------------------------------------------- reading


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[StoryLibrary, tuple[Story, ...]]:
    tmp = tmp_path_factory.mktemp("big")
    pub = Published(tmp / "dl", 1, [f"s{i:03d}" for i in range(500)])
    lib = library(tmp / "data")
    lib.install(pub.data, pub.sig, pub.files)
    fresh = library(tmp / "data")
    assert fresh.load().shown == 500
    return fresh, pub.catalog.stories


def test_the_lists_of_choices(big: tuple[StoryLibrary, tuple[Story, ...]]) -> None:
    lib, stories = big
    assert lib.regions() == ("Africa", "Americas", "Asia", "Europe", "Middle East")
    assert lib.languages() == ("ar", "en", "es", "fr")
    assert set(lib.themes()) == set(THEMES)
    assert lib.themes() == tuple(sorted(THEMES, key=str.casefold))
    assert lib.stories() == stories
    assert lib.get("s042") == stories[42] and lib.get("nope") is None


@pytest.mark.parametrize("region", [None, *REGIONS, "Antarctica"])
@pytest.mark.parametrize("theme", [None, "land", "women's rights", "cooking"])
@pytest.mark.parametrize("language", [None, "ar", "fr", "de"])
def test_filters_return_exactly_the_matching_stories(
        big: tuple[StoryLibrary, tuple[Story, ...]], region: str | None, theme: str | None,
        language: str | None) -> None:
    lib, stories = big
    expected = tuple(s for s in stories
                     if (region is None or s.region == region)
                     and (theme is None or theme in s.themes)
                     and (language is None or s.language == language))
    assert lib.filter(region=region, theme=theme, language=language) == expected
    if region in REGIONS and language in ("ar", "fr") and theme == "women's rights":
        assert expected  # the synthetic set is not too sparse to tell


def test_filter_by_country(big: tuple[StoryLibrary, tuple[Story, ...]]) -> None:
    lib, stories = big
    assert lib.filter(country="JO") == tuple(s for s in stories if s.country == "JO")


def test_highlights_take_the_languages_in_turn(
        big: tuple[StoryLibrary, tuple[Story, ...]]) -> None:
    lib, _stories = big
    six = lib.highlights(6)
    assert [h.story.language for h in six] == ["en", "es", "fr", "ar", "en", "es"]
    assert six[0].title == "Story 0" and six[0].display_name == "Name 0"
    assert six[0].line == "First line of story 0."
    assert len(lib.highlights(1000)) == 500 and lib.highlights(0) == []


def test_a_long_first_line_is_cut_for_the_attract_screen() -> None:
    line = library_mod._first_line
    assert line("\n\n  Short one.  \nSecond") == "Short one."
    long = "I defend the river. " + "It is long " * 30
    assert line(long) == "I defend the river."
    words = "word " * 60
    cut = line(words)
    assert cut.endswith("…") and len(cut) <= 141 and "  " not in cut


# --------------------------------------------------------------------- demo stories


def _write_config(folder: Path, extra_top: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kiosk.toml"
    path.write_text(
        "# A test kiosk.\n"
        'data_dir = "kdata"\n'
        f'recipients = ["{RECIPIENT}"]\n'
        f"{extra_top}"
        "\n"
        "# How long before an idle session is warned.\n"
        "[idle]\n"
        "warn_after_s = 45\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """``kiosk --config PATH demo-stories`` once; the config, its text before, the output."""
    path = _write_config(tmp_path_factory.mktemp("demo"))
    before = path.read_text(encoding="utf-8")
    out = _run_cli(path)
    return path, before, out


def _run_cli(path: Path) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli.main(["--config", str(path), "demo-stories"])
    assert code == 0
    return buffer.getvalue()


def test_demo_stories_end_to_end(demo_run: tuple[Path, str, str]) -> None:
    path, before, out = demo_run
    cfg = kiosk_config.load(path)  # the pinned key is accepted
    key = parse_signing_key_file((path.parent / "demo-publisher.key").read_text())
    assert cfg.publisher_key == str(key.verify_key)
    assert stat.S_IMODE((path.parent / "demo-publisher.key").stat().st_mode) == 0o600
    # Every other line is kept; the key goes after the last top-level line.
    after = path.read_text(encoding="utf-8").splitlines()
    assert after == before.splitlines()[:3] + [f'publisher_key = "{cfg.publisher_key}"'] + \
        before.splitlines()[3:]
    assert "8 demo stories in 4 languages (ar, en, es, fr)" in out and "version 1" in out

    lib = StoryLibrary(cfg.data_dir, cfg.publisher_key)
    assert lib.load().ok and lib.version == 1
    stories = lib.stories()
    assert len(stories) == 8 and all(s.demo for s in stories)
    assert {s.language: sum(t.language == s.language for t in stories) for s in stories} == {
        "en": 2, "es": 2, "fr": 2, "ar": 2}
    assert "Anonymous" in {s.display_name for s in stories}
    assert lib.catalog.recipients == (RECIPIENT,)  # type: ignore[union-attr]
    assert lib.catalog.prompts == ("work", "why", "change", "message")  # type: ignore[union-attr]
    for story in stories:
        audio = lib.audio_path(story)
        info = sf.info(audio)
        assert (info.format, info.subtype, info.samplerate, info.channels) == (
            "OGG", "OPUS", 48_000, 1)
        pcm, rate = sf.read(audio)
        assert abs(len(pcm) / rate - story.duration_s) <= 0.1
        assert 3 < story.duration_s < 40
        assert pcm.std() > 0.01  # speech, not silence
    # No WAV (nor anything but the catalog and its audio) went into the data directory.
    names = {p.name for p in cfg.data_dir.rglob("*") if p.is_file()}
    assert not [n for n in names if n.endswith(".wav")]
    assert {n for n in names if not n.endswith(".log")} == {
        ".lock", "catalog.json", "catalog.json.sig", *(f"{s.id}.ogg" for s in stories)}


def test_demo_stories_twice_gives_version_2(demo_run: tuple[Path, str, str]) -> None:
    path, _before, _out = demo_run
    text = path.read_text(encoding="utf-8")
    out = _run_cli(path)
    assert "version 2" in out
    assert path.read_text(encoding="utf-8") == text  # the same key, the same line
    cfg = kiosk_config.load(path)
    lib = StoryLibrary(cfg.data_dir, cfg.publisher_key)
    assert lib.load().ok and lib.version == 2 and len(lib.stories()) == 8


def test_demo_stories_needs_a_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(kiosk_config.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo-stories"]) == 2
    assert "needs a config file" in capsys.readouterr().err
    assert not (tmp_path / "demo-data" / "kiosk" / "stories").exists()


def test_demo_stories_will_not_replace_a_real_publishing_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_config(tmp_path, f'publisher_key = "{OTHER_KEY.verify_key}"\n')
    before = path.read_text()
    assert cli.main(["--config", str(path), "demo-stories"]) == 1
    assert "already pins another publishing key" in capsys.readouterr().err
    assert path.read_text() == before
    assert not (tmp_path / "kdata" / "stories").exists()


def test_demo_stories_needs_recipients(tmp_path: Path) -> None:
    path = tmp_path / "kiosk.toml"
    path.write_text('data_dir = "kdata"\n', encoding="utf-8")
    with pytest.raises(demo_mod.DemoStoriesError, match="no recipients"):
        demo_mod.make_demo_stories(kiosk_config.load(path), config_path=path)


KEY_TEXT = str(KEY.verify_key)


@pytest.mark.parametrize(("text", "expected"), [
    # No tables: appended, a missing final newline supplied.
    ('data_dir = "d"', f'data_dir = "d"\npublisher_key = "{KEY_TEXT}"\n'),
    ("", f'publisher_key = "{KEY_TEXT}"\n'),
    # Before the comments and blank lines that introduce the first table.
    ('a_top = 1\n\n# idle\n[idle]\nwarn_after_s = 4\n',
     f'a_top = 1\npublisher_key = "{KEY_TEXT}"\n\n# idle\n[idle]\nwarn_after_s = 4\n'),
    ('# only a comment\n[idle]\n', f'publisher_key = "{KEY_TEXT}"\n# only a comment\n[idle]\n'),
    # An existing top-level line is replaced in place; a table's key of the same name is not.
    ('x = 1\npublisher_key = "old"  # note\ny = 2\n[t]\npublisher_key = "t"\n',
     f'x = 1\npublisher_key = "{KEY_TEXT}"\ny = 2\n[t]\npublisher_key = "t"\n'),
    # CRLF files stay CRLF.
    ('a = 1\r\n[t]\r\nb = 2\r\n', f'a = 1\r\npublisher_key = "{KEY_TEXT}"\r\n[t]\r\nb = 2\r\n'),
    # A multi-line array at the top level.
    ('r = [\n  1,\n  2,\n]\n[t]\n', f'r = [\n  1,\n  2,\n]\npublisher_key = "{KEY_TEXT}"\n[t]\n'),
])
def test_pin_publisher_key_edits_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "kiosk.toml"
    path.write_bytes(text.encode())
    os.chmod(path, 0o640)
    demo_mod.pin_publisher_key(path, KEY_TEXT)
    assert path.read_bytes() == expected.encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["kiosk.toml"]


def test_pin_publisher_key_refuses_what_it_cannot_edit_safely(tmp_path: Path) -> None:
    path = tmp_path / "kiosk.toml"
    # A multi-line string whose line looks like a table header.
    text = 'note = """\n[not a table]\n"""\n[t]\n'
    path.write_text(text)
    with pytest.raises(demo_mod.DemoStoriesError, match="add this line"):
        demo_mod.pin_publisher_key(path, KEY_TEXT)
    assert path.read_text() == text
