"""One story: play, pause, seek on a bar you can drag, and back. The transcript scrolls
with the playback and reads right to left for Arabic stories."""

from __future__ import annotations

from typing import Any

from kivy.app import App
from kivy.clock import Clock

from ..audio.player import Player, PlayerState, StoryFile
from . import load_kv
from .stories import byline, clock_text
from .widgets import SessionScreen

load_kv("story")

#: How often the position is looked at while playing. What it shows changes once a
#: second (the clock's second), because each change redraws the whole window (about
#: 20 ms in software rendering): redrawn 20 times a second, a playing story cost 82 % of
#: a core; once a second, about 7 % (bench/kiosk.py).
POSITION_HZ = 4


class StoryScreen(SessionScreen):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.story: Any = None
        self.player: Player | None = None
        self._dragging = False
        self._event: Any = None

    # -- entering and leaving -------------------------------------------------------------
    def show_story(self, story: Any) -> None:
        """Load ``story`` (its file is opened now, so "play" starts at once)."""
        app = App.get_running_app()
        tr = app.tr
        self.stop()
        self.story = story
        ids = self.ids
        ids.title.language = ids.transcript.language = story.language
        ids.title.source_text = story.title
        ids.transcript.source_text = story.transcript
        ids.byline.source_text = byline(story, tr.language)
        ids.badge.source_text = (tr._("Demo story: made by the kiosk to show how it works")
                                 if story.demo else "")
        ids.transcript_view.scroll_y = 1
        player = Player(app.recorder.streams,
                        on_end=lambda completed: Clock.schedule_once(
                            lambda _dt: self._ended(completed), 0))
        try:
            duration = player.load(StoryFile(app.library.audio_path(story)))
        except Exception:
            player.stop()
            app.tell("playback_failed")
            duration = story.duration_s
        else:
            self.player = player
        ids.seek.max = max(duration, 0.1)
        ids.seek.value = 0
        self._show_state()

    def on_enter(self, *_args: Any) -> None:
        self._event = Clock.schedule_interval(self._update, 1 / POSITION_HZ)

    def on_leave(self, *_args: Any) -> None:
        if self._event is not None:
            self._event.cancel()
            self._event = None
        self.stop()

    def stop(self) -> None:
        player, self.player = self.player, None
        if player is not None:
            player.stop()

    # -- controls ----------------------------------------------------------------------------
    def play_or_pause(self) -> None:
        app = App.get_running_app()
        if self.player is None:
            return
        if self.player.state is PlayerState.PLAYING:
            self.player.pause()
            app.visitor_event("paused")
        else:
            app.visitor_event("play")
        self._show_state()

    def start(self) -> None:
        """The visitor machine's Play output."""
        if self.player is not None:
            self.player.play()
        self._show_state()

    def _ended(self, _completed: bool) -> None:
        App.get_running_app().visitor_event("ended")
        self._update(0, force=True)

    def seek_touch_down(self, slider: Any, touch: Any) -> bool:
        if slider.collide_point(*touch.pos):
            self._dragging = True
            App.get_running_app().visitor_event("activity")
        return False

    def seek_touch_up(self, slider: Any, touch: Any) -> bool:
        if self._dragging:
            self._dragging = False
            self.seek_to(slider.value)
        return False

    def position_s(self) -> float:
        """Where the player is (seconds), for tests and the walkthrough."""
        return self.player.position_s if self.player is not None else 0.0

    def seek_to(self, seconds: float) -> None:
        if self.player is not None:
            self.player.seek(seconds)
            self._update(0, force=True)

    # -- display -----------------------------------------------------------------------------
    def _show_state(self) -> None:
        tr = App.get_running_app().tr
        playing = self.player is not None and self.player.state is PlayerState.PLAYING
        self.ids.play_button.source_text = tr._("Pause") if playing else tr._("Play")
        self.ids.play_button.disabled = self.player is None

    def _update(self, _dt: float, force: bool = False) -> None:
        player = self.player
        if player is None:
            return
        position, duration = player.position_s, player.duration_s
        text = f"{clock_text(position)} / {clock_text(duration)}"
        if self.ids.clock.text == text and not force:
            return  # nothing visible would change
        self.ids.clock.text = text
        if not self._dragging:
            self.ids.seek.value = position
        view = self.ids.transcript_view
        if duration > 0 and view.height < self.ids.transcript.height:
            # The transcript follows the voice: the part being heard stays in view.
            view.scroll_y = max(0.0, min(1.0, 1 - position / duration))
        self._show_state()
