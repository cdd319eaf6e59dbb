"""Demo stories: ``kiosk --config PATH demo-stories``.

Reads the fictional stories in ``assets/demo_stories.toml``, speaks each transcript
with espeak-ng in its language, resamples it to 48 kHz mono with sox and encodes it as
Ogg/Opus, all in a temporary folder outside the data directory. Then it builds a
catalog (version 1, or one more than the installed demo catalog), signs it with a demo
publishing key kept beside the config (``demo-publisher.key``, mode 0600, made once),
pins that key in the config file (``publisher_key = "idrverify1..."``) and installs the
catalog through :class:`~kiosk.stories.library.StoryLibrary`, like any other.

A kiosk that already pins another publishing key (the project's real one) is refused:
the demo would replace the real key and hide the real stories.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import soundfile as sf

from sync import catalog as catalog_mod
from sync.catalog import Catalog, CatalogError, Story
from sync.envelope import KeyFormatError
from sync.signing import SigningKey, format_signing_key_file, parse_signing_key_file

from .. import config as config_mod
from ..audio.opus import DEFAULT_KBPS, compression_level_for
from ..prompts import load_prompts
from ..vault.layout import fsync_dir
from .library import StoryLibrary

DEMO_STORIES_PATH: Path = (Path(__file__).resolve().parent.parent.parent / "assets"
                           / "demo_stories.toml")
DEMO_KEY_NAME = "demo-publisher.key"
RATE = 48_000
#: espeak-ng voices per language.
VOICES = {"en": "en+m3", "es": "es+f3", "fr": "fr+m1", "ar": "ar"}
_WORDS_PER_MINUTE = 150
_FIELDS = ("id", "title", "display_name", "country", "region", "themes", "language",
           "transcript")


class DemoStoriesError(Exception):
    """The demo stories could not be made; the message says why, for the person at it."""


@dataclass(frozen=True)
class DemoText:
    """A demo story as written in the TOML file, before it has audio."""

    id: str
    title: str
    display_name: str
    country: str
    region: str
    themes: tuple[str, ...]
    language: str
    transcript: str


@dataclass(frozen=True)
class DemoResult:
    count: int
    languages: tuple[str, ...]
    version: int
    directory: Path
    publisher_key: str
    config_path: Path
    key_path: Path


def load_demo_texts(path: Path | None = None) -> list[DemoText]:
    path = DEMO_STORIES_PATH if path is None else path
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DemoStoriesError(f"cannot read the demo stories in {path}: {exc}") from None
    entries = raw.get("story")
    if not isinstance(entries, list) or not entries:
        raise DemoStoriesError(f"{path}: no [[story]] entries")
    texts = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or set(entry) != set(_FIELDS):
            raise DemoStoriesError(f"{path}: story {number} must have exactly the fields"
                                   f" {', '.join(_FIELDS)}")
        if entry["language"] not in VOICES:
            raise DemoStoriesError(f"{path}: story {number}: no demo voice for language"
                                   f" {entry['language']!r}")
        texts.append(DemoText(**{**entry, "themes": tuple(entry["themes"])}))
    return texts


def speak(text: str, language: str, out: Path, *, workdir: Path,
          kbps: float = DEFAULT_KBPS) -> float:
    """Speak ``text`` into ``out`` (48 kHz mono Ogg/Opus); return its length in seconds.

    The intermediate WAV files stay in ``workdir`` (a temporary folder).
    """
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise DemoStoriesError(f"{tool} is not installed: run deploy/setup.sh")
    raw = workdir / f"{out.stem}.espeak.wav"
    wav = workdir / f"{out.stem}.48k.wav"
    try:
        # The text goes on stdin: a transcript is never taken for an option.
        subprocess.run(["espeak-ng", "-v", VOICES[language], "-s", str(_WORDS_PER_MINUTE),
                        "-w", str(raw), "--stdin"], input=text.encode("utf-8"), check=True,
                       capture_output=True, timeout=120)
        # espeak-ng speaks at 22.05 kHz; Opus takes 48 kHz. Peak-normalised to -3 dBFS.
        subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(wav),
                        "gain", "-n", "-3"], check=True, capture_output=True, timeout=120)
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr.decode("utf-8", "replace").strip()[:200]
        raise DemoStoriesError(f"{exc.cmd[0]} failed for a {language} story: {detail}"
                               ) from None
    except subprocess.TimeoutExpired as exc:
        raise DemoStoriesError(f"{exc.cmd[0]} took too long for a {language} story") from None
    pcm, rate = sf.read(wav, dtype="float32", always_2d=False)
    if rate != RATE or len(pcm) == 0:
        raise DemoStoriesError(f"sox made no 48 kHz audio for a {language} story")
    sf.write(out, pcm, RATE, format="OGG", subtype="OPUS",
             compression_level=compression_level_for(kbps))
    raw.unlink(missing_ok=True)
    wav.unlink(missing_ok=True)
    return len(pcm) / RATE


def ensure_demo_key(directory: Path) -> tuple[SigningKey, Path]:
    """The demo publishing key in ``directory/demo-publisher.key``, made (0600) if missing."""
    path = directory / DEMO_KEY_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        try:
            return parse_signing_key_file(path.read_text(encoding="utf-8")), path
        except (OSError, UnicodeDecodeError, KeyFormatError) as exc:
            raise DemoStoriesError(f"cannot use the demo publishing key {path}: {exc}"
                                   ) from None
    except OSError as exc:
        raise DemoStoriesError(f"cannot write the demo publishing key {path}:"
                               f" {exc.strerror}") from None
    key = SigningKey.generate()
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(format_signing_key_file(key))
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    fsync_dir(directory)
    return key, path


_KEY_LINE = re.compile(r"[ \t]*publisher_key[ \t]*=")
_TABLE_HEADER = re.compile(r"[ \t]*\[")
_COMMENT_OR_BLANK = re.compile(r"[ \t]*(#.*)?(\r?\n)?")


def pin_publisher_key(config_path: Path, key_text: str) -> None:
    """Set the top-level ``publisher_key`` in the TOML file, keeping every other line.

    An existing ``publisher_key`` line before the first ``[table]`` is replaced;
    otherwise the line goes after the last top-level line (before the comments that
    introduce the first table), or at the end of a file without tables. The result is
    checked with tomllib: it must hold the same values, the key aside.
    """
    path = config_path.resolve()
    text = path.read_bytes().decode("utf-8")  # not read_text: keep "\r\n" as it is
    before = tomllib.loads(text)
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    line = f'publisher_key = "{key_text}"{newline}'
    header = next((i for i, ln in enumerate(lines) if _TABLE_HEADER.match(ln)), len(lines))
    existing = [i for i in range(header) if _KEY_LINE.match(lines[i])]
    if existing:
        lines[existing[0]] = line
    else:
        at = header
        if header < len(lines):
            while at > 0 and _COMMENT_OR_BLANK.fullmatch(lines[at - 1]):
                at -= 1
        if at > 0 and not lines[at - 1].endswith("\n"):
            lines[at - 1] += newline
        lines.insert(at, line)
    updated = "".join(lines)
    try:
        after = tomllib.loads(updated)
    except tomllib.TOMLDecodeError:
        after = None
    expected = {**before, "publisher_key": key_text}
    if after != expected:
        raise DemoStoriesError(f"could not pin the key in {config_path} safely; add this line"
                               f" before the first [table] yourself: {line.strip()}")
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(updated)
            f.flush()
            os.chmod(temp, path.stat().st_mode & 0o7777)
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def make_demo_stories(cfg: config_mod.KioskConfig, *, config_path: Path,
                      texts_path: Path | None = None) -> DemoResult:
    """Make, sign, pin and install the demo stories; :class:`DemoStoriesError` if not."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise DemoStoriesError(f"no config file at {config_path}: demo-stories pins its key"
                               " in one")
    if not cfg.recipients:
        raise DemoStoriesError(f"{config_path} names no recipients: a catalog must carry the"
                               " recipients kiosks seal to")
    texts = load_demo_texts(texts_path)
    key, key_path = ensure_demo_key(config_path.parent)
    verify_text = str(key.verify_key)
    if cfg.publisher_key and cfg.publisher_key != verify_text:
        raise DemoStoriesError(
            f"{config_path} already pins another publishing key ({cfg.publisher_key[:20]}...):"
            " demo stories would replace it and hide the stories it signed. Remove the"
            " publisher_key line first if this kiosk is for demos only.")
    library = StoryLibrary(cfg.data_dir, verify_text)
    version = (library.installed_version() or 0) + 1
    prompts = tuple(p.id for p in load_prompts())
    with tempfile.TemporaryDirectory(prefix="idr-demo-stories-") as tmp:
        work = Path(tmp)
        stories = []
        audio: dict[str, Path] = {}
        for text in texts:
            out = work / f"{text.id}.ogg"
            seconds = speak(text.transcript, text.language, out, workdir=work,
                            kbps=cfg.recording.opus_bitrate_kbps)
            size, digest = _size_and_hash(out)
            stories.append(Story(
                id=text.id, title=text.title, display_name=text.display_name,
                country=text.country, region=text.region, themes=text.themes,
                language=text.language, duration_s=round(seconds, 3),
                transcript=text.transcript, audio_sha256=digest, size=size,
                url=f"stories/{text.id}.ogg", demo=True))
            audio[text.id] = out
        issued = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        catalog = Catalog(version=version, issued_at=issued, recipients=cfg.recipients,
                          prompts=prompts, stories=tuple(stories))
        data = catalog_mod.build(catalog)
        signature = catalog_mod.sign(data, key)
        pin_publisher_key(config_path, verify_text)
        library.install(data, signature, audio)
    return DemoResult(count=len(stories), languages=tuple(sorted({s.language for s in stories})),
                      version=version, directory=library.directory,
                      publisher_key=verify_text, config_path=config_path, key_path=key_path)


def _size_and_hash(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
        return f.tell(), digest.hexdigest()


def run_cli(cfg: config_mod.KioskConfig) -> int:
    """``kiosk demo-stories``: make them, say what was made; 2 when refused."""
    if cfg.source is None:
        print("kiosk demo-stories: needs a config file (--config PATH or"
              f" ${config_mod.ENV_VAR}): it pins the demo publishing key there",
              file=sys.stderr)
        return 2
    try:
        result = make_demo_stories(cfg, config_path=cfg.source)
    except (DemoStoriesError, CatalogError) as exc:
        print(f"kiosk demo-stories: {exc}", file=sys.stderr)
        return 1
    try:
        config_mod.load(result.config_path)
    except config_mod.ConfigError as exc:  # pin_publisher_key checked it; say so if not
        print(f"kiosk demo-stories: the config no longer loads: {exc}", file=sys.stderr)
        return 1
    print(f"Made {result.count} demo stories in {len(result.languages)} languages"
          f" ({', '.join(result.languages)}): catalog version {result.version} installed in"
          f" {result.directory}")
    print(f"Demo publishing key {result.publisher_key} pinned in {result.config_path}"
          f" (secret key: {result.key_path})")
    return 0
