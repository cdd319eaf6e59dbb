"""Receipt codes: four words a defender can copy down, and their salted scrypt hash.

The code is shown once, on the receipt screen; it lets its holder withdraw the
submission later. The kiosk never stores it: the screens' controller stores only
``hash_code(code)`` with the submission, and the service checks a code that someone
presents with ``verify_code``.
"""

from __future__ import annotations

import os
import random
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ..slowhash import matches, slow_hash

WORDS_PER_CODE: Final = 4
MIN_WORDS: Final = 1024
_WORD = re.compile(r"[a-z]{3,8}")
_SEPARATORS = re.compile(r"[\s\-.,]+")

_SYSTEM_RANDOM: Final = secrets.SystemRandom()


def load_words(path: str | os.PathLike[str]) -> list[str]:
    """The word list: one lower-case a-z word of 3 to 8 letters a line, unique.

    Blank lines and lines starting with '#' are ignored; a bad line raises ValueError
    naming its line number.
    """
    words: list[str] = []
    seen: dict[str, int] = {}
    text = Path(path).read_text(encoding="utf-8")
    for number, raw in enumerate(text.splitlines(), start=1):
        word = raw.strip()
        if not word or word.startswith("#"):
            continue
        if not _WORD.fullmatch(word):
            raise ValueError(f"{path}:{number}: {word!r} is not 3 to 8 letters a-z")
        if word in seen:
            raise ValueError(f"{path}:{number}: {word!r} repeats line {seen[word]}")
        seen[word] = number
        words.append(word)
    if len(words) < MIN_WORDS:
        raise ValueError(f"{path}: {len(words)} words, at least {MIN_WORDS} are needed")
    return words


def new_code(words: Sequence[str], *, rng: random.Random = _SYSTEM_RANDOM) -> str:
    """Four different words from ``words`` joined by '-', e.g. "meadow-teapot-otter-violin"."""
    # Different words: a repeated word reads like a mistake (and costs < 0.01 bit).
    return "-".join(rng.sample(list(words), WORDS_PER_CODE))


def normalise(code: str) -> str:
    """The canonical form of a code as a person may type it: "River Lamp  sugar-north"."""
    if not isinstance(code, str):
        raise ValueError("a receipt code is text")
    words = [w for w in _SEPARATORS.split(code.strip().lower()) if w]
    if len(words) != WORDS_PER_CODE or not all(w.isascii() and w.isalpha() for w in words):
        raise ValueError(f"a receipt code is {WORDS_PER_CODE} words")
    return "-".join(words)


def hash_code(code: str, *, salt: bytes | None = None) -> str:
    """"scrypt$15$8$1$<salt b64>$<hash b64>" over the normalised code (kiosk.slowhash)."""
    return slow_hash(normalise(code), salt=salt)


def verify_code(code: str, stored: str) -> bool:
    """Whether ``code`` is the one ``stored`` was made from; False on any malformed input."""
    try:
        canonical = normalise(code)
    except ValueError:
        return False
    return matches(canonical, stored)
