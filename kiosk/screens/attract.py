"""The attract screen: what the archive is, a few published stories' highlights in
turn, and the two choices."""

from __future__ import annotations

from typing import Any

from kivy.app import App
from kivy.clock import Clock
from kivy.uix.screenmanager import Screen

from . import load_kv

load_kv("attract")

#: Seconds each highlight stays before the next.
HIGHLIGHT_S = 6.0
HIGHLIGHTS = 5


class AttractScreen(Screen):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._index = 0
        self._event: Any = None

    def on_pre_enter(self, *_args: Any) -> None:
        self._index = 0
        self.show_highlight()

    def on_enter(self, *_args: Any) -> None:
        self._event = Clock.schedule_interval(self._next, HIGHLIGHT_S)

    def on_leave(self, *_args: Any) -> None:
        if self._event is not None:
            self._event.cancel()
            self._event = None

    def _next(self, _dt: float) -> None:
        self._index += 1
        self.show_highlight()

    def show_highlight(self) -> None:
        from .stories import byline

        app = App.get_running_app()
        highlights = app.library.highlights(HIGHLIGHTS) if app.library else []
        box = self.ids.highlight
        if not highlights:
            box.opacity = 0
            return
        chosen = highlights[self._index % len(highlights)]
        story, line = chosen.story, chosen.line
        box.opacity = 1
        for label in (self.ids.hl_title, self.ids.hl_line):
            label.language = story.language
        self.ids.hl_title.source_text = story.title
        self.ids.hl_byline.source_text = byline(story, app.tr.language)
        self.ids.hl_line.source_text = f"“{line}”"
