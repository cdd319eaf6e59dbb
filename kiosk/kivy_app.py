"""The KioskApp itself; imported only after ``app.run_app`` has prepared Kivy."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from kivy.app import App
from kivy.clock import Clock
from kivy.core.window import Window
from kivy.properties import StringProperty
from kivy.uix.screenmanager import FadeTransition, ScreenManager

from . import logs
from .config import KioskConfig
from .screens import attract
from .vault.store import Store

log = logging.getLogger("kiosk.app")

#: Environment variable naming a Unix socket for the test driver (tests only).
DRIVER_ENV = "KIOSK_TEST_DRIVER"


class KioskApp(App):
    title = "I Defend Rights"
    #: The project's name as screens show it.
    project_name = StringProperty("I Defend Rights")

    def __init__(self, cfg: KioskConfig, *, store: Store,
                 screenshot: Path | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        #: The local queue state (ids, sizes, hashes, states; nothing personal).
        self.store = store
        self.exit_code = 0
        self._screenshot = screenshot
        self._driver = None

    def build(self) -> ScreenManager:
        Window.clearcolor = (0.07, 0.08, 0.10, 1)
        manager = ScreenManager(transition=FadeTransition(duration=0.2))
        manager.add_widget(attract.AttractScreen(name="attract"))
        return manager

    def on_start(self) -> None:
        socket_path = os.environ.get(DRIVER_ENV)
        if socket_path:
            from .driver import Driver

            self._driver = Driver(self, Path(socket_path))
            self._driver.start()
        if self._screenshot is not None:
            # Two frames in, everything has been laid out and drawn.
            Clock.schedule_once(self._take_screenshot_and_quit, 1.0)

    def on_stop(self) -> None:
        if self._driver is not None:
            self._driver.stop()

    def _take_screenshot_and_quit(self, _dt: float) -> None:
        assert self._screenshot is not None
        save_screenshot(self._screenshot)
        logs.event(log, "screenshot_saved")
        self.stop()

    # The attract screen's two choices. The listening and recording flows are built
    # in their own issues; until then each choice only records that it was chosen.
    def choose_listen(self) -> None:
        logs.event(log, "attract_choice", choice="listen")

    def choose_share(self) -> None:
        logs.event(log, "attract_choice", choice="share")


def save_screenshot(path: Path) -> Path:
    """Save the window to exactly ``path`` (Kivy adds a counter to the name it is given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = Window.screenshot(name=str(path.with_suffix(".png")))
    Path(written).replace(path)
    return path
