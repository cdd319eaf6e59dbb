"""The native age recipient type: X25519 (``age1...`` / ``AGE-SECRET-KEY-1...``).

Stanza: ``-> X25519 <base64 ephemeral share>`` with a 32-byte body, the file
key sealed with ChaCha20-Poly1305 under a key derived by HKDF-SHA256 from the
shared secret, salted with the share and the recipient's public key.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import b64, bech32
from .errors import HeaderError, KeyFormatError
from .stanza import Stanza

STANZA_TYPE = "X25519"
RECIPIENT_HRP = "age"
IDENTITY_HRP = "age-secret-key-"
_LABEL = b"age-encryption.org/v1/X25519"
_KEY_SIZE = 32
_FILE_KEY_SIZE = 16
_ZERO_NONCE = bytes(12)


def _wrap_key(shared: bytes, share: bytes, recipient: bytes) -> bytes:
    if shared == bytes(32):  # cryptography already refuses this; never rely on one check
        raise ValueError("all-zero X25519 shared secret")
    return HKDF(SHA256(), 32, share + recipient, _LABEL).derive(shared)


class X25519Recipient:
    """An ``age1...`` public key."""

    post_quantum = False

    def __init__(self, public_key: bytes) -> None:
        if len(public_key) != _KEY_SIZE:
            raise KeyFormatError("X25519 recipient must be 32 bytes")
        self._raw = bytes(public_key)
        self._key = X25519PublicKey.from_public_bytes(self._raw)
        # A low-order point would give every sender the all-zero shared
        # secret: anyone could open what is sealed to it. Reject it up front.
        try:
            X25519PrivateKey.generate().exchange(self._key)
        except ValueError:
            raise KeyFormatError("X25519 recipient is a low-order point") from None

    @classmethod
    def parse(cls, text: str) -> X25519Recipient:
        return cls(bech32.decode_key(text, RECIPIENT_HRP, upper=False, size=_KEY_SIZE,
                                     what="X25519 age recipient (age1...)"))

    @property
    def public_bytes(self) -> bytes:
        return self._raw

    def wrap(self, file_key: bytes) -> list[Stanza]:
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        key = _wrap_key(ephemeral.exchange(self._key), share, self._raw)
        body = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, file_key, None)
        return [Stanza(STANZA_TYPE, (b64.encode(share),), body)]

    def __str__(self) -> str:
        return bech32.encode(RECIPIENT_HRP, self._raw)

    def __repr__(self) -> str:
        return f"X25519Recipient({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, X25519Recipient) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)


class X25519Identity:
    """An ``AGE-SECRET-KEY-1...`` private key."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != _KEY_SIZE:
            raise KeyFormatError("X25519 identity must be 32 bytes")
        self._key = X25519PrivateKey.from_private_bytes(bytes(secret))
        self._public = self._key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> X25519Identity:
        return cls(X25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def parse(cls, text: str) -> X25519Identity:
        # Messages never quote the text: it is a secret key.
        return cls(bech32.decode_key(text, IDENTITY_HRP, upper=True, size=_KEY_SIZE,
                                     what="X25519 age secret key (AGE-SECRET-KEY-1...)"))

    def recipient(self) -> X25519Recipient:
        return X25519Recipient(self._public)

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        for stanza in stanzas:
            if stanza.type != STANZA_TYPE:
                continue
            # A malformed stanza of our own type is a hard error, as in the
            # age spec: skipping it could hide an attack on other readers.
            share = b64.decode_stanza_arg(stanza.args, _KEY_SIZE, STANZA_TYPE)
            # Check the length before decrypting: a longer body must not be
            # accepted as a longer file key.
            if len(stanza.body) != _FILE_KEY_SIZE + 16:
                raise HeaderError("invalid X25519 stanza: body is not 32 bytes")
            try:
                shared = self._key.exchange(X25519PublicKey.from_public_bytes(share))
                key = _wrap_key(shared, share, self._public)
            except ValueError:
                raise HeaderError("invalid X25519 stanza: low-order share") from None
            try:
                return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, stanza.body, None)
            except InvalidTag:
                continue  # sealed to someone else
        return None

    def __str__(self) -> str:
        return bech32.encode(IDENTITY_HRP, self._key.private_bytes_raw(), upper=True)

    def __repr__(self) -> str:  # never the secret
        return f"X25519Identity(recipient={str(self.recipient())!r})"
