"""Kivy labels and buttons that show right-to-left text correctly: :class:`RtlLabel`,
:class:`RtlButton`.

Set ``source_text`` (the logical text, as the translator returns it) and ``language``;
never ``text``, which the widget computes. In kv::

    #:import RtlLabel kiosk.textlayout_kivy.RtlLabel
    RtlLabel:
        source_text: tr._("Share your story")
        language: tr.language

For a right-to-left language the widget draws in DejaVu Sans (registered with Kivy as
``DejaVuSans``, with its bold face), aligns right and sets ``text`` to
:func:`kiosk.textlayout.display_lines` for its width, measured in its own font; it
recomputes when its width, text, language or font size change. For a left-to-right
language it shows ``source_text`` as it is, in ``ltr_font_name`` (Kivy's default,
Roboto), aligned by ``ltr_halign``.

The widget wraps at ``text_size[0]`` (minus its horizontal padding), which defaults to
its width; a kv rule may set ``text_size`` as for any label.
``base_direction`` is left alone: with SDL2 (the kiosk's text provider) it does
nothing, and a provider that honours it (Pango) would reorder the already reordered
text a second time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kivy.core.text import Label as CoreLabel
from kivy.core.text import LabelBase
from kivy.lang import Builder
from kivy.properties import OptionProperty, StringProperty
from kivy.uix.button import Button
from kivy.uix.label import Label

from .textlayout import DEJAVU_SANS, DEJAVU_SANS_BOLD, display_lines, is_rtl

log = logging.getLogger("kiosk.textlayout")

#: The font family name RTL text is drawn in.
RTL_FONT = "DejaVuSans"
#: Kivy's own default font.
DEFAULT_FONT = "Roboto"
#: Lines are filled to this many pixels short of the width: Kivy sums word widths when
#: it lays a line out, which can differ from the whole line's width by a pixel.
WRAP_SLACK_PX = 2.0


def register_fonts() -> bool:
    """Register DejaVu Sans with Kivy as :data:`RTL_FONT`; False if the font is missing."""
    if not Path(DEJAVU_SANS).is_file():
        log.warning("rtl_font_missing package=fonts-dejavu-core")
        return False
    bold = DEJAVU_SANS_BOLD if Path(DEJAVU_SANS_BOLD).is_file() else DEJAVU_SANS
    LabelBase.register(name=RTL_FONT, fn_regular=DEJAVU_SANS, fn_bold=bold)
    return True


_FONT_READY = register_fonts()

Builder.load_string("""
<RtlLabel>:
    text_size: self.width, None
<RtlButton>:
    text_size: self.width, None
""")

_HALIGN = ("left", "center", "right", "justify", "auto")
#: Properties whose change means the text must be laid out again.
_WATCHED = ("source_text", "language", "width", "text_size", "padding", "font_size",
            "bold", "italic", "ltr_halign", "rtl_halign", "ltr_font_name")


class BidiTextMixin:
    """What :class:`RtlLabel` and :class:`RtlButton` share; mix in before a Label."""

    #: The text in logical order, as translated; ``text`` is computed from it.
    source_text = StringProperty("")
    #: The language of ``source_text``: decides shaping, font and alignment.
    language = StringProperty("en")
    ltr_halign = OptionProperty("left", options=_HALIGN)
    rtl_halign = OptionProperty("right", options=_HALIGN)
    ltr_font_name = StringProperty(DEFAULT_FONT)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        widget: Any = self
        for name in _WATCHED:
            widget.fbind(name, self._on_layout_change)
        self.refresh()

    def _on_layout_change(self, *_args: Any) -> None:
        self.refresh()

    @property
    def wrap_width(self) -> float | None:
        """The width lines are filled to, or None when the label does not wrap."""
        widget: Any = self
        width = widget.text_size[0]
        if width is None:
            return None
        left, _top, right, _bottom = widget.padding
        return max(0.0, float(width) - float(left) - float(right) - WRAP_SLACK_PX)

    def measure(self, text: str) -> float:
        """The width in pixels of ``text`` in this widget's current font."""
        return float(self._core_label().get_extents(text)[0])

    def _core_label(self) -> CoreLabel:
        widget: Any = self
        return CoreLabel(font_name=widget.font_name, font_size=widget.font_size,
                         bold=widget.bold, italic=widget.italic,
                         font_hinting=widget.font_hinting, font_kerning=widget.font_kerning)

    def refresh(self) -> None:
        """Compute ``text``, font and alignment from ``source_text`` and ``language``."""
        widget: Any = self
        if is_rtl(self.language):
            if _FONT_READY:
                widget.font_name = RTL_FONT
            widget.halign = self.rtl_halign
            core = self._core_label()

            def measure(text: str) -> float:
                return float(core.get_extents(text)[0])

            widget.text = display_lines(self.source_text, self.language, self.wrap_width,
                                        measure)
        else:
            widget.font_name = self.ltr_font_name
            widget.halign = self.ltr_halign
            widget.text = self.source_text


class RtlLabel(BidiTextMixin, Label):
    """A Label for translated text; right-to-left languages shaped, wrapped, aligned."""


class RtlButton(BidiTextMixin, Button):
    """A Button for translated text, centred in every language."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("ltr_halign", "center")
        kwargs.setdefault("rtl_halign", "center")
        super().__init__(**kwargs)
