"""Progress reports of a USB export or import, for the staff screen and the terminal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class UsbProgress:
    #: "export", "receipts" or "catalog".
    phase: str
    done_bytes: int
    total_bytes: int
    #: Submissions (or receipts, or stories) dealt with, of ``total``.
    done: int
    total: int

    @property
    def fraction(self) -> float:
        if self.total_bytes:
            return min(self.done_bytes / self.total_bytes, 1.0)
        return min(self.done / self.total, 1.0) if self.total else 0.0


ProgressFn = Callable[[UsbProgress], None]


class TerminalBar:
    """A one-line bar on a terminal (``\\r``), plain lines at each step otherwise."""

    def __init__(self, stream: object, label: str) -> None:
        self.stream = stream
        self.label = label
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last: tuple[str, int] | None = None
        self._drawn = False

    def __call__(self, p: UsbProgress) -> None:
        from ..status import human_bytes

        if self.tty:
            width = 30
            filled = int(width * p.fraction)
            sizes = (f"  {human_bytes(p.done_bytes)} of {human_bytes(p.total_bytes)}"
                     if p.total_bytes else "")
            line = (f"\r{self.label} {p.phase}: [{'#' * filled}{'.' * (width - filled)}]"
                    f" {p.fraction:4.0%}{sizes}  {p.done}/{p.total}")
            print(line, end="", file=self.stream, flush=True)  # type: ignore[call-overload]
            self._drawn = True
        elif (p.phase, p.done) != self._last and p.total:
            self._last = (p.phase, p.done)
            print(f"{self.label} {p.phase}: {p.done}/{p.total}, {p.done_bytes} of"
                  f" {p.total_bytes} bytes", file=self.stream,  # type: ignore[call-overload]
                  flush=True)

    def end(self) -> None:
        if self._drawn:
            print(file=self.stream)  # type: ignore[call-overload]
            self._drawn = False
