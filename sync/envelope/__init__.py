"""Sealed envelopes: the age v1 file format, implemented on ``cryptography``.

Files written here open with any age tool, and files from any age tool open
here: X25519 recipients, the post-quantum hybrid (``mlkem``), passphrases
(``scrypt``, and protected identity files in ``passphrase``), binary or
ASCII-armored (readers detect armor by themselves).
"""

from __future__ import annotations

from .armor import armor_bytes, dearmor_bytes
from .errors import (
    ArmorError,
    EnvelopeError,
    HeaderError,
    HmacError,
    KeyFormatError,
    NoIdentityMatchError,
    PayloadError,
    TruncatedError,
    WrongPassphrase,
)
from .keys import (
    format_identity_file,
    parse_identity,
    parse_identity_file,
    parse_recipient,
    parse_recipients_file,
)
from .passphrase import (
    open_with_passphrase,
    read_protected_identity_file,
    seal_with_passphrase,
    write_protected_identity_file,
)
from .reader import DecryptResult, SealedReader, decrypt_stream, open_bytes, open_sealed
from .scrypt import ScryptIdentity, ScryptRecipient
from .stanza import Identity, Recipient, Stanza
from .stream import CHUNK_SIZE
from .writer import EnvelopeWriter, SealedFile, encrypt_stream, seal_bytes
from .x25519 import X25519Identity, X25519Recipient


def generate_identity() -> X25519Identity:
    """A new X25519 identity (``AGE-SECRET-KEY-1...``)."""
    return X25519Identity.generate()


__all__ = [
    "CHUNK_SIZE",
    "ArmorError",
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
    "ScryptIdentity",
    "ScryptRecipient",
    "SealedFile",
    "SealedReader",
    "Stanza",
    "TruncatedError",
    "WrongPassphrase",
    "X25519Identity",
    "X25519Recipient",
    "armor_bytes",
    "dearmor_bytes",
    "decrypt_stream",
    "encrypt_stream",
    "format_identity_file",
    "generate_identity",
    "open_bytes",
    "open_sealed",
    "open_with_passphrase",
    "parse_identity",
    "parse_identity_file",
    "parse_recipient",
    "parse_recipients_file",
    "read_protected_identity_file",
    "seal_bytes",
    "seal_with_passphrase",
    "write_protected_identity_file",
]
