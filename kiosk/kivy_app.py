"""The KioskApp itself; imported only after ``app.run_app`` has prepared Kivy.

App-wide state lives here: the config, the store, the translator ``tr`` every kv rule
binds to, and the defender's session (:class:`SessionController` over the plain-Python
state machine). The app is the session's :class:`SessionUI`: it switches screens,
opens and closes the overlays, and tells the person what they need to know.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.clock import Clock
from kivy.core.window import Window
from kivy.properties import StringProperty
from kivy.uix.modalview import ModalView
from kivy.uix.screenmanager import FadeTransition, ScreenManager

from . import logs
from .audio.recorder import Recorder
from .config import KioskConfig
from .i18n import kivy_translator
from .prompts import load_prompts
from .session.controller import SessionController
from .session.machine import Overlay, SessionMachine, State
from .session.receipt import load_words
from .vault.store import Store

log = logging.getLogger("kiosk.app")

#: Environment variable naming a Unix socket for the test driver (tests only).
DRIVER_ENV = "KIOSK_TEST_DRIVER"
WORDLIST = Path(__file__).resolve().parent.parent / "assets" / "wordlist.txt"
#: How often the session's idle timer is looked at.
TICK_S = 0.25


class KioskApp(App):
    title = "I Defend Rights"
    #: The project's name as screens show it.
    project_name = StringProperty("I Defend Rights")

    def __init__(self, cfg: KioskConfig, *, store: Store,
                 screenshot: Path | None = None,
                 recorder: Recorder | None = None,
                 walkthrough: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        #: The local queue state (ids, sizes, hashes, states; nothing personal).
        self.store = store
        self.exit_code = 0
        self._screenshot = screenshot
        self._driver: Any = None
        self.recorder = recorder or Recorder.from_config(cfg)
        self.tr = kivy_translator(cfg.languages[0])
        self.session: SessionController | None = None
        self._overlay: ModalView | None = None
        self._message: ModalView | None = None
        #: Called on every screen change (the walkthrough and the benchmark listen).
        self.on_screen: list[Callable[[str], None]] = []
        self._walkthrough_options = walkthrough
        self.walkthrough: Any = None

    def build(self) -> ScreenManager:
        # The screens' modules load their kv files on import: after ``tr`` exists.
        from .screens import (
            attract,
            consent,
            identity,
            language,
            questions,
            receipt,
            review,
            safety,
            submitting,
            who,
        )

        Window.clearcolor = (0.07, 0.08, 0.10, 1)
        manager = ScreenManager(transition=FadeTransition(duration=0.15))
        manager.add_widget(attract.AttractScreen(name=State.ATTRACT.value))
        for name, cls in ((State.LANGUAGE, language.LanguageScreen),
                          (State.WHO, who.WhoScreen), (State.SAFETY, safety.SafetyScreen),
                          (State.CONSENT, consent.ConsentScreen),
                          (State.IDENTITY, identity.IdentityScreen),
                          (State.QUESTIONS, questions.QuestionsScreen),
                          (State.REVIEW, review.ReviewScreen),
                          (State.SUBMITTING, submitting.SubmittingScreen),
                          (State.RECEIPT, receipt.ReceiptScreen)):
            manager.add_widget(cls(name=name.value))
        manager.bind(current=lambda _m, name: self._screen_changed(name))
        prompts = load_prompts()
        machine = SessionMachine(prompt_ids=[p.id for p in prompts],
                                 languages=self.cfg.languages,
                                 warn_after_s=self.cfg.idle.warn_after_s,
                                 discard_after_s=self.cfg.idle.discard_after_s)
        self.session = SessionController(
            machine=machine, recorder=self.recorder, store=self.store,
            data_dir=self.cfg.data_dir, recipients=self.cfg.recipients,
            allow_mixed=self.cfg.allow_classic_recipients, words=load_words(WORDLIST),
            ui=self, call_on_main=lambda fn: Clock.schedule_once(lambda _dt: fn(), 0))
        Clock.schedule_interval(lambda _dt: self.session and self.session.tick(), TICK_S)
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
        if self._walkthrough_options is not None:
            from .walkthrough import Walkthrough

            assert self.session is not None
            self.session.manifest_extra = {"walkthrough": True}
            self.walkthrough = Walkthrough(self, **self._walkthrough_options)
            self.walkthrough.start()

    def on_stop(self) -> None:
        if self._driver is not None:
            self._driver.stop()
        # A session still open when the app stops is shredded now (the start-up sweep
        # would do it at the next start; a shutdown should not leave it until then).
        session = self.session
        if session is not None and session.custody is not None and not session.custody.closed:
            session.custody.discard()
        self.recorder.close()

    def _take_screenshot_and_quit(self, _dt: float) -> None:
        assert self._screenshot is not None
        save_screenshot(self._screenshot)
        logs.event(log, "screenshot_saved")
        self.stop()

    def _screen_changed(self, name: str) -> None:
        for listener in list(self.on_screen):
            listener(name)

    # -- the attract screen's two choices, and the language --------------------------------
    def choose_listen(self) -> None:
        # The listening side is built in its own issue; until then the touch is logged.
        logs.event(log, "attract_choice", choice="listen")

    def choose_share(self) -> None:
        logs.event(log, "attract_choice", choice="share")
        assert self.session is not None
        self.session.fire("share")

    def choose_language(self, code: str) -> None:
        assert self.session is not None
        # The new language first, so that the next screen appears in it.
        self.tr.switch_lang(code)
        self.session.fire("choose_language", code)

    # -- SessionUI --------------------------------------------------------------------------
    def show(self, state: State) -> None:
        if state is State.ATTRACT:
            self._close_overlays()
            self.tr.switch_lang(self.cfg.languages[0])
        self.root.current = state.value
        screen = self.root.current_screen
        if hasattr(screen, "refresh"):
            screen.refresh()

    def show_overlay(self, overlay: Overlay, seconds: float | None) -> None:
        from .screens import overlays

        self._dismiss("_overlay")
        assert self.session is not None
        session = self.session
        if overlay is Overlay.STILL_THERE:
            view: ModalView = overlays.StillThere(
                seconds or 0.0, on_here=lambda: session.fire("still_here"))
        else:
            view = overlays.confirm_cancel(on_yes=lambda: session.fire("confirm_cancel"),
                                           on_no=lambda: session.fire("keep_going"))
        self._overlay = view
        view.open(animation=False)

    def hide_overlay(self) -> None:
        self._dismiss("_overlay")

    def tell(self, message_id: str) -> None:
        from .screens import overlays

        self._dismiss("_message")
        view = overlays.message(self.tr.message(message_id),
                                on_ok=lambda: self._dismiss("_message"))
        self._message = view
        view.open(animation=False)

    def refresh(self) -> None:
        screen = self.root.current_screen if self.root is not None else None
        if screen is not None and hasattr(screen, "refresh"):
            screen.refresh()

    def _dismiss(self, attribute: str) -> None:
        view = getattr(self, attribute)
        setattr(self, attribute, None)
        if view is not None:
            view.dismiss(animation=False)

    def _close_overlays(self) -> None:
        self._dismiss("_overlay")
        self._dismiss("_message")


def save_screenshot(path: Path) -> Path:
    """Save the window to exactly ``path`` (Kivy adds a counter to the name it is given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = Window.screenshot(name=str(path.with_suffix(".png")))
    Path(written).replace(path)
    return path
