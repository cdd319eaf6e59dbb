"""Sealed envelopes: the age v1 file format, implemented on ``cryptography``.

Files written here open with any age tool, and files from any age tool open
here (X25519 recipients; the post-quantum hybrid lives in ``mlkem``).
Passphrase (scrypt) files and ASCII armor are rejected with a clear message.
"""

from __future__ import annotations

from .errors import (
    EnvelopeError,
    HeaderError,
    HmacError,
    KeyFormatError,
    NoIdentityMatchError,
    PayloadError,
    TruncatedError,
)
from .keys import (
    format_identity_file,
    parse_identity,
    parse_identity_file,
    parse_recipient,
    parse_recipients_file,
)
from .reader import DecryptResult, SealedReader, decrypt_stream, open_bytes, open_sealed
from .stanza import Identity, Recipient, Stanza
from .stream import CHUNK_SIZE
from .writer import EnvelopeWriter, SealedFile, encrypt_stream, seal_bytes
from .x25519 import X25519Identity, X25519Recipient


def generate_identity() -> X25519Identity:
    """A new X25519 identity (``AGE-SECRET-KEY-1...``)."""
    return X25519Identity.generate()


__all__ = [
    "CHUNK_SIZE",
    "DecryptResult",
    "EnvelopeError",
    "EnvelopeWriter",
    "HeaderError",
    "HmacError",
    "Identity",
    "KeyFormatError",
    "NoIdentityMatchError",
    "PayloadError",
    "Recipient",
    "SealedFile",
    "SealedReader",
    "Stanza",
    "TruncatedError",
    "X25519Identity",
    "X25519Recipient",
    "decrypt_stream",
    "encrypt_stream",
    "format_identity_file",
    "generate_identity",
    "open_bytes",
    "open_sealed",
    "parse_identity",
    "parse_identity_file",
    "parse_recipient",
    "parse_recipients_file",
    "seal_bytes",
]
