"""The receipt: the four-word code, shown large, with what it is for."""

from __future__ import annotations

from . import load_kv
from .widgets import SessionScreen

load_kv("receipt")


class ReceiptScreen(SessionScreen):
    def refresh(self) -> None:
        # The code is in Latin letters in every language (it is typed back later as is).
        self.ids.code.text = (self.machine.receipt_code or "").replace("-", "  ")
