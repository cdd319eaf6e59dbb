"""Right-to-left text for Kivy: shaping, wrapping, per-line bidi; and the real widgets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bidi.algorithm import get_display
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.textlayout import display_lines, fixed_measure, shape, wrap

REPO = Path(__file__).resolve().parent.parent
PARAGRAPH = ("أصوات المدافعات والمدافعين عن حقوق الإنسان من جميع أنحاء العالم، يتحدثون"
             " عن عملهم الأساسي والسلمي من أجل الكرامة والعدالة للجميع")
TEN_PX = fixed_measure(10)


def is_presentation_form(ch: str) -> bool:
    return 0xFB50 <= ord(ch) <= 0xFDFF or 0xFE70 <= ord(ch) <= 0xFEFF


def logical(visual_line: str) -> str:
    """Back to logical order (for a line of Arabic only: its visual order is reversed)."""
    return visual_line[::-1]


def test_left_to_right_text_is_left_as_it_is() -> None:
    text = "Voices of human rights defenders from around the world.\nTheir work is peaceful."
    for language in ("en", "fr", "es"):
        assert display_lines(text, language, 50, TEN_PX) == text


def test_shaping_gives_presentation_forms_the_raw_text_does_not_have() -> None:
    assert not any(is_presentation_form(ch) for ch in PARAGRAPH)
    shaped = shape(PARAGRAPH)
    letters = [ch for ch in shaped if not ch.isspace() and ch != "،"]
    assert letters and all(is_presentation_form(ch) for ch in letters)
    shown = display_lines(PARAGRAPH, "ar", 300, TEN_PX)
    assert sum(is_presentation_form(ch) for ch in shown) == len(letters)


def test_a_long_paragraph_wraps_into_lines_in_reading_order_that_each_fit() -> None:
    shown = display_lines(PARAGRAPH, "ar", 200, TEN_PX).split("\n")
    assert len(shown) >= 4
    assert all(TEN_PX(line) <= 200 for line in shown)
    words = shape(PARAGRAPH).split()
    # The first words are on the first line (at its right end), the last on the last.
    assert logical(shown[0]).startswith(words[0] + " " + words[1])
    assert shown[0].endswith(words[0][::-1])
    assert logical(shown[-1]).endswith(words[-1])
    # Read line after line, right to left: the paragraph, nothing lost or moved.
    assert " ".join(logical(line) for line in shown).split() == words


def test_reordering_before_wrapping_would_put_the_end_first() -> None:
    # What the per-line rule prevents: bidi over the whole paragraph, then wrapping.
    words = shape(PARAGRAPH).split()
    wrong_first_line = wrap(get_display(shape(PARAGRAPH)), 200, TEN_PX)[0]
    assert words[-1][::-1] in wrong_first_line
    right_first_line = display_lines(PARAGRAPH, "ar", 200, TEN_PX).split("\n")[0]
    assert words[-1][::-1] not in right_first_line


def test_explicit_line_breaks_start_new_paragraphs() -> None:
    first, second = "أصوات المدافعين عن حقوق الإنسان", "عملهم أساسي وسلمي"
    shown = display_lines(f"{first}\n{second}", "ar", 120, TEN_PX).split("\n")
    second_words = shape(second).split()
    start_of_second = next(i for i, line in enumerate(shown)
                           if logical(line).startswith(second_words[0]))
    assert " ".join(logical(line) for line in shown[:start_of_second]) == shape(first)
    assert " ".join(logical(line) for line in shown[start_of_second:]) == shape(second)
    assert display_lines(f"{first}\n\n{second}", "ar", None, TEN_PX).split("\n")[1] == ""


def test_without_a_width_only_paragraphs_are_lines() -> None:
    shown = display_lines(PARAGRAPH + "\n" + PARAGRAPH, "ar", None, TEN_PX)
    assert shown.count("\n") == 1
    assert shown.split("\n")[0] == get_display(shape(PARAGRAPH))
    assert display_lines("", "ar", 100, TEN_PX) == ""


def test_latin_and_digits_inside_arabic_keep_their_own_order() -> None:
    text = "رمز الإيصال الخاص بك هو K7-4QX9 احتفظ به"
    shown = display_lines(text, "ar", 1000, TEN_PX)
    assert "K7-4QX9" in shown
    # The Arabic reads right to left: its first word is at the right end of the line.
    assert shown.endswith(shape("رمز")[::-1])


def test_a_word_wider_than_the_line_is_broken_to_fit() -> None:
    word = "الاستقلالية" * 3
    shown = display_lines(word, "ar", 80, TEN_PX).split("\n")
    assert len(shown) > 1 and all(TEN_PX(line) <= 80 for line in shown)
    assert "".join(logical(line) for line in shown) == shape(word)


def test_a_broken_word_keeps_combining_marks_on_their_letter() -> None:
    word = "e\u0301" * 12  # é as e + combining acute
    pieces = wrap(word, 55, TEN_PX)
    assert "".join(pieces) == word
    assert all(not piece.startswith("\u0301") for piece in pieces)


arabic_word = st.text(alphabet=st.sampled_from("ابتثجحخدذرزسشصضطظعغفقكلمنهوي"),
                      min_size=1, max_size=9)


@settings(max_examples=150, deadline=None)
@given(words=st.lists(arabic_word, min_size=1, max_size=30),
       width=st.integers(min_value=110, max_value=400))  # every word fits
def test_wrapping_is_greedy_fits_and_keeps_every_word_in_order(words: list[str],
                                                               width: int) -> None:
    # Widths that differ per letter, as a real font's do.
    def measure(s: str) -> float:
        return sum(6 + ord(ch) % 7 for ch in s)

    text = " ".join(words)
    shown = display_lines(text, "ar", width, measure).split("\n")
    assert all(measure(line) <= width for line in shown)
    lines = [logical(line) for line in shown]
    assert " ".join(lines).split() == shape(text).split()
    for line, following in zip(lines, lines[1:], strict=False):
        # Greedy: the next line's first word would not have fitted on this one.
        assert measure(f"{line} {following.split()[0]}") > width


# -- the real widgets, under Xvfb ---------------------------------------------------------------

KIVY_CHECK = r'''
import json, sys
import numpy as np
from kivy.core.window import Window
from kivy.uix.label import Label
import arabic_reshaper
from bidi.algorithm import get_display
from kiosk.textlayout import display_lines
from kiosk.textlayout_kivy import RTL_FONT, RtlButton, RtlLabel

WORD = "مرحبا"
PARAGRAPH = sys.argv[1]
W = 400

def alpha(label):
    label.texture_update()
    tex = label.texture
    pixels = np.frombuffer(tex.pixels, dtype=np.uint8).reshape(tex.height, tex.width, 4)
    return pixels[:, :, 3]

def ink_columns(a):
    cols = np.nonzero(a.max(axis=0) > 40)[0]
    return int(cols.min()), int(cols.max())

out = {}
rtl = RtlLabel(source_text=WORD, language="ar", font_size=40, width=W)
a_rtl = alpha(rtl)
out["rtl"] = {"font": rtl.font_name, "halign": rtl.halign, "shape": list(a_rtl.shape),
              "ink": ink_columns(a_rtl), "text": rtl.text}

def plain(text, **kw):
    label = Label(text=text, font_size=40, width=W, text_size=(W, None), **kw)
    return alpha(label)

direct = plain(get_display(arabic_reshaper.reshape(WORD)), font_name=RTL_FONT, halign="right")
raw_same_font = plain(WORD, font_name=RTL_FONT, halign="right")
raw_default = plain(WORD)
out["equal_to_direct"] = direct.shape == a_rtl.shape and bool((direct == a_rtl).all())
out["differs_from_raw"] = raw_same_font.shape != a_rtl.shape or bool(
    (raw_same_font != a_rtl).any())
out["differs_from_plain_label"] = raw_default.shape != a_rtl.shape or bool(
    (raw_default != a_rtl).any())

para = RtlLabel(source_text=PARAGRAPH, language="ar", font_size=28, width=500)
para.texture_update()
cached = para._label._cached_lines
out["paragraph"] = {
    "text": para.text,
    "expected": display_lines(PARAGRAPH, "ar", para.wrap_width, para.measure),
    "kivy_lines": len(cached),
    "kivy_widths": [line.w for line in cached],
    "texture_width": para.texture.width,
}

para.language = "en"
out["ltr"] = {"font": para.font_name, "halign": para.halign, "text": para.text}
para.language = "ar"
para.width = 300
out["rewrapped_lines"] = para.text.count("\n") + 1

button = RtlButton(source_text="شارك قصتك", language="ar", width=300)
out["button"] = {"font": button.font_name, "halign": button.halign, "text": button.text}
button.language = "fr"
out["button_ltr_halign"] = button.halign
print("RESULT " + json.dumps(out))
'''


def test_rtl_label_renders_shaped_right_aligned_text(virtual_display: str,
                                                     tmp_path: Path) -> None:
    env = {**os.environ, "DISPLAY": virtual_display, "KIVY_NO_ARGS": "1",
           "KIVY_NO_CONSOLELOG": "1", "KIVY_HOME": str(tmp_path / "kivy"),
           "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", KIVY_CHECK, PARAGRAPH], env=env,
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))

    rtl = out["rtl"]
    assert rtl["font"] == "DejaVuSans" and rtl["halign"] == "right"
    assert rtl["text"] == get_display(shape("مرحبا"))
    height, width = rtl["shape"]
    assert width == 400
    left, right = rtl["ink"]
    assert right >= width - 8, "ink should reach the right edge"
    assert left > width / 2, "a short word should sit on the right half"
    # Exactly what reshaping + reordering gives, and not what the raw word gives.
    assert out["equal_to_direct"]
    assert out["differs_from_raw"]
    assert out["differs_from_plain_label"]

    para = out["paragraph"]
    assert para["text"] == para["expected"]
    # Kivy draws our lines as they are: it did not wrap them again.
    assert para["kivy_lines"] == para["text"].count("\n") + 1 >= 3
    assert max(para["kivy_widths"]) <= para["texture_width"]

    assert out["ltr"] == {"font": "Roboto", "halign": "left", "text": PARAGRAPH}
    assert out["rewrapped_lines"] > para["kivy_lines"]
    assert out["button"]["font"] == "DejaVuSans" and out["button"]["halign"] == "center"
    assert out["button_ltr_halign"] == "center"
