"""Identity: a name or "Anonymous", a country from a list, an optional contact.

What is typed here lives only in widget properties and the state machine, in RAM, and
goes only into the sealed manifest. Text is typed on the screen's own keyboard (Kivy's
VKeyboard, in the layout of the session's language) into fields that draw their text
through :class:`RtlLabel`, because Kivy's TextInput does not shape Arabic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.properties import BooleanProperty, StringProperty
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.modalview import ModalView

from ..countries import countries, country_name
from ..textlayout_kivy import RtlButton
from . import load_kv
from .widgets import SessionScreen

KEYBOARDS = Path(__file__).resolve().parents[2] / "assets" / "keyboards"
#: Longest values kept, as the state machine caps them too.
LIMITS = {"name_field": 80, "contact_field": 120}


def _show(widget: Any, shown: bool) -> None:
    """Show a row, or take it out of the layout (no height, not touchable)."""
    widget.opacity = 1 if shown else 0
    widget.disabled = not shown
    widget.height = 76 if shown else 0


class TextField(ButtonBehavior, BoxLayout):
    value = StringProperty("")
    hint = StringProperty("")
    focused = BooleanProperty(False)


class CountryItem(RtlButton):
    code = StringProperty("")


class CountryPicker(ModalView):
    def __init__(self, screen: IdentityScreen, language: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.screen = screen
        self.ids.list.data = [
            {"source_text": name, "code": code,
             "on_release": (lambda c=code: self.choose(c))}
            for code, name in [("", App.get_running_app().tr._("I prefer not to say")),
                               *countries(language)]]

    def choose(self, code: str) -> None:
        self.screen.select_country(code or None)
        self.dismiss()


load_kv("identity")


class IdentityScreen(SessionScreen):
    keyboards = StringProperty(str(KEYBOARDS))
    country = StringProperty("")

    def refresh(self) -> None:
        machine = self.machine
        language = machine.language or "en"
        self.ids.keyboard.layout = f"{language}"
        show_name = bool(machine.consent.get("show_name"))
        name_field = self.ids.name_field
        # Either the name row or the note that the story will be shown as "Anonymous".
        _show(self.ids.name_row, show_name)
        _show(self.ids.anonymous_note, not show_name)
        may_contact = bool(machine.consent.get("may_contact"))
        _show(self.ids.contact_row, may_contact)
        name_field.value = (machine.name or "") if show_name else ""
        self.ids.contact_field.value = (machine.contact or "") if may_contact else ""
        self.country = machine.country or ""
        self._show_country()
        self.focus_field(name_field if show_name else
                         self.ids.contact_field if may_contact else None)

    def _show_country(self) -> None:
        tr = App.get_running_app().tr
        name = (country_name(self.country, self.machine.language or "en") if self.country
                else tr._("Choose your country"))
        self.ids.country_button.source_text = name

    def open_countries(self) -> None:
        CountryPicker(self, self.machine.language or "en").open()

    def select_country(self, code: str | None) -> None:
        self.country = code or ""
        self._show_country()

    # -- the on-screen keyboard -----------------------------------------------------------
    def _fields(self) -> list[TextField]:
        return [f for f in (self.ids.name_field, self.ids.contact_field) if not f.disabled]

    def focus_field(self, field: TextField | None) -> None:
        for f in (self.ids.name_field, self.ids.contact_field):
            f.focused = f is field

    def _focused(self) -> TextField | None:
        return next((f for f in self._fields() if f.focused), None)

    def type_text(self, text: str) -> None:
        field = self._focused()
        if field is None or text in ("\t", "\n"):
            return
        limit = LIMITS["name_field" if field is self.ids.name_field else "contact_field"]
        field.value = (field.value + text)[:limit]

    def special_key(self, key: str | None) -> None:
        field = self._focused()
        if field is None:
            return
        if key == "backspace":
            field.value = field.value[:-1]
        elif key in ("enter", "tab"):
            fields = self._fields()
            index = fields.index(field)
            self.focus_field(fields[(index + 1) % len(fields)])

    # -- leaving ----------------------------------------------------------------------------
    def leave(self, event: str) -> None:
        name = self.ids.name_field.value if not self.ids.name_field.disabled else None
        contact = self.ids.contact_field.value if not self.ids.contact_field.disabled else None
        # set_identity keeps what was typed (going back keeps it too); "next" checks it.
        if self.fire("set_identity", name, self.country or None, contact):
            self.fire(event)
