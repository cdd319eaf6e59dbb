"""The attract screen: what the archive is, and the two choices."""

from kivy.uix.screenmanager import Screen

from . import load_kv

load_kv("attract")


class AttractScreen(Screen):
    pass
