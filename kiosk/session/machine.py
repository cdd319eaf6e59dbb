"""The defender's session as a state machine: events in, outputs out, nothing else.

The screens call one event method per thing that happened (a touch, a take that
ended, a clock tick) and then perform the outputs it returns, in order. The machine
does no I/O, starts no thread and never reads a clock: time arrives as ``now``
(monotonic seconds) with every event. So it is tested as magic-wormhole tests its
machines: feed events, assert the exact outputs.

Conventions the screens can rely on:

- ``Show(state)`` is emitted exactly when the state changes, and it replaces any
  overlay. When the microphone screen is left, the teardown outputs (``StopTake``,
  ``StopPlayback``, ``DisarmMicrophone``) come first; when it is entered, ``Show``
  comes first and ``ArmMicrophone`` right after it.
- A move between questions does not change the state and emits nothing (except
  ``StopPlayback`` if a playback was running): the screens re-read the properties
  after every event.
- A session that ends without a ``Seal`` always ends with ``Discard()`` before
  ``Show(ATTRACT)``.
- An event the current state (or overlay) does not accept raises ``InvalidEvent`` and
  changes nothing; a bad argument raises ``ValueError`` and changes nothing. The
  events that come from other threads or timers (``tick``, ``take_ended``,
  ``playback_ended``, ``submitted``, ``submit_failed``) may race a cancel, so when
  they no longer apply they return ``[]`` instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, TypeAlias


class State(StrEnum):
    ATTRACT = "attract"
    LANGUAGE = "language"
    WHO = "who"
    SAFETY = "safety"
    CONSENT = "consent"
    IDENTITY = "identity"
    QUESTIONS = "questions"
    REVIEW = "review"
    SUBMITTING = "submitting"
    RECEIPT = "receipt"


class Overlay(StrEnum):
    NONE = "none"
    STILL_THERE = "still_there"
    CONFIRM_CANCEL = "confirm_cancel"


#: The states in which a person is sharing: cancel and the idle discard apply here.
SHARING: Final = frozenset({State.LANGUAGE, State.WHO, State.SAFETY, State.CONSENT,
                            State.IDENTITY, State.QUESTIONS, State.REVIEW})
#: The order ``next`` walks forward and ``back`` walks back.
_STEPS: Final = (State.LANGUAGE, State.WHO, State.SAFETY, State.CONSENT, State.IDENTITY,
                 State.QUESTIONS, State.REVIEW)

CONSENT_KEYS: Final = ("publish_voice", "show_name", "may_contact")
#: Take end reasons the person is told about (the recorder's EndReason values).
TOLD_END_REASONS: Final = frozenset({"device_lost", "disk_full", "max_length", "write_failed"})
ANONYMOUS: Final = "Anonymous"
NAME_MAX: Final = 80
CONTACT_MAX: Final = 120
_COUNTRY = re.compile(r"[A-Z]{2}")


class InvalidEvent(Exception):
    """An event the current state does not accept: a bug in the screen that sent it."""


# -- outputs ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Show:
    """Switch to the screen of ``state`` (closing any overlay)."""

    state: State


@dataclass(frozen=True, slots=True)
class ShowOverlay:
    """Show ``overlay`` over the current screen; ``seconds`` is STILL_THERE's countdown."""

    overlay: Overlay
    seconds: float | None


@dataclass(frozen=True, slots=True)
class HideOverlay:
    pass


@dataclass(frozen=True, slots=True)
class ArmMicrophone:
    """Open the input stream now: a fresh stream takes ~1.8 s for its first block."""


@dataclass(frozen=True, slots=True)
class DisarmMicrophone:
    pass


@dataclass(frozen=True, slots=True)
class StartTake:
    prompt_id: str


@dataclass(frozen=True, slots=True)
class StopTake:
    pass


@dataclass(frozen=True, slots=True)
class DropPart:
    """Delete one sealed part (SessionCustody.drop_part)."""

    part: str


@dataclass(frozen=True, slots=True)
class PlayPart:
    part: str


@dataclass(frozen=True, slots=True)
class StopPlayback:
    pass


@dataclass(frozen=True, slots=True)
class Discard:
    """End the session unsubmitted: SessionCustody.discard() (parts deleted, keys dropped)."""


@dataclass(frozen=True, slots=True)
class Seal:
    """Seal ``manifest`` and commit; then report ``submitted`` or ``submit_failed``."""

    manifest: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Tell:
    """A message for the person, by id; the screens translate it."""

    message_id: str


Output: TypeAlias = (Show | ShowOverlay | HideOverlay | ArmMicrophone | DisarmMicrophone
                     | StartTake | StopTake | DropPart | PlayPart | StopPlayback | Discard
                     | Seal | Tell)


def _clean(text: str | None, limit: int) -> str | None:
    """Stripped and capped, or None when blank."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError("expected a string or None")
    text = text.strip()[:limit].strip()
    return text or None


class SessionMachine:
    """One kiosk's defender session, from the attract screen to the receipt."""

    def __init__(self, *, prompt_ids: Sequence[str], languages: Sequence[str],
                 warn_after_s: float, discard_after_s: float) -> None:
        prompts = tuple(prompt_ids)
        if not 3 <= len(prompts) <= 5:
            raise ValueError("a session asks 3 to 5 questions")
        if len(set(prompts)) != len(prompts) or not all(isinstance(p, str) and p
                                                         for p in prompts):
            raise ValueError("prompt ids must be unique non-empty strings")
        if not languages:
            raise ValueError("at least one language is needed")
        for value in (warn_after_s, discard_after_s):
            if not (math.isfinite(value) and value > 0):
                raise ValueError("the idle times must be positive numbers of seconds")
        self._prompt_ids = prompts
        self._languages = tuple(languages)
        self._warn_after_s = float(warn_after_s)
        self._discard_after_s = float(discard_after_s)
        self._reset()

    def use_prompts(self, prompt_ids: Sequence[str]) -> bool:
        """Ask ``prompt_ids`` from the next session on (a new signed catalog's).

        Only between sessions: on the attract screen, with nothing under way; False
        (and nothing changes) otherwise, so a session never changes its questions.
        """
        prompts = tuple(prompt_ids)
        if not 3 <= len(prompts) <= 5 or len(set(prompts)) != len(prompts) or not all(
                isinstance(p, str) and p for p in prompts):
            raise ValueError("a session asks 3 to 5 unique questions")
        if self._state is not State.ATTRACT or self._overlay is not Overlay.NONE:
            return False
        if prompts != self._prompt_ids:
            self._prompt_ids = prompts
            self._clear_personal()
        return True

    def _reset(self) -> None:
        """Back to a fresh session at the attract screen: nothing of anyone is kept."""
        self._state = State.ATTRACT
        self._overlay = Overlay.NONE
        self._language: str | None = None
        self._receipt_code: str | None = None
        self._last_activity = 0.0
        self._warned_at = 0.0
        self._clear_personal()

    def _clear_personal(self) -> None:
        self._consent: dict[str, bool | None] = dict.fromkeys(CONSENT_KEYS)
        self._name: str | None = None
        self._country: str | None = None
        self._contact: str | None = None
        self._question = 0
        self._answers: dict[str, str | None] = dict.fromkeys(self._prompt_ids)
        self._skipped: set[str] = set()
        self._recording = False
        self._stopping = False  # StopTake sent, the take's end not yet reported
        self._playing = False

    # -- read-only views for the screens -------------------------------------------------
    @property
    def state(self) -> State:
        return self._state

    @property
    def overlay(self) -> Overlay:
        return self._overlay

    @property
    def language(self) -> str | None:
        return self._language

    @property
    def languages(self) -> tuple[str, ...]:
        return self._languages

    @property
    def consent(self) -> dict[str, bool | None]:
        return dict(self._consent)

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def display_name(self) -> str:
        return self._name if self._consent["show_name"] is True and self._name else ANONYMOUS

    @property
    def country(self) -> str | None:
        return self._country

    @property
    def contact(self) -> str | None:
        return self._contact

    @property
    def question(self) -> int:
        return self._question

    @property
    def prompt_ids(self) -> tuple[str, ...]:
        return self._prompt_ids

    @property
    def prompt_id(self) -> str:
        """The current question's prompt id."""
        return self._prompt_ids[self._question]

    @property
    def answers(self) -> Mapping[str, str | None]:
        return MappingProxyType(dict(self._answers))

    @property
    def skipped(self) -> frozenset[str]:
        return frozenset(self._skipped)

    @property
    def recording(self) -> bool:
        """A take is running or finishing (until ``take_ended`` or ``record_failed``)."""
        return self._recording

    @property
    def stopping(self) -> bool:
        """``stop`` was sent and the take's end is not reported yet."""
        return self._stopping

    @property
    def playing(self) -> bool:
        return self._playing

    @property
    def receipt_code(self) -> str | None:
        return self._receipt_code

    def seconds_left(self, now: float) -> float | None:
        """The STILL_THERE countdown, or None when that overlay is not showing."""
        if self._overlay is not Overlay.STILL_THERE:
            return None
        return max(0.0, self._warned_at + self._discard_after_s - now)

    # -- guards --------------------------------------------------------------------------
    def _expect(self, event: str, *states: State, overlay: Overlay | None = Overlay.NONE,
                idle_hands: bool = False) -> None:
        """Raise InvalidEvent unless in one of ``states`` under ``overlay``.

        ``overlay=None`` accepts any overlay; ``idle_hands`` refuses the event while a
        take is running (the screen shows only "stop" then).
        """
        if (self._state not in states or (overlay is not None and self._overlay is not overlay)
                or (idle_hands and self._recording)):
            detail = " while recording" if idle_hands and self._recording else ""
            raise InvalidEvent(f"{event!r} is not valid in {self._state.value}"
                               f" (overlay {self._overlay.value}){detail}")

    def _consent_given(self) -> bool:
        return (self._consent["publish_voice"] is True
                and all(v is not None for v in self._consent.values()))

    # -- moves ---------------------------------------------------------------------------
    def _teardown(self) -> list[Output]:
        """What leaving the questions screen stops, in order."""
        if self._state is not State.QUESTIONS:
            return []
        out: list[Output] = []
        if self._recording and not self._stopping:
            out.append(StopTake())
        if self._playing:
            out.append(StopPlayback())
        out.append(DisarmMicrophone())
        # A take_ended that arrives after this applies to nothing any more.
        self._recording = self._stopping = self._playing = False
        return out

    def _go(self, target: State) -> list[Output]:
        out = self._teardown() if target is not State.QUESTIONS else []
        self._state = target
        self._overlay = Overlay.NONE
        out.append(Show(target))
        if target is State.QUESTIONS:
            out.append(ArmMicrophone())
        return out

    def _abandon(self) -> list[Output]:
        """End the session unsubmitted: stop, disarm, discard, back to attract."""
        out = self._teardown()
        out.append(Discard())
        self._reset()
        out.append(Show(State.ATTRACT))
        return out

    def _stop_playback(self) -> list[Output]:
        if not self._playing:
            return []
        self._playing = False
        return [StopPlayback()]

    def _next_question(self) -> list[Output]:
        if self._question + 1 < len(self._prompt_ids):
            out = self._stop_playback()
            self._question += 1
            return out
        return self._go(State.REVIEW)

    # -- attract, language, who, safety, consent, identity -------------------------------
    def share(self, *, now: float) -> list[Output]:
        """"Share your story" on the attract screen."""
        self._expect("share", State.ATTRACT)
        self._last_activity = now
        return self._go(State.LANGUAGE)

    def choose_language(self, code: str, *, now: float) -> list[Output]:
        self._expect("choose_language", State.LANGUAGE)
        if code not in self._languages:
            raise ValueError(f"unknown language {code!r}")
        self._language = code
        self._last_activity = now
        return self._go(State.WHO)

    def next(self, *, now: float) -> list[Output]:
        """"I take part in that spirit", "I understand", "Continue", the next question."""
        self._expect("next", State.WHO, State.SAFETY, State.CONSENT, State.IDENTITY,
                     State.QUESTIONS, idle_hands=True)
        self._last_activity = now
        if self._state is State.QUESTIONS:
            return self._next_question()
        # Checked again on leaving IDENTITY, so that no back-and-forth reaches the
        # microphone without the consent the seed's rules require.
        if self._state in (State.CONSENT, State.IDENTITY) and not self._consent_given():
            return [Tell("consent_required")]
        if (self._state is State.IDENTITY and self._consent["show_name"] is True
                and not self._name):
            return [Tell("name_required")]
        if self._state is State.IDENTITY:
            self._question = 0
        return self._go(_STEPS[_STEPS.index(self._state) + 1])

    def back(self, *, now: float) -> list[Output]:
        self._expect("back", *_STEPS, idle_hands=True)
        self._last_activity = now
        if self._state is State.LANGUAGE:
            return self._abandon()
        if self._state is State.QUESTIONS and self._question > 0:
            out = self._stop_playback()
            self._question -= 1
            return out
        if self._state is State.REVIEW:
            self._question = len(self._prompt_ids) - 1
        return self._go(_STEPS[_STEPS.index(self._state) - 1])

    def set_consent(self, key: str, value: bool | None, *, now: float) -> list[Output]:
        """Answer (or, with None, un-answer) one consent question."""
        self._expect("set_consent", State.CONSENT)
        if key not in CONSENT_KEYS:
            raise ValueError(f"unknown consent {key!r}")
        if value is not None and not isinstance(value, bool):
            raise ValueError("a consent is True, False or None")
        self._consent[key] = value
        # Keep nothing the person no longer agrees to give.
        if self._consent["show_name"] is not True:
            self._name = None
        if self._consent["may_contact"] is not True:
            self._contact = None
        self._last_activity = now
        return []

    def set_identity(self, name: str | None, country: str | None, contact: str | None, *,
                     now: float) -> list[Output]:
        """The name (if it is to be shown), an ISO 3166 alpha-2 country, a contact."""
        self._expect("set_identity", State.IDENTITY)
        clean_name = _clean(name, NAME_MAX)
        clean_contact = _clean(contact, CONTACT_MAX)
        clean_country = _clean(country, NAME_MAX)
        if clean_country is not None:
            # Format only: the screen offers the list; a blank means "prefer not to say".
            clean_country = clean_country.upper()
            if not _COUNTRY.fullmatch(clean_country):
                raise ValueError("country is an ISO 3166 alpha-2 code or None")
        self._name = clean_name if self._consent["show_name"] is True else None
        self._country = clean_country
        self._contact = clean_contact if self._consent["may_contact"] is True else None
        self._last_activity = now
        return []

    # -- questions -----------------------------------------------------------------------
    def goto_question(self, index: int, *, now: float) -> list[Output]:
        """Jump to a question, from the questions screen or from an answer in review."""
        self._expect("goto_question", State.QUESTIONS, State.REVIEW, idle_hands=True)
        if isinstance(index, bool) or not isinstance(index, int) or not (
                0 <= index < len(self._prompt_ids)):
            raise ValueError(f"no question {index!r}")
        self._last_activity = now
        out = self._stop_playback()
        self._question = index
        if self._state is State.REVIEW:
            out += self._go(State.QUESTIONS)
        return out

    def record(self, *, now: float) -> list[Output]:
        """Start a take for the current question; a kept take replaces its answer."""
        self._expect("record", State.QUESTIONS, idle_hands=True)
        self._last_activity = now
        out = self._stop_playback()
        self._recording, self._stopping = True, False
        out.append(StartTake(self.prompt_id))
        return out

    def rerecord(self, *, now: float) -> list[Output]:
        """Delete the current answer, then start a new take."""
        self._expect("rerecord", State.QUESTIONS, idle_hands=True)
        part = self._answers[self.prompt_id]
        if part is None:
            raise InvalidEvent("'rerecord' needs an answer to replace")
        self._last_activity = now
        out = self._stop_playback()
        self._answers[self.prompt_id] = None
        self._recording, self._stopping = True, False
        out += [DropPart(part), StartTake(self.prompt_id)]
        return out

    def stop(self, *, now: float) -> list[Output]:
        self._expect("stop", State.QUESTIONS)
        if not self._recording or self._stopping:
            raise InvalidEvent("'stop' needs a running take")
        self._stopping = True
        self._last_activity = now
        return [StopTake()]

    def record_failed(self, message_id: str, *, now: float) -> list[Output]:
        """A take (or the microphone) could not start, e.g. "no_microphone"."""
        self._expect("record_failed", State.QUESTIONS, overlay=None)
        self._recording = self._stopping = False
        self._last_activity = now
        return [Tell(message_id)]

    def take_ended(self, prompt_id: str, part: str | None, *, kept: bool, reason: str,
                   silent: bool, now: float) -> list[Output]:
        """The outside reports a take sealed (``kept``, with its part name) or lost."""
        if (self._state is not State.QUESTIONS or not self._recording
                or prompt_id != self.prompt_id):
            return []  # discarded meanwhile: the part went with the session
        self._recording = self._stopping = False
        self._last_activity = now
        out: list[Output] = []
        if kept and part is not None:
            old = self._answers[prompt_id]
            if old is not None and old != part:
                out.append(DropPart(old))
            self._answers[prompt_id] = part
            self._skipped.discard(prompt_id)
        if reason in TOLD_END_REASONS:
            out.append(Tell(reason))
        if kept and part is not None and silent:
            out.append(Tell("silent"))  # kept all the same: the person may re-record
        return out

    def play(self, *, now: float) -> list[Output]:
        self._expect("play", State.QUESTIONS, idle_hands=True)
        part = self._answers[self.prompt_id]
        if part is None or self._playing:
            raise InvalidEvent("'play' needs an answer and no playback running")
        self._playing = True
        self._last_activity = now
        return [PlayPart(part)]

    def stop_playback(self, *, now: float) -> list[Output]:
        self._expect("stop_playback", State.QUESTIONS)
        if not self._playing:
            raise InvalidEvent("'stop_playback' needs a playback running")
        self._last_activity = now
        return self._stop_playback()

    def playback_ended(self, *, now: float) -> list[Output]:
        if self._state is not State.QUESTIONS or not self._playing:
            return []
        self._playing = False
        self._last_activity = now
        return []

    def skip(self, *, now: float) -> list[Output]:
        """Leave the current (unanswered) question out and move on."""
        self._expect("skip", State.QUESTIONS, idle_hands=True)
        if self._answers[self.prompt_id] is not None:
            # Skipping must never delete a recording by accident: re-record does that.
            raise InvalidEvent("'skip' is for an unanswered question")
        self._last_activity = now
        self._skipped.add(self.prompt_id)
        return self._next_question()

    # -- review, submit, receipt ---------------------------------------------------------
    def submit(self, *, now: float) -> list[Output]:
        self._expect("submit", State.REVIEW)
        self._last_activity = now
        if all(part is None for part in self._answers.values()):
            return [Tell("answer_required")]
        manifest = self._manifest()
        out = self._go(State.SUBMITTING)
        out.append(Seal(manifest))
        return out

    def _manifest(self) -> dict[str, Any]:
        show_name = self._consent["show_name"] is True
        return {
            "language": self._language,
            "display_name": self.display_name,
            "name": self._name if show_name else None,
            "anonymous": not show_name,
            "country": self._country,
            "contact": self._contact if self._consent["may_contact"] is True else None,
            "consent": dict(self._consent),
            "prompt_ids": list(self._prompt_ids),
            "answers": [{"prompt_id": p, "part": self._answers[p], "skipped": p in self._skipped}
                        for p in self._prompt_ids],
        }

    def submitted(self, receipt_code: str, *, now: float) -> list[Output]:
        """Sealed and committed: show the receipt, and forget who the person was."""
        if self._state is not State.SUBMITTING:
            return []
        self._clear_personal()
        self._receipt_code = receipt_code
        self._last_activity = now
        return self._go(State.RECEIPT)

    def submit_failed(self, message_id: str, *, now: float) -> list[Output]:
        if self._state is not State.SUBMITTING:
            return []
        self._last_activity = now
        return [*self._go(State.REVIEW), Tell(message_id)]

    def done(self, *, now: float) -> list[Output]:
        self._expect("done", State.RECEIPT)
        self._reset()
        return [Show(State.ATTRACT)]

    # -- cancel and inactivity -----------------------------------------------------------
    def cancel(self, *, now: float) -> list[Output]:
        self._expect("cancel", *SHARING)
        self._overlay = Overlay.CONFIRM_CANCEL
        self._last_activity = now
        return [ShowOverlay(Overlay.CONFIRM_CANCEL, None)]

    def keep_going(self, *, now: float) -> list[Output]:
        self._expect("keep_going", *SHARING, overlay=Overlay.CONFIRM_CANCEL)
        self._overlay = Overlay.NONE
        self._last_activity = now
        return [HideOverlay()]

    def confirm_cancel(self, *, now: float) -> list[Output]:
        self._expect("confirm_cancel", *SHARING, overlay=Overlay.CONFIRM_CANCEL)
        return self._abandon()

    def still_here(self, *, now: float) -> list[Output]:
        self._expect("still_here", *SHARING, overlay=Overlay.STILL_THERE)
        self._overlay = Overlay.NONE
        self._last_activity = now
        return [HideOverlay()]

    def tick(self, *, now: float) -> list[Output]:
        """The UI clock: warns an idle session, then discards it."""
        if self._state is State.RECEIPT:
            if now - self._last_activity >= self._warn_after_s:
                # Submitted already: nothing to discard, only the code to forget.
                self._reset()
                return [Show(State.ATTRACT)]
            return []
        if self._state not in SHARING:
            return []  # attract waits; submitting is in the vault's hands
        if self._overlay is Overlay.STILL_THERE:
            if now - self._warned_at >= self._discard_after_s:
                return self._abandon()
            return []
        # A defender speaking or listening does not touch the screen. Once "stop" was
        # sent the clock runs again, so a take whose end is never reported cannot keep
        # a session alive for ever.
        if self._playing or (self._recording and not self._stopping):
            return []
        if now - self._last_activity >= self._warn_after_s:
            self._overlay = Overlay.STILL_THERE
            self._warned_at = now
            return [ShowOverlay(Overlay.STILL_THERE, self._discard_after_s)]
        return []
