"""The final review: each answer recorded or skipped, with a way back to change it."""

from __future__ import annotations

from kivy.app import App

from ..countries import country_name
from ..prompts import load_prompts
from ..textlayout_kivy import RtlButton
from . import load_kv
from .widgets import MirrorBox, SessionScreen

load_kv("review")


class ReviewScreen(SessionScreen):
    def refresh(self) -> None:
        app = App.get_running_app()
        tr = app.tr
        machine = self.machine
        language = machine.language or "en"
        display = (machine.display_name if machine.consent.get("show_name")
                   else tr._("Anonymous"))
        where = (country_name(machine.country, language) if machine.country
                 else tr._("Country not given"))
        self.ids.who.source_text = tr._("Shown as: {name} · {country}").format(
            name=display, country=where)
        prompts = {p.id: p for p in load_prompts()}
        box = self.ids.answers
        box.clear_widgets()
        for index, prompt_id in enumerate(machine.prompt_ids):
            answered = machine.answers.get(prompt_id) is not None
            state = tr._("Recorded") if answered else tr._("Skipped")
            row = MirrorBox(rtl=tr.is_rtl, size_hint_y=None, height=76, spacing=16)
            label = RtlButton(
                source_text=f"{index + 1}. {tr._(prompts[prompt_id].text)}"
                if prompt_id in prompts else prompt_id,
                language=language, font_size="22sp", background_normal="",
                background_color=(0.14, 0.15, 0.18, 1), size_hint_x=3)
            label.ltr_halign = "left"
            change_word = tr._("Change")
            change = RtlButton(source_text=f"{state} · {change_word}", language=language,
                               font_size="22sp", background_normal="",
                               background_color=((0.13, 0.42, 0.62, 1) if answered
                                                 else (0.35, 0.3, 0.2, 1)))
            change.bind(on_release=lambda _b, i=index: self.fire("goto_question", i))
            row.add_widget(label)
            row.add_widget(change)
            self.ids[f"change_{index}"] = change
            box.add_widget(row)
