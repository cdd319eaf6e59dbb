"""One module and one ``.kv`` file per screen."""

from pathlib import Path

from kivy.lang import Builder

HERE = Path(__file__).parent


def load_kv(name: str) -> None:
    """Load ``<name>.kv`` beside this file once."""
    path = str(HERE / f"{name}.kv")
    if path not in Builder.files:
        Builder.load_file(path)
