"""Text made ready for Kivy's labels, which do no shaping and no bidi of their own.

Kivy's SDL2 text provider draws characters one after the other, left to right, each in
its isolated form. Arabic therefore has to be reshaped (each letter in the form that
joins its neighbours, as Unicode presentation forms), wrapped into lines that fit the
label, and only then reordered into visual order line by line: reordering a whole
paragraph first and letting Kivy wrap it afterwards would put its last words on the
first line.

This module is pure Python: the width of a string comes from the ``measure`` callable
the caller passes in (in Kivy, the label's own font through
:mod:`kiosk.textlayout_kivy`), so the wrapping is tested without a display.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

import arabic_reshaper
from bidi.algorithm import get_display

from .i18n import RTL

#: The fonts RTL text is drawn in (Debian's fonts-dejavu-core): they carry the Arabic
#: presentation forms that reshaping produces.
DEJAVU_SANS = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
DEJAVU_SANS_BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"

Measure = Callable[[str], float]


def is_rtl(language: str) -> bool:
    return language in RTL


def shape(text: str) -> str:
    """Arabic letters in their joined forms (presentation forms), still in logical order."""
    return arabic_reshaper.reshape(text)


def _paragraph_direction(text: str) -> str:
    """"L" or "R": the direction of the first strong character (Unicode rules P2, P3);
    "R" for a paragraph with none, as it stands in a right-to-left interface."""
    for ch in text:
        kind = unicodedata.bidirectional(ch)
        if kind == "L":
            return "L"
        if kind in ("R", "AL"):
            return "R"
    return "R"


def _split_long_word(word: str, width_px: float, measure: Measure) -> list[str]:
    """Break a word wider than the line between characters, never before a combining
    mark (a vowel sign stays on its letter)."""
    pieces: list[str] = []
    current = ""
    for ch in word:
        candidate = current + ch
        if current and not unicodedata.combining(ch) and measure(candidate) > width_px:
            pieces.append(current)
            current = ch
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces


def wrap(paragraph: str, width_px: float, measure: Measure,
         visual: Callable[[str], str] = lambda line: line) -> list[str]:
    """Greedy wrap of one paragraph (no newlines) at spaces into lines whose
    ``measure(visual(line))`` fits ``width_px``; a word wider than a line is broken.

    Runs of spaces collapse to one and spaces at a line's ends are dropped, as in
    Kivy's own wrapping.
    """
    words = paragraph.split()
    if not words:
        return [""]
    lines: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if measure(visual(candidate)) <= width_px:
            current = candidate
            continue
        if current:
            lines.append(current)
        if measure(visual(word)) <= width_px:
            current = word
        else:
            *full, current = _split_long_word(
                word, width_px, lambda piece: measure(visual(piece)))
            lines.extend(full)
    lines.append(current)
    return lines


def display_lines(text: str, language: str, width_px: float | None,
                  measure: Measure) -> str:
    """``text`` as a Kivy label must be given it to show it right in ``language``.

    Left-to-right languages: ``text`` unchanged (Kivy wraps it). Right-to-left: shaped,
    wrapped into lines that fit ``width_px`` by ``measure`` (the explicit ``\\n``
    paragraph breaks kept), each line then put in visual order on its own, joined with
    ``\\n``. ``width_px`` None or not positive: no wrapping, only the paragraph breaks.
    """
    if not is_rtl(language) or not text:
        return text
    lines: list[str] = []
    for paragraph in shape(text).split("\n"):
        base_dir = _paragraph_direction(paragraph)

        def visual(line: str, base_dir: str = base_dir) -> str:
            return get_display(line, base_dir=base_dir)

        if width_px is None or width_px <= 0:
            logical = [" ".join(paragraph.split())]
        else:
            logical = wrap(paragraph, width_px, measure, visual)
        lines.extend(visual(line) for line in logical)
    return "\n".join(lines)


def fixed_measure(px_per_char: float) -> Measure:
    """A measure that gives every character the same width (tests, rough estimates)."""
    return lambda s: len(s) * px_per_char
