"""Kiosk app benchmark: the real app under Xvfb, driven through whole defender sessions
and a visitor browsing and playing 500 published stories.

    .venv/bin/python tests/bench/kiosk.py [--sessions N] [--part all|defender|visitor]
                                          [--json PATH]

The real ``kiosk run`` process on a private Xvfb (1280x800x24) and a private PulseAudio
with the virtual microphone, driven through its test driver (simulated touches, as in
tests/test_app_session.py), with ``KIOSK_BENCH_T0`` set so that the driver timestamps
frames, touches, screen changes and takes inside the app process. All figures come
from one run:

- **cold start** (target <= 3 s): from the parent's ``time.time()`` just before it
  spawns the process to the first frame drawn (buffer swap) after ``on_start``, with
  the attract screen current. Three starts; the target applies to the median, the
  maximum is reported too. The disk cache is warm (the same code ran a moment before),
  as on a kiosk that restarts; the first start also writes Kivy's config.
- **touch to first block** (target p95 <= 150 ms, over at least 20 takes): the delay
  from the touch on "record" to ``Recorder.start()`` (both timed in the app) plus the
  take's own ``first_block_latency_s`` (from ``start()`` to its first block). The three
  are reported; the target applies to the sum, take by take. The touch is simulated
  inside a Clock callback, so the input provider's own latency (SDL, evdev) is not in it.
- **screen transitions** (target p95 <= 100 ms): from the touch that changes screen to
  the first frame drawn after the ScreenManager's ``current`` changed, over every
  touch-made screen change in the sessions. The app fades screens over 0.15 s: this is
  the time until the *first frame of the fade* (the new screen starting to appear), not
  until the fade is over. Changes no touch made (the receipt after sealing) are
  reported separately, from the change to its first frame. The time is split into the
  touch's handlers (the new screen set up), the wait for the frame, drawing (on_draw)
  and the buffer swap (where Mesa's llvmpipe, the software renderer under Xvfb,
  rasterises), each as a p95, and per kind of change in the JSON's ``details``.
- **frames per second while recording** (target >= 30): frames drawn (buffer swaps)
  per second over a 4 s take while speech plays into the microphone and the level meter
  runs; the median over the takes of the first sessions. The main loop's rate (Kivy's
  ``Clock.get_rfps()``: loop iterations, drawn or not) is reported beside it, with
  the time a frame takes to draw and swap and the share of the main thread it takes.
- **idle CPU** (target <= 5 % of one core): utime + stime of the app process from
  ``/proc/PID/stat`` over 10 s on the attract screen, nobody touching it and nothing
  asked of the driver.
- **RSS growth** (target <= 20 MB): VmRSS of the app process after session 5 (warm)
  and after session N. Each session: share, language (en, es, fr, ar in turn), who,
  safety, consent (voice yes, anonymous, no contact), identity (a country), one answer
  of about 1 s of speech (more takes with "record again" when N is under 20, so that
  there are at least 20), skip the rest, submit, the receipt, done, back to attract.
  The first sessions record 4 s answers instead, for the frame rate. RSS swings by
  tens of MB between sessions, so the least-squares trend from session 5 to N is
  reported beside the difference.

The visitor's side is measured after the sessions, in an app started anew (its start
is reported as ``cold_start_500_stories_s``) on a signed catalog of 500 synthetic
stories that the benchmark builds and installs into its data dir through
``StoryLibrary.install``, with a bench publishing key pinned in its config: every
region, 14 themes (1 to 3 each), en/es/fr/ar in turn with titles in their language, and
bylines with and without a name. Each language's stories share one second of a tone of
its own (Ogg/Opus, copied under each story's id); every 40th story is about 15 s of
English speech. The defender's figures above run without a catalog, as before.

- **touch on "play" to the speakers** (target p95 <= 150 ms, over 24 plays): each play
  touches a story's tile in the grid's first rows, waits 0.4 s on the story screen (the
  player opens the story file and the output stream as the screen opens and decodes
  ahead), touches "play", listens 0.5 s and touches "back". The speakers' monitor is
  recorded all along by ``parec`` (raw, 10 ms latency) into a pipe read by a thread that
  notes ``time.monotonic()`` as each read returns; CLOCK_MONOTONIC is shared with the app
  process, where the touch is timed. The onset is the first sample at or above -40
  dBFS after the touch, found to the sample by matching the story's own decoded first
  20 ms (its tone, the known reference) around it. The target applies to **when the
  read bringing that sample returned** (``play_to_speakers``): by then the sound had
  surely been rendered by the sink, so this is an upper bound that includes parec's own
  delivery. Beside it: ``placed`` (the sample placed on the clock by the earliest
  arrivals, "read time less the duration of all samples so far"; an estimate within
  the null sink's 10 ms render blocks) and, from inside the app, PortAudio's own
  account (``play_to_dac_time``): the ``outputBufferDacTime`` of the first output block
  holding an audible sample, plus that sample's offset in the block, converted from
  PortAudio's stream clock (CLOCK_REALTIME on its ALSA host API) to time.monotonic() by
  the smallest ``monotonic() - currentTime`` over the stream's callbacks. Its parts:
  touch to ``stream.start()`` and start to that block's callback. The sink is a null
  sink: a sound card would add its own buffer after what is measured here. (Without a
  low-latency reader on its monitor, the null sink renders 2 s ahead and a new stream
  stalls for ~1.8 s after its first 60 ms: the recording also keeps the speakers
  behaving like a card during the CPU figure.)
- **frames per second while scrolling the grid** (target >= 30): a driver command sets
  the RecycleView's ``scroll_y`` once a frame, from the top to the bottom of all 500
  tiles over 3 s at an even speed (about 13,000 px/s: nearly every tile on screen is new
  each frame, the worst case); frames counted as for recording. A finger's flick
  (2,000 px/s for 3 s) is reported beside it.
- **filter change** (target p95 <= 100 ms, 17 changes: 5 regions, 5 themes and 4
  languages, each kind back to "All"): the filter's button is touched (the overlay
  opens), then a driver command does what a touch on a choice does (the overlay closes,
  ``StoriesScreen.set_filter``). Timed from that command to the first frame that
  shows what the grid settles on (the tiles laid out, their stories and places, and no
  overlay) before the next touch; split into handler, wait, draw and swap like the
  screen transitions. The touch on a choice itself is not in it.
- **CPU while a story plays** (target <= 15 % of one core): utime + stime of the app
  process over 8.5 s while the long story plays (from 1 s after "play"), as the idle
  figure. Mesa's llvmpipe threads, which rasterise every frame, are in the process:
  their share is reported beside it (``playing_rasteriser_cpu_percent``), with the
  frames drawn per second and the player's pace (position over wall time).

``other_load_cores`` is what the machine spent on other processes meanwhile (in
cores, from /proc/stat less this benchmark's own processes): on this 2-core machine a
test run alongside slows the frames and the transitions noticeably.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from kiosk.audio.opus import DEFAULT_KBPS, compression_level_for  # noqa: E402
from kiosk.prompts import load_prompts  # noqa: E402
from kiosk.stories.demo import pin_publisher_key  # noqa: E402
from kiosk.stories.library import StoryLibrary  # noqa: E402
from kiosk.stories.vocabulary import REGIONS, THEMES  # noqa: E402
from sync import catalog as catalog_mod  # noqa: E402
from sync.catalog import Catalog, Story  # noqa: E402
from sync.envelope.mlkem import MlkemIdentity  # noqa: E402
from sync.signing import SigningKey  # noqa: E402
from tests.harness.display import VirtualDisplay  # noqa: E402
from tests.harness.kiosk_app import AppDriverError, KioskProcess  # noqa: E402
from tests.harness.pulse import RATE, VirtualAudio  # noqa: E402
from tests.harness.speech import VOICES, make_speech  # noqa: E402

TARGETS = {
    "cold_start_s": ("<=", 3.0),
    "touch_to_first_block_p95_ms": ("<=", 150.0),
    "screen_transition_p95_ms": ("<=", 100.0),
    "recording_fps_median": (">=", 30.0),
    "idle_cpu_percent_of_one_core": ("<=", 5.0),
    "rss_growth_mb": ("<=", 20.0),
    "play_to_speakers_p95_ms": ("<=", 150.0),
    "browse_scroll_fps": (">=", 30.0),
    "filter_change_p95_ms": ("<=", 100.0),
    "playing_cpu_percent_of_one_core": ("<=", 15.0),
}
LANGUAGES = ["en", "es", "fr", "ar"]
MIN_TAKES = 20
WARM_SESSIONS = 5
FPS_SESSIONS = 5
COLD_STARTS = 3
IDLE_S = 10.0
SHORT_ANSWER_S = 1.0
FPS_ANSWER_S = 4.0
# The visitor's side.
STORIES = 500
#: Every LONG_EVERY-th story (an English one) is about 15 s of speech, for the CPU figure.
LONG_EVERY = 40
TONE_S = 1.0
TONE_HZ = {"en": 440.0, "es": 554.4, "fr": 659.3, "ar": 784.0}
PLAYS = 24
#: How long the visitor looks at a story before touching play (the player decodes ahead
#: as the story opens) and how long each play is heard before "back".
BEFORE_PLAY_S = 0.4
HEARD_S = 0.5
SCROLL_S = 3.0
#: A finger's quick flick, for the second scroll (the first crosses the whole grid).
FLICK_PX_S = 2000.0
PLAYING_S = 8.5
#: Between two filter changes: the overlay opens, then a value is chosen.
FILTER_PACE_S = 0.35
#: As kiosk/driver.py's AUDIBLE: an int16 sample at or above -40 dBFS is audible.
AUDIBLE = 328
#: parec's requested latency on the speakers' monitor: the null sink then renders in
#: blocks this long, which bounds how early a sample can reach the monitor.
MONITOR_LATENCY_MS = 10


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if values else float("nan")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat(5) (utime, stime), counted from the state (field 3).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid``, summed by thread name (``comm``)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue  # the thread ended
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf(
            "SC_CLK_TCK")
    return out


def machine_busy_s() -> float:
    """CPU seconds spent by the whole machine (all cores, every process) since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s(pids: list[int]) -> float:
    """CPU seconds of this process, its reaped children and the living ``pids``."""
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    for pid in pids:
        try:
            total += cpu_s(pid)
        except OSError:
            pass
    return total


def wait_until(check: Any, timeout: float, what: str, poll: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AppDriverError(f"timed out waiting for {what}")
        time.sleep(poll)
    return value


class Bench:
    def __init__(self, work: Path, display: str, audio: VirtualAudio) -> None:
        self.work = work
        self.audio = audio
        self.env = {**os.environ, **audio.env, "DISPLAY": display,
                    "KIOSK_STRICT_LOGS": "1"}
        self.env.pop("KIOSK_CONFIG", None)
        team = MlkemIdentity.generate()
        self.recipient = str(team.recipient())
        self.data = work / "data"
        self.data.mkdir()
        self.config = work / "kiosk.toml"
        self.config.write_text(f'data_dir = "{self.data}"\n'
                               f'recipients = ["{team.recipient()}"]\n'
                               "[idle]\nwarn_after_s = 120\ndiscard_after_s = 60\n")
        speech_dir = work / "speech"
        speech_dir.mkdir()
        self.short: dict[str, Path] = {}
        for lang in LANGUAGES:
            full = make_speech(speech_dir / f"{lang}.wav", lang)
            self.short[lang] = trim(full, speech_dir / f"{lang}-short.wav", SHORT_ANSWER_S)
        self.long = trim(speech_dir / "en.wav", speech_dir / "en-long.wav", FPS_ANSWER_S)
        self.app: KioskProcess | None = None
        self.changes: list[dict[str, Any]] = []
        self.takes: list[dict[str, Any]] = []
        self.fps: list[float] = []
        self.loop_fps: list[float] = []
        self.rfps: list[float] = []
        self.frame_ms: list[float] = []
        self.render_busy: list[float] = []
        self.visitor_changes: list[dict[str, Any]] = []

    # -- the app ------------------------------------------------------------------------
    def start(self, index: int) -> tuple[KioskProcess, dict[str, Any]]:
        # One folder for every start: Kivy's config is written on the first only, as
        # on a kiosk that restarts.
        workdir = self.work / "app"
        workdir.mkdir(exist_ok=True)
        env = {**self.env, "KIOSK_BENCH_T0": repr(time.time())}
        app = KioskProcess(config=self.config, workdir=workdir, env=env,
                           screenshot_dir=workdir / "shots")
        started = wait_until(lambda: (s := app.call("bench_start"))["first_frame"] and s,
                             30, "the first frame")
        return app, started

    def cold_starts(self) -> list[dict[str, float]]:
        starts = []
        for index in range(COLD_STARTS):
            app, started = self.start(index)
            if started["first_frame_screen"] != "attract":
                raise AppDriverError(f"first frame on {started['first_frame_screen']!r}")
            starts.append({"to_on_start_s": started["on_start"] - started["t0"],
                           "to_first_frame_s": started["first_frame"] - started["t0"]})
            if index < COLD_STARTS - 1:
                app.close()
                app.socket_path.unlink(missing_ok=True)
            else:
                self.app = app
        return starts

    def idle_cpu(self) -> float:
        app = self.app
        assert app is not None
        app.wait_for_screen("attract")
        time.sleep(2.0)  # whatever start-up left to do is done
        pid = app.proc.pid
        cpu0, wall0 = cpu_s(pid), time.monotonic()
        time.sleep(IDLE_S)
        cpu1, wall1 = cpu_s(pid), time.monotonic()
        return 100 * (cpu1 - cpu0) / (wall1 - wall0)

    # -- one session ------------------------------------------------------------------------
    def tap(self, widget_id: str) -> float:
        assert self.app is not None
        return self.app.call("bench_tap", id=widget_id)

    def on(self, name: str, timeout: float = 10.0) -> None:
        assert self.app is not None
        app = self.app
        wait_until(lambda: app.screen() == name, timeout, f"screen {name!r}")

    def state(self) -> dict[str, Any]:
        assert self.app is not None
        return self.app.call("session")

    def session(self, lang: str, *, takes: int, long: bool) -> None:
        self.on("attract")
        self.tap("share_button")
        self.on("language")
        self.tap(f"lang_{lang}")
        for name in ("who", "safety"):
            self.on(name)
            self.tap("next_button")
        self.on("consent")
        for widget_id in ("publish_yes", "name_anonymous", "contact_no"):
            self.tap(widget_id)
        self.tap("next_button")
        self.on("identity")
        assert self.app is not None
        self.app.call("call", method="select_country", args=["KE"])
        self.tap("next_button")
        self.on("questions")
        wait_until(lambda: self.app.call("bench_mic_ready"), 10, "the microphone", 0.05)
        for _ in range(takes):
            self.record(self.long if long else self.short[lang], fps=long)
        self.tap("next_button")
        while (state := self.state())["state"] == "questions":
            self.tap("skip_button")
        if state["state"] != "review":
            raise AppDriverError(f"expected review, the session is {state['state']!r}")
        self.on("review")
        self.tap("submit_button")
        self.on("receipt", 30)
        self.tap("done_button")
        self.on("attract")
        self.drain()

    def record(self, wav: Path, *, fps: bool) -> None:
        assert self.app is not None
        before = self.state()
        prompt = list(before["answers"])[before["question"]]
        old = before["answers"][prompt]
        self.tap("rerecord_button" if old else "record_button")
        player = self.audio.play_into_mic(wav)
        frames0 = self.app.call("bench_frames")
        if player.wait(30) != 0:
            raise RuntimeError("paplay failed")
        frames1 = self.app.call("bench_frames")
        time.sleep(0.1)
        self.tap("record_button")  # now "Stop"
        wait_until(lambda: self.state()["answers"][prompt] not in (None, old), 15,
                   "the answer to be sealed")
        if fps:
            seconds = frames1["t"] - frames0["t"]
            self.fps.append((frames1["frames"] - frames0["frames"]) / seconds)
            self.loop_fps.append((frames1["loops"] - frames0["loops"]) / seconds)
            self.rfps.append(frames1["rfps"])
            drawn = frames1["frames"] - frames0["frames"]
            rendering = frames1["render_s"] - frames0["render_s"]
            self.frame_ms.append(1000 * rendering / max(drawn, 1))
            self.render_busy.append(100 * rendering / seconds)

    def drain(self) -> None:
        assert self.app is not None
        drained = self.app.call("bench_drain")
        self.changes += drained["changes"]
        self.takes += drained["takes"]

    # -- the visitor's side ---------------------------------------------------------------------
    def install_stories(self) -> dict[str, Any]:
        """Build, sign and install the 500-story catalog into the bench's data dir, with a
        bench publishing key pinned in its config (the app is not running)."""
        began = time.monotonic()
        key = SigningKey.generate()
        verify_text = str(key.verify_key)
        stories, audio, self.references = make_stories(self.work / "stories-src")
        made = time.monotonic()
        issued = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        catalog = Catalog(version=1, issued_at=issued, recipients=(self.recipient,),
                          prompts=tuple(p.id for p in load_prompts()), stories=tuple(stories))
        data = catalog_mod.build(catalog)
        signature = catalog_mod.sign(data, key)
        pin_publisher_key(self.config, verify_text)
        StoryLibrary(self.data, verify_text).install(data, signature, audio)
        self.stories = stories
        return {"stories_audio_made_s": round(made - began, 2),
                "catalog_bytes": len(data),
                "catalog_install_s": round(time.monotonic() - made, 2)}

    def visitor(self) -> dict[str, Any]:
        """Everything measured on the visitor's side, in one app started on the catalog."""
        out: dict[str, Any] = {}
        app, started = self.start(COLD_STARTS)
        self.app = app
        out["cold_start_500_stories_s"] = started["first_frame"] - started["t0"]
        speakers = SpeakerTimeline(self.audio)
        try:
            self.on("attract")
            self.tap("listen_button")
            self.on("stories")
            time.sleep(0.5)
            out["scroll_all"] = self.scroll(None)
            out["scroll_flick"] = self.scroll(FLICK_PX_S * SCROLL_S)
            out["filters"] = self.filters()
            app.call("bench_scroll_top")
            time.sleep(0.3)
            out["plays"] = self.plays()
            out["playing"] = self.playing()
        finally:
            speakers.stop()
        for play in out["plays"]:
            play.update(speakers.onset(play["touch_at"], self.references[play["language"]]))
        out["monitor_reads"] = speakers.read_stats()
        out["visitor_pid"] = app.proc.pid
        return out

    def scroll(self, distance_px: float | None) -> dict[str, Any]:
        """Scroll the grid from the top over SCROLL_S at an even speed: ``distance_px``
        (None: the whole grid), counting frames as the recording figure does."""
        assert self.app is not None
        app = self.app
        app.call("bench_scroll_top")
        time.sleep(0.3)
        started = app.call("bench_scroll", seconds=SCROLL_S, distance_px=distance_px)
        result = wait_until(lambda: app.call("bench_scroll_result"), SCROLL_S + 10,
                            "the scroll", 0.1)
        seconds = result["ended"] - result["began"]
        drawn = result["frames1"] - result["frames0"]
        rendering = result["render1"] - result["render0"]
        intervals = np.diff(result["frame_at"]) if len(result["frame_at"]) > 1 else [0.0]
        return {"px": round(started["distance_px"]), "px_per_s": round(
                    started["distance_px"] / seconds),
                "fps": drawn / seconds,
                "loop_fps": (result["loops1"] - result["loops0"]) / seconds,
                "frame_render_ms": 1000 * rendering / max(drawn, 1),
                "main_thread_rendering_percent": 100 * rendering / seconds,
                "frame_interval_p95_ms": 1000 * p95(list(intervals)),
                "frame_interval_max_ms": 1000 * float(np.max(intervals))}

    def filters(self) -> list[dict[str, Any]]:
        """Each filter kind several times: the filter's button (the overlay opens), then
        a value chosen; the time runs from the choice to the first frame that shows the
        tiles the grid settles on (before the next change)."""
        assert self.app is not None
        app = self.app
        values = {"region": [r for r in REGIONS][:5],
                  "theme": sorted({t for s in self.stories for t in s.themes})[:5],
                  "language": ["ar", "en", "es", "fr"]}
        plan: list[tuple[str, str | None]] = []
        for kind, chosen in values.items():
            plan += [(kind, v) for v in chosen] + [(kind, None)]
        opened = []
        for kind, value in plan:
            opened.append(self.tap(f"{kind}_filter"))
            time.sleep(FILTER_PACE_S)
            app.call("bench_filter", kind=kind, value=value)
            time.sleep(FILTER_PACE_S)
        time.sleep(1.2)
        entries = sorted(app.call("bench_filters"), key=lambda e: e["touch_at"])
        if len(entries) != len(plan):
            raise AppDriverError(f"{len(entries)} filter changes timed, {len(plan)} made")
        for entry, after in zip(entries, opened[1:] + [float("inf")], strict=True):
            # Up to the next touch (on a filter's button, which opens the overlay again).
            frames = [f for f in entry.pop("frames") if f["frame_at"] < after]
            settled = next((f for f in frames if frames and f["tiles"] == frames[-1]["tiles"]),
                           None)
            entry["frames_drawn"] = len(frames)
            if settled is None:
                entry.update(frame_at=None)
                continue
            entry.update(draw_at=settled["draw_at"], swap_at=settled["swap_at"],
                         frame_at=settled["frame_at"],
                         frames_before_settled=frames.index(settled))
        self.drain_visitor()
        return entries

    def plays(self) -> list[dict[str, Any]]:
        """PLAYS times: touch a story's tile, wait, touch play, listen a moment, back."""
        assert self.app is not None
        app = self.app
        shown = app.call("call", method="shown")
        by_id = {s.id: s for s in self.stories}
        # Short stories in the first three rows, whole on the screen (the grid is at
        # the top): all four languages.
        candidates = [i for i in shown[:6] if by_id[i].duration_s <= TONE_S + 0.5]
        plays = []
        for number in range(PLAYS):
            story_id = candidates[number % len(candidates)]
            tile_at = app.call("bench_tap_tile", story_id=story_id)
            self.on("story")
            time.sleep(BEFORE_PLAY_S)
            app.call("bench_tap", id="play_button")
            time.sleep(HEARD_S)
            app.call("bench_tap", id="back_button")
            self.on("stories")
            opened = [p for p in app.call("bench_plays") if p["touch_id"] == "play_button"]
            if len(opened) != 1 or opened[0]["first"] is None:
                raise AppDriverError(f"play {number}: no audible block timed ({opened})")
            play = opened[0]
            changes = self.drain_visitor()
            to_story = [c for c in changes if c["to"] == "story" and c["frame_at"]
                        and c["changed_at"] > tile_at]
            play.update(story_id=story_id, language=by_id[story_id].language,
                        tile_at=tile_at,
                        open_frame_at=to_story[0]["frame_at"] if to_story else None)
            plays.append(play)
            time.sleep(0.2)
        return plays

    def playing(self) -> dict[str, Any]:
        """The app's CPU over PLAYING_S while a long story plays (after its first second),
        as the idle figure is measured; frames drawn and the player's pace beside it."""
        assert self.app is not None
        app = self.app
        long_id = next(s.id for s in self.stories if s.duration_s > PLAYING_S + 3)
        app.call("bench_tap_tile", story_id=long_id)
        self.on("story")
        time.sleep(BEFORE_PLAY_S)
        app.call("bench_tap", id="play_button")
        time.sleep(1.0)
        pid = app.proc.pid
        threads0 = threads_cpu_s(pid)
        cpu0, frames0, player0 = cpu_s(pid), app.call("bench_frames"), app.call("bench_player")
        time.sleep(PLAYING_S)
        cpu1, frames1, player1 = cpu_s(pid), app.call("bench_frames"), app.call("bench_player")
        threads1 = threads_cpu_s(pid)
        if (player0["state"], player1["state"]) != ("playing", "playing"):
            raise AppDriverError(f"the story was not playing throughout: {player1['state']}")
        app.call("bench_tap", id="back_button")
        self.on("stories")
        app.call("bench_plays")
        self.drain_visitor()
        seconds = frames1["t"] - frames0["t"]
        drawn = frames1["frames"] - frames0["frames"]
        rendering = frames1["render_s"] - frames0["render_s"]
        # Mesa's llvmpipe rasterises in threads of its own ("llvmpipe-N").
        rasterising = sum(t - threads0.get(name, 0.0) for name, t in threads1.items()
                          if name.startswith("llvmpipe"))
        return {"cpu_percent": 100 * (cpu1 - cpu0) / seconds, "seconds": seconds,
                "rasteriser_cpu_percent": 100 * rasterising / seconds,
                "fps": drawn / seconds, "frame_render_ms": 1000 * rendering / max(drawn, 1),
                "main_thread_rendering_percent": 100 * rendering / seconds,
                "pace": (player1["position_s"] - player0["position_s"]) / (
                    player1["t"] - player0["t"])}

    def drain_visitor(self) -> list[dict[str, Any]]:
        assert self.app is not None
        changes = self.app.call("bench_drain")["changes"]
        self.visitor_changes += changes
        return changes


class SpeakerTimeline:
    """What reaches the virtual speakers, on the clock the app times touches with.

    ``parec`` records the speakers' monitor (raw, mono, 48 kHz) into a pipe that a thread
    reads, noting ``time.monotonic()`` (CLOCK_MONOTONIC, shared with the app process) as
    each read returns with the samples it has so far. A sample cannot be read before the
    sink has rendered it, so for every read, "read time less the duration of every
    sample so far" bounds from above when sample 0 was rendered; the smallest bound over
    the reads around a moment places the samples on the clock (within the transport's
    least delay, which a steady 10 ms stream keeps under a millisecond or two). The null
    sink renders at most MONITOR_LATENCY_MS ahead of its clock: a real sound card would
    add its own buffer after that.
    """

    def __init__(self, audio: VirtualAudio) -> None:
        self._audio = audio
        before = self._outputs()
        self._proc = subprocess.Popen(
            ["parec", "--device=speakers.monitor", "--format=s16le", f"--rate={RATE}",
             "--channels=1", "--raw", f"--latency-msec={MONITOR_LATENCY_MS}"],
            env=audio.full_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._chunks: list[bytes] = []
        self._reads: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._read, name="speakers", daemon=True)
        self._thread.start()
        wait_until(lambda: self._outputs() > before or self._proc.poll() is not None, 10,
                   "parec to record the speakers", 0.05)
        if self._proc.poll() is not None:
            raise RuntimeError("parec did not start recording the speakers")
        self._samples: np.ndarray | None = None

    def _outputs(self) -> int:
        return len(self._audio._pactl("list", "short", "source-outputs").splitlines())

    def _read(self) -> None:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        total = 0
        while block := os.read(fd, 1 << 16):
            now = time.monotonic()
            self._chunks.append(block)
            total += len(block)
            self._reads.append((now, total // 2))

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
        self._proc.wait(10)
        self._thread.join(10)
        data = b"".join(self._chunks)
        self._samples = np.frombuffer(data[:len(data) // 2 * 2], dtype=np.int16)

    def origin(self, around: float, window: float = 2.0) -> float:
        """The time.monotonic() of sample 0, from the reads within ``window`` s of
        ``around``."""
        return min(t - n / RATE for t, n in self._reads if abs(t - around) <= window)

    def read_stats(self) -> dict[str, float]:
        times = np.array([t for t, _ in self._reads])
        gaps = np.diff(times) if len(times) > 1 else np.zeros(1)
        return {"reads": len(self._reads), "read_gap_p95_ms": round(1000 * p95(list(gaps)), 1),
                "seconds": round(len(self._samples) / RATE, 1)
                if self._samples is not None else 0.0}

    def onset(self, touch_at: float, reference: np.ndarray) -> dict[str, Any]:
        """When the sound that followed the touch at ``touch_at`` began: the first sample
        at or above AUDIBLE after the touch. ``match`` checks that it is the story's
        sound: the best correlation of the 20 ms heard from there with the story's own
        decoded first 100 ms (``reference``), at ``into_file_ms`` into it (the monitor
        can miss the first few ms of a stream that starts while the sink has rendered
        ahead: PulseAudio rewinds the sink, not what its monitor already sent).
        ``speakers_at`` is when the read that brought that sample returned (by then it
        had surely reached the speakers: an upper bound); ``placed_at`` is the sample
        placed on the clock by :meth:`origin` (an estimate, within the sink's 10 ms
        blocks)."""
        x = self._samples
        assert x is not None
        origin = self.origin(touch_at)
        start = max(int((touch_at - origin) * RATE) - RATE // 100, 0)
        stop = min(start + 2 * RATE, len(x))
        loud = np.flatnonzero(np.abs(x[start:stop].astype(np.int32)) >= AUDIBLE)
        if not loud.size:
            return {"speakers_at": None}
        onset = start + int(loud[0])
        heard = x[onset:onset + RATE // 50].astype(np.float64)
        windows = np.lib.stride_tricks.sliding_window_view(
            reference[:RATE // 10 + len(heard)].astype(np.float64), len(heard))
        scores = windows @ heard / np.maximum(
            np.linalg.norm(windows, axis=1) * np.linalg.norm(heard), 1e-9)
        arrived = next(t for t, n in self._reads if n > onset)
        return {"speakers_at": arrived, "placed_at": origin + onset / RATE,
                "match": float(np.max(scores)),
                "into_file_ms": 1000 * int(np.argmax(scores)) / RATE}


def tone(path: Path, hz: float, seconds: float) -> Path:
    """``seconds`` of a sine at -6 dBFS with 5 ms fades, as 48 kHz mono Ogg/Opus."""
    t = np.arange(int(seconds * RATE)) / RATE
    pcm = 0.5 * np.sin(2 * np.pi * hz * t)
    fade = int(0.005 * RATE)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
    pcm[:fade] *= ramp
    pcm[-fade:] *= ramp[::-1]
    sf.write(path, pcm.astype(np.float32), RATE, format="OGG", subtype="OPUS",
             compression_level=compression_level_for(DEFAULT_KBPS))
    return path


TITLES = {
    "en": ["Water for the whole valley", "A school with a roof", "A newsletter for our street",
           "Fair hours at the port", "The land of our grandmothers",
           "A radio for the neighbourhood", "The clinic stays open",
           "Homes that stay standing"],
    "es": ["Agua para todo el valle", "Una escuela con techo", "Un boletín para nuestra calle",
           "Horarios justos en el puerto", "La tierra de nuestras abuelas",
           "Una radio para el barrio", "La clínica sigue abierta", "Casas que siguen en pie"],
    "fr": ["De l'eau pour toute la vallée", "Une école avec un toit",
           "Un bulletin pour notre rue", "Des horaires justes au port",
           "La terre de nos grands-mères", "Une radio pour le quartier",
           "La clinique reste ouverte", "Des maisons qui tiennent debout"],
    "ar": ["ماء للوادي كله", "مدرسة لها سقف", "نشرة لشارعنا", "ساعات عمل عادلة في الميناء",
           "أرض جداتنا", "إذاعة للحي", "العيادة تبقى مفتوحة", "بيوت تبقى قائمة"],
}
NAMES = ["Anonymous", "Amina", "Daniel", "Anonymous", "Lucía", "Karim", "Anonymous", "Sophie",
         "Mateo", "Anonymous", "Fatima", "Élodie", "Nour", "Joseph"]
COUNTRIES = {"Africa": ["KE", "NG", "SN", "UG", "ZA", "GH"],
             "Americas": ["BR", "MX", "CO", "GT", "PE", "CA"],
             "Asia": ["PH", "IN", "ID", "NP", "KH", "BD"],
             "Europe": ["FR", "ES", "PL", "RO", "IE", "PT"],
             "Middle East": ["JO", "LB", "IQ", "YE", "PS", "TR"],
             "Oceania": ["FJ", "PG", "AU", "NZ", "WS", "VU"]}
ARABIC_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def make_stories(folder: Path) -> tuple[list[Story], dict[str, Path], dict[str, np.ndarray]]:
    """STORIES synthetic stories over every region, most themes and the four languages,
    with titles in their language. Each language's stories share one second of its own
    tone (an Ogg/Opus file, copied under each story's id by the install); every
    LONG_EVERY-th (an English one: LONG_EVERY is a multiple of four) is about 15 s of
    English speech. Also returns each language's tone as
    the app decodes it (the reference its onset at the speakers is found with)."""
    folder.mkdir()
    rng = random.Random(STORIES)
    tones = {lang: tone(folder / f"tone-{lang}.ogg", hz, TONE_S)
             for lang, hz in TONE_HZ.items()}
    wav = make_speech(folder / "long.wav", "en", repeat=2, gap_ms=300)
    pcm, _ = sf.read(wav, dtype="float32")
    long_ogg = folder / "long.ogg"
    sf.write(long_ogg, pcm, RATE, format="OGG", subtype="OPUS",
             compression_level=compression_level_for(DEFAULT_KBPS))
    files: dict[Path, tuple[int, str, float]] = {}
    for path in [*tones.values(), long_ogg]:
        data = path.read_bytes()
        info = sf.info(path)
        files[path] = (len(data), hashlib.sha256(data).hexdigest(), info.frames / RATE)
    stories, audio = [], {}
    for i in range(STORIES):
        lang = LANGUAGES[i % len(LANGUAGES)]
        region = REGIONS[rng.randrange(len(REGIONS))]
        long = i % LONG_EVERY == 0
        path = long_ogg if long else tones[lang]
        size, digest, seconds = files[path]
        number = str(i // len(TITLES[lang]) + 1)
        if lang == "ar":
            number = number.translate(ARABIC_DIGITS)
        title = f"{rng.choice(TITLES[lang])} {number}"
        story_id = f"bench-{i:03d}"
        stories.append(Story(
            id=story_id, title=title, display_name=NAMES[i % len(NAMES)],
            country=rng.choice(COUNTRIES[region]), region=region,
            themes=tuple(rng.sample(THEMES, rng.randint(1, 3))), language=lang,
            duration_s=round(seconds, 3),
            transcript=" ".join([VOICES[lang].text] * (2 if long else 1)),
            audio_sha256=digest, size=size, url=f"stories/{story_id}.ogg"))
        audio[story_id] = path
    references = {lang: sf.read(path, dtype="int16")[0] for lang, path in tones.items()}
    return stories, audio, references


def trim(src: Path, out: Path, seconds: float) -> Path:
    subprocess.run(["sox", str(src), str(out), "trim", "0", str(seconds)], check=True,
                   capture_output=True, timeout=60)
    return out


def summarise(bench: Bench, starts: list[dict[str, float]], idle: float,
              rss: dict[str, float], sessions: int, session_s: list[float]) -> dict[str, Any]:
    takes = [t for t in bench.takes if t["touch_at"] is not None
             and t.get("first_block_latency_s") is not None]
    to_start = [t["start_at"] - t["touch_at"] for t in takes]
    first = [t["first_block_latency_s"] for t in takes]
    total = [a + b for a, b in zip(to_start, first, strict=True)]
    touched = [c["frame_at"] - c["touch_at"] for c in bench.changes if c["touch_at"] is not None]
    untouched = [c["frame_at"] - c["changed_at"] for c in bench.changes
                 if c["touch_at"] is None]
    slowest = max((c for c in bench.changes if c["touch_at"] is not None),
                  key=lambda c: c["frame_at"] - c["touch_at"], default=None)
    cold = [s["to_first_frame_s"] for s in starts]
    ms = 1000
    return {
        "cold_start_s": round(float(np.median(cold)), 3),
        "cold_start_max_s": round(max(cold), 3),
        "cold_start_to_on_start_s": round(float(np.median([s["to_on_start_s"]
                                                           for s in starts])), 3),
        "takes": len(takes),
        "touch_to_take_start_p95_ms": round(ms * p95(to_start), 1),
        "take_start_to_first_block_p95_ms": round(ms * p95(first), 1),
        "touch_to_first_block_p95_ms": round(ms * p95(total), 1),
        "touch_to_first_block_max_ms": round(ms * max(total), 1) if total else None,
        "screen_changes": len(touched),
        "screen_transition_p95_ms": round(ms * p95(touched), 1),
        "screen_transition_median_ms": round(ms * float(np.median(touched)), 1),
        "screen_transition_max_ms": round(ms * max(touched), 1) if touched else None,
        "screen_transition_slowest": (f"{slowest['from']}->{slowest['to']}"
                                      if slowest else None),
        **transition_parts([c for c in bench.changes if c["touch_at"] is not None]),
        "untouched_change_to_frame_p95_ms": round(ms * p95(untouched), 1),
        "recording_fps_median": round(float(np.median(bench.fps)), 1),
        "recording_fps_min": round(min(bench.fps), 1),
        "recording_loop_fps_median": round(float(np.median(bench.loop_fps)), 1),
        "recording_clock_rfps_median": round(float(np.median(bench.rfps)), 1),
        "recording_frame_render_ms_median": round(float(np.median(bench.frame_ms)), 1),
        "recording_main_thread_rendering_percent": round(float(np.median(bench.render_busy)),
                                                         1),
        "idle_cpu_percent_of_one_core": round(idle, 2),
        "sessions": sessions,
        "session_s_median": round(float(np.median(session_s)), 2),
        "rss_warm_mb": round(rss["warm"], 1),
        "rss_end_mb": round(rss["end"], 1),
        "rss_growth_mb": round(rss["end"] - rss["warm"], 1),
        "rss_trend_growth_mb": round(rss["trend"], 1),
    }


def summarise_visitor(v: dict[str, Any], install: dict[str, Any]
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The visitor's figures (ms and percentages rounded), and their details."""
    ms = 1000
    plays = v["plays"]
    heard = [p for p in plays if p.get("speakers_at") is not None and p["match"] >= 0.9]
    speakers = [p["speakers_at"] - p["touch_at"] for p in heard]
    placed = [p["placed_at"] - p["touch_at"] for p in heard]
    dac = [p["first"]["dac"] + p["first"]["index"] / p["rate"] + p["offset"] - p["touch_at"]
           for p in plays]
    to_start = [p["start_at"] - p["touch_at"] for p in plays]
    to_block = [p["first"]["callback_at"] - p["start_at"] for p in plays]
    opened = [p["open_frame_at"] - p["tile_at"] for p in plays if p["open_frame_at"]]
    filters = v["filters"]
    filter_ms = [f["frame_at"] - f["touch_at"] if f["frame_at"] is not None else float("inf")
                 for f in filters]
    scroll_all, flick, playing = v["scroll_all"], v["scroll_flick"], v["playing"]
    figures = {
        "cold_start_500_stories_s": round(v["cold_start_500_stories_s"], 3),
        "catalog_install_s": install["catalog_install_s"],
        "plays": len(plays),
        "plays_heard": len(heard),
        "play_to_speakers_p95_ms": (round(ms * p95(speakers), 1) if len(heard) == len(plays)
                                    else float("inf")),
        "play_to_speakers_median_ms": round(ms * float(np.median(speakers)), 1)
        if speakers else None,
        "play_to_speakers_max_ms": round(ms * max(speakers), 1) if speakers else None,
        "play_to_speakers_placed_p95_ms": round(ms * p95(placed), 1),
        "play_to_dac_time_p95_ms": round(ms * p95(dac), 1),
        "play_touch_to_stream_start_p95_ms": round(ms * p95(to_start), 1),
        "play_start_to_first_audible_block_p95_ms": round(ms * p95(to_block), 1),
        "tile_touch_to_story_frame_p95_ms": round(ms * p95(opened), 1),
        "browse_scroll_fps": round(scroll_all["fps"], 1),
        "browse_scroll_px_per_s": scroll_all["px_per_s"],
        "browse_scroll_frame_render_ms": round(scroll_all["frame_render_ms"], 1),
        "browse_scroll_frame_interval_max_ms": round(scroll_all["frame_interval_max_ms"], 1),
        "browse_flick_fps": round(flick["fps"], 1),
        "browse_flick_px_per_s": flick["px_per_s"],
        "filter_changes": len(filters),
        "filter_change_p95_ms": round(ms * p95(filter_ms), 1),
        "filter_change_median_ms": round(ms * float(np.median(filter_ms)), 1),
        "filter_change_max_ms": round(ms * max(filter_ms), 1),
        **{k.replace("transition_", "filter_"): x for k, x in transition_parts(
            [f for f in filters if f["frame_at"] is not None]).items()},
        "playing_cpu_percent_of_one_core": round(playing["cpu_percent"], 2),
        "playing_rasteriser_cpu_percent": round(playing["rasteriser_cpu_percent"], 1),
        "playing_fps": round(playing["fps"], 1),
        "playing_frame_render_ms": round(playing["frame_render_ms"], 1),
        "playing_pace": round(playing["pace"], 3),
    }
    by_kind: dict[str, list[float]] = {}
    for f, t in zip(filters, filter_ms, strict=True):
        by_kind.setdefault(f["kind"], []).append(t)
    details = {
        "plays": [{"story": p["story_id"], "language": p["language"],
                   "speakers_ms": round(ms * (p["speakers_at"] - p["touch_at"]), 1)
                   if p.get("speakers_at") is not None else None,
                   "placed_ms": round(ms * (p["placed_at"] - p["touch_at"]), 1)
                   if p.get("placed_at") is not None else None,
                   "dac_ms": round(ms * d, 1), "touch_to_start_ms": round(ms * a, 1),
                   "start_to_first_audible_block_ms": round(ms * b, 1),
                   "match": round(p.get("match", 0.0), 3),
                   "into_file_ms": p.get("into_file_ms"),
                   "stream_clock_offset_s": p["offset"]}
                  for p, d, a, b in zip(plays, dac, to_start, to_block, strict=True)],
        "filters": [{"kind": f["kind"], "value": f["value"], "stories": f["stories"],
                     "ms": round(ms * t, 1), "handler_ms": round(
                         ms * (f["handled_at"] - f["touch_at"]), 1),
                     "frames_before_settled": f.get("frames_before_settled")}
                    for f, t in zip(filters, filter_ms, strict=True)],
        "filter_p95_ms_by_kind": {k: round(ms * p95(t), 1) for k, t in by_kind.items()},
        "scroll_all": {k: round(x, 1) for k, x in scroll_all.items()},
        "scroll_flick": {k: round(x, 1) for k, x in flick.items()},
        "playing": {k: round(x, 3) for k, x in playing.items()},
        "speaker_monitor": v["monitor_reads"],
        "visitor_transitions": per_transition(v["changes"]),
        "install": install,
    }
    return figures, details


def transition_parts(changes: list[dict[str, Any]]) -> dict[str, float]:
    """Where the time of a touch-made screen change goes, p95 of each part: the touch's
    handlers (the new screen set up), the wait for the frame to begin (the rest of the
    Clock's events), drawing (on_draw: the fade's two screens), and the buffer swap."""
    parts = {"handler": ("touch_at", "handled_at"), "wait": ("handled_at", "draw_at"),
             "draw": ("draw_at", "swap_at"), "swap": ("swap_at", "frame_at")}
    out = {}
    for name, (a, b) in parts.items():
        values = [c[b] - c[a] for c in changes if c.get(a) is not None
                  and c.get(b) is not None]
        out[f"transition_{name}_p95_ms"] = round(1000 * p95(values), 1)
    return out


def per_transition(changes: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for c in changes:
        if c["touch_at"] is not None:
            by.setdefault(f"{c['from']}->{c['to']}", []).append(c)
    out = {}
    for key, group in sorted(by.items()):
        total = [c["frame_at"] - c["touch_at"] for c in group]
        out[key] = {"median_ms": round(1000 * float(np.median(total)), 1),
                    "p95_ms": round(1000 * p95(total), 1), "count": len(group),
                    **transition_parts(group)}
    return out


def per_take_session(takes: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [{"touch_to_start_ms": round(1000 * (t["start_at"] - t["touch_at"]), 1),
             "first_block_ms": round(1000 * t["first_block_latency_s"], 1),
             "duration_s": round(t["duration_s"], 2), "reason": t["reason"]}
            for t in takes if t["touch_at"] is not None
            and t.get("first_block_latency_s") is not None]


def defender_side(bench: Bench, sessions: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Cold starts, idle CPU, then ``sessions`` defender sessions in the last app started
    (left running); the defender's figures and their details."""
    starts = bench.cold_starts()
    idle = bench.idle_cpu()
    assert bench.app is not None
    pid = bench.app.proc.pid
    warm = min(WARM_SESSIONS, sessions - 1)
    takes_each = -(-MIN_TAKES // sessions)
    rss: dict[str, float] = {}
    session_s = []
    rss_after: list[float] = []
    for number in range(1, sessions + 1):
        t = time.monotonic()
        bench.session(LANGUAGES[(number - 1) % len(LANGUAGES)], takes=takes_each,
                      long=number <= FPS_SESSIONS)
        session_s.append(time.monotonic() - t)
        time.sleep(0.5)
        rss_after.append(rss_mb(pid))
        if number == warm:
            rss["warm"] = rss_after[-1]
        print(f"session {number}/{sessions}: {session_s[-1]:.1f} s,"
              f" RSS {rss_after[-1]:.1f} MB", file=sys.stderr, flush=True)
    rss["end"] = rss_after[-1]
    # RSS swings by tens of MB from one session to the next (the allocator, the
    # software renderer's buffers): the least-squares trend over the sessions after
    # the warm-up tells a leak from a swing.
    after = rss_after[warm - 1:]
    rss["trend"] = (float(np.polyfit(range(len(after)), after, 1)[0]) * (len(after) - 1)
                    if len(after) > 2 else float("nan"))
    figures = summarise(bench, starts, idle, rss, sessions, session_s)
    details = {"cold_starts": starts, "transitions": per_transition(bench.changes),
               "takes": per_take_session(bench.takes),
               "recording_fps": [round(f, 1) for f in bench.fps],
               "rss_after_session_mb": [round(r, 1) for r in rss_after],
               "session_s": [round(t, 2) for t in session_s]}
    return figures, details


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=50,
                        help="complete sessions for the RSS growth (default 50)")
    parser.add_argument("--part", choices=("all", "defender", "visitor"), default="all",
                        help="measure only the defender's or the visitor's side")
    parser.add_argument("--json", type=Path, help="write the figures as JSON to PATH")
    args = parser.parse_args(argv)
    if args.sessions < 2:
        parser.error("--sessions must be at least 2")
    defender = args.part in ("all", "defender")
    visitor = args.part in ("all", "visitor")

    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="kiosk-bench-app-"))
    display = VirtualDisplay()
    audio = VirtualAudio()
    bench: Bench | None = None
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {}
    try:
        audio.start()
        bench = Bench(work, display.start(), audio)
        helpers = [p for p in (audio._daemon_pid(), display._proc.pid if display._proc
                               else None) if p is not None]
        busy0, own0, wall0 = machine_busy_s(), own_cpu_s(helpers), time.monotonic()
        if defender:
            figures, details = defender_side(bench, args.sessions)
        if visitor:
            # The visitor's side, in an app started anew on a 500-story catalog (the
            # defender's figures above ran without one, as before).
            if bench.app is not None:
                bench.app.close()
                bench.app.socket_path.unlink(missing_ok=True)
                bench.app = None
            install = bench.install_stories()
            print(f"{STORIES} stories installed: {install}", file=sys.stderr, flush=True)
            measured = bench.visitor()
            measured["changes"] = bench.visitor_changes
            more, more_details = summarise_visitor(measured, install)
            figures.update(more)
            details["visitor"] = more_details
        # Other work on the machine (another test run, say) slows frames and touches:
        # what the machine spent beyond this benchmark's own processes, in cores (the
        # app processes that ended are counted among this process's children).
        living = [bench.app.proc.pid] if bench.app is not None else []
        foreign = ((machine_busy_s() - busy0) - (own_cpu_s(helpers + living) - own0)) / (
            time.monotonic() - wall0)
        figures["other_load_cores"] = round(max(foreign, 0.0), 2)
        figures["runtime_s"] = round(time.monotonic() - began, 1)
    finally:
        if bench is not None and bench.app is not None:
            bench.app.close()
        audio.stop()
        display.stop()
        shutil.rmtree(work, ignore_errors=True)

    failed = []
    ran = []
    if defender:
        ran.append(f"{figures['sessions']} sessions, {figures['takes']} takes,"
                   f" {figures['screen_changes']} touch-made screen changes")
    if visitor:
        ran.append(f"{STORIES} stories, {figures['plays']} plays,"
                   f" {figures['filter_changes']} filter changes")
    print(f"Kiosk app benchmark: {'; '.join(ran)}; {os.cpu_count()} cores,"
          f" Xvfb 1280x800x24, in {figures['runtime_s']:.0f} s")
    print(f"{'figure':<42} {'measured':>14} {'target':>10}  ok")
    for key, value in figures.items():
        if key in ("sessions", "runtime_s", "plays", "filter_changes"):
            continue
        target = TARGETS.get(key)
        mark, shown = "", ""
        if target is not None:
            op, limit = target
            ok = value >= limit if op == ">=" else value <= limit
            mark = "yes" if ok else "NO"
            shown = f"{op} {limit}"
            if not ok:
                failed.append(key)
        print(f"{key:<42} {value!s:>14} {shown:>10}  {mark}")
    figures["targets_failed"] = failed
    figures["details"] = details
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
