"""What covers a screen for a moment: "Are you still there?", "Start again?", and plain
kind messages (no microphone, disk full, nothing heard...), one ModalView each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kivy.app import App
from kivy.clock import Clock
from kivy.uix.modalview import ModalView

from ..textlayout_kivy import RtlButton
from . import load_kv

load_kv("overlays")


class Overlay(ModalView):
    """A title, a sentence and one or two buttons; ids ``<name>_button`` for the driver."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.buttons: dict[str, RtlButton] = {}

    def set_text(self, title: str, body: str) -> None:
        self.ids.title.source_text = title
        self.ids.body.source_text = body

    def add_button(self, name: str, text: str, action: Callable[[], None], *,
                   primary: bool = False) -> RtlButton:
        app = App.get_running_app()
        button = RtlButton(source_text=text, language=app.tr.language, font_size="26sp",
                           bold=True, background_normal="",
                           background_color=((0.78, 0.36, 0.16, 1) if primary
                                             else (0.13, 0.42, 0.62, 1)))
        button.bind(on_release=lambda _b: action())
        self.ids.buttons.add_widget(button)
        self.ids[f"{name}_button"] = button
        self.buttons[name] = button
        return button


class StillThere(Overlay):
    """The idle warning, with the seconds left before the session is discarded."""

    def __init__(self, seconds: float, on_here: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._deadline = Clock.get_boottime() + seconds
        tr = App.get_running_app().tr
        self.add_button("still_here", tr._("I am still here"), on_here, primary=True)
        self._tick(0)
        self._event = Clock.schedule_interval(self._tick, 0.25)
        self.bind(on_dismiss=lambda *_a: self._event.cancel())

    def _tick(self, _dt: float) -> None:
        tr = App.get_running_app().tr
        left = max(0, round(self._deadline - Clock.get_boottime()))
        # The countdown as a bare number under the sentence: no plural forms to get wrong.
        self.set_text(tr._("Are you still there?"),
                      tr._("If nobody touches the screen, what was recorded will be deleted"
                           " when the countdown ends.") + f"\n\n{left}")


def confirm_cancel(on_yes: Callable[[], None], on_no: Callable[[], None]) -> Overlay:
    tr = App.get_running_app().tr
    view = Overlay()
    view.set_text(tr._("Start again?"),
                  tr._("Everything you recorded in this session will be deleted."))
    view.add_button("keep_going", tr._("No, keep going"), on_no)
    view.add_button("confirm_cancel", tr._("Yes, delete and start again"), on_yes,
                    primary=True)
    return view


class ChoiceItem(RtlButton):
    pass


class Chooser(ModalView):
    """A list of choices (filters): ``choice_<n>`` ids for the driver, in list order."""

    def __init__(self, title: str, options: Sequence[tuple[Any, str, str]],
                 on_choice: Callable[[Any], None], **kwargs: Any) -> None:
        """``options``: (value, label, the label's language) each."""
        super().__init__(**kwargs)
        self.ids.title.source_text = title
        self.options = list(options)

        def chosen(value: Any) -> None:
            self.dismiss(animation=False)
            on_choice(value)

        self.ids.list.data = [{"source_text": label, "language": language,
                               "on_release": (lambda v=value: chosen(v))}
                              for value, label, language in self.options]
        self.chosen = chosen


def choose(title: str, options: Sequence[tuple[Any, str, str]],
           on_choice: Callable[[Any], None]) -> Chooser:
    view = Chooser(title, options, on_choice)
    view.open(animation=False)
    return view


def message(text: str, on_ok: Callable[[], None]) -> Overlay:
    tr = App.get_running_app().tr
    view = Overlay()
    view.set_text(tr._("Please note"), text)
    view.add_button("ok", tr._("OK"), on_ok, primary=True)
    return view
