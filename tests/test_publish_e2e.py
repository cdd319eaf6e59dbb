"""Issue 12's first "done when", on the real stack: a defender's story goes from the
kiosk's microphone to the vetting team and back to the kiosk's speakers.

A real ``central serve`` (the ``central`` fixture); the vetting team's keys made with
the real ``vet keygen``; a kiosk enrolled with ``kiosk enrol``, sealing to the team and
escrow recipients and pinning the team's publishing key; a whole defender session
(``kiosk walkthrough``) under Xvfb with espeak-ng speech fed into the virtual
microphone; ``kiosk sync --once``; ``vet login``, ``vet pull``, ``vet publish``; ``kiosk
sync --once`` again, which installs the signed catalog. Then the real app, on the same
display: the listen screen lists the new story by its title, and playing it puts the
published audio (as the service serves it to a vetter) on the virtual speakers,
correlated with it: as one whole when the playback was smooth, and 0.25 s window by
window (in order, start to end) always, so that an underrun on a starved test machine
(silence inserted, a few ms lost) is told apart from the wrong audio or a part missing.

Every command is a subprocess, as staff and vetters run them; nothing is faked.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from scipy import signal

from kiosk import config as kiosk_config
from kiosk.stories import StoryLibrary
from sync.catalog import verify
from tests.harness.central import CentralService
from tests.harness.kiosk_app import KioskProcess, png_pixels
from tests.harness.pulse import RATE, VirtualAudio
from tests.test_recorder_integration import assert_same_speech, similarity, speech_span

REPO = Path(__file__).resolve().parent.parent
VET = Path(sys.executable).parent / "vet"
PASSPHRASE = "correct horse battery"
TITLE = "Clean water, every single day"
#: A loaded two-core machine runs the app, the service and the audio daemon at once:
#: the limits are generous, the assertions are not.
WALKTHROUGH_TIMEOUT_S = 240
COMMAND_TIMEOUT_S = 120


def kiosk(config: Path, *args: str, env: dict[str, str] | None = None,
          timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kiosk", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def vet(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``vet`` command, its passphrase from the environment (no terminal)."""
    env = {**os.environ, "VET_HOME": str(home), "VET_PASSPHRASE": PASSPHRASE}
    return subprocess.run([str(VET), *args], capture_output=True, text=True, cwd=REPO,
                          env=env, stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT_S)


def key_lines(text: str) -> dict[str, str]:
    """The ``key: value`` lines that scripts read from ``vet``'s output."""
    return {k.strip(): v.strip() for k, sep, v in (line.partition(":")
                                                   for line in text.splitlines()) if sep}


#: The speakers' recording is compared with the published audio window by window: a gap
#: (an underrun on a starved machine) shifts the rest of the story, which one whole-story
#: correlation would count as a mismatch.
WINDOW_S = 0.25
#: Correlation peaks of speech wander by a few ms; a change of shift beyond this is a
#: gap (later) or a loss (earlier).
JITTER_S = 0.010
#: A window quieter than this (RMS, -50 dBFS) is silence, not speech to look for.
QUIET = 32768 * 10 ** (-50 / 20)


@dataclass(frozen=True)
class Window:
    start_s: float  # where in the story the window begins
    shift_s: float  # how much later than a smooth playback it is heard (gaps add up)
    ncc: float  # normalised correlation peak with what was heard there (nan: a pause)


def align(story: np.ndarray, heard: np.ndarray, heard_start: int) -> list[Window]:
    """Find each ``WINDOW_S`` of ``story`` in ``heard``, in order, at 16 kHz.

    The first window is looked for from 150 ms before to 1 s after ``heard_start`` (the
    speakers' first sample that is not silence); each next one from 150 ms before to
    500 ms after where it
    would be if the one before was right (found with ncc >= 0.8; else wider),
    so that a sentence said twice is never matched out of order. Shifts are relative
    to ``heard_start``.
    """
    a = signal.resample_poly(story.astype(np.float64), 1, 3)
    b = signal.resample_poly(heard.astype(np.float64), 1, 3)
    size, back = int(WINDOW_S * 16000), int(0.15 * 16000)
    ahead = 16000  # the first window: up to 1 s after the first sound
    expected = origin = heard_start // 3
    windows: list[Window] = []
    for i in range(0, len(a) - size + 1, size):
        window = a[i:i + size]
        if np.sqrt(np.mean(window ** 2)) < QUIET:
            # A pause (between two answers, say): nothing to find; it stays in its place.
            windows.append(Window(i / 16000, (expected - origin - i) / 16000, np.nan))
            expected += size
            continue
        lo = max(expected - back, 0)
        region = b[lo:min(expected + ahead + size, len(b))]
        if len(region) < size:
            # The recording ended before this part of the story: not heard.
            windows.append(Window(i / 16000, np.nan, 0.0))
            continue
        dots = signal.correlate(region, window, mode="valid", method="fft")
        energy = np.concatenate([[0.0], np.cumsum(region ** 2)])
        heard_rms = np.sqrt(np.maximum(energy[size:] - energy[:-size], 0) / size)
        ncc = dots / (np.maximum(heard_rms, 1e-9) * np.sqrt(size) * np.linalg.norm(window))
        # Silence on the speakers matches nothing (and would divide by almost zero).
        ncc[heard_rms < QUIET] = 0.0
        best = int(np.argmax(ncc))
        found = lo + best
        windows.append(Window(i / 16000, (found - origin - i) / 16000, float(ncc[best])))
        if ncc[best] >= 0.8:
            expected, ahead = found + size, int(0.5 * 16000)
        else:
            # Not found with confidence (lost, or a gap inside it): the next one is
            # looked for from the same place, up to a window further ahead.
            ahead += size
    return windows


def prioritise(pid: int, nice: int = -10) -> bool:
    """Give every thread of ``pid`` the CPU before the test machine's other work.

    A kiosk has its machine to itself; this test shares two cores with other test runs
    (load averages of 30-50 were seen), under which the player's PortAudio thread
    misses its deadlines (ALSA "underrun occurred") and the speakers get gaps that no
    kiosk in a hall would have. Threads made later (the player's) inherit the value.
    Needs CAP_SYS_NICE (root in CI); without it the test runs at the normal priority.
    """
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.setpriority(os.PRIO_PROCESS, int(task.name), nice)
    except (PermissionError, FileNotFoundError):
        return False
    return True


def step(timings: dict[str, float], name: str, began: float) -> None:
    timings[name] = time.monotonic() - began
    print(f"e2e: {name} took {timings[name]:.1f} s")


def test_a_defenders_story_is_vetted_published_and_played_on_the_kiosk(
        central: CentralService, tmp_path: Path, virtual_audio: VirtualAudio,
        virtual_display: str, speech: Callable[..., Path]) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    env = {**os.environ, **virtual_audio.env, "DISPLAY": virtual_display,
           "KIVY_HOME": str(tmp_path / "kivy")}
    env.pop("KIOSK_CONFIG", None)

    # -- the vetting team's keys; the service learns the publishing key -----------------
    home = tmp_path / "vet-home"
    began = time.monotonic()
    done = vet(home, "keygen", "--work-factor", "10")
    assert done.returncode == 0, done.stdout + done.stderr
    keys = key_lines(done.stdout)
    assert keys["recipient"].startswith("age1pq1") and keys["escrow"].startswith("age1pq1")
    assert keys["publisher"].startswith("idrverify1")
    central.cli("set-publisher-key", keys["publisher"])
    step(timings, "keygen", began)

    # -- the kiosk: seals to the team and escrow, pins the publishing key, enrols --------
    data_dir = tmp_path / "kiosk-data"
    config = tmp_path / "kiosk.toml"
    # interval_s: the app's own worker must not upload the walkthrough's submission
    # before `kiosk sync --once` does (its first pass, 10 s after start, finds nothing).
    config.write_text(f'data_dir = "{data_dir}"\n'
                      f'recipients = ["{keys["recipient"]}", "{keys["escrow"]}"]\n'
                      f'publisher_key = "{keys["publisher"]}"\n'
                      "[display]\nkiosk_mode = false\n"
                      "[sync]\ninterval_s = 3600\n", encoding="utf-8")
    done = kiosk(config, "enrol", "--server", central.url, "--code", central.enrol_code())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("enrolled as dev-")

    # -- a defender's session under Xvfb, speech into the virtual microphone ------------
    wav = speech("en", repeat=2)
    feeding = threading.Event()

    def feed() -> None:
        # Speech into the microphone for as long as the walkthrough runs.
        while not feeding.is_set():
            virtual_audio.play_into_mic(wav).wait()

    feeder = threading.Thread(target=feed, daemon=True)
    shots = tmp_path / "shots"
    began = time.monotonic()
    feeder.start()
    try:
        done = kiosk(config, "walkthrough", "--screenshots", str(shots / "defender"),
                     "--lang", "en", env=env, timeout=WALKTHROUGH_TIMEOUT_S)
    finally:
        feeding.set()
        feeder.join(30)
    step(timings, "walkthrough", began)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    submission_id = done.stdout.split("walkthrough (en): submitted ", 1)[1].split(";")[0]
    defender_screens = {p.stem.split("-", 1)[1] for p in (shots / "defender").glob("*.png")}
    assert {"questions", "recording", "review", "receipt"} <= defender_screens

    # -- kiosk sync --once: the sealed submission reaches the vetting queue -------------
    began = time.monotonic()
    done = kiosk(config, "sync", "--once")
    step(timings, "first sync", began)
    print(done.stdout, end="")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "acknowledged 1, pending 0, rejected 0" in done.stdout

    # -- the vetting team: login, pull, publish --------------------------------------
    token = central.vetter_token("team")
    began = time.monotonic()
    done = vet(home, "login", "--server", central.url, "--token", token)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 submissions in the queue" in done.stdout
    done = vet(home, "pull")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("pulled 1 submissions (")
    done = vet(home, "publish", submission_id, "--title", TITLE, "--anonymous")
    step(timings, "vet login + pull + publish", began)
    print(done.stdout, end="")
    assert done.returncode == 0, done.stdout + done.stderr
    published = key_lines(done.stdout)
    story_id = published["story"]
    assert published["catalog"] == "version 1, 1 stories"

    # What the service now serves: a catalog the publishing key verifies, and the audio.
    with httpx.Client(base_url=f"{central.url}/api/v1", timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        catalog = verify(http.get("/catalog").content, http.get("/catalog.sig").text,
                         keys["publisher"])
        reply = http.get(f"/stories/{story_id}.ogg")
        assert reply.status_code == 200, reply.text
        ogg = reply.content
    story = catalog.story(story_id)
    assert story is not None
    assert (story.title, story.display_name, story.language) == (TITLE, "Anonymous", "en")
    assert hashlib.sha256(ogg).hexdigest() == story.audio_sha256

    # -- kiosk sync --once again: the signed catalog and the audio are installed -------
    began = time.monotonic()
    done = kiosk(config, "sync", "--once")
    step(timings, "second sync", began)
    print(done.stdout, end="")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "catalog: version 1" in done.stdout.splitlines()
    cfg = kiosk_config.load(config)
    library = StoryLibrary(cfg.data_dir, cfg.publisher_key)
    library.load()
    assert [s.id for s in library.stories()] == [story_id]
    assert library.audio_path(story_id).read_bytes() == ogg  # byte-identical

    # -- the real app: the listen screen lists the story; playing it reaches the speakers
    workdir = tmp_path / "app"
    workdir.mkdir()
    began = time.monotonic()
    app = KioskProcess(config=config, workdir=workdir, env=env,
                       screenshot_dir=shots / "visitor")
    try:
        app.wait_for_screen("attract", timeout=60)
        print(f"e2e: the app runs at nice -10: {prioritise(app.proc.pid)}")
        app.tap("listen_button")
        app.wait_for_screen("stories", timeout=30)
        assert app.call("call", method="shown") == [story_id]
        tiles = app.call("prop", id="tiles", name="data")
        assert [(t["story_id"], t["title"]) for t in tiles] == [(story_id, TITLE)]
        stories_png = app.screenshot("stories")
        app.call("app_call", method="visitor_event", args=["open", story_id])
        app.wait_for_screen("story", timeout=30)
        assert app.call("source_text", id="title") == TITLE
        speakers = virtual_audio.record_speakers()
        app.tap("play_button")
        deadline = time.monotonic() + story.duration_s + 60
        # The state goes to "playing" at the touch; wait for the story to end by itself.
        assert app.call("app_call", method="visitor_state") == "playing"
        time.sleep(1.0)
        story_png = app.screenshot("playing")
        while app.call("app_call", method="visitor_state") != "stopped":
            assert time.monotonic() < deadline, "the story never ended"
            time.sleep(0.2)
        time.sleep(0.5)
        heard = speakers.stop()
    finally:
        app.close()
    step(timings, "app: listen and play", began)
    underruns = app.log.read_text(errors="replace").count("underrun occurred")
    print(f"e2e: ALSA underruns reported by the app: {underruns}")
    sf.write(tmp_path / "speakers.wav", heard, RATE)  # for people to listen to
    for png in (stories_png, story_png):
        assert len(np.unique(png_pixels(png).reshape(-1, 3), axis=0)) > 50, png

    # -- the speakers played the published audio, whole ----------------------------------
    source, rate = sf.read(io.BytesIO(ogg), dtype="int16", always_2d=True)
    assert rate == RATE
    source = source[:, 0]
    s0, s1 = speech_span(source)
    r0, r1 = speech_span(heard)
    # Before the story the speakers carry exact silence; the first sample that is not
    # is where the story's stream begins.
    first_sound = int(np.flatnonzero(np.abs(heard.astype(np.int32)) > 2)[0])
    windows = align(source, heard, first_sound)
    voiced = [w for w in windows if not np.isnan(w.ncc)]
    nccs = np.array([w.ncc for w in voiced])
    matched = float(np.mean(nccs >= 0.8))
    # Where the confidently found windows were heard: a gap moves the rest later, a
    # loss (an underrun's recovery, or a stream's first tens of ms) earlier.
    shifts = np.array([w.shift_s for w in voiced if w.ncc >= 0.8])
    jumps = np.diff(shifts)
    print(f"e2e: published story {story_id}: {len(source) / RATE:.2f} s decoded"
          f" ({story.duration_s:.2f} s in the catalog), speech {(s1 - s0) / RATE:.3f} s;"
          f" speakers recorded {len(heard) / RATE:.2f} s, speech {(r1 - r0) / RATE:.3f} s;"
          f" whole-story ncc {similarity(source[s0:s1], heard[r0:r1]):.3f}")
    print(f"e2e: {len(voiced)} speech windows of {WINDOW_S} s: {matched:.0%} with ncc >="
          f" 0.8, median {np.median(nccs):.3f}, min {nccs.min():.3f}; heard"
          f" {shifts[0] * 1000:+.0f} ms to {shifts[-1] * 1000:+.0f} ms from where a smooth"
          f" playback puts them; {int(np.sum(jumps > JITTER_S))} jumps later,"
          f" {int(np.sum(jumps < -JITTER_S))} earlier")
    # The story, from its first 0.25 s to its last, is on the speakers in order (align
    # looks for each window only after the one before): its first and last windows are
    # heard (either of the first two or last two: a stream may lose its first tens of
    # ms, as test_app_listen allows), and 80 % of all windows correlate >= 0.8, with a
    # median >= 0.9. What the rest allows is a starved machine's underruns: each one
    # puts a stretch of silence inside a window, or loses a few ms there.
    assert max(w.ncc for w in voiced[:2]) >= 0.8, voiced[:2]
    assert max(w.ncc for w in voiced[-2:]) >= 0.8, voiced[-2:]
    assert matched >= 0.8 and np.median(nccs) >= 0.9, [(w.start_s, w.ncc) for w in voiced]
    # Whole: the speakers' speech lasts as long as the story's, give or take what the
    # underruns add (silence) or lose; a missing answer (4 s) is far outside this.
    assert -0.5 <= (r1 - r0 - (s1 - s0)) / RATE <= 1.0, ((s1 - s0) / RATE, (r1 - r0) / RATE)
    if underruns == 0:
        # A smooth playback: the story from where the speakers' sound begins (at most
        # 150 ms in: a new stream's first tens of ms are lost on the virtual audio path,
        # as test_app_listen allows after a seek) to its end, as one: the same length
        # of speech within 100 ms, a normalised correlation peak >= 0.8.
        begins = max(0.0, -shifts[0])
        print(f"e2e: no underruns; the speakers' sound begins {begins * 1000:.0f} ms into"
              " the story")
        assert begins <= 0.15, begins
        assert_same_speech(source[int(begins * RATE):], heard)
    timings["total"] = time.monotonic() - started
    print("e2e: timings " + json.dumps({k: round(v, 1) for k, v in timings.items()}))
