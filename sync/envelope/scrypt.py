"""The passphrase recipient type: scrypt (age spec, "The scrypt recipient type").

::

    -> scrypt <base64 16-byte salt> <log2 N, decimal, no leading zero>
    <base64 of the file key sealed with ChaCha20-Poly1305, 32 bytes>

    wrap key = scrypt(N = 2**log2N, r = 8, p = 1, dkLen = 32,
                      S = "age-encryption.org/v1/scrypt" || salt, P = passphrase)

An scrypt stanza must be the only stanza of its header (the reader checks
that for every header, whatever identities it was given), and the reader
caps the work factor: a hostile file must not make it spend minutes and
gigabytes before it can say "wrong passphrase".
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from . import b64
from .errors import HeaderError
from .stanza import Stanza

__all__ = [
    "DEFAULT_LOG2_N",
    "DEFAULT_MAX_LOG2_N",
    "STANZA_TYPE",
    "ScryptIdentity",
    "ScryptRecipient",
]

STANZA_TYPE = "scrypt"
_LABEL = b"age-encryption.org/v1/scrypt"
_SALT_SIZE = 16
_FILE_KEY_SIZE = 16
_BODY_SIZE = _FILE_KEY_SIZE + 16
_ZERO_NONCE = bytes(12)
#: What ``age -p`` writes: 2**18 costs 256 MiB and about half a second.
DEFAULT_LOG2_N = 18
#: The highest work factor a reader accepts unless told otherwise (age's default).
DEFAULT_MAX_LOG2_N = 22
#: The range a writer may choose from (age: 1..30; 2**30 would need 128 GiB).
_MIN_LOG2_N = 1
_MAX_WRITE_LOG2_N = 30
_WORK_FACTOR = re.compile(r"[1-9][0-9]*")

Passphrase = str | Callable[[], str]


def _encode_passphrase(passphrase: str) -> bytes:
    if not isinstance(passphrase, str):
        raise TypeError("the passphrase must be a str")
    if not passphrase:
        raise ValueError("an empty passphrase protects nothing")
    return passphrase.encode("utf-8")


def _wrap_key(passphrase: bytes, salt: bytes, log2_n: int) -> bytes:
    return Scrypt(salt=_LABEL + salt, length=32, n=1 << log2_n, r=8, p=1).derive(passphrase)


def parse_work_factor(text: str, max_log2_n: int) -> int:
    """The stanza's work factor, strictly decimal, within the reader's limit."""
    if _WORK_FACTOR.fullmatch(text) is None:
        raise HeaderError("invalid scrypt stanza: the work factor is not a plain decimal number")
    # Compare the length first: int() of a huge digit string is itself costly.
    if len(text) > 2 or int(text) > max_log2_n:
        raise HeaderError(
            f"scrypt work factor is too high (2^{text[:6]}; this reader's limit is"
            f" 2^{max_log2_n})"
        )
    return int(text)


class ScryptRecipient:
    """Seal the file key to a passphrase. It must be a file's only recipient."""

    #: scrypt and ChaCha20-Poly1305 are symmetric: a quantum computer gains
    #: only Grover's square root. (It is never mixed with others anyway.)
    post_quantum = True

    def __init__(self, passphrase: str, *, log2_n: int = DEFAULT_LOG2_N) -> None:
        if not isinstance(log2_n, int) or not _MIN_LOG2_N <= log2_n <= _MAX_WRITE_LOG2_N:
            raise ValueError(f"log2_n must be an integer from {_MIN_LOG2_N} to {_MAX_WRITE_LOG2_N}")
        self._passphrase = _encode_passphrase(passphrase)
        self.log2_n = log2_n

    def wrap(self, file_key: bytes) -> list[Stanza]:
        salt = os.urandom(_SALT_SIZE)  # a new salt for every stanza and every file
        key = _wrap_key(self._passphrase, salt, self.log2_n)
        body = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, bytes(file_key), None)
        return [Stanza(STANZA_TYPE, (b64.encode(salt), str(self.log2_n)), body)]

    def __str__(self) -> str:  # there is no public string for a passphrase
        return "scrypt (passphrase)"

    def __repr__(self) -> str:  # never the passphrase
        return f"ScryptRecipient(log2_n={self.log2_n})"


class ScryptIdentity:
    """Open a file sealed to a passphrase.

    ``passphrase`` may be a callable, asked only when a file turns out to be
    passphrase-encrypted (and at most once), like age's lazy scrypt identity.
    """

    def __init__(
        self, passphrase: Passphrase, *, max_log2_n: int = DEFAULT_MAX_LOG2_N
    ) -> None:
        if not isinstance(max_log2_n, int) or not _MIN_LOG2_N <= max_log2_n <= _MAX_WRITE_LOG2_N:
            raise ValueError(
                f"max_log2_n must be an integer from {_MIN_LOG2_N} to {_MAX_WRITE_LOG2_N}"
            )
        self._source = passphrase
        self._passphrase: bytes | None = None
        if isinstance(passphrase, str):
            self._passphrase = _encode_passphrase(passphrase)
        elif not callable(passphrase):
            raise TypeError("the passphrase must be a str or a callable returning one")
        self.max_log2_n = max_log2_n

    def _secret(self) -> bytes:
        if self._passphrase is None:
            assert callable(self._source)
            self._passphrase = _encode_passphrase(self._source())
        return self._passphrase

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        for stanza in stanzas:
            if stanza.type != STANZA_TYPE:
                continue
            if len(stanzas) != 1:
                raise HeaderError("an scrypt stanza must be the only one in the header")
            if len(stanza.args) != 2:
                raise HeaderError("invalid scrypt stanza: it must have a salt and a work factor")
            salt = b64.decode_stanza_arg(stanza.args[:1], _SALT_SIZE, "scrypt salt")
            log2_n = parse_work_factor(stanza.args[1], self.max_log2_n)
            # Before any work: a longer body must not pass as a longer file key.
            if len(stanza.body) != _BODY_SIZE:
                raise HeaderError("invalid scrypt stanza: body is not 32 bytes")
            key = _wrap_key(self._secret(), salt, log2_n)
            try:
                return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, stanza.body, None)
            except InvalidTag:
                return None  # another passphrase
        return None

    def recipient(self) -> ScryptRecipient:
        return ScryptRecipient(self._secret().decode("utf-8"))

    def __repr__(self) -> str:  # never the passphrase
        return f"ScryptIdentity(max_log2_n={self.max_log2_n})"
