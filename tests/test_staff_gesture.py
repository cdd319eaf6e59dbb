"""The hidden gesture into staff mode: long press top-left, then touch top-right."""

from __future__ import annotations

from kiosk.staff_gesture import CornerGesture

W, H = 1280, 800
TL, TR, MID = (20, H - 20), (W - 20, H - 20), (640, 400)


def press(g: CornerGesture, at, start: float, held: float) -> None:
    g.down(*at, start)
    g.up(*at, start + held)


def test_long_press_then_other_corner_opens() -> None:
    g = CornerGesture(W, H)
    press(g, TL, 0, 2.1)
    assert g.down(*TR, 3.0) is True


def test_a_short_press_a_late_touch_or_the_wrong_corner_does_not() -> None:
    g = CornerGesture(W, H)
    press(g, TL, 0, 1.5)
    assert g.down(*TR, 2.0) is False
    press(g, TL, 10, 2.5)
    assert g.down(*TR, 12.5 + 4.1) is False  # too late
    press(g, TL, 20, 2.5)
    assert g.down(*MID, 23) is False  # elsewhere first: disarmed
    assert g.down(*TR, 23.5) is False
    press(g, TR, 30, 3)
    assert g.down(*TL, 33.5) is False  # the corners the other way round


def test_a_press_that_slides_out_of_the_corner_does_not_arm() -> None:
    g = CornerGesture(W, H)
    g.down(*TL, 0)
    g.move(*MID)
    g.up(*TL, 3)
    assert g.down(*TR, 3.5) is False
