"""Receipt codes: four words a defender can copy down, and their salted scrypt hash.

The code is shown once, on the receipt screen; it lets its holder withdraw the
submission later. The kiosk never stores it: the screens' controller stores only
``hash_code(code)`` (salted, for a check on this kiosk with ``verify_code``) and
``sync.withdrawal.withdrawal_key(code)`` (deterministic, sent in the submission index so
that the service finds the submission when the code is presented to ``POST /withdraw``).

What counts as the same code is decided once, by ``sync.withdrawal.normalise_code``,
for both ends: :func:`normalise` only writes its words with dashes (the form
``hash_code`` has always hashed), so a code the service would match is a code this
kiosk would match, and the reverse.
"""

from __future__ import annotations

import os
import random
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from sync.withdrawal import normalise_code

from ..slowhash import matches, slow_hash

WORDS_PER_CODE: Final = 4
MIN_WORDS: Final = 1024
_WORD = re.compile(r"[a-z]{3,8}")

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
    # sync.withdrawal decides which texts are the same code (ValueError otherwise).
    return normalise_code(code).replace(" ", "-")


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
