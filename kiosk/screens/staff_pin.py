"""The staff PIN keypad. Five wrong PINs lock it for five minutes, across restarts
(kiosk/staff/lockout.py keeps the count on disk); the PIN is never shown or logged."""

from __future__ import annotations

from typing import Any

from kivy.app import App
from kivy.factory import Factory

from . import load_kv
from .widgets import SessionScreen

load_kv("staff_pin")

MAX_DIGITS = 12


class StaffPinScreen(SessionScreen):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pin = ""

    def on_kv_post(self, _base_widget: Any) -> None:
        for key in ["1", "2", "3", "4", "5", "6", "7", "8", "9", "back", "0", "ok"]:
            label = {"back": "⌫", "ok": "OK"}.get(key, key)
            button = Factory.PinKey(source_text=label)
            if key == "back":
                button.ltr_font_name = "DejaVuSans"  # Roboto has no ⌫
            button.bind(on_release=lambda _b, k=key: self.press(k))
            self.ids.keypad.add_widget(button)
            self.ids[f"key_{key}"] = button

    def on_pre_enter(self, *_args: Any) -> None:
        self._pin = ""
        self.ids.status.source_text = ""
        self._show()

    def press(self, key: str) -> None:
        app = App.get_running_app()
        app.staff_activity()
        if key == "back":
            self._pin = self._pin[:-1]
        elif key == "ok":
            pin, self._pin = self._pin, ""
            self.ids.status.source_text = app.try_staff_pin(pin)
        elif len(self._pin) < MAX_DIGITS:
            self._pin += key
        self._show()

    def _show(self) -> None:
        self.ids.dots.text = "●" * len(self._pin)
        self.ids.dots.font_name = "DejaVuSans"
