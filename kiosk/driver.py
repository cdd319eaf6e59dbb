"""A test driver: lets end-to-end tests find widgets by id, touch them and take screenshots.

It is started only when ``KIOSK_TEST_DRIVER`` names a Unix socket, which the test
harness sets in a private temporary directory; deployed kiosks never set it. The
protocol is one JSON object per line each way. Every command runs on Kivy's main
thread, because widgets may only be touched from there.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.clock import Clock
from kivy.tests.common import UnitTestTouch
from kivy.uix.widget import Widget


def _walk(widget: Widget) -> Iterator[Widget]:
    yield widget
    for child in widget.children:
        yield from _walk(child)


def find_ids(root: Widget) -> dict[str, Widget]:
    """Every ``id`` declared in kv rules anywhere under ``root`` (first one wins)."""
    found: dict[str, Widget] = {}
    for widget in _walk(root):
        for name, target in widget.ids.items():
            found.setdefault(name, target)
    return found


#: Set by tests/bench/kiosk.py to ``time.time()`` just before it spawns the app: turns on
#: the timestamps of :class:`_Bench` (frames, touches, screen changes, takes, plays).
BENCH_ENV = "KIOSK_BENCH_T0"
#: A sample at or above this (int16, -40 dBFS) is audible: where a playback's sound begins.
AUDIBLE = 328


class _Bench:
    """Timestamps for the kiosk benchmark, taken in the app process (main thread).

    Installed by the driver in ``on_start`` when ``KIOSK_BENCH_T0`` is set: it wraps
    ``Window.flip`` (a frame is "drawn" once the buffers are swapped), listens to the
    app's screen changes and wraps ``recorder.start`` (when a take starts and, through
    its ``on_end``, its result). Touches are timed by :meth:`Driver._cmd_bench_tap`.
    """

    def __init__(self, app: App) -> None:
        from kivy.core.window import Window

        self.app = app
        self.t0 = float(os.environ[BENCH_ENV])
        self.on_start_wall = time.time()
        self.first_frame_wall: float | None = None
        self.first_frame_screen: str | None = None
        self.frames = 0
        self.touch_at: float | None = None
        self.touch_id: str | None = None
        self.in_touch = False
        self.screen = str(app.root.current)
        #: Screen changes: from, to, the touch that made it (if any), changed, drawn.
        self.changes: list[dict[str, Any]] = []
        self._undrawn: list[dict[str, Any]] = []
        self.takes: list[dict[str, Any]] = []
        flip = Window.flip

        self._draw_at = 0.0
        #: Time spent drawing and swapping, all frames together.
        self.render_s = 0.0
        #: Called after each buffer swap with (draw_at, swap_at, frame_at); a hook that
        #: returns False is removed.
        self._frame_hooks: list[Callable[[float, float, float], bool]] = []
        #: Story playbacks: each output stream the player opens, its start and first
        #: audible block (see :meth:`_wrap_output`).
        self.plays: list[dict[str, Any]] = []
        #: Filter changes made by :meth:`set_filter`, with the frames that followed.
        self.filters: list[dict[str, Any]] = []
        self.scroll_state: dict[str, Any] | None = None

        def draw_begins(*_args: Any) -> None:
            self._draw_at = time.monotonic()

        def timed_flip() -> None:
            swap_at = time.monotonic()
            flip()
            now = time.monotonic()
            self.frames += 1
            self.render_s += now - self._draw_at
            if self.first_frame_wall is None:
                self.first_frame_wall = time.time()
                self.first_frame_screen = str(self.app.root.current)
            for change in self._undrawn:
                change.update(draw_at=self._draw_at, swap_at=swap_at, frame_at=now)
            self._undrawn.clear()
            if self._frame_hooks:
                self._frame_hooks = [hook for hook in self._frame_hooks
                                     if hook(self._draw_at, swap_at, now)]

        # Bound callbacks run before the window's own on_draw, which draws the frame.
        Window.fbind("on_draw", draw_begins)
        Window.flip = timed_flip
        app.on_screen.append(self._screen_changed)
        recorder = app.recorder
        start = recorder.start

        def timed_start(*args: Any, **kwargs: Any) -> Any:
            began = time.monotonic()
            entry: dict[str, Any] = {"touch_at": self.touch_at if self.in_touch else None,
                                     "touch_id": self.touch_id if self.in_touch else None,
                                     "start_at": began, "done": False}
            on_end = kwargs.get("on_end")

            def ended(result: Any) -> None:
                entry.update(done=True, reason=str(result.reason.value),
                             first_block_latency_s=result.first_block_latency_s,
                             seal_latency_s=result.seal_latency_s,
                             duration_s=result.duration_s, overflows=result.overflows)
                if on_end is not None:
                    on_end(result)

            kwargs["on_end"] = ended
            take = start(*args, **kwargs)
            self.takes.append(entry)
            return take

        recorder.start = timed_start
        self._wrap_output(recorder.streams)

    def _wrap_output(self, streams: Any) -> None:
        """Time each output stream (a story's or a review's playback): when it is opened,
        when it starts (and the touch that started it), and its first audible block.

        The PortAudio callback gets, with each block, the stream's clock now
        (``currentTime``) and when the block's first frame will reach the DAC
        (``outputBufferDacTime``). The first frame of the block at or above
        :data:`AUDIBLE` is the first audible one. PortAudio's stream clock is converted
        to ``time.monotonic()`` by the smallest ``monotonic() - currentTime`` seen in any
        callback of the stream (the callback runs after PortAudio read its clock, so the
        smallest difference is the closest).
        """
        import numpy as np

        output_stream = streams.output_stream

        def timed_output_stream(**kwargs: Any) -> Any:
            callback = kwargs["callback"]
            rate = float(kwargs["samplerate"])
            entry: dict[str, Any] = {"opened_at": time.monotonic(), "start_at": None,
                                     "started_at": None, "touch_at": None,
                                     "touch_id": None, "first": None, "offset": None,
                                     "callbacks": 0, "rate": rate}

            def timed_callback(outdata: Any, frames: int, time_info: Any,
                               status: Any) -> None:
                callback(outdata, frames, time_info, status)
                now = time.monotonic()
                offset = now - time_info.currentTime
                if entry["offset"] is None or offset < entry["offset"]:
                    entry["offset"] = offset
                entry["callbacks"] += 1
                if entry["first"] is None:
                    loud = np.flatnonzero(np.abs(outdata.astype(np.int32)).max(axis=1)
                                          >= AUDIBLE)
                    if loud.size:
                        entry["first"] = {"callback_at": now,
                                          "current": time_info.currentTime,
                                          "dac": time_info.outputBufferDacTime,
                                          "index": int(loud[0])}

            stream = output_stream(**{**kwargs, "callback": timed_callback})
            start = stream.start

            def timed_start() -> None:
                if entry["start_at"] is None:
                    entry.update(start_at=time.monotonic(),
                                 touch_at=self.touch_at if self.in_touch else None,
                                 touch_id=self.touch_id if self.in_touch else None)
                start()
                if entry["started_at"] is None:
                    entry["started_at"] = time.monotonic()

            stream.start = timed_start
            self.plays.append(entry)
            del self.plays[:-100]  # never drained in the defender's sessions: kept short
            return stream

        streams.output_stream = timed_output_stream

    def _screen_changed(self, name: str) -> None:
        change = {"from": self.screen, "to": name, "changed_at": time.monotonic(),
                  "touch_at": self.touch_at if self.in_touch else None,
                  "touch_id": self.touch_id if self.in_touch else None, "frame_at": None}
        self.screen = name
        self.changes.append(change)
        self._undrawn.append(change)

    def tap(self, app: App, widget_id: str) -> float:
        return self.tap_widget(find_widget(app, widget_id), widget_id)

    def tap_widget(self, widget: Widget, label: str) -> float:
        self.touch_at, self.touch_id = time.monotonic(), label
        self.in_touch = True
        try:
            tap_at(widget)
        finally:
            self.in_touch = False
        handled_at = time.monotonic()
        for change in self._undrawn:
            if change["touch_at"] == self.touch_at:
                change["handled_at"] = handled_at
        return self.touch_at

    # -- the stories screen (browsing 500 stories) ----------------------------------------
    @staticmethod
    def _tiles_shown(rv: Widget) -> int:
        """A checksum of the tiles the RecycleView has laid out now (which story, where),
        how many stories it holds and how many overlays are open: what a frame drawn now
        shows of the grid."""
        layout = rv.layout_manager
        tiles = sorted((str(getattr(c, "story_id", "")), round(c.x), round(c.y))
                       for c in (layout.children if layout is not None else []))
        return zlib.crc32(repr((tiles, len(rv.data), len(overlays()))).encode())

    def set_filter(self, screen: Widget, kind: str, value: str | None) -> dict[str, Any]:
        """Choose a filter value as a touch on the filter overlay's choice does (the
        overlay closes, then ``StoriesScreen.set_filter``; without an open overlay, just
        ``set_filter``), timed, with the frames drawn in the next second and what each
        shows of the grid (:meth:`_tiles_shown`, and whether an overlay is open)."""
        rv = screen.ids.tiles
        chooser = next((o for o in overlays() if hasattr(o, "chosen")), None)
        entry: dict[str, Any] = {"kind": kind, "value": value, "touch_at": time.monotonic(),
                                 "overlay": chooser is not None,
                                 "before": self._tiles_shown(rv), "frames": []}
        if chooser is not None:
            chooser.chosen(value)
        else:
            screen.set_filter(kind, value)
        entry["handled_at"] = time.monotonic()
        entry["stories"] = len(rv.data)

        def on_frame(draw_at: float, swap_at: float, frame_at: float) -> bool:
            entry["frames"].append({"draw_at": draw_at, "swap_at": swap_at,
                                    "frame_at": frame_at, "tiles": self._tiles_shown(rv)})
            return frame_at - entry["touch_at"] < 1.0

        self._frame_hooks.append(on_frame)
        self.filters.append(entry)
        return {"touch_at": entry["touch_at"], "stories": entry["stories"]}

    def scroll(self, rv: Widget, seconds: float, distance_px: float | None) -> dict[str, Any]:
        """Scroll ``rv`` from the top, at an even speed, ``distance_px`` (None: to the
        bottom) over ``seconds``: its ``scroll_y`` set once a frame, as a drag would."""
        scrollable = max(float(rv.children[0].height - rv.height), 1.0)
        end = 0.0 if distance_px is None else max(0.0, 1.0 - distance_px / scrollable)
        rv.scroll_y = 1.0
        state: dict[str, Any] = {"seconds": seconds, "scrollable_px": scrollable,
                                 "distance_px": (1.0 - end) * scrollable, "began": None,
                                 "done": False, "frame_at": []}
        self.scroll_state = state

        def on_frame(_draw_at: float, _swap_at: float, frame_at: float) -> bool:
            if state["began"] is not None:
                state["frame_at"].append(frame_at)
            return not state["done"]

        def step(_dt: float) -> bool:
            now = time.monotonic()
            if state["began"] is None:
                state.update(began=now, frames0=self.frames, loops0=Clock.frames,
                             render0=self.render_s)
            done = now - state["began"] >= seconds
            rv.scroll_y = 1.0 + (end - 1.0) * min(1.0, (now - state["began"]) / seconds)
            if done:
                state.update(ended=now, frames1=self.frames, loops1=Clock.frames,
                             render1=self.render_s, done=True)
                return False
            return True

        self._frame_hooks.append(on_frame)
        Clock.schedule_interval(step, 0)
        return {"scrollable_px": scrollable, "distance_px": state["distance_px"]}

    def drain(self) -> dict[str, Any]:
        """The screen changes already drawn and the takes already ended, forgotten here
        (so that a long run does not grow the app's memory)."""
        changes = [c for c in self.changes if c["frame_at"] is not None]
        takes = [t for t in self.takes if t["done"]]
        self.changes = [c for c in self.changes if c["frame_at"] is None]
        self.takes = [t for t in self.takes if not t["done"]]
        return {"changes": changes, "takes": takes}


def overlays() -> list[Widget]:
    """The overlays (ModalViews) open over the screens."""
    from kivy.core.window import Window
    from kivy.uix.modalview import ModalView

    return [w for w in Window.children if isinstance(w, ModalView)]


def find_widget(app: App, widget_id: str) -> Widget:
    """The widget with kv id ``widget_id``: in an open overlay, else on the current
    screen (ids repeat across screens), else anywhere."""
    for overlay in overlays():
        if widget_id in overlay.ids:
            return overlay.ids[widget_id]
        found = find_ids(overlay)
        if widget_id in found:
            return found[widget_id]
    screen = app.root.current_screen
    widgets = {**find_ids(screen), **screen.ids}
    if widget_id not in widgets:
        widgets = find_ids(app.root)
    if widget_id not in widgets:
        raise KeyError(f"no widget with id {widget_id!r}")
    return widgets[widget_id]


def tap(app: App, widget_id: str) -> None:
    """A simulated touch, down and up, at the widget's centre (as a finger would)."""
    tap_at(find_widget(app, widget_id))


def tap_at(widget: Widget) -> None:
    x, y = widget.to_window(*widget.center)
    touch = UnitTestTouch(x, y)
    touch.touch_down()
    touch.touch_up()


class Driver:
    def __init__(self, app: App, path: Path) -> None:
        self.app = app
        self.path = path
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._thread = threading.Thread(target=self._serve, name="test-driver", daemon=True)
        self._stopping = False
        self._bench: _Bench | None = None

    def start(self) -> None:
        if os.environ.get(BENCH_ENV):
            self._bench = _Bench(self.app)
        if self.path.exists():
            self.path.unlink()
        self._server.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self._server.listen(1)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._server.close()

    # -- commands, run on the main thread ------------------------------------------
    def _overlays(self) -> list[Widget]:
        return overlays()

    def _widget(self, widget_id: str) -> Widget:
        return find_widget(self.app, widget_id)

    def _cmd_screen(self) -> str:
        """The current screen's name once it is in place; "" while screens fade (a
        ScreenManager ignores touches until its transition is over)."""
        manager = self.app.root
        return "" if manager.transition.is_active else str(manager.current)

    def _cmd_ids(self) -> list[str]:
        screen = self.app.root.current_screen
        names = set(find_ids(screen)) | set(screen.ids)
        for overlay in self._overlays():
            names |= set(overlay.ids) | set(find_ids(overlay))
        return sorted(names)

    def _cmd_overlay(self) -> list[str]:
        """The ids in the open overlays (empty when none is open)."""
        names: set[str] = set()
        for overlay in self._overlays():
            names |= set(overlay.ids) | set(find_ids(overlay))
        return sorted(names)

    def _cmd_session(self) -> dict[str, Any]:
        """The session machine's state, for tests: never a name or a contact."""
        machine = self.app.session.machine
        return {"state": machine.state.value, "overlay": machine.overlay.value,
                "language": machine.language, "question": machine.question,
                "answers": dict(machine.answers), "skipped": sorted(machine.skipped),
                "recording": machine.recording, "playing": machine.playing,
                "consent": dict(machine.consent),
                "submission": self.app.session.last_submission}

    def _cmd_call(self, method: str, args: list[Any] | None = None) -> Any:
        """Call a method of the current screen (``type_text``, ``select_country``...)."""
        return getattr(self.app.root.current_screen, method)(*(args or []))

    def _cmd_text(self, id: str) -> str:
        return str(self._widget(id).text)

    def _cmd_source_text(self, id: str) -> str:
        """The logical text of an RtlLabel/RtlButton (``text`` is its display form)."""
        widget = self._widget(id)
        return str(getattr(widget, "source_text", widget.text))

    def _cmd_prop(self, id: str, name: str) -> Any:
        """A Kivy property of a widget (a progress bar's ``value``, a button's
        ``disabled``...), as JSON can carry it."""
        value = getattr(self._widget(id), name)
        return list(value) if isinstance(value, tuple | list) else value

    def _cmd_sync_run_now(self) -> bool:
        """Ask the app's sync worker for a pass now, as the periodic timer would start
        one (on the worker's thread; the reply does not wait for it)."""
        self.app.sync_worker.run_now()
        return True

    def _cmd_fake_sync(self, result: dict[str, Any], steps: list[dict[str, Any]],
                       step_s: float = 0.05) -> bool:
        """Make the app's sync worker run a scripted pass instead of a real one (the staff
        screen's tests without a service): each of ``steps`` (``SyncProgress`` fields) is
        reported ``step_s`` apart on the worker's thread, then ``result`` (``SyncResult``
        fields, the rest zero) is returned."""
        from types import SimpleNamespace

        from .sync_worker import failed_result

        def scripted(_cfg: Any, _store: Any, *, progress: Any = None, stop: Any = None,
                     **_: Any) -> Any:
            for step in steps:
                if stop is not None and stop.wait(step_s):
                    break
                if progress is not None:
                    progress(SimpleNamespace(**step))
            return SimpleNamespace(**{**vars(failed_result("")), "error": None, **result})

        self.app.sync_worker._sync_once = scripted
        return True

    def _cmd_tap(self, id: str) -> bool:
        tap(self.app, id)
        return True

    def _cmd_screenshot(self, path: str) -> str:
        from .kivy_app import save_screenshot

        return str(save_screenshot(Path(path)))

    # -- benchmark commands (tests/bench/kiosk.py; need KIOSK_BENCH_T0) ------------------
    def _bench_on(self) -> _Bench:
        if self._bench is None:
            raise RuntimeError(f"{BENCH_ENV} was not set when the app started")
        return self._bench

    def _cmd_bench_start(self) -> dict[str, Any]:
        """Wall-clock times (time.time(), comparable across processes): the spawn time
        the benchmark passed in, on_start, and the first frame drawn after on_start."""
        bench = self._bench_on()
        return {"t0": bench.t0, "on_start": bench.on_start_wall,
                "first_frame": bench.first_frame_wall,
                "first_frame_screen": bench.first_frame_screen}

    def _cmd_bench_tap(self, id: str) -> float:
        """``tap``, timed: returns the touch's time.monotonic()."""
        return self._bench_on().tap(self.app, id)

    def _cmd_bench_frames(self) -> dict[str, Any]:
        """Frames drawn (buffer swaps), main-loop iterations and Clock's rfps, now."""
        bench = self._bench_on()
        return {"t": time.monotonic(), "frames": bench.frames, "render_s": bench.render_s,
                "loops": Clock.frames, "rfps": Clock.get_rfps()}

    def _cmd_bench_drain(self) -> dict[str, Any]:
        return self._bench_on().drain()

    def _cmd_bench_mic_ready(self) -> bool:
        """The armed microphone has delivered its first block (record starts at once)."""
        recorder = self.app.recorder
        return bool(recorder.armed and recorder.warm_up(timeout_s=0) is not None)

    def _stories_screen(self) -> Widget:
        return self.app.root.get_screen("stories")

    def _cmd_bench_tap_tile(self, story_id: str) -> float:
        """A timed touch on the stories grid's tile of ``story_id`` (it must be laid out,
        i.e. on or near the screen); returns the touch's time.monotonic()."""
        layout = self._stories_screen().ids.tiles.layout_manager
        tile = next((c for c in layout.children if getattr(c, "story_id", None) == story_id),
                    None)
        if tile is None:
            raise KeyError(f"no tile laid out for story {story_id!r}")
        return self._bench_on().tap_widget(tile, f"tile:{story_id}")

    def _cmd_bench_filter(self, kind: str, value: str | None) -> dict[str, Any]:
        """Set a filter of the stories screen, timed (see ``_Bench.set_filter``)."""
        return self._bench_on().set_filter(self._stories_screen(), kind, value)

    def _cmd_bench_filters(self) -> list[dict[str, Any]]:
        """The filter changes whose second of frames is over, forgotten here."""
        bench = self._bench_on()
        now = time.monotonic()
        done = [f for f in bench.filters if now - f["touch_at"] > 1.1]
        bench.filters = [f for f in bench.filters if now - f["touch_at"] <= 1.1]
        return done

    def _cmd_bench_scroll(self, seconds: float, distance_px: float | None = None
                          ) -> dict[str, Any]:
        """Start scrolling the stories grid (see ``_Bench.scroll``)."""
        return self._bench_on().scroll(self._stories_screen().ids.tiles, seconds,
                                       distance_px)

    def _cmd_bench_scroll_result(self) -> dict[str, Any] | None:
        """The scroll's frames once it is over; None while it runs."""
        state = self._bench_on().scroll_state
        return dict(state) if state is not None and state["done"] else None

    def _cmd_bench_scroll_top(self) -> bool:
        self._bench_on()
        self._stories_screen().ids.tiles.scroll_y = 1.0
        return True

    def _cmd_bench_plays(self) -> list[dict[str, Any]]:
        """The output streams opened so far (see ``_Bench._wrap_output``), forgotten
        here; call it once the stream is closed."""
        bench = self._bench_on()
        plays, bench.plays = bench.plays, []
        return [dict(p) for p in plays]

    def _cmd_bench_player(self) -> dict[str, Any]:
        """The story screen's player: its state and position, now."""
        self._bench_on()
        player = self.app.root.get_screen("story").player
        return {"t": time.monotonic(),
                "state": None if player is None else str(player.state.value),
                "position_s": None if player is None else player.position_s}

    def _cmd_app_call(self, method: str, args: list[Any] | None = None) -> Any:
        """Call a method of the app (``visitor_event``, ``try_staff_pin``...)."""
        return getattr(self.app, method)(*(args or []))

    def _cmd_center(self, id: str) -> list[float]:
        """Where a widget's centre is, in window coordinates (for presses and drags)."""
        widget = self._widget(id)
        return [float(v) for v in widget.to_window(*widget.center)]

    def _cmd_window_close(self) -> bool:
        """What the window manager's close (Alt+F4) does, as Kivy's SDL2 window handles
        its "quit" event: ask ``on_request_close``, and quit unless a handler refuses."""
        from kivy.base import EventLoop
        from kivy.core.window import Window

        if not Window.dispatch("on_request_close"):
            EventLoop.quit = True
        return True

    def _cmd_escape(self) -> bool:
        """The Escape key, as the keyboard sends it."""
        from kivy.core.window import Window

        Window.dispatch("on_keyboard", 27, 41, None, [])
        return True

    def _cmd_tap_input(self, id: str) -> bool:
        """A touch on the widget through Kivy's whole input path, post-processing
        included (double-tap detection), as the touchscreen's touches go."""
        from kivy.base import EventLoop

        widget = self._widget(id)
        touch = UnitTestTouch(*widget.to_window(*widget.center))
        EventLoop._dispatch_input("begin", touch)
        EventLoop._dispatch_input("end", touch)
        return True

    def _cmd_press(self, x: float, y: float, seconds: float) -> bool:
        """A touch at window position (x, y) held for ``seconds`` (a long press)."""
        touch = UnitTestTouch(x, y)
        touch.touch_down()
        Clock.schedule_once(lambda _dt: touch.touch_up(), seconds)
        return True

    def _cmd_quit(self) -> bool:
        Clock.schedule_once(lambda _dt: self.app.stop(), 0)
        return True

    def _run_on_main(self, request: dict[str, Any]) -> dict[str, Any]:
        done = threading.Event()
        reply: dict[str, Any] = {}
        command: Callable[..., Any] | None = getattr(self, f"_cmd_{request.get('cmd')}", None)

        def run(_dt: float) -> None:
            try:
                if command is None:
                    raise KeyError(f"unknown command {request.get('cmd')!r}")
                reply["result"] = command(**request.get("args", {}))
            except Exception as exc:  # reported to the test, not swallowed
                reply["error"] = f"{type(exc).__name__}: {exc}"
            if request.get("cmd") == "tap_input" and "error" not in reply:
                # The touch is queued for this frame's input dispatch: answer after it.
                Clock.schedule_once(lambda _dt: done.set(), 0)
            else:
                done.set()

        Clock.schedule_once(run, 0)
        if not done.wait(10):
            reply["error"] = "timed out waiting for the main thread"
        return reply

    def _serve(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as stream:
                for line in stream:
                    reply = self._run_on_main(json.loads(line))
                    stream.write(json.dumps(reply).encode() + b"\n")
                    stream.flush()
