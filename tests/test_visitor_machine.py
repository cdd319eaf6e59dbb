"""The visitor's state machine: exact outputs for every event and the idle rule."""

from __future__ import annotations

import pytest

from kiosk.session.visitor import GoTo, Play, StopStory, VisitorMachine, VisitorState

A, S, T = VisitorState.ATTRACT, VisitorState.STORIES, VisitorState.STORY


def at_story(now: float = 0.0) -> VisitorMachine:
    m = VisitorMachine(idle_s=60)
    assert m.listen(now=now) == [GoTo(S)]
    assert m.open("s1", now=now) == [GoTo(T)]
    return m


def test_browse_open_play_back() -> None:
    m = at_story()
    assert m.play(now=1) == [Play("s1")] and m.playing
    assert m.play(now=2) == []  # already playing
    assert m.paused(now=3) == [] and not m.playing
    assert m.back(now=4) == [StopStory(), GoTo(S)]
    assert (m.state, m.story_id) == (S, None)
    assert m.back(now=5) == [GoTo(A)]
    assert m.back(now=6) == []


def test_events_that_do_not_apply_do_nothing() -> None:
    m = VisitorMachine(idle_s=60)
    assert m.open("s1", now=0) == [] and m.play(now=0) == [] and m.state is A
    m.listen(now=0)
    assert m.listen(now=0) == [] and m.play(now=0) == []


@pytest.mark.parametrize("where", [S, T])
def test_idle_while_browsing_or_after_a_story_returns_to_attract(where) -> None:
    m = at_story() if where is T else VisitorMachine(idle_s=60)
    if where is S:
        m.listen(now=0)
    assert m.tick(now=59.9) == []
    expected = [StopStory(), GoTo(A)] if where is T else [GoTo(A)]
    assert m.tick(now=60) == expected
    assert m.state is A and m.story_id is None


def test_a_playing_story_is_never_cut_off_and_the_clock_restarts_at_its_end() -> None:
    m = at_story()
    m.play(now=0)
    assert m.tick(now=500) == []  # a long story, no touch
    m.ended(now=510)
    assert m.tick(now=569) == []
    assert m.tick(now=570) == [StopStory(), GoTo(A)]


def test_activity_postpones_the_idle_return() -> None:
    m = VisitorMachine(idle_s=10)
    m.listen(now=0)
    m.activity(now=8)
    assert m.tick(now=17) == [] and m.tick(now=18) == [GoTo(A)]


def test_idle_s_must_be_positive() -> None:
    with pytest.raises(ValueError):
        VisitorMachine(idle_s=0)
