"""The safety points, each on screen before anything is recorded."""

from __future__ import annotations

from . import load_kv
from .widgets import SessionScreen

load_kv("safety")


class SafetyScreen(SessionScreen):
    pass
