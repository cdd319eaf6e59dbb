"""The kiosk's one slow hash, for short secrets a person types: receipt codes, staff PINs.

``"scrypt$15$8$1$<salt b64>$<hash b64>"``: scrypt from ``cryptography`` with n=2^15,
r=8, p=1 (32 MiB, well under a second on a kiosk), a random 16-byte salt, 32 bytes out.
Checking accepts only these parameters: a stored string (in a config file, in the
store) must not be able to ask for a huge scrypt (the kiosk freezes) or a weak one.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from typing import Final

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

LOG2_N: Final = 15
R: Final = 8
P: Final = 1
SALT_BYTES: Final = 16
HASH_BYTES: Final = 32
SCHEME: Final = "scrypt"


def _derive(text: str, salt: bytes) -> bytes:
    kdf = Scrypt(salt=salt, length=HASH_BYTES, n=2**LOG2_N, r=R, p=P)
    return kdf.derive(text.encode("ascii"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def slow_hash(text: str, *, salt: bytes | None = None) -> str:
    """The stored form of ``text`` (ASCII, already checked and normalised by the caller)."""
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    if len(salt) != SALT_BYTES:
        raise ValueError(f"the salt is {SALT_BYTES} bytes")
    return "$".join([SCHEME, str(LOG2_N), str(R), str(P), _b64(salt),
                     _b64(_derive(text, salt))])


def parse(stored: object) -> tuple[bytes, bytes] | None:
    """(salt, hash) of a well-formed stored string with these parameters, else None."""
    try:
        scheme, log2_n, r, p, salt_b64, digest_b64 = stored.split("$")  # type: ignore[union-attr]
        if (scheme, log2_n, r, p) != (SCHEME, str(LOG2_N), str(R), str(P)):
            return None
        salt = base64.b64decode(salt_b64, validate=True)
        digest = base64.b64decode(digest_b64, validate=True)
    except (ValueError, AttributeError, TypeError, binascii.Error):
        return None
    if len(salt) != SALT_BYTES or len(digest) != HASH_BYTES:
        return None
    return salt, digest


def matches(text: str, stored: object) -> bool:
    """Whether ``text`` is what ``stored`` was made from (constant-time compare)."""
    parsed = parse(stored)
    if parsed is None:
        return False
    salt, expected = parsed
    return hmac.compare_digest(_derive(text, salt), expected)
