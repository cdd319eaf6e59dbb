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
    widget = find_widget(app, widget_id)
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

    def start(self) -> None:
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

    def _cmd_tap(self, id: str) -> bool:
        tap(self.app, id)
        return True

    def _cmd_screenshot(self, path: str) -> str:
        from .kivy_app import save_screenshot

        return str(save_screenshot(Path(path)))

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
