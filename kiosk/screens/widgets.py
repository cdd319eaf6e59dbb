"""Widgets the defender's screens share: a choice button, a row that mirrors for
right-to-left languages, the level meter, and the base class of a session screen."""

from __future__ import annotations

from typing import Any

from kivy.app import App
from kivy.graphics import Color, Rectangle
from kivy.properties import BooleanProperty, NumericProperty
from kivy.uix.behaviors import ToggleButtonBehavior
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.screenmanager import Screen
from kivy.uix.vkeyboard import VKeyboard
from kivy.uix.widget import Widget

from ..audio.levels import FLOOR_DBFS
from ..textlayout_kivy import RtlButton


class ChoiceButton(ToggleButtonBehavior, RtlButton):
    """One answer of a yes/no question: stays down when chosen."""


class MirrorBox(BoxLayout):
    """A horizontal row whose order is reversed when the language reads right to left
    (the "back" button is on the right in Arabic, as the reader's eye expects)."""

    rtl = BooleanProperty(False)

    def on_rtl(self, _instance: Any, _value: bool) -> None:
        self.children = self.children[::-1]


class ScreenKeyboard(VKeyboard):
    """Kivy's on-screen keyboard, laid out like any widget: never dragged, turned or
    scaled (VKeyboard is a Scatter, and its "free" mode turns all three on)."""

    def setup_mode(self, *_args: Any) -> None:
        self.do_translation = self.do_rotation = self.do_scale = False


class LevelMeter(Widget):
    """The microphone's level as a bar: green while speech is heard, grey when quiet."""

    #: Level in dBFS; FLOOR_DBFS (silence) to 0.
    level = NumericProperty(FLOOR_DBFS)
    #: What counts as heard (the config's silence threshold).
    threshold = NumericProperty(-50.0)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with self.canvas:
            self._back_color = Color(0.18, 0.19, 0.22, 1)
            self._back = Rectangle()
            self._bar_color = Color(0.3, 0.3, 0.3, 1)
            self._bar = Rectangle()
        self.bind(pos=self._draw, size=self._draw, level=self._draw)

    def _draw(self, *_args: Any) -> None:
        # -60 dBFS .. 0 dBFS across the width: speech sits around -30 to -10.
        fraction = min(max((self.level + 60.0) / 60.0, 0.0), 1.0)
        self._back.pos, self._back.size = self.pos, self.size
        self._bar.pos = self.pos
        self._bar.size = (self.width * fraction, self.height)
        heard = self.level >= self.threshold
        self._bar_color.rgba = (0.2, 0.75, 0.4, 1) if heard else (0.45, 0.47, 0.5, 1)


class SessionScreen(Screen):
    """A screen of the defender's session; its name is the machine state it shows."""

    def on_pre_enter(self, *_args: Any) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Show what the session holds now (called on entry and after a change)."""

    @property
    def session(self) -> Any:
        return App.get_running_app().session

    @property
    def machine(self) -> Any:
        return self.session.machine

    def fire(self, event: str, *args: Any, **kwargs: Any) -> bool:
        return bool(self.session.fire(event, *args, **kwargs))

    def to_window_x(self, widget_id: str) -> float:
        """Where a widget's centre is drawn, across the window (for layout checks)."""
        widget = self.ids[widget_id]
        return float(widget.to_window(*widget.center)[0])
