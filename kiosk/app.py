"""The Kivy application: a ScreenManager with one module and one ``.kv`` file per screen.

Kivy reads its settings from the environment and the command line when it is first
imported, so everything here that touches Kivy is imported inside ``run_app`` after
the environment is prepared.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import logs
from .config import KioskConfig
from .vault.store import Store
from .vault.sweep import sweep

log = logging.getLogger("kiosk.app")

WINDOW_SIZE = (1280, 800)
#: A touch within this many milliseconds of the previous one, at the same place, is
#: a double touch and is dropped.
DOUBLE_TAP_MS = 250


def _prepare_kivy_environment(cfg: KioskConfig) -> None:
    # Our own argparse owns the command line; Kivy must not read it.
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    # Kivy's config and logs live with the kiosk's data, not in the user's home.
    os.environ.setdefault("KIVY_HOME", str((cfg.data_dir / "kivy").resolve()))
    Path(os.environ["KIVY_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("KIVY_NO_CONSOLELOG", "1")


def run_app(cfg: KioskConfig, *, screenshot: Path | None = None,
            fullscreen: bool = False, walkthrough: dict[str, Any] | None = None,
            on_done: Callable[[Any], None] | None = None) -> int:
    """Run the touchscreen app until it is closed; returns the exit code.

    ``walkthrough`` (options of :class:`kiosk.walkthrough.Walkthrough`) makes the app
    drive a whole session by itself; ``on_done(app)`` runs after the app has stopped.
    """
    # Before any screen shows: whatever a crash or a power cut left of an unsubmitted
    # session (sealed parts, .part files) is deleted, as DESIGN.md's start-up rule says.
    store = Store.in_data_dir(cfg.data_dir)
    sweep(cfg.data_dir, store, retention_days=cfg.sync.retention_days)
    _prepare_kivy_environment(cfg)
    from kivy.config import Config

    Config.set("graphics", "width", str(WINDOW_SIZE[0]))
    Config.set("graphics", "height", str(WINDOW_SIZE[1]))
    Config.set("graphics", "resizable", "0")
    if fullscreen or cfg.display.kiosk_mode:
        # A kiosk in a hall: the whole screen, no cursor (``[display] kiosk_mode =
        # false`` in the config gives a window with a cursor, for development).
        Config.set("graphics", "fullscreen", "auto")
        Config.set("graphics", "show_cursor", "0")
    # A kiosk must not be closed from the keyboard.
    Config.set("kivy", "exit_on_escape", "0")
    # No multitouch emulation circles on right-click during staff testing with a mouse.
    Config.set("input", "mouse", "mouse,disable_multitouch")
    # Double touches: a second touch this soon and this close to the first is marked as
    # a double tap, and the app drops it (a bouncing finger must not press "record" and
    # then "stop", or skip two questions). No retained touches: a touch that vanishes is
    # over, never joined to a later one.
    Config.set("postproc", "double_tap_time", str(DOUBLE_TAP_MS))
    Config.set("postproc", "double_tap_distance", "30")
    Config.set("postproc", "retain_time", "0")

    from .kivy_app import KioskApp

    app = KioskApp(cfg, store=store, screenshot=screenshot, walkthrough=walkthrough)
    logs.event(log, "app_start")
    try:
        app.run()
        if on_done is not None:
            on_done(app)
    finally:
        store.close()
    logs.event(log, "app_stop")
    return app.exit_code
