"""The KioskApp itself; imported only after ``app.run_app`` has prepared Kivy.

App-wide state lives here: the config, the store, the translator ``tr`` every kv rule
binds to, and the defender's session (:class:`SessionController` over the plain-Python
state machine). The app is the session's :class:`SessionUI`: it switches screens,
opens and closes the overlays, and tells the person what they need to know.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kivy.animation import Animation
from kivy.app import App
from kivy.clock import Clock
from kivy.core.window import Window
from kivy.properties import StringProperty
from kivy.uix.modalview import ModalView
from kivy.uix.screenmanager import NoTransition, ScreenManager

from . import logs
from .app import WINDOW_SIZE
from .audio.recorder import Recorder
from .config import KioskConfig
from .i18n import kivy_translator
from .prompts import load_prompts
from .session.controller import SessionController
from .session.machine import Overlay, SessionMachine, State
from .session.receipt import load_words
from .session.visitor import GoTo, Play, StopStory, VisitorMachine, VisitorState
from .staff.lockout import PinGate
from .staff_gesture import CornerGesture
from .stories import StoryLibrary
from .sync_worker import SyncWorker, is_enrolled
from .vault.store import Store

log = logging.getLogger("kiosk.app")

#: Environment variable naming a Unix socket for the test driver (tests only).
DRIVER_ENV = "KIOSK_TEST_DRIVER"
WORDLIST = Path(__file__).resolve().parent.parent / "assets" / "wordlist.txt"
#: How often the session's idle timer is looked at.
TICK_S = 0.25
#: How long a new screen takes to fade in.
FADE_S = 0.15
STAFF_PIN = "staff_pin"
STAFF = "staff"


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
        #: The published stories visitors listen to (a bad catalog is not shown).
        self.library = StoryLibrary.from_config(cfg)
        self.library.load()
        self.visitor = VisitorMachine(idle_s=cfg.idle.warn_after_s)
        self.gesture = CornerGesture(*WINDOW_SIZE)
        self.pin_gate = PinGate(cfg.data_dir, cfg.staff.pin_hash)
        self._staff_activity = 0.0
        self._overlay: ModalView | None = None
        self._message: ModalView | None = None
        #: Called on every screen change (the walkthrough and the benchmark listen).
        self.on_screen: list[Callable[[str], None]] = []
        self._walkthrough_options = walkthrough
        self.walkthrough: Any = None
        #: Background sync (started in on_start if enrolled; staff's "Sync now" uses it).
        self.sync_worker = SyncWorker(cfg, store)
        # A pass that installed a new catalog: load it on the UI thread (below).
        self.sync_worker.on_pass.append(lambda result: Clock.schedule_once(
            lambda _dt: self.catalog_changed(), 0) if getattr(
                result, "catalog_installed", False) else None)
        self._prompt_ids: list[str] = []

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
            staff,
            staff_pin,
            stories,
            story,
            submitting,
            who,
        )

        Window.clearcolor = (0.07, 0.08, 0.10, 1)
        # No cross-fade: Kivy's FadeTransition draws both screens into two full-window
        # offscreen buffers every frame, which costs 60-100 ms a frame in software
        # rendering (bench/kiosk.py). The new screen fades in by its own opacity instead.
        manager = ScreenManager(transition=NoTransition())
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
        manager.add_widget(stories.StoriesScreen(name=VisitorState.STORIES.value))
        manager.add_widget(story.StoryScreen(name=VisitorState.STORY.value))
        manager.add_widget(staff_pin.StaffPinScreen(name=STAFF_PIN))
        manager.add_widget(staff.StaffScreen(name=STAFF))
        manager.bind(current=lambda _m, name: self._screen_changed(name))
        prompts = load_prompts()
        self._prompt_ids = [p.id for p in prompts]
        machine = SessionMachine(prompt_ids=self._prompt_ids,
                                 languages=self.cfg.languages,
                                 warn_after_s=self.cfg.idle.warn_after_s,
                                 discard_after_s=self.cfg.idle.discard_after_s)
        self.session = SessionController(
            machine=machine, recorder=self.recorder, store=self.store,
            data_dir=self.cfg.data_dir, recipients=self.cfg.recipients,
            allow_mixed=self.cfg.allow_classic_recipients, words=load_words(WORDLIST),
            ui=self, call_on_main=lambda fn: Clock.schedule_once(lambda _dt: fn(), 0))
        self._apply_catalog()
        Clock.schedule_interval(self._tick, TICK_S)
        return manager

    def on_start(self) -> None:
        # Everything made at start-up lives as long as the app: out of the collector's
        # way, so that its passes stay short.
        gc.collect()
        gc.freeze()
        Window.bind(on_touch_down=self._guard_touch, on_touch_move=self._gesture_move,
                    on_touch_up=self._gesture_up)
        if self.cfg.display.kiosk_mode:
            # The window manager's close (Alt+F4, the title bar's cross) is refused.
            Window.bind(on_request_close=lambda *_args, **_kwargs: True)
        from .watchdog import Watchdog

        self._watchdog = Watchdog.from_env()
        if self._watchdog.interval_s:
            # From the UI's own clock: a frozen UI stops pinging, and systemd restarts it.
            Clock.schedule_interval(lambda _dt: self._watchdog.ping(),
                                    self._watchdog.interval_s)
        self._watchdog.ready()
        if is_enrolled(self.cfg.data_dir):
            # Its own thread at a lower priority: the UI and the recorder come first.
            self.sync_worker.start()
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
        # The running pass ends at its next chunk (the server keeps the offset); the
        # store it writes to is closed only after the app has stopped.
        self.sync_worker.stop(timeout=3.0)
        # A session still open when the app stops is shredded now (the start-up sweep
        # would do it at the next start; a shutdown should not leave it until then).
        session = self.session
        if session is not None and session.custody is not None and not session.custody.closed:
            session.custody.discard()
        self.recorder.close()

    def _guard_touch(self, _window: Any, touch: Any) -> bool:
        """Drop a double touch (see ``app.DOUBLE_TAP_MS``); True stops it here. On the
        attract screen, also watch for the hidden staff gesture."""
        if getattr(touch, "is_double_tap", False):
            logs.event(log, "double_touch_dropped", screen=self.root.current)
            return True
        if self.root.current == State.ATTRACT.value and self.gesture.down(
                touch.x, touch.y, time.monotonic()):
            logs.event(log, "staff_gesture")
            self.staff_activity()
            self.root.current = STAFF_PIN
            return True
        return False

    def _gesture_move(self, _window: Any, touch: Any) -> bool:
        self.gesture.move(touch.x, touch.y)
        return False

    def _gesture_up(self, _window: Any, touch: Any) -> bool:
        if self.root.current == State.ATTRACT.value:
            self.gesture.up(touch.x, touch.y, time.monotonic())
        return False

    # -- staff mode ----------------------------------------------------------------------------
    def staff_activity(self) -> None:
        self._staff_activity = time.monotonic()

    def try_staff_pin(self, pin: str) -> str:
        """Check a PIN typed on the keypad; returns what the keypad says."""
        from .staff.lockout import Verdict

        outcome = self.pin_gate.try_pin(pin)
        tr = self.tr
        if outcome.verdict is Verdict.OPEN:
            self.root.current = STAFF
            return ""
        if outcome.verdict is Verdict.NO_PIN:
            return tr._("Staff mode is not set up on this kiosk (kiosk set-pin).")
        if outcome.verdict is Verdict.LOCKED or not outcome.failures_left:
            # Locked now, or by this very PIN (the fifth wrong one).
            minutes = max(1, round((outcome.seconds_left or 0) / 60))
            return tr._("Too many wrong PINs. Try again in {minutes} min.").format(
                minutes=minutes)
        return tr._("Wrong PIN. Tries left: {tries}").format(tries=outcome.failures_left)

    def sync_worker_state(self) -> dict[str, Any]:
        """The background sync as it is now (for tests and the benchmark)."""
        worker = self.sync_worker
        last = worker.last_result
        return {"alive": worker.alive, "busy": worker.busy, "passes": worker.passes,
                "niceness": worker.niceness, "started": worker.last_pass_started,
                "ended": worker.last_pass_ended,
                "last_error": None if last is None else last.error,
                "last_acknowledged": None if last is None else last.acknowledged,
                "last_sent_bytes": None if last is None else last.sent_bytes}

    def freeze_for_test(self, seconds: float) -> None:
        """Block the UI thread (tests only, through the test driver): a frozen UI."""
        time.sleep(seconds)

    def switch_language(self, code: str) -> None:
        """Show the screens in ``code`` (staff and visitors may read in any language)."""
        self.tr.switch_lang(code)
        self.refresh()

    def leave_staff(self) -> None:
        self.root.current = State.ATTRACT.value

    def _tick(self, _dt: float) -> None:
        if (self.root.current in (STAFF_PIN, STAFF)
                and time.monotonic() - self._staff_activity > self.cfg.idle.warn_after_s):
            # Staff mode left open in a hall closes itself.
            self.leave_staff()
        if self.session is not None:
            self.session.tick()
        self._visitor_perform(self.visitor.tick(now=time.monotonic()))

    def _take_screenshot_and_quit(self, _dt: float) -> None:
        assert self._screenshot is not None
        save_screenshot(self._screenshot)
        logs.event(log, "screenshot_saved")
        self.stop()

    def _screen_changed(self, name: str) -> None:
        screen = self.root.get_screen(name)
        Animation.cancel_all(screen, "opacity")
        screen.opacity = 0.2
        Animation(opacity=1.0, duration=FADE_S).start(screen)
        if name == State.ATTRACT.value:
            # Back at rest: collect what the session left (collection is held off while
            # a person uses the kiosk, where a full pass costs 80-200 ms mid-touch).
            gc.enable()
            gc.collect()
            self.catalog_changed()
        else:
            gc.disable()
        for listener in list(self.on_screen):
            listener(name)

    # -- the catalog ---------------------------------------------------------------------------
    def catalog_changed(self) -> None:
        """A sync may have installed a new catalog (this app's worker, or `kiosk sync`
        in another process): load it, between sessions only (kiosk/stories/session.py)."""
        if self.root is None or self.root.current != State.ATTRACT.value:
            return  # the next attract screen comes back here
        if self.library.changed_on_disk():
            self.library.load()
            logs.event(log, "catalog_reloaded", version=self.library.version)
            self.refresh()
        self._apply_catalog()

    def _apply_catalog(self) -> None:
        """The shown catalog's recipients and prompts, for the next defender session."""
        from .stories.session import session_setup

        session = self.session
        if session is None or (session.custody is not None and not session.custody.closed):
            return
        setup = session_setup(recipients=self.cfg.recipients,
                              allow_classic=self.cfg.allow_classic_recipients,
                              catalog=self.library.catalog, default_prompts=self._prompt_ids)
        if session.machine.use_prompts(setup.prompt_ids):
            session.recipients = list(setup.recipients)
            session.recipients_version = setup.recipients_version

    # -- the attract screen's two choices, and the language --------------------------------
    def choose_listen(self) -> None:
        logs.event(log, "attract_choice", choice="listen")
        self.visitor_event("listen")

    # -- the visitor's side --------------------------------------------------------------------
    def visitor_event(self, event: str, *args: Any) -> None:
        """A visitor's touch on the listen screens, through the visitor machine."""
        self._visitor_perform(getattr(self.visitor, event)(*args, now=time.monotonic()))

    def visitor_state(self) -> str:
        """"playing" while a story plays, else "stopped" (for tests and the walkthrough)."""
        return "playing" if self.visitor.playing else "stopped"

    def _visitor_perform(self, outputs: list[object]) -> None:
        for out in outputs:
            if isinstance(out, GoTo):
                if out.state is VisitorState.STORY:
                    chosen = next((s for s in self.library.stories()
                                   if s.id == self.visitor.story_id), None)
                    if chosen is None:  # gone from the catalog meanwhile
                        self.visitor.back(now=time.monotonic())
                        continue
                    self.root.get_screen("story").show_story(chosen)
                if out.state is VisitorState.ATTRACT:
                    self.tr.switch_lang(self.cfg.languages[0])
                self.root.current = out.state.value
            elif isinstance(out, Play):
                self.root.get_screen("story").start()
            elif isinstance(out, StopStory):
                self.root.get_screen("story").stop()

    def choose_share(self) -> None:
        logs.event(log, "attract_choice", choice="share")
        self.visitor.reset()
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
        if self.root.current == state.value:
            self.refresh()
        else:
            self.root.current = state.value  # its on_pre_enter refreshes it

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
