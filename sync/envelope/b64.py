"""Base64 exactly as age writes it: standard alphabet, no padding, canonical.

age forbids every malleable spelling of the same bytes (padding, non-zero
trailing bits, CR/LF or other characters), so a decoder that accepts any of
them would let an attacker change a header without changing its meaning, and
our reader would disagree with other implementations about the header MAC.
"""

from __future__ import annotations

import base64
import binascii
import re

from .errors import HeaderError

_ALPHABET = re.compile(rb"[A-Za-z0-9+/]*")


class Base64Error(ValueError):
    """The text is not canonical unpadded standard base64."""


def encode(data: bytes) -> str:
    """Unpadded standard base64."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def decode(text: str | bytes) -> bytes:
    """Decode canonical unpadded standard base64, rejecting anything else."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    if _ALPHABET.fullmatch(raw) is None:
        raise Base64Error("invalid base64 character")
    if len(raw) % 4 == 1:
        raise Base64Error("invalid base64 length")
    try:
        data = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except binascii.Error:
        raise Base64Error("invalid base64") from None
    # Non-zero unused bits in the last character decode fine but are not
    # canonical; re-encoding is the simplest exact test.
    if base64.b64encode(data).rstrip(b"=") != raw:
        raise Base64Error("non-canonical base64")
    return data


def decode_stanza_arg(args: tuple[str, ...], size: int, what: str) -> bytes:
    """The one argument of a recipient stanza, decoded and exactly ``size`` bytes.

    X25519 and mlkem768x25519 stanzas share this rule; a breach is a HeaderError
    (the age spec makes a malformed stanza of a known type fatal, not "no match").
    """
    if len(args) != 1:
        raise HeaderError(f"{what} stanza must have exactly one argument")
    try:
        raw = decode(args[0])
    except Base64Error as exc:
        raise HeaderError(f"{what} stanza argument: {exc}") from None
    if len(raw) != size:
        raise HeaderError(f"{what} stanza argument must be {size} bytes, got {len(raw)}")
    return raw
