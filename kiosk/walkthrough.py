"""``kiosk walkthrough``: the real app drives a whole defender session by itself.

It taps through every screen with simulated touches (as the test driver does),
records each answer through the microphone as configured, listens to the first one,
submits, and saves a PNG of every screen it passes. It succeeds only if the session
ends with a sealed, submitted submission in the outbox. The demo runs it with a
virtual microphone fed with speech; staff can run it on a real kiosk to see that the
whole path works (the submission it leaves is a real one, marked as a walkthrough in
its manifest's ``walkthrough`` field so that the vetting team can discard it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import logs
from .vault.layout import MANIFEST_FILE
from .vault.store import SUBMITTED

log = logging.getLogger("kiosk.walkthrough")

#: A step of the script yields a condition and how long it may take to come true.
Wait = tuple[Callable[[], bool], float]


@dataclass
class WalkthroughResult:
    ok: bool = False
    submission: str | None = None
    manifest: Path | None = None
    screenshots: list[Path] = field(default_factory=list)
    error: str | None = None


class Walkthrough:
    """Runs on the Kivy clock inside :class:`kiosk.kivy_app.KioskApp`."""

    def __init__(self, app: Any, *, screenshots: Path, language: str,
                 answer_s: float = 4.0, answers: int = 2, visitor: bool = False,
                 story: str | None = None) -> None:
        self.app = app
        #: The visitor plays this story (an id of the catalog); None: the first shown.
        self.story = story
        self.screenshots = screenshots
        self.language = language
        self.answer_s = answer_s
        self.answers = answers
        self.visitor = visitor
        self.result = WalkthroughResult()
        self._steps: Iterator[Wait] | None = None
        self._waiting: Wait | None = None
        self._deadline = 0.0
        self._shots = 0

    # -- running on the clock ------------------------------------------------------------
    def start(self) -> None:
        from kivy.clock import Clock

        self._steps = self._visitor_script() if self.visitor else self._script()
        self._event = Clock.schedule_interval(self._step, 0.05)

    def _step(self, _dt: float) -> None:
        assert self._steps is not None
        try:
            if self._waiting is not None:
                condition, _timeout = self._waiting
                if not condition():
                    if time.monotonic() > self._deadline:
                        raise TimeoutError(f"waited in vain on screen {self._screen()!r}")
                    return
            self._waiting = next(self._steps)
            self._deadline = time.monotonic() + self._waiting[1]
        except StopIteration:
            self._finish()
        except Exception as exc:
            self.result.error = f"{type(exc).__name__}: {exc}"
            logs.event(log, "walkthrough_failed", error=type(exc).__name__,
                       screen=self._screen())
            self._finish()

    def _finish(self) -> None:
        self._event.cancel()
        self.app.exit_code = 0 if self.result.ok else 1
        self.app.stop()

    # -- what the script does ---------------------------------------------------------------
    def _screen(self) -> str:
        return str(self.app.root.current) if self.app.root is not None else ""

    def _on(self, name: str, timeout: float = 10.0) -> Wait:
        # A screen counts as reached once its fade-in is over.
        def reached() -> bool:
            manager = self.app.root
            return manager.current == name and not manager.transition.is_active
        return reached, timeout

    def _pause(self, seconds: float) -> Wait:
        until = time.monotonic() + seconds
        return (lambda: time.monotonic() >= until), seconds + 5

    def _tap(self, widget_id: str) -> None:
        from .driver import tap

        tap(self.app, widget_id)

    def _shot(self, name: str) -> None:
        from .kivy_app import save_screenshot

        self._shots += 1
        path = self.screenshots / f"{self._shots:02d}-{name}.png"
        self.result.screenshots.append(save_screenshot(path))

    def _script(self) -> Iterator[Wait]:
        machine = self.app.session.machine
        yield self._on("attract")
        yield self._pause(0.3)
        self._shot("attract")
        self._tap("share_button")
        yield self._on("language")
        self._shot("language")
        self._tap(f"lang_{self.language}")
        for name in ("who", "safety"):
            yield self._on(name)
            self._shot(name)
            self._tap("next_button")
        yield self._on("consent")
        for widget_id in ("publish_yes", "name_anonymous", "contact_no"):
            self._tap(widget_id)
        yield self._pause(0.2)
        self._shot("consent")
        self._tap("next_button")
        yield self._on("identity")
        self.app.root.current_screen.select_country("KE")
        yield self._pause(0.2)
        self._shot("identity")
        self._tap("next_button")
        yield self._on("questions")
        # The microphone was armed on entering; its first block takes up to ~2 s.
        yield (lambda: self.app.recorder.warm_up(timeout_s=0) is not None), 10.0
        self._shot("questions")
        for number in range(min(self.answers, len(machine.prompt_ids))):
            prompt_id = machine.prompt_id
            self._tap("record_button")
            yield self._pause(self.answer_s)
            if number == 0:
                self._shot("recording")
            self._tap("record_button")
            yield (lambda p=prompt_id: machine.answers.get(p) is not None), 15.0
            if number == 0:
                yield self._pause(0.2)
                self._shot("recorded")
                self._tap("listen_button")
                yield self._pause(1.0)
                self._shot("listening")
                self._tap("listen_button")
                yield (lambda: not machine.playing), 5.0
            self._tap("next_button")
            yield self._pause(0.3)
        while self._screen() == "questions":
            self._tap("skip_button")
            yield self._pause(0.3)
        yield self._on("review")
        self._shot("review")
        self._tap("submit_button")
        yield self._on("receipt", 30.0)
        yield self._pause(0.3)
        self._shot("receipt")
        self._check_submitted()
        self._tap("done_button")
        yield self._on("attract")

    def _visitor_script(self) -> Iterator[Wait]:
        """A visitor: browse, filter by language, play a story to its end, back."""
        app = self.app
        yield self._on("attract")
        yield self._pause(0.3)
        self._shot("attract")
        self._tap("listen_button")
        yield self._on("stories")
        browser = app.root.current_screen
        browser.switch_language(self.language)
        yield self._pause(0.3)
        self._shot("stories")
        if not browser.shown():
            raise RuntimeError("no stories to listen to (kiosk demo-stories makes some)")
        self._tap("language_filter")
        yield self._pause(0.3)
        self._shot("filter")
        languages = app.library.languages()
        choice = self.language if self.language in languages else languages[0]
        from .driver import overlays

        (chooser,) = overlays()
        chooser.chosen(choice)
        yield self._pause(0.3)
        self._shot("filtered")
        shown = browser.shown()
        if self.story is not None and self.story not in shown:
            raise RuntimeError(f"story {self.story} is not listed in {choice}")
        chosen = self.story if self.story is not None else shown[0]
        app.visitor_event("open", chosen)
        yield self._on("story")
        yield self._pause(0.3)
        self._shot("story")
        story_screen = app.root.current_screen
        self._tap("play_button")
        yield self._pause(1.5)
        self._shot("playing")
        # To the end of the story: the player reports it, the machine stops playing.
        duration = story_screen.player.duration_s if story_screen.player else 60
        yield (lambda: not app.visitor.playing), duration + 15
        if story_screen.player is None or story_screen.player.error:
            raise RuntimeError("the story did not play to its end")
        yield self._pause(0.3)
        self._shot("ended")
        self.result.ok = True
        self.result.submission = chosen  # the story listened to
        self._tap("back_button")
        yield self._on("stories")
        self._tap("back_button")
        yield self._on("attract")

    def _check_submitted(self) -> None:
        session = self.app.session
        submission = session.last_submission
        if submission is None or self.app.store.submission_state(submission) != SUBMITTED:
            raise RuntimeError("the session ended without a submitted submission")
        manifest = self.app.cfg.data_dir / "outbox" / submission / MANIFEST_FILE
        if not manifest.is_file():
            raise RuntimeError("the submitted submission has no sealed manifest")
        self.result.ok = True
        self.result.submission = submission
        self.result.manifest = manifest
        logs.event(log, "walkthrough_submitted", submission=submission)
