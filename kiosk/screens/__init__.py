"""One module and one ``.kv`` file per screen; ``common.kv`` holds what they share.

Import this package only once the app's translator exists (``kiosk.i18n.kivy_translator``):
the kv rules bind to ``tr``.
"""

from pathlib import Path

from kivy.lang import Builder

HERE = Path(__file__).parent


def load_kv(name: str) -> None:
    """Load ``<name>.kv`` beside this file once."""
    path = str(HERE / f"{name}.kv")
    if path not in Builder.files:
        Builder.load_file(path)


# The shared widget classes register themselves with Kivy's Factory on import, and the
# shared rules load before any screen's own.
from . import widgets  # noqa: E402, F401

load_kv("common")
