"""Kiosk app benchmark: the real app under Xvfb, driven through whole defender sessions.

    .venv/bin/python tests/bench/kiosk.py [--sessions N] [--json PATH]

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

``other_load_cores`` is what the machine spent on other processes meanwhile (in
cores, from /proc/stat less this benchmark's own processes): on this 2-core machine a
test run alongside slows the frames and the transitions noticeably.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from sync.envelope.mlkem import MlkemIdentity  # noqa: E402
from tests.harness.display import VirtualDisplay  # noqa: E402
from tests.harness.kiosk_app import AppDriverError, KioskProcess  # noqa: E402
from tests.harness.pulse import VirtualAudio  # noqa: E402
from tests.harness.speech import make_speech  # noqa: E402

TARGETS = {
    "cold_start_s": ("<=", 3.0),
    "touch_to_first_block_p95_ms": ("<=", 150.0),
    "screen_transition_p95_ms": ("<=", 100.0),
    "recording_fps_median": (">=", 30.0),
    "idle_cpu_percent_of_one_core": ("<=", 5.0),
    "rss_growth_mb": ("<=", 20.0),
}
LANGUAGES = ["en", "es", "fr", "ar"]
MIN_TAKES = 20
WARM_SESSIONS = 5
FPS_SESSIONS = 5
COLD_STARTS = 3
IDLE_S = 10.0
SHORT_ANSWER_S = 1.0
FPS_ANSWER_S = 4.0


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=50,
                        help="complete sessions for the RSS growth (default 50)")
    parser.add_argument("--json", type=Path, help="write the figures as JSON to PATH")
    args = parser.parse_args(argv)
    if args.sessions < 2:
        parser.error("--sessions must be at least 2")

    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="kiosk-bench-app-"))
    display = VirtualDisplay()
    audio = VirtualAudio()
    bench: Bench | None = None
    try:
        audio.start()
        bench = Bench(work, display.start(), audio)
        helpers = [p for p in (audio._daemon_pid(), display._proc.pid if display._proc
                               else None) if p is not None]
        busy0, own0, wall0 = machine_busy_s(), own_cpu_s(helpers), time.monotonic()
        starts = bench.cold_starts()
        idle = bench.idle_cpu()
        assert bench.app is not None
        pid = bench.app.proc.pid
        warm = min(WARM_SESSIONS, args.sessions - 1)
        takes_each = -(-MIN_TAKES // args.sessions)
        rss: dict[str, float] = {}
        session_s = []
        rss_after: list[float] = []
        for number in range(1, args.sessions + 1):
            t = time.monotonic()
            bench.session(LANGUAGES[(number - 1) % len(LANGUAGES)], takes=takes_each,
                          long=number <= FPS_SESSIONS)
            session_s.append(time.monotonic() - t)
            time.sleep(0.5)
            rss_after.append(rss_mb(pid))
            if number == warm:
                rss["warm"] = rss_after[-1]
            print(f"session {number}/{args.sessions}: {session_s[-1]:.1f} s,"
                  f" RSS {rss_after[-1]:.1f} MB", file=sys.stderr, flush=True)
        rss["end"] = rss_after[-1]
        # Other work on the machine (another test run, say) slows frames and touches:
        # what the machine spent beyond this benchmark's own processes, in cores.
        foreign = ((machine_busy_s() - busy0) - (own_cpu_s(helpers + [pid]) - own0)) / (
            time.monotonic() - wall0)
        # RSS swings by tens of MB from one session to the next (the allocator, the
        # software renderer's buffers): the least-squares trend over the sessions after
        # the warm-up tells a leak from a swing.
        after = rss_after[warm - 1:]
        rss["trend"] = (float(np.polyfit(range(len(after)), after, 1)[0]) * (len(after) - 1)
                        if len(after) > 2 else float("nan"))
        figures = summarise(bench, starts, idle, rss, args.sessions, session_s)
        figures["other_load_cores"] = round(max(foreign, 0.0), 2)
        figures["runtime_s"] = round(time.monotonic() - began, 1)
        details = {"cold_starts": starts, "transitions": per_transition(bench.changes),
                   "takes": per_take_session(bench.takes),
                   "recording_fps": [round(f, 1) for f in bench.fps],
                   "rss_after_session_mb": [round(r, 1) for r in rss_after],
                   "session_s": [round(t, 2) for t in session_s]}
    finally:
        if bench is not None and bench.app is not None:
            bench.app.close()
        audio.stop()
        display.stop()
        shutil.rmtree(work, ignore_errors=True)

    failed = []
    print(f"Kiosk app benchmark: {figures['sessions']} sessions, {figures['takes']} takes,"
          f" {figures['screen_changes']} touch-made screen changes,"
          f" {os.cpu_count()} cores, Xvfb 1280x800x24, in {figures['runtime_s']:.0f} s")
    print(f"{'figure':<40} {'measured':>14} {'target':>10}  ok")
    for key, value in figures.items():
        if key in ("sessions", "runtime_s"):
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
        print(f"{key:<40} {value!s:>14} {shown:>10}  {mark}")
    figures["targets_failed"] = failed
    figures["details"] = details
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
