"""Submitting: the manifest is sealed and the submission committed, with progress."""

from __future__ import annotations

from typing import Any

from kivy.clock import Clock

from . import load_kv
from .widgets import SessionScreen

load_kv("submitting")


class SubmittingScreen(SessionScreen):
    _event: Any = None

    def on_enter(self, *_args: Any) -> None:
        self._event = Clock.schedule_interval(self._update, 1 / 20)

    def on_leave(self, *_args: Any) -> None:
        if self._event is not None:
            self._event.cancel()

    def _update(self, _dt: float) -> None:
        self.ids.progress.value = self.session.seal_progress
