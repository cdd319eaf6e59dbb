"""Browse the published stories: tiles with title, name or "Anonymous", country and
duration, filtered by region, theme and language."""

from __future__ import annotations

from typing import Any

from kivy.app import App
from kivy.properties import BooleanProperty, StringProperty
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.boxlayout import BoxLayout

from ..countries import country_name
from ..i18n import LANGUAGE_NAMES
from ..textlayout_kivy import RtlButton
from . import load_kv
from .overlays import choose
from .widgets import SessionScreen

load_kv("stories")

#: Filter kinds and how their "all" choice reads.
FILTERS = ("region", "theme", "language")


def clock_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


def byline(story: Any, language: str) -> str:
    tr = App.get_running_app().tr
    name = tr._("Anonymous") if story.display_name == "Anonymous" else story.display_name
    try:
        where = country_name(story.country, language)
    except KeyError:
        where = story.country
    return f"{name} · {where} · {clock_text(story.duration_s)}"


class StoryTile(ButtonBehavior, BoxLayout):
    story_id = StringProperty("")
    title = StringProperty("")
    byline = StringProperty("")
    badge = StringProperty("")
    language = StringProperty("en")
    demo = BooleanProperty(False)

    def on_release(self) -> None:
        App.get_running_app().visitor_event("open", self.story_id)


class StoriesScreen(SessionScreen):
    """The story browser. Filters are "all" (None) or one value each."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters: dict[str, str | None] = dict.fromkeys(FILTERS)

    def on_kv_post(self, _base_widget: Any) -> None:
        # The visitor can read the screens in any of the kiosk's languages.
        app = App.get_running_app()
        for code in app.cfg.languages:
            button = RtlButton(source_text=LANGUAGE_NAMES.get(code, code), language=code,
                               font_size="18sp", background_normal="",
                               background_color=(0.24, 0.26, 0.30, 1))
            button.bind(on_release=lambda _b, c=code: self.switch_language(c))
            self.ids.languages.add_widget(button)
            self.ids[f"ui_{code}"] = button

    def switch_language(self, code: str) -> None:
        app = App.get_running_app()
        app.tr.switch_lang(code)
        app.visitor_event("activity")
        self.refresh()

    def on_pre_enter(self, *_args: Any) -> None:
        self.refresh()

    def pick(self, kind: str) -> None:
        app = App.get_running_app()
        app.visitor_event("activity")
        tr = app.tr
        library = app.library
        values = {"region": library.regions, "theme": library.themes,
                  "language": library.languages}[kind]()
        # Each language's name is written in that language (and its script).
        labels = [(None, tr._("All"), tr.language)] + [
            (v, LANGUAGE_NAMES.get(v, v), v) if kind == "language" else (v, tr._(v), tr.language)
            for v in values]
        choose(self._filter_title(kind), labels, lambda value: self.set_filter(kind, value))

    def _filter_title(self, kind: str) -> str:
        tr = App.get_running_app().tr
        return {"region": tr._("Region"), "theme": tr._("Theme"),
                "language": tr._("Language")}[kind]

    def set_filter(self, kind: str, value: str | None) -> None:
        self.filters[kind] = value
        App.get_running_app().visitor_event("activity")
        self.refresh()

    def shown(self) -> list[str]:
        """The ids of the stories the tiles show (for tests and the walkthrough)."""
        return [d["story_id"] for d in self.ids.tiles.data]

    def refresh(self) -> None:
        app = App.get_running_app()
        tr = app.tr
        language = tr.language
        for kind in FILTERS:
            value = self.filters[kind]
            shown = (tr._("All") if value is None else
                     LANGUAGE_NAMES.get(value, value) if kind == "language" else tr._(value))
            self.ids[f"{kind}_filter"].source_text = f"{self._filter_title(kind)}: {shown}"
        stories = app.library.filter(**self.filters)
        self.ids.tiles.data = [
            {"story_id": s.id, "title": s.title, "language": s.language,
             "byline": byline(s, language),
             "badge": tr._("Demo story") if s.demo else ""}
            for s in stories]
        self.ids.empty.source_text = ("" if stories else
                                      tr._("No stories match. Try another filter.")
                                      if any(self.filters.values())
                                      else tr._("No stories have been published here yet."))
        self.ids.empty.height = 0 if stories else 60
