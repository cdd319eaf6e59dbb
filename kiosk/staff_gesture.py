"""The hidden way into staff mode: a long press in one corner, then a touch in another.

Plain Python (positions and times are passed in), so it is tested without a window;
the app feeds it every touch of the attract screen. A visitor who leans on the screen
will not open it by chance: the press must stay in a small top-left square for
``hold_s`` seconds without moving out, and the second touch must land in the top-right
square within ``window_s`` seconds after the press ends.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Side of each corner square, in pixels (about 2 cm on a 15.6" 1280x800 panel).
CORNER_PX = 90
HOLD_S = 2.0
WINDOW_S = 4.0


@dataclass
class CornerGesture:
    width: float
    height: float
    corner_px: float = CORNER_PX
    hold_s: float = HOLD_S
    window_s: float = WINDOW_S

    def __post_init__(self) -> None:
        self._press_started: float | None = None
        self._armed_until: float | None = None

    def _top_left(self, x: float, y: float) -> bool:
        # Kivy's y grows upwards: the top edge is at y = height.
        return x <= self.corner_px and y >= self.height - self.corner_px

    def _top_right(self, x: float, y: float) -> bool:
        return x >= self.width - self.corner_px and y >= self.height - self.corner_px

    def down(self, x: float, y: float, now: float) -> bool:
        """A touch begins; True when it completes the gesture (open the PIN keypad)."""
        if self._armed_until is not None:
            armed, self._armed_until = self._armed_until, None
            if now <= armed and self._top_right(x, y):
                self._press_started = None
                return True
        self._press_started = now if self._top_left(x, y) else None
        return False

    def move(self, x: float, y: float) -> None:
        if self._press_started is not None and not self._top_left(x, y):
            self._press_started = None

    def up(self, x: float, y: float, now: float) -> None:
        started, self._press_started = self._press_started, None
        if started is not None and self._top_left(x, y) and now - started >= self.hold_s:
            self._armed_until = now + self.window_s
