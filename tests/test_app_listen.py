"""Visitors listen, in the real app under Xvfb with the virtual speakers recorded: the
visitor walkthrough, seeking, filters, a refused catalog, and the idle rule."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from kiosk import config as kiosk_config
from kiosk.stories import StoryLibrary
from sync.catalog import BadAudio, BadSignature, build, parse, sign
from sync.envelope.mlkem import MlkemIdentity
from sync.signing import parse_signing_key_file
from tests.harness.kiosk_app import KioskProcess, png_pixels
from tests.harness.pulse import RATE, VirtualAudio
from tests.test_recorder_integration import assert_same_speech

PIN = "482915"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A kiosk config with the demo stories installed and a staff PIN; returns its folder."""
    folder = tmp_path_factory.mktemp("listen")
    config = folder / "kiosk.toml"
    config.write_text(f'data_dir = "{folder / "data"}"\n'
                      f'recipients = ["{MlkemIdentity.generate().recipient()}"]\n')
    for command, stdin in (("demo-stories", None), ("set-pin", f"{PIN}\n{PIN}\n")):
        done = subprocess.run([sys.executable, "-m", "kiosk", "--config", str(config), command],
                              input=stdin, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    return folder


def copy_of(demo: Path, tmp_path: Path, extra: str = "") -> Path:
    """A private copy of the demo kiosk (its own data, lock file and config)."""
    folder = tmp_path / "kiosk"
    shutil.copytree(demo, folder)
    text = (folder / "kiosk.toml").read_text().replace(str(demo), str(folder))
    (folder / "kiosk.toml").write_text(text + extra)
    return folder


def start(folder: Path, env: dict[str, str]) -> KioskProcess:
    return KioskProcess(config=folder / "kiosk.toml", workdir=folder, env=env,
                        screenshot_dir=folder / "shots")


@pytest.fixture
def env(virtual_audio: VirtualAudio, virtual_display: str) -> dict[str, str]:
    env = {**os.environ, **virtual_audio.env, "DISPLAY": virtual_display}
    env.pop("KIOSK_CONFIG", None)
    return env


def library(folder: Path) -> StoryLibrary:
    cfg = kiosk_config.load(folder / "kiosk.toml")
    lib = StoryLibrary(cfg.data_dir, cfg.publisher_key)
    lib.load()
    return lib


def story_pcm(lib: StoryLibrary, story_id: str) -> np.ndarray:
    data, rate = sf.read(lib.audio_path(lib.get(story_id)), dtype="int16")
    assert rate == RATE
    return data


def open_story(app: KioskProcess, story_id: str) -> None:
    app.wait_for_screen("attract")
    app.tap("listen_button")
    app.wait_for_screen("stories")
    app.call("app_call", method="visitor_event", args=["open", story_id])
    app.wait_for_screen("story")


def test_the_visitor_walkthrough_plays_a_story_to_the_speakers(
        demo, tmp_path, env, virtual_audio: VirtualAudio) -> None:
    folder = copy_of(demo, tmp_path)
    shots = tmp_path / "shots"
    speakers = virtual_audio.record_speakers()
    done = subprocess.run([sys.executable, "-m", "kiosk", "--config",
                           str(folder / "kiosk.toml"), "walkthrough", "--visitor",
                           "--screenshots", str(shots), "--lang", "en"],
                          env={**env, "KIVY_HOME": str(tmp_path / "kivy")},
                          capture_output=True, text=True, timeout=180)
    captured = speakers.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    story_id = done.stdout.split("played story ", 1)[1].split()[0]
    names = {p.stem.split("-", 1)[1] for p in shots.glob("*.png")}
    assert {"attract", "stories", "filter", "filtered", "story", "playing", "ended"} <= names
    for png in shots.glob("*.png"):
        assert len(np.unique(png_pixels(png).reshape(-1, 3), axis=0)) > 50, png
    # What reached the speakers is the story, whole: same length, correlation >= 0.8.
    assert_same_speech(story_pcm(library(folder), story_id), captured)


def test_seek_to_the_middle_then_play_starts_there(demo, tmp_path, env,
                                                   virtual_audio: VirtualAudio) -> None:
    folder = copy_of(demo, tmp_path)
    lib = library(folder)
    story = next(s for s in lib.stories() if s.language == "en")
    source = story_pcm(lib, story.id)
    app = start(folder, env)
    try:
        open_story(app, story.id)
        time.sleep(0.5)
        # A touch on the middle of the bar, held a moment, as a finger drags it there.
        x, y = app.call("center", id="seek")
        app.call("press", x=x, y=y, seconds=0.2)
        time.sleep(0.6)
        sought = app.call("call", method="position_s")
        # The bar's centre is the story's middle, give or take the cursor's rounding.
        assert abs(sought - story.duration_s / 2) < 0.05 * story.duration_s, sought
        speakers = virtual_audio.record_speakers()
        app.tap("play_button")
        deadline = time.monotonic() + story.duration_s + 10
        while app.call("app_call", method="visitor_state") != "stopped":
            assert time.monotonic() < deadline, "the story never ended"
            time.sleep(0.2)
        time.sleep(0.3)
        captured = speakers.stop()
    finally:
        app.close()
    # Where in the story the speakers' audio starts: the peak of the correlation of
    # its first 3 s with the whole story (both at 16 kHz).
    story16 = signal.resample_poly(source.astype(float), 1, 3)
    heard16 = signal.resample_poly(captured.astype(float), 1, 3)
    begins = int(np.argmax(signal.correlate(story16, heard16[:3 * 16000], mode="valid",
                                           method="fft"))) / 16000
    # It starts where the bar was touched, to within 150 ms: the correlation peak of
    # speech wanders by some tens of ms, and the virtual audio path (PortAudio, ALSA's
    # pulse plugin, a null sink) may drop the first few tens of ms of a new stream.
    assert abs(begins - sought) <= 0.15, (sought, begins)
    # ...and it is the story from there to its end.
    assert_same_speech(source[int(begins * RATE):], captured)


def test_filters_show_exactly_the_matching_stories(demo, tmp_path, env) -> None:
    folder = copy_of(demo, tmp_path)
    lib = library(folder)
    app = start(folder, env)
    try:
        app.wait_for_screen("attract")
        app.tap("listen_button")
        app.wait_for_screen("stories")
        everything = [s.id for s in lib.stories()]
        assert app.call("call", method="shown") == everything
        for kind, values in (("language", lib.languages()), ("region", lib.regions()),
                             ("theme", lib.themes())):
            for value in values:
                app.call("call", method="set_filter", args=[kind, value])
                expected = [s.id for s in lib.stories()
                            if (s.themes if kind == "theme" else [getattr(s, kind)])
                            .__contains__(value)]
                assert app.call("call", method="shown") == expected, (kind, value)
                assert expected, (kind, value)
            app.call("call", method="set_filter", args=[kind, None])
        # Two filters at once; a combination that matches nothing says so.
        for language in lib.languages():
            for region in lib.regions():
                app.call("call", method="set_filter", args=["language", language])
                app.call("call", method="set_filter", args=["region", region])
                expected = [s.id for s in lib.stories()
                            if s.language == language and s.region == region]
                assert app.call("call", method="shown") == expected
                assert bool(app.call("source_text", id="empty")) == (not expected)
    finally:
        app.close()


@pytest.mark.parametrize("damage", ["signature", "story_hash"])
def test_a_bad_catalog_is_not_shown_and_staff_see_why(demo, tmp_path, env, damage) -> None:
    folder = copy_of(demo, tmp_path)
    lib = library(folder)
    before = [s.id for s in lib.stories()]
    stories_dir = folder / "data" / "stories"
    catalog = parse((stories_dir / "catalog.json").read_bytes())
    key = parse_signing_key_file((folder / "demo-publisher.key").read_text())
    doc = json.loads(build(catalog))
    doc["version"] = catalog.version + 1
    doc["stories"][0]["title"] = "A story the publisher never signed"
    if damage == "story_hash":
        doc["stories"][0]["audio_sha256"] = "0" * 64
    data = json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()
    signature = sign(data, key)
    if damage == "signature":
        data = data.replace(b"never signed", b"never SIGNED")
    audio = {s.id: lib.audio_path(s) for s in lib.stories()}
    with pytest.raises(BadSignature if damage == "signature" else BadAudio):
        lib.install(data, signature, audio)
    app = start(folder, env)
    try:
        app.wait_for_screen("attract")
        app.tap("listen_button")
        app.wait_for_screen("stories")
        assert app.call("call", method="shown") == before  # the stories it had
        app.tap("back_button")
        app.wait_for_screen("attract")
        app.call("press", x=20, y=780, seconds=2.3)
        time.sleep(2.6)
        app.call("press", x=1260, y=780, seconds=0.05)
        app.wait_for_screen("staff_pin")
        for digit in PIN:
            app.tap(f"key_{digit}")
            time.sleep(0.3)  # a person's pace (two touches within 250 ms are one)
        app.tap("key_ok")
        app.wait_for_screen("staff")
        facts = app.call("call", method="fact_values")
        assert facts["Catalog error"] not in ("none", ""), facts
        assert str(catalog.version) in facts["Catalog"]
    finally:
        app.close()


def test_idle_on_the_listen_screens_returns_to_attract_but_never_mid_story(
        demo, tmp_path, env) -> None:
    folder = copy_of(demo, tmp_path, extra="[idle]\nwarn_after_s = 3\ndiscard_after_s = 3\n")
    lib = library(folder)
    story = max(lib.stories(), key=lambda s: s.duration_s)
    assert story.duration_s > 8
    app = start(folder, env)
    try:
        app.wait_for_screen("attract")
        app.tap("listen_button")
        app.wait_for_screen("stories")
        app.wait_for_screen("attract", timeout=6)  # browsing, untouched
        open_story(app, story.id)
        app.tap("play_button")
        time.sleep(6)  # twice the idle time, the story still playing
        assert app.screen() == "story"
        assert app.call("app_call", method="visitor_state") == "playing"
        app.wait_for_screen("attract", timeout=story.duration_s + 6)
    finally:
        app.close()
