"""Choose the language of the session: each button says its language in itself."""

from __future__ import annotations

from typing import Any

from kivy.app import App

from ..i18n import LANGUAGE_NAMES
from ..textlayout_kivy import RtlButton
from . import load_kv
from .widgets import SessionScreen

load_kv("language")


#: "Choose your language" in the kiosk's languages, shown together before one is chosen.
CHOOSE_LATIN = "Choose your language · Elija su idioma · Choisissez votre langue"
CHOOSE_ARABIC = "اختر لغتك"


class LanguageScreen(SessionScreen):
    def on_kv_post(self, _base_widget: Any) -> None:
        self.ids.title.source_text = CHOOSE_LATIN
        self.ids.title_ar.source_text = CHOOSE_ARABIC
        for code in App.get_running_app().cfg.languages:
            button = RtlButton(source_text=LANGUAGE_NAMES.get(code, code), language=code,
                               font_size="34sp", bold=True, background_normal="",
                               background_color=(0.13, 0.42, 0.62, 1),
                               size_hint_y=None, height=120)
            button.bind(on_release=lambda _b, c=code: App.get_running_app().choose_language(c))
            self.ids.choices.add_widget(button)
            self.ids[f"lang_{code}"] = button
