"""Who may take part: people who peacefully defend rights, accepting their universality."""

from __future__ import annotations

from . import load_kv
from .widgets import SessionScreen

load_kv("who")


class WhoScreen(SessionScreen):
    pass
