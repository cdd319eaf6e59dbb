"""Bech32 (BIP 173) as age uses it: no length limit, one case per string.

age encodes X25519 recipients as ``age1...`` and identities as
``AGE-SECRET-KEY-1...``; the hybrid post-quantum keys (``age1pq1...``) are
over a thousand characters long, so the 90-character limit of BIP 173 is
deliberately not enforced here.
"""

from __future__ import annotations

from .errors import KeyFormatError

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


class Bech32Error(ValueError):
    """A string is not valid Bech32 (bad character, mixed case, checksum)."""


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _GEN[i]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], frm: int, to: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << to) - 1
    for value in data:
        if value < 0 or value >> frm:
            raise Bech32Error("invalid data value")
        acc = (acc << frm) | value
        bits += frm
        while bits >= to:
            bits -= to
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to - bits)) & maxv)
    elif bits >= frm or ((acc << (to - bits)) & maxv):
        raise Bech32Error("invalid padding")
    return out


def encode(hrp: str, data: bytes, *, upper: bool = False) -> str:
    """Encode ``data`` under human-readable part ``hrp`` (given in lower case)."""
    hrp = hrp.lower()
    values = _convert_bits(data, 8, 5, True)
    polymod = _polymod(_hrp_expand(hrp) + values + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    text = hrp + "1" + "".join(_CHARSET[v] for v in values + checksum)
    return text.upper() if upper else text


def decode(text: str) -> tuple[str, bytes]:
    """Return ``(hrp, data)``; the hrp is returned in lower case.

    Raises :class:`Bech32Error` for mixed case, characters outside the
    charset, a missing separator or a bad checksum.
    """
    if text.lower() != text and text.upper() != text:
        raise Bech32Error("mixed case")
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise Bech32Error("invalid character")
    lowered = text.lower()
    pos = lowered.rfind("1")
    if pos < 1 or pos + 7 > len(lowered):
        raise Bech32Error("missing separator or checksum")
    hrp = lowered[:pos]
    try:
        values = [_CHARSET.index(c) for c in lowered[pos + 1 :]]
    except ValueError:
        raise Bech32Error("invalid character") from None
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise Bech32Error("bad checksum")
    return hrp, bytes(_convert_bits(values[:-6], 5, 8, False))


def decode_key(text: str, hrp: str, *, upper: bool, what: str, size: int | None = None) -> bytes:
    """Decode a key or signature string of one exact kind, as age spells them.

    Only the canonical case is accepted (age and typage require it, and accepting
    more would let two strings name one key); the human-readable part must be ``hrp``
    and, when ``size`` is given, the payload that many bytes. Errors never quote the
    text: it may be a secret key.
    """
    if not isinstance(text, str):
        raise KeyFormatError(f"{what} must be a string")
    if text != (text.upper() if upper else text.lower()):
        raise KeyFormatError(f"{what} must be {'upper' if upper else 'lower'} case")
    try:
        found, data = decode(text)
    except Bech32Error as exc:
        raise KeyFormatError(f"malformed {what}: {exc}") from None
    if found != hrp:
        raise KeyFormatError(f"not a {what}")
    if size is not None and len(data) != size:
        raise KeyFormatError(f"{what} has the wrong length")
    return data
