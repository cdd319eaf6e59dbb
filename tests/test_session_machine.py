"""The defender's session machine, magic-wormhole style: feed events, assert exact outputs.

No Kivy, no audio, no clock: time is the ``now`` each event carries.
"""

from __future__ import annotations

import copy
import itertools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from kiosk.session import (
    CONSENT_KEYS,
    ArmMicrophone,
    DisarmMicrophone,
    Discard,
    DropPart,
    HideOverlay,
    InvalidEvent,
    Output,
    Overlay,
    PlayPart,
    Seal,
    SessionMachine,
    Show,
    ShowOverlay,
    StartTake,
    State,
    StopPlayback,
    StopTake,
    Tell,
)

PROMPTS = ("q1", "q2", "q3")
LANGS = ("en", "fr", "ar")
WARN = 60.0
DISCARD = 20.0
T0 = 1000.0
CODE = "meadow-teapot-otter-violin"
SHARING_STATES = [State.LANGUAGE, State.WHO, State.SAFETY, State.CONSENT, State.IDENTITY,
                  State.QUESTIONS, State.REVIEW]


def make(prompts: tuple[str, ...] = PROMPTS) -> SessionMachine:
    return SessionMachine(prompt_ids=prompts, languages=LANGS, warn_after_s=WARN,
                          discard_after_s=DISCARD)


def answer(m: SessionMachine, part: str, *, now: float = T0, silent: bool = False,
           reason: str = "stopped") -> list[Output]:
    """Record the current question and report the take kept as ``part``."""
    assert m.record(now=now) == [StartTake(m.prompt_id)]
    assert m.stop(now=now) == [StopTake()]
    return m.take_ended(m.prompt_id, part, kept=True, reason=reason, silent=silent, now=now)


def _consent_all(m: SessionMachine) -> None:
    for key in CONSENT_KEYS:
        m.set_consent(key, True, now=T0)
    m.next(now=T0)


def _identify(m: SessionMachine) -> None:
    m.set_identity("Ana", "KE", "ana@example.org", now=T0)
    m.next(now=T0)


def _answer_first(m: SessionMachine) -> None:
    answer(m, "q1-1")
    for _ in PROMPTS:
        m.next(now=T0)


_PATH: list[Callable[[SessionMachine], object]] = [
    lambda m: m.share(now=T0),
    lambda m: m.choose_language("en", now=T0),
    lambda m: m.next(now=T0),  # who -> safety
    lambda m: m.next(now=T0),  # safety -> consent
    _consent_all,
    _identify,
    _answer_first,
    lambda m: m.submit(now=T0),
    lambda m: m.submitted(CODE, now=T0),
]


def reach(state: State) -> SessionMachine:
    """A machine walked the ordinary way into ``state``, every event at T0.

    In QUESTIONS it is at the first question with nothing recorded; in REVIEW the first
    question is answered with part "q1-1".
    """
    m = make()
    for step in _PATH:
        if m.state is state:
            break
        step(m)
    assert m.state is state and m.overlay is Overlay.NONE
    return m


def snapshot(m: SessionMachine) -> dict[str, Any]:
    """Everything the machine holds, to show that an event changed nothing."""
    return copy.deepcopy(vars(m))


# -- construction -----------------------------------------------------------------------
@pytest.mark.parametrize("prompts", [(), ("a", "b"), tuple("abcdef"), ("a", "a", "b"),
                                     ("a", "", "b")])
def test_prompt_ids_are_three_to_five_unique(prompts: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        make(prompts)


@pytest.mark.parametrize("kwargs", [{"languages": ()}, {"warn_after_s": 0},
                                    {"discard_after_s": -1}, {"warn_after_s": float("inf")}])
def test_bad_settings_are_refused(kwargs: dict[str, Any]) -> None:
    settings: dict[str, Any] = {"prompt_ids": PROMPTS, "languages": LANGS,
                                "warn_after_s": WARN, "discard_after_s": DISCARD, **kwargs}
    with pytest.raises(ValueError):
        SessionMachine(**settings)


def test_a_new_machine_waits_at_attract() -> None:
    m = make(("a", "b", "c", "d", "e"))
    assert (m.state, m.overlay, m.language, m.receipt_code) == (State.ATTRACT, Overlay.NONE,
                                                                None, None)
    assert m.consent == {"publish_voice": None, "show_name": None, "may_contact": None}
    assert m.answers == dict.fromkeys("abcde") and m.skipped == frozenset()
    assert (m.name, m.display_name, m.country, m.contact) == (None, "Anonymous", None, None)
    assert (m.question, m.recording, m.playing, m.seconds_left(T0)) == (0, False, False, None)
    assert m.prompt_ids == tuple("abcde")


# -- the whole happy path ---------------------------------------------------------------
def test_happy_path_exact_outputs() -> None:
    m = make()
    assert m.share(now=1) == [Show(State.LANGUAGE)]
    assert m.choose_language("fr", now=2) == [Show(State.WHO)]
    assert m.language == "fr"
    assert m.next(now=3) == [Show(State.SAFETY)]
    assert m.next(now=4) == [Show(State.CONSENT)]
    assert m.set_consent("publish_voice", True, now=5) == []
    assert m.set_consent("show_name", True, now=6) == []
    assert m.set_consent("may_contact", True, now=7) == []
    assert m.next(now=8) == [Show(State.IDENTITY)]
    assert m.set_identity("  Ana  ", "ke", " ana@example.org ", now=9) == []
    assert (m.name, m.display_name, m.country, m.contact) == ("Ana", "Ana", "KE",
                                                              "ana@example.org")
    assert m.next(now=10) == [Show(State.QUESTIONS), ArmMicrophone()]
    assert (m.question, m.prompt_id) == (0, "q1")
    assert m.record(now=11) == [StartTake("q1")]
    assert m.recording
    assert m.stop(now=20) == [StopTake()]
    assert m.recording and m.stopping  # until the take reports its end
    assert m.take_ended("q1", "q1-1", kept=True, reason="stopped", silent=False,
                        now=21) == []
    assert not m.recording and m.answers["q1"] == "q1-1"
    assert m.play(now=22) == [PlayPart("q1-1")]
    assert m.playing
    assert m.playback_ended(now=30) == []
    assert not m.playing
    assert m.rerecord(now=31) == [DropPart("q1-1"), StartTake("q1")]
    assert m.answers["q1"] is None
    assert m.take_ended("q1", "q1-2", kept=True, reason="max_length", silent=False,
                        now=40) == [Tell("max_length")]
    assert m.next(now=41) == []
    assert m.question == 1
    assert m.skip(now=42) == []
    assert (m.question, m.skipped) == (2, frozenset({"q2"}))
    assert m.record(now=43) == [StartTake("q3")]
    assert m.stop(now=50) == [StopTake()]
    assert m.take_ended("q3", "q3-3", kept=True, reason="stopped", silent=False,
                        now=51) == []
    assert m.next(now=52) == [DisarmMicrophone(), Show(State.REVIEW)]
    assert m.submit(now=53) == [Show(State.SUBMITTING), Seal({
        "language": "fr", "display_name": "Ana", "name": "Ana", "anonymous": False,
        "country": "KE", "contact": "ana@example.org",
        "consent": {"publish_voice": True, "show_name": True, "may_contact": True},
        "prompt_ids": ["q1", "q2", "q3"],
        "answers": [{"prompt_id": "q1", "part": "q1-2", "skipped": False},
                    {"prompt_id": "q2", "part": None, "skipped": True},
                    {"prompt_id": "q3", "part": "q3-3", "skipped": False}],
    })]
    assert m.tick(now=53 + 10 * WARN) == []  # no idle timeout while sealing
    assert m.submitted(CODE, now=60) == [Show(State.RECEIPT)]
    assert m.receipt_code == CODE
    assert (m.name, m.contact, m.country) == (None, None, None)
    assert m.answers == dict.fromkeys(PROMPTS) and m.skipped == frozenset()
    assert m.consent == dict.fromkeys(CONSENT_KEYS)
    assert m.language == "fr"  # the receipt is shown in the person's language
    assert m.done(now=70) == [Show(State.ATTRACT)]
    assert (m.state, m.language, m.receipt_code) == (State.ATTRACT, None, None)


def test_anonymous_manifest_carries_no_name_or_contact() -> None:
    m = reach(State.CONSENT)
    m.set_consent("publish_voice", True, now=T0)
    m.set_consent("show_name", False, now=T0)
    m.set_consent("may_contact", False, now=T0)
    m.next(now=T0)
    assert m.set_identity("Ana", None, "ana@example.org", now=T0) == []
    assert (m.name, m.display_name, m.contact) == (None, "Anonymous", None)
    assert m.next(now=T0) == [Show(State.QUESTIONS), ArmMicrophone()]
    answer(m, "q1-1")
    m.goto_question(2, now=T0)
    m.next(now=T0)
    (seal,) = [o for o in m.submit(now=T0) if isinstance(o, Seal)]
    assert seal.manifest == {
        "language": "en", "display_name": "Anonymous", "name": None, "anonymous": True,
        "country": None, "contact": None,
        "consent": {"publish_voice": True, "show_name": False, "may_contact": False},
        "prompt_ids": ["q1", "q2", "q3"],
        "answers": [{"prompt_id": "q1", "part": "q1-1", "skipped": False},
                    {"prompt_id": "q2", "part": None, "skipped": False},
                    {"prompt_id": "q3", "part": None, "skipped": False}],
    }


# -- back from every state --------------------------------------------------------------
BACK = {
    State.LANGUAGE: ([Discard(), Show(State.ATTRACT)], State.ATTRACT),
    State.WHO: ([Show(State.LANGUAGE)], State.LANGUAGE),
    State.SAFETY: ([Show(State.WHO)], State.WHO),
    State.CONSENT: ([Show(State.SAFETY)], State.SAFETY),
    State.IDENTITY: ([Show(State.CONSENT)], State.CONSENT),
    State.QUESTIONS: ([DisarmMicrophone(), Show(State.IDENTITY)], State.IDENTITY),
    State.REVIEW: ([Show(State.QUESTIONS), ArmMicrophone()], State.QUESTIONS),
}


@pytest.mark.parametrize("state", list(BACK))
def test_back_from_every_state(state: State) -> None:
    m = reach(state)
    outputs, target = BACK[state]
    assert m.back(now=T0 + 1) == outputs
    assert m.state is target


def test_back_keeps_what_was_given_except_on_leaving_language() -> None:
    m = reach(State.IDENTITY)
    m.back(now=T0)
    assert m.consent == dict.fromkeys(CONSENT_KEYS, True) and m.language == "en"
    m = reach(State.LANGUAGE)
    m.back(now=T0)
    assert m.language is None


def test_back_walks_through_the_questions_one_at_a_time() -> None:
    m = reach(State.REVIEW)
    assert m.back(now=T0) == [Show(State.QUESTIONS), ArmMicrophone()]
    assert m.question == 2
    assert m.back(now=T0) == [] and m.question == 1
    assert m.back(now=T0) == [] and m.question == 0
    assert m.back(now=T0) == [DisarmMicrophone(), Show(State.IDENTITY)]


@pytest.mark.parametrize("state", [State.ATTRACT, State.SUBMITTING, State.RECEIPT])
def test_back_is_not_an_event_outside_sharing(state: State) -> None:
    m = reach(state)
    with pytest.raises(InvalidEvent):
        m.back(now=T0)


# -- consent ----------------------------------------------------------------------------
CHOICES = (None, True, False)


@pytest.mark.parametrize("publish_voice, show_name, may_contact",
                         list(itertools.product(CHOICES, repeat=3)))
def test_every_consent_combination(publish_voice: bool | None, show_name: bool | None,
                                   may_contact: bool | None) -> None:
    m = reach(State.CONSENT)
    for key, value in zip(CONSENT_KEYS, (publish_voice, show_name, may_contact), strict=True):
        assert m.set_consent(key, value, now=T0) == []
    allowed = publish_voice is True and show_name is not None and may_contact is not None
    if allowed:
        assert m.next(now=T0) == [Show(State.IDENTITY)]
    else:
        assert m.next(now=T0) == [Tell("consent_required")]
        assert m.state is State.CONSENT


def test_consent_taken_back_after_identity_blocks_again() -> None:
    m = reach(State.IDENTITY)
    assert m.back(now=T0) == [Show(State.CONSENT)]
    assert m.set_consent("publish_voice", False, now=T0) == []
    assert m.next(now=T0) == [Tell("consent_required")]
    assert m.set_consent("publish_voice", None, now=T0) == []
    assert m.next(now=T0) == [Tell("consent_required")]
    assert m.state is State.CONSENT


def test_identity_checks_consent_again_before_the_microphone() -> None:
    # White-box: no public event changes consent outside CONSENT; this guards against
    # a future one (or a bug) doing so.
    m = reach(State.IDENTITY)
    m._consent["publish_voice"] = False
    assert m.next(now=T0) == [Tell("consent_required")]
    m._consent["publish_voice"] = True
    m._consent["may_contact"] = None
    assert m.next(now=T0) == [Tell("consent_required")]
    assert m.state is State.IDENTITY


@pytest.mark.parametrize("key, value", [("publish", True), ("publish_voice", "yes"),
                                        ("show_name", 1)])
def test_set_consent_refuses_bad_arguments(key: str, value: Any) -> None:
    m = reach(State.CONSENT)
    before = snapshot(m)
    with pytest.raises(ValueError):
        m.set_consent(key, value, now=T0 + 5)
    assert snapshot(m) == before


# -- identity ---------------------------------------------------------------------------
def to_identity(show_name: bool, may_contact: bool) -> SessionMachine:
    m = reach(State.CONSENT)
    m.set_consent("publish_voice", True, now=T0)
    m.set_consent("show_name", show_name, now=T0)
    m.set_consent("may_contact", may_contact, now=T0)
    assert m.next(now=T0) == [Show(State.IDENTITY)]
    return m


@pytest.mark.parametrize("name", [None, "", "   \t"])
def test_a_shown_name_is_required(name: str | None) -> None:
    m = to_identity(show_name=True, may_contact=False)
    assert m.next(now=T0) == [Tell("name_required")]  # nothing given yet
    m.set_identity(name, None, None, now=T0)
    assert m.next(now=T0) == [Tell("name_required")]
    assert m.state is State.IDENTITY
    m.set_identity(" Ana ", None, None, now=T0)
    assert m.next(now=T0) == [Show(State.QUESTIONS), ArmMicrophone()]


def test_anonymous_needs_no_name_and_ignores_one() -> None:
    m = to_identity(show_name=False, may_contact=False)
    m.set_identity("Ana", "ke", None, now=T0)
    assert (m.name, m.display_name, m.country) == (None, "Anonymous", "KE")
    assert m.next(now=T0) == [Show(State.QUESTIONS), ArmMicrophone()]


def test_name_and_contact_are_stripped_and_capped() -> None:
    m = to_identity(show_name=True, may_contact=True)
    m.set_identity("  " + "n" * 200 + "  ", None, " " + "c" * 300, now=T0)
    assert m.name == "n" * 80 and m.contact == "c" * 120
    m.set_identity("Ana" + " " * 77 + "Bee", None, "  ", now=T0)
    assert m.name == "Ana" and m.contact is None  # no trailing space left by the cap


def test_contact_is_kept_only_with_consent() -> None:
    m = to_identity(show_name=False, may_contact=False)
    m.set_identity(None, None, "ana@example.org", now=T0)
    assert m.contact is None
    m = to_identity(show_name=False, may_contact=True)
    m.set_identity(None, None, "ana@example.org", now=T0)
    assert m.contact == "ana@example.org"


def test_withdrawing_consent_drops_what_it_covered() -> None:
    m = to_identity(show_name=True, may_contact=True)
    m.set_identity("Ana", "KE", "ana@example.org", now=T0)
    m.back(now=T0)
    m.set_consent("show_name", False, now=T0)
    m.set_consent("may_contact", False, now=T0)
    assert (m.name, m.contact, m.country) == (None, None, "KE")
    m.set_consent("show_name", True, now=T0)
    m.next(now=T0)
    assert m.next(now=T0) == [Tell("name_required")]  # the name went with the consent


@pytest.mark.parametrize("country, stored", [(None, None), ("", None), ("  ", None),
                                             ("ke", "KE"), (" BR ", "BR")])
def test_country_is_an_alpha2_code_or_none(country: str | None, stored: str | None) -> None:
    m = to_identity(show_name=False, may_contact=False)
    m.set_identity(None, country, None, now=T0)
    assert m.country == stored


@pytest.mark.parametrize("country", ["KEN", "K", "K1", "Kenya", "é e"])
def test_other_countries_are_refused(country: str) -> None:
    m = to_identity(show_name=False, may_contact=False)
    before = snapshot(m)
    with pytest.raises(ValueError):
        m.set_identity(None, country, None, now=T0 + 5)
    assert snapshot(m) == before


# -- questions --------------------------------------------------------------------------
def test_next_walks_the_questions_then_review() -> None:
    m = reach(State.QUESTIONS)
    assert m.next(now=T0) == [] and m.question == 1
    assert m.next(now=T0) == [] and m.question == 2
    assert m.next(now=T0) == [DisarmMicrophone(), Show(State.REVIEW)]
    assert m.skipped == frozenset()  # "next" does not mark a question skipped


def test_rerecord_drops_the_old_part_first() -> None:
    m = reach(State.QUESTIONS)
    assert answer(m, "q1-1") == []
    assert m.rerecord(now=T0) == [DropPart("q1-1"), StartTake("q1")]
    assert m.answers["q1"] is None and m.recording
    assert m.take_ended("q1", "q1-2", kept=True, reason="stopped", silent=False,
                        now=T0) == []
    assert m.answers["q1"] == "q1-2"


def test_recording_again_replaces_the_answer_once_the_new_take_is_kept() -> None:
    m = reach(State.QUESTIONS)
    answer(m, "q1-1")
    assert answer(m, "q1-2") == [DropPart("q1-1")]
    assert m.answers["q1"] == "q1-2"


def test_a_lost_take_keeps_the_previous_answer() -> None:
    m = reach(State.QUESTIONS)
    answer(m, "q1-1")
    assert m.record(now=T0) == [StartTake("q1")]
    assert m.take_ended("q1", None, kept=False, reason="device_lost", silent=False,
                        now=T0) == [Tell("device_lost")]
    assert m.answers["q1"] == "q1-1" and not m.recording


@pytest.mark.parametrize("reason", ["device_lost", "disk_full", "max_length", "write_failed"])
def test_take_end_reasons_are_told(reason: str) -> None:
    m = reach(State.QUESTIONS)
    assert answer(m, "q1-1", reason=reason) == [Tell(reason)]
    m.goto_question(1, now=T0)
    m.record(now=T0)
    assert m.take_ended("q2", None, kept=False, reason=reason, silent=False,
                        now=T0) == [Tell(reason)]
    assert m.answers["q2"] is None


@pytest.mark.parametrize("reason", ["stopped", "aborted"])
def test_ordinary_ends_are_not_told(reason: str) -> None:
    m = reach(State.QUESTIONS)
    assert answer(m, "q1-1", reason=reason) == []


def test_a_silent_take_is_kept_and_told() -> None:
    m = reach(State.QUESTIONS)
    assert answer(m, "q1-1", silent=True) == [Tell("silent")]
    assert m.answers["q1"] == "q1-1"
    answer(m, "q1-2")
    assert answer(m, "q1-3", silent=True, reason="max_length") == [
        DropPart("q1-2"), Tell("max_length"), Tell("silent")]


def test_record_failed_tells_and_frees_the_screen() -> None:
    m = reach(State.QUESTIONS)
    assert m.record_failed("no_microphone", now=T0) == [Tell("no_microphone")]  # arming
    assert m.record(now=T0) == [StartTake("q1")]
    assert m.record_failed("disk_full", now=T0) == [Tell("disk_full")]
    assert not m.recording
    assert m.next(now=T0) == []


def test_skip_marks_and_moves_on() -> None:
    m = reach(State.QUESTIONS)
    assert m.skip(now=T0) == [] and m.question == 1
    assert m.skip(now=T0) == [] and m.question == 2
    assert m.skip(now=T0) == [DisarmMicrophone(), Show(State.REVIEW)]
    assert m.skipped == frozenset(PROMPTS)


def test_skip_is_only_for_an_unanswered_question_and_an_answer_unskips() -> None:
    m = reach(State.QUESTIONS)
    m.skip(now=T0)
    m.back(now=T0)
    assert m.skipped == {"q1"}
    answer(m, "q1-1")
    assert m.skipped == frozenset()
    with pytest.raises(InvalidEvent):
        m.skip(now=T0)


def test_goto_question_and_from_review() -> None:
    m = reach(State.QUESTIONS)
    assert m.goto_question(2, now=T0) == [] and m.question == 2
    m.next(now=T0)
    assert m.goto_question(1, now=T0) == [Show(State.QUESTIONS), ArmMicrophone()]
    assert (m.state, m.question) == (State.QUESTIONS, 1)


@pytest.mark.parametrize("index", [-1, 3, True, 1.0, "1"])
def test_goto_question_refuses_what_is_not_a_question(index: Any) -> None:
    m = reach(State.QUESTIONS)
    before = snapshot(m)
    with pytest.raises(ValueError):
        m.goto_question(index, now=T0 + 5)
    assert snapshot(m) == before


def test_playback_and_stopping_it() -> None:
    m = reach(State.QUESTIONS)
    with pytest.raises(InvalidEvent):
        m.play(now=T0)  # nothing to play yet
    answer(m, "q1-1")
    assert m.play(now=T0) == [PlayPart("q1-1")]
    with pytest.raises(InvalidEvent):
        m.play(now=T0)
    assert m.stop_playback(now=T0) == [StopPlayback()]
    assert m.playback_ended(now=T0) == []  # the player's own report, after the stop
    assert not m.playing


@pytest.mark.parametrize("event, outputs", [
    ("next", [StopPlayback()]),
    ("back", [StopPlayback(), DisarmMicrophone(), Show(State.IDENTITY)]),
    ("record", [StopPlayback(), StartTake("q1")]),
    ("rerecord", [StopPlayback(), DropPart("q1-1"), StartTake("q1")]),
    ("goto_question", [StopPlayback()]),
])
def test_moving_on_stops_the_playback(event: str, outputs: list[Output]) -> None:
    m = reach(State.QUESTIONS)
    answer(m, "q1-1")
    m.play(now=T0)
    if event == "goto_question":
        assert m.goto_question(2, now=T0) == outputs
    else:
        assert getattr(m, event)(now=T0) == outputs
    assert not m.playing


def test_leaving_for_review_stops_the_playback() -> None:
    m = reach(State.QUESTIONS)
    m.goto_question(2, now=T0)
    answer(m, "q3-1")
    m.play(now=T0)
    assert m.next(now=T0) == [StopPlayback(), DisarmMicrophone(), Show(State.REVIEW)]


@pytest.mark.parametrize("event", ["next", "back", "skip", "record", "rerecord", "play",
                                   "goto_question", "stop_playback"])
def test_while_recording_only_stop_is_allowed(event: str) -> None:
    m = reach(State.QUESTIONS)
    answer(m, "q1-1")
    m.record(now=T0)
    before = snapshot(m)
    with pytest.raises(InvalidEvent):
        if event == "goto_question":
            m.goto_question(1, now=T0 + 5)
        else:
            getattr(m, event)(now=T0 + 5)
    assert snapshot(m) == before
    assert m.stop(now=T0) == [StopTake()]
    with pytest.raises(InvalidEvent):
        m.stop(now=T0)  # once is enough: the take is finishing


def test_a_take_for_another_prompt_is_ignored() -> None:
    m = reach(State.QUESTIONS)
    m.record(now=T0)
    assert m.take_ended("q2", "q2-1", kept=True, reason="stopped", silent=False,
                        now=T0) == []
    assert m.recording and m.answers == dict.fromkeys(PROMPTS)


# -- review and submit ------------------------------------------------------------------
def test_submit_needs_an_answer() -> None:
    m = reach(State.QUESTIONS)
    for _ in PROMPTS:
        m.skip(now=T0)
    assert m.state is State.REVIEW
    assert m.submit(now=T0) == [Tell("answer_required")]
    assert m.state is State.REVIEW


def test_submit_failure_returns_to_review_and_can_retry() -> None:
    m = reach(State.SUBMITTING)
    assert m.submit_failed("disk_full", now=T0) == [Show(State.REVIEW), Tell("disk_full")]
    assert m.answers["q1"] == "q1-1" and m.name == "Ana"  # nothing was lost
    outputs = m.submit(now=T0)
    assert outputs[0] == Show(State.SUBMITTING) and isinstance(outputs[1], Seal)


def test_the_manifest_is_a_copy() -> None:
    m = reach(State.REVIEW)
    (_, seal) = m.submit(now=T0)
    assert isinstance(seal, Seal)
    seal.manifest["consent"]["publish_voice"] = False
    seal.manifest["answers"].clear()
    assert m.consent["publish_voice"] is True and m.answers["q1"] == "q1-1"


def test_receipt_done_starts_afresh() -> None:
    m = reach(State.RECEIPT)
    assert m.receipt_code == CODE and m.name is None and m.contact is None
    assert m.done(now=T0) == [Show(State.ATTRACT)]
    assert snapshot(m) == snapshot(make())


# -- inactivity -------------------------------------------------------------------------
def discard_outputs(state: State) -> list[Output]:
    teardown: list[Output] = [DisarmMicrophone()] if state is State.QUESTIONS else []
    return [*teardown, Discard(), Show(State.ATTRACT)]


@pytest.mark.parametrize("state", SHARING_STATES)
def test_idle_warns_then_discards_from_every_sharing_state(state: State) -> None:
    m = reach(state)
    assert m.tick(now=T0 + WARN - 0.01) == []
    assert m.tick(now=T0 + WARN) == [ShowOverlay(Overlay.STILL_THERE, DISCARD)]
    assert m.overlay is Overlay.STILL_THERE
    assert m.seconds_left(T0 + WARN + 5) == DISCARD - 5
    assert m.tick(now=T0 + WARN + 1) == []  # warned once
    assert m.tick(now=T0 + WARN + DISCARD - 0.01) == []
    assert m.tick(now=T0 + WARN + DISCARD) == discard_outputs(state)
    assert snapshot(m) == snapshot(make())  # nothing of the person is left
    assert m.tick(now=T0 + 10 * WARN) == []


def test_receipt_goes_back_to_attract_without_discard() -> None:
    m = reach(State.RECEIPT)
    assert m.tick(now=T0 + WARN - 0.01) == []
    assert m.tick(now=T0 + WARN) == [Show(State.ATTRACT)]
    assert m.receipt_code is None and snapshot(m) == snapshot(make())


@pytest.mark.parametrize("state", [State.ATTRACT, State.SUBMITTING])
def test_idle_is_ignored_in_attract_and_submitting(state: State) -> None:
    m = reach(state)
    before = snapshot(m)
    for now in (T0 + WARN, T0 + WARN + DISCARD, T0 + 1e6):
        assert m.tick(now=now) == []
    assert snapshot(m) == before


def test_still_here_resets_the_timer() -> None:
    m = reach(State.CONSENT)
    m.tick(now=T0 + WARN)
    t1 = T0 + WARN + 10
    assert m.still_here(now=t1) == [HideOverlay()]
    assert m.overlay is Overlay.NONE and m.seconds_left(t1) is None
    assert m.tick(now=t1 + WARN - 0.01) == []
    assert m.tick(now=t1 + WARN) == [ShowOverlay(Overlay.STILL_THERE, DISCARD)]


def test_every_event_counts_as_activity() -> None:
    m = reach(State.CONSENT)
    m.set_consent("publish_voice", True, now=T0 + 50)
    assert m.tick(now=T0 + WARN) == []
    m.set_consent("show_name", True, now=T0 + 55)
    m.set_consent("may_contact", False, now=T0 + 56)
    assert m.next(now=T0 + 100) == [Show(State.IDENTITY)]
    assert m.tick(now=T0 + 100 + WARN - 1) == []
    assert m.next(now=T0 + 150) == [Tell("name_required")]  # refused, still a touch
    assert m.tick(now=T0 + 150 + WARN - 1) == []
    assert m.tick(now=T0 + 150 + WARN) == [ShowOverlay(Overlay.STILL_THERE, DISCARD)]


def test_idle_is_suspended_while_recording() -> None:
    m = reach(State.QUESTIONS)
    m.record(now=T0)
    assert m.tick(now=T0 + 10 * WARN) == []
    t_end = T0 + 10 * WARN + 5
    assert m.take_ended("q1", "q1-1", kept=True, reason="max_length", silent=False,
                        now=t_end) == [Tell("max_length")]
    assert m.tick(now=t_end + WARN - 0.01) == []
    assert m.tick(now=t_end + WARN) == [ShowOverlay(Overlay.STILL_THERE, DISCARD)]


def test_idle_runs_again_once_stop_is_sent() -> None:
    # A take whose end is never reported must not keep a session alive for ever.
    m = reach(State.QUESTIONS)
    m.record(now=T0)
    m.stop(now=T0 + 30)
    assert m.tick(now=T0 + 30 + WARN) == [ShowOverlay(Overlay.STILL_THERE, DISCARD)]
    assert m.tick(now=T0 + 30 + WARN + DISCARD) == [DisarmMicrophone(), Discard(),
                                                    Show(State.ATTRACT)]


def test_idle_is_suspended_while_playing() -> None:
    m = reach(State.QUESTIONS)
    answer(m, "q1-1")
    m.play(now=T0)
    assert m.tick(now=T0 + 10 * WARN) == []
    assert m.playback_ended(now=T0 + 500) == []
    assert m.tick(now=T0 + 500 + WARN - 0.01) == []
    assert m.tick(now=T0 + 500 + WARN) == [ShowOverlay(Overlay.STILL_THERE, DISCARD)]


def test_idle_overrides_a_forgotten_cancel_dialog() -> None:
    m = reach(State.REVIEW)
    m.cancel(now=T0)
    assert m.tick(now=T0 + WARN) == [ShowOverlay(Overlay.STILL_THERE, DISCARD)]
    assert m.tick(now=T0 + WARN + DISCARD) == [Discard(), Show(State.ATTRACT)]


# -- cancel -----------------------------------------------------------------------------
@pytest.mark.parametrize("state", SHARING_STATES)
def test_cancel_then_keep_going(state: State) -> None:
    m = reach(state)
    before = snapshot(m)
    assert m.cancel(now=T0) == [ShowOverlay(Overlay.CONFIRM_CANCEL, None)]
    assert m.overlay is Overlay.CONFIRM_CANCEL
    assert m.keep_going(now=T0) == [HideOverlay()]
    assert snapshot(m) == before


@pytest.mark.parametrize("state", SHARING_STATES)
def test_cancel_then_confirm(state: State) -> None:
    m = reach(state)
    m.cancel(now=T0)
    assert m.confirm_cancel(now=T0) == discard_outputs(state)
    assert snapshot(m) == snapshot(make())


def test_confirm_cancel_while_recording_stops_the_take_first() -> None:
    m = reach(State.QUESTIONS)
    m.record(now=T0)
    assert m.cancel(now=T0) == [ShowOverlay(Overlay.CONFIRM_CANCEL, None)]
    assert m.confirm_cancel(now=T0) == [StopTake(), DisarmMicrophone(), Discard(),
                                        Show(State.ATTRACT)]
    # The take's end arrives after the discard: the part went with the session.
    assert m.take_ended("q1", "q1-1", kept=True, reason="stopped", silent=False,
                        now=T0) == []
    assert snapshot(m) == snapshot(make())


def test_confirm_cancel_after_stop_does_not_stop_twice() -> None:
    m = reach(State.QUESTIONS)
    m.record(now=T0)
    m.stop(now=T0)
    m.cancel(now=T0)
    assert m.confirm_cancel(now=T0) == [DisarmMicrophone(), Discard(), Show(State.ATTRACT)]


def test_confirm_cancel_while_playing_stops_the_playback_first() -> None:
    m = reach(State.QUESTIONS)
    answer(m, "q1-1")
    m.play(now=T0)
    m.cancel(now=T0)
    assert m.confirm_cancel(now=T0) == [StopPlayback(), DisarmMicrophone(), Discard(),
                                        Show(State.ATTRACT)]
    assert m.playback_ended(now=T0) == []


def test_a_take_that_ends_under_the_cancel_dialog_still_counts() -> None:
    m = reach(State.QUESTIONS)
    m.record(now=T0)
    m.cancel(now=T0)
    assert m.take_ended("q1", "q1-1", kept=True, reason="max_length", silent=False,
                        now=T0) == [Tell("max_length")]
    assert m.keep_going(now=T0) == [HideOverlay()]
    assert m.answers["q1"] == "q1-1"


@pytest.mark.parametrize("state", [State.ATTRACT, State.SUBMITTING, State.RECEIPT])
def test_cancel_is_only_for_sharing(state: State) -> None:
    m = reach(state)
    with pytest.raises(InvalidEvent):
        m.cancel(now=T0)


# -- late reports -----------------------------------------------------------------------
def test_late_reports_after_a_discard_return_nothing() -> None:
    m = reach(State.QUESTIONS)
    m.record(now=T0)
    m.tick(now=T0 + 1)
    m.cancel(now=T0)
    m.confirm_cancel(now=T0)
    fresh = snapshot(make())
    assert m.take_ended("q1", "q1-1", kept=True, reason="stopped", silent=True, now=T0) == []
    assert m.playback_ended(now=T0) == []
    assert m.submitted(CODE, now=T0) == []
    assert m.submit_failed("disk_full", now=T0) == []
    assert snapshot(m) == fresh


@pytest.mark.parametrize("state", list(State))
def test_async_reports_that_do_not_apply_return_nothing(state: State) -> None:
    m = reach(state)
    before = snapshot(m)
    assert m.take_ended("q1", "q1-9", kept=True, reason="disk_full", silent=True,
                        now=T0 + 1) == []
    assert m.playback_ended(now=T0 + 1) == []
    if state is not State.SUBMITTING:
        assert m.submitted(CODE, now=T0 + 1) == []
        assert m.submit_failed("disk_full", now=T0 + 1) == []
    assert snapshot(m) == before


# -- invalid events ---------------------------------------------------------------------
TOUCHES: dict[str, Callable[[SessionMachine, float], list[Output]]] = {
    "share": lambda m, t: m.share(now=t),
    "choose_language": lambda m, t: m.choose_language("en", now=t),
    "next": lambda m, t: m.next(now=t),
    "back": lambda m, t: m.back(now=t),
    "set_consent": lambda m, t: m.set_consent("publish_voice", True, now=t),
    "set_identity": lambda m, t: m.set_identity("Ana", "KE", None, now=t),
    "goto_question": lambda m, t: m.goto_question(0, now=t),
    "record": lambda m, t: m.record(now=t),
    "rerecord": lambda m, t: m.rerecord(now=t),
    "stop": lambda m, t: m.stop(now=t),
    "record_failed": lambda m, t: m.record_failed("no_microphone", now=t),
    "play": lambda m, t: m.play(now=t),
    "stop_playback": lambda m, t: m.stop_playback(now=t),
    "skip": lambda m, t: m.skip(now=t),
    "submit": lambda m, t: m.submit(now=t),
    "done": lambda m, t: m.done(now=t),
    "cancel": lambda m, t: m.cancel(now=t),
    "keep_going": lambda m, t: m.keep_going(now=t),
    "confirm_cancel": lambda m, t: m.confirm_cancel(now=t),
    "still_here": lambda m, t: m.still_here(now=t),
}
#: What each state accepts as reached by ``reach`` (no overlay, no take, no playback).
VALID: dict[State, set[str]] = {
    State.ATTRACT: {"share"},
    State.LANGUAGE: {"choose_language", "back", "cancel"},
    State.WHO: {"next", "back", "cancel"},
    State.SAFETY: {"next", "back", "cancel"},
    State.CONSENT: {"set_consent", "next", "back", "cancel"},
    State.IDENTITY: {"set_identity", "next", "back", "cancel"},
    State.QUESTIONS: {"next", "back", "goto_question", "record", "skip", "record_failed",
                      "cancel"},
    State.REVIEW: {"back", "goto_question", "submit", "cancel"},
    State.SUBMITTING: set(),
    State.RECEIPT: {"done"},
}


def assert_refused(m: SessionMachine, event: str) -> None:
    before = snapshot(m)
    with pytest.raises(InvalidEvent):
        TOUCHES[event](m, T0 + 7)
    assert snapshot(m) == before


@pytest.mark.parametrize("state, event", [(s, e) for s in State for e in TOUCHES
                                          if e not in VALID[s]])
def test_invalid_events_raise_and_change_nothing(state: State, event: str) -> None:
    assert_refused(reach(state), event)


@pytest.mark.parametrize("state, event", [(s, e) for s in State for e in sorted(VALID[s])])
def test_valid_events_are_accepted(state: State, event: str) -> None:
    TOUCHES[event](reach(state), T0 + 7)


@pytest.mark.parametrize("state", SHARING_STATES)
@pytest.mark.parametrize("overlay", [Overlay.CONFIRM_CANCEL, Overlay.STILL_THERE])
def test_overlays_are_modal(state: State, overlay: Overlay) -> None:
    m = reach(state)
    if overlay is Overlay.CONFIRM_CANCEL:
        m.cancel(now=T0)
        allowed = {"keep_going", "confirm_cancel"}
    else:
        m.tick(now=T0 + WARN)
        allowed = {"still_here"}
    if state is State.QUESTIONS:
        allowed.add("record_failed")  # the microphone may fail under any overlay
    for event in sorted(set(TOUCHES) - allowed):
        assert_refused(m, event)


def test_unknown_language_is_refused() -> None:
    m = reach(State.LANGUAGE)
    before = snapshot(m)
    with pytest.raises(ValueError):
        m.choose_language("xx", now=T0 + 5)
    assert snapshot(m) == before


# -- a seeded random walk: the invariants hold whatever the screens send ----------------
@dataclass
class Outside:
    """What the screens and the vault would do with the outputs, checking each one."""

    armed: bool = False
    take: str | None = None  # prompt id of the take the recorder runs
    playing: str | None = None
    parts: set[str] = field(default_factory=set)  # what custody holds
    overlay: Overlay = Overlay.NONE
    sealing: bool = False
    counter: int = 0

    def perform(self, m: SessionMachine, outputs: list[Output]) -> None:
        for out in outputs:
            match out:
                case ArmMicrophone():
                    assert not self.armed
                    self.armed = True
                case DisarmMicrophone():
                    assert self.armed and self.playing is None
                    self.armed = False
                case StartTake(prompt_id=p):
                    assert self.armed and self.take is None and self.playing is None
                    self.take = p
                case StopTake():
                    assert self.take is not None
                case DropPart(part=p):
                    assert p in self.parts
                    self.parts.discard(p)
                case PlayPart(part=p):
                    assert p in self.parts and self.take is None and self.playing is None
                    self.playing = p
                case StopPlayback():
                    assert self.playing is not None
                    self.playing = None
                case Discard():
                    assert not self.armed and self.playing is None and not self.sealing
                    self.parts.clear()
                    self.take = None
                case Seal(manifest=manifest):
                    consent = manifest["consent"]
                    assert consent["publish_voice"] is True and None not in consent.values()
                    sealed = {a["part"] for a in manifest["answers"] if a["part"]}
                    # custody seals every part it holds: none may be left unreferenced
                    assert sealed == self.parts and sealed
                    assert self.take is None and not self.armed
                    self.sealing = True
                case Show(state=s):
                    assert s is m.state
                    self.overlay = Overlay.NONE
                case ShowOverlay(overlay=o):
                    self.overlay = o
                case HideOverlay():
                    self.overlay = Overlay.NONE
                case Tell():
                    pass
                case _:
                    raise AssertionError(out)


#: The buttons each screen shows (coarsely: some are refused, e.g. "play" with no answer).
SCREEN_EVENTS: dict[State, list[str]] = {
    State.ATTRACT: ["share"],
    State.LANGUAGE: ["choose_language"] * 6 + ["back", "cancel"],
    State.WHO: ["next"] * 6 + ["back", "cancel"],
    State.SAFETY: ["next"] * 6 + ["back", "cancel"],
    State.CONSENT: ["set_consent"] * 8 + ["next"] * 3 + ["back", "cancel"],
    State.IDENTITY: ["set_identity"] * 3 + ["next"] * 4 + ["back", "cancel"],
    State.QUESTIONS: ["next"] * 3 + ["record"] * 4 + ["stop"] * 3 + ["take_ended"] * 4
                     + ["back", "goto_question", "rerecord", "play", "stop_playback", "skip",
                        "record_failed", "cancel", "playback_ended"],
    State.REVIEW: ["submit"] * 4 + ["back", "goto_question", "cancel"],
    State.SUBMITTING: ["submitted", "submitted", "submit_failed"],
    State.RECEIPT: ["done"],
}
OVERLAY_EVENTS = {Overlay.CONFIRM_CANCEL: ["keep_going", "keep_going", "confirm_cancel"],
                  Overlay.STILL_THERE: ["still_here"]}
ALL_EVENTS = sorted({e for events in SCREEN_EVENTS.values() for e in events}
                    | {"keep_going", "confirm_cancel", "still_here", "tick", "late_take_ended"})


def _walk_event(m: SessionMachine, world: Outside, rnd: random.Random,
                now: float) -> list[Output]:
    """One event a screen or the vault could send now; sometimes any event at all."""
    roll = rnd.random()
    if roll < 0.1:
        name = rnd.choice(ALL_EVENTS)
    elif roll < 0.2:
        name = "tick"
    else:
        name = rnd.choice(OVERLAY_EVENTS.get(m.overlay, SCREEN_EVENTS[m.state]))
    if name == "choose_language":
        return m.choose_language(rnd.choice([*LANGS, "xx"]), now=now)
    if name == "set_consent":
        return m.set_consent(rnd.choice([*CONSENT_KEYS, "nope"]),
                             rnd.choice([True, True, True, False, None]), now=now)
    if name == "set_identity":
        return m.set_identity(rnd.choice(["Ana", " ", None, "x" * 100]),
                              rnd.choice(["KE", None, "", "Kenya"]),
                              rnd.choice([None, "ana@example.org"]), now=now)
    if name == "goto_question":
        return m.goto_question(rnd.randrange(-1, len(PROMPTS) + 1), now=now)
    if name == "record_failed":
        world.take = None  # the recorder could not start it
        return m.record_failed(rnd.choice(["no_microphone", "disk_full"]), now=now)
    if name == "tick":
        return m.tick(now=now)
    if name == "take_ended":
        if world.take is None:
            return []
        prompt, world.take = world.take, None
        kept = rnd.random() < 0.8
        world.counter += 1
        part = f"{prompt}-{world.counter}" if kept else None
        if part is not None:
            world.parts.add(part)  # custody holds a sealed part whatever the machine says
        return m.take_ended(prompt, part, kept=kept, silent=rnd.random() < 0.2,
                            reason=rnd.choice(["stopped", "max_length", "device_lost"]),
                            now=now)
    if name == "late_take_ended":  # a take aborted by a discard reports its end late
        if world.take is not None or m.recording:
            return []
        return m.take_ended(rnd.choice(PROMPTS), "late-1", kept=True, reason="aborted",
                            silent=False, now=now)
    if name == "playback_ended":
        world.playing = None
        return m.playback_ended(now=now)
    if name == "submitted":
        if not world.sealing:
            return m.submitted(CODE, now=now)
        world.sealing, world.parts = False, set()
        return m.submitted(CODE, now=now)
    if name == "submit_failed":
        world.sealing = False
        return m.submit_failed("write_failed", now=now)
    return getattr(m, name)(now=now)


def _walk(seed: int, steps: int, seen: Counter[str]) -> None:
    rnd = random.Random(seed)
    m, world = make(), Outside()
    now = 0.0
    for _ in range(steps):
        # Mostly quick touches; now and then a pause long enough for the idle timer.
        now += rnd.choice([0.5, 1.0, 5.0]) if rnd.random() < 0.95 else rnd.choice([WARN, DISCARD])
        before, state_before = snapshot(m), m.state
        try:
            outputs = _walk_event(m, world, rnd, now)
        except (InvalidEvent, ValueError):
            assert snapshot(m) == before
            seen["refused"] += 1
            continue
        world.perform(m, outputs)
        seen[m.state.value] += 1
        seen.update(type(o).__name__ for o in outputs)
        seen.update(o.message_id for o in outputs if isinstance(o, Tell))
        shows = [o for o in outputs if isinstance(o, Show)]
        # Show exactly when the state changes, and it is the new state.
        assert shows == ([Show(m.state)] if m.state is not state_before else [])
        # The invariant of the seed's rules: no microphone without full consent.
        if m.state is State.QUESTIONS:
            consent = m.consent
            assert consent["publish_voice"] is True and None not in consent.values()
        assert world.armed == (m.state is State.QUESTIONS)
        assert world.overlay is m.overlay
        # A session that ends unsubmitted is always discarded.
        if m.state is State.ATTRACT and state_before in SHARING_STATES:
            assert outputs[-2:] == [Discard(), Show(State.ATTRACT)]
        if m.state in (State.QUESTIONS, State.REVIEW):
            assert {p for p in m.answers.values() if p} <= world.parts


def test_random_walks_keep_the_invariants() -> None:
    seen: Counter[str] = Counter()
    for seed in range(150):
        _walk(seed, 400, seen)
    # The walk went everywhere, so the invariants were really exercised.
    assert {s.value for s in State} <= set(seen)
    for kind in ("Seal", "Discard", "DropPart", "PlayPart", "StartTake", "refused",
                 "consent_required", "name_required", "answer_required"):
        assert seen[kind] > 20, (kind, seen)
