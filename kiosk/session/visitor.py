"""The visitor's side: browse the published stories, listen to one, come back.

A plain-Python state machine like the defender's (no Kivy, time passed in), much
smaller: a visitor gives nothing, so leaving just returns to attract. Inactivity while
browsing, or after a story has ended, leads back to attract; a story that is playing
is never cut off by the idle timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class VisitorState(StrEnum):
    ATTRACT = "attract"
    STORIES = "stories"
    STORY = "story"


@dataclass(frozen=True, slots=True)
class GoTo:
    """Show this screen (the outside switches screens)."""

    state: VisitorState


@dataclass(frozen=True, slots=True)
class Play:
    story_id: str


@dataclass(frozen=True, slots=True)
class StopStory:
    """Stop the player and let go of the story's file."""


class VisitorMachine:
    def __init__(self, *, idle_s: float) -> None:
        if idle_s <= 0:
            raise ValueError("idle_s must be positive")
        self.idle_s = idle_s
        self.state = VisitorState.ATTRACT
        self.story_id: str | None = None
        self.playing = False
        self._last = 0.0

    def _touch(self, now: float) -> None:
        self._last = now

    def listen(self, *, now: float) -> list[object]:
        """"Listen to stories" on the attract screen."""
        self._touch(now)
        if self.state is not VisitorState.ATTRACT:
            return []
        self.state = VisitorState.STORIES
        return [GoTo(VisitorState.STORIES)]

    def activity(self, *, now: float) -> list[object]:
        """Any touch while browsing (a filter, a scroll)."""
        self._touch(now)
        return []

    def open(self, story_id: str, *, now: float) -> list[object]:
        self._touch(now)
        if self.state is not VisitorState.STORIES:
            return []
        self.state = VisitorState.STORY
        self.story_id = story_id
        return [GoTo(VisitorState.STORY)]

    def play(self, *, now: float) -> list[object]:
        self._touch(now)
        if self.state is not VisitorState.STORY or self.story_id is None or self.playing:
            return []
        self.playing = True
        return [Play(self.story_id)]

    def paused(self, *, now: float) -> list[object]:
        """The visitor paused (or the story ended): the idle timer runs again from now."""
        self._touch(now)
        self.playing = False
        return []

    def ended(self, *, now: float) -> list[object]:
        return self.paused(now=now)

    def back(self, *, now: float) -> list[object]:
        self._touch(now)
        if self.state is VisitorState.STORY:
            out: list[object] = [StopStory()] if self.story_id is not None else []
            self.state, self.story_id, self.playing = VisitorState.STORIES, None, False
            return [*out, GoTo(VisitorState.STORIES)]
        if self.state is VisitorState.STORIES:
            self.state = VisitorState.ATTRACT
            return [GoTo(VisitorState.ATTRACT)]
        return []

    def tick(self, *, now: float) -> list[object]:
        if self.state is VisitorState.ATTRACT or self.playing:
            if self.playing:
                self._last = now  # the clock restarts when the story stops
            return []
        if now - self._last < self.idle_s:
            return []
        out: list[object] = [StopStory()] if self.state is VisitorState.STORY else []
        self.state, self.story_id, self.playing = VisitorState.ATTRACT, None, False
        return [*out, GoTo(VisitorState.ATTRACT)]

    def reset(self) -> None:
        """Back at attract for another reason (the defender's session took over)."""
        self.state, self.story_id, self.playing = VisitorState.ATTRACT, None, False
