"""Consent: explicit choices, nothing preselected; the machine refuses to go on without
the required ones."""

from __future__ import annotations

from . import load_kv
from .widgets import SessionScreen

load_kv("consent")

#: Each consent key and the ids of its yes and no buttons.
BUTTONS = {
    "publish_voice": ("publish_yes", "publish_no"),
    "show_name": ("name_show", "name_anonymous"),
    "may_contact": ("contact_yes", "contact_no"),
}


class ConsentScreen(SessionScreen):
    def choose(self, key: str, value: bool) -> None:
        self.fire("set_consent", key, value)
        self.refresh()

    def refresh(self) -> None:
        consent = self.machine.consent
        for key, (yes, no) in BUTTONS.items():
            value = consent.get(key)
            self.ids[yes].state = "down" if value is True else "normal"
            self.ids[no].state = "down" if value is False else "normal"
