"""Withdrawal by receipt code: the code's normal form and the key the service looks up.

A defender who wants a submission withdrawn presents the four-word receipt code the
kiosk showed (``POST /api/v1/withdraw``). The kiosk never stores the code; at submit it
computes :func:`withdrawal_key` and sends it in the submission index, so the service
finds the submission with one indexed lookup of the same function of the presented
code.

The key is deterministic (a fixed salt), which an indexed lookup needs. What protects a
leaked key table is the code's entropy and scrypt's cost: four words of a 2048-word
list are 2^44 codes, each guess costs one scrypt with n=2^15, r=8 (32 MiB), and
``POST /withdraw`` is rate-limited per client address. The key names no person.

Both ends normalise the same way (kiosk/session/receipt.py calls :func:`normalise_code`),
so a code typed as "Meadow teapot, OTTER-violin" is the code shown as
"meadow-teapot-otter-violin".
"""

from __future__ import annotations

import re
from typing import Final

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

WORDS_PER_CODE: Final = 4
SALT: Final = b"idr-withdrawal-v1"
LOG2_N: Final = 15
R: Final = 8
P: Final = 1
KEY_BYTES: Final = 32
#: Longer input is refused before any work (a code is at most 4 x 8 letters).
MAX_CODE_CHARS: Final = 200
#: What people put between the words: spaces, dashes, dots, commas, underscores.
_SEPARATORS = re.compile(r"[\s\-.,_]+")
_WORD = re.compile(r"[a-z]{1,32}")
_KEY = re.compile(r"[0-9a-f]{64}")


def normalise_code(text: str) -> str:
    """The code's normal form: lower case, the four words joined by one space.

    ValueError if ``text`` is not four words of the letters a-z.
    """
    if not isinstance(text, str) or len(text) > MAX_CODE_CHARS:
        raise ValueError("a receipt code is text of four words")
    words = [w for w in _SEPARATORS.split(text.strip().lower()) if w]
    if len(words) != WORDS_PER_CODE or not all(_WORD.fullmatch(w) for w in words):
        raise ValueError(f"a receipt code is {WORDS_PER_CODE} words of the letters a-z")
    return " ".join(words)


def withdrawal_key(code: str) -> str:
    """64 hex: scrypt(normalised code, salt=b"idr-withdrawal-v1", n=2^15, r=8, p=1)."""
    kdf = Scrypt(salt=SALT, length=KEY_BYTES, n=2**LOG2_N, r=R, p=P)
    return kdf.derive(normalise_code(code).encode("ascii")).hex()


def is_withdrawal_key(text: object) -> bool:
    return isinstance(text, str) and _KEY.fullmatch(text) is not None


__all__ = ["SALT", "WORDS_PER_CODE", "is_withdrawal_key", "normalise_code", "withdrawal_key"]
