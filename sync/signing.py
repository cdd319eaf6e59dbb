"""Ed25519 signing keys and detached signatures, with one stable text encoding.

Used for the device-signed submission index, the service's receipts and the
signed catalog. The encodings are Bech32, like age's keys, so that a key
typed in or cut short at enrolment fails its checksum instead of pinning the
wrong key:

====================  =======================  ==========================
what                  form                     content
====================  =======================  ==========================
signing key (secret)  ``IDR-SIGNING-KEY-1...``  32-byte Ed25519 seed
verify key (public)   ``idrverify1...``         32-byte Ed25519 public key
signature             ``idrsig1...``            64-byte Ed25519 signature
====================  =======================  ==========================

A verify key must be the canonical encoding of an Ed25519 point of large
order. The all-zero key, the identity and the other small-order points (and
the non-canonical spellings of any point) are refused when the key is made or
parsed: with such a key a signature can be forged that "verifies" for many
messages, so a kiosk must never pin one.

Every signature is bound to a *context* (``"catalog"``, ``"submission-index"``,
``"receipt"``...): the Ed25519 message is ``b"idr-signature-v1\\0" + context +
b"\\0" + message``, so a signature made for one purpose never verifies for
another, even if a key were ever used for two. Nothing else is added: the
signed message is the caller's exact bytes (``catalog.json`` as served).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.envelope import bech32
from sync.envelope.errors import KeyFormatError

__all__ = [
    "BadSignatureError",
    "Signature",
    "SigningKey",
    "VerifyKey",
    "format_signing_key_file",
    "parse_signing_key_file",
]

SIGNING_KEY_HRP = "idr-signing-key-"
VERIFY_KEY_HRP = "idrverify"
SIGNATURE_HRP = "idrsig"
_DOMAIN = b"idr-signature-v1\x00"


class BadSignatureError(Exception):
    """The signature does not verify for this key, context and message."""


# Edwards25519 (RFC 8032, section 5.1): -x^2 + y^2 = 1 + d*x^2*y^2 over GF(p).
# cryptography (OpenSSL) accepts any 32 bytes as a public key, so the point is
# checked here, in plain Python: speed does not matter for a key parsed once.
_P = 2**255 - 19
_D = -121665 * pow(121666, -1, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _decode_point(raw: bytes) -> tuple[int, int]:
    """The affine point ``raw`` encodes (RFC 8032, 5.1.3), refusing non-canonical forms."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    sign = raw[31] >> 7
    if y >= _P:
        raise KeyFormatError("verify key is not canonically encoded (y is not below p)")
    y2 = y * y % _P
    u = (y2 - 1) % _P
    v = (_D * y2 + 1) % _P
    # x = sqrt(u / v), computed as u * v^3 * (u * v^7)^((p - 5) / 8).
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    vx2 = v * x * x % _P
    if vx2 == (-u) % _P:
        x = x * _SQRT_M1 % _P
    elif vx2 != u:
        raise KeyFormatError("verify key is not a valid Ed25519 point")
    if x == 0 and sign:
        # x = -x = 0: the sign bit must be 0, or two strings name one point.
        raise KeyFormatError("verify key is not canonically encoded (x is 0, sign bit set)")
    if x & 1 != sign:
        x = _P - x
    return x, y


def _double(x: int, y: int) -> tuple[int, int]:
    # The complete twisted Edwards addition law (a = -1) with both points equal.
    xy = x * y % _P
    dxxyy = _D * xy * xy % _P
    x3 = 2 * xy * pow(1 + dxxyy, -1, _P) % _P
    y3 = (y * y + x * x) * pow(1 - dxxyy, -1, _P) % _P
    return x3, y3


def _check_verify_key(raw: bytes) -> None:
    """Raise KeyFormatError unless ``raw`` encodes, canonically, a point of large order."""
    x, y = _decode_point(raw)
    # Every point's order divides 8 * l (l a large prime), so [8]P is the
    # identity (0, 1) exactly when P is one of the 8 small-order points.
    for _ in range(3):
        x, y = _double(x, y)
    if (x, y) == (0, 1):
        raise KeyFormatError("verify key is a small-order Ed25519 point (a weak key): refused")


def _signed_message(message: bytes, context: str) -> bytes:
    encoded = context.encode("ascii") if context.isascii() else b""
    if not encoded or b"\x00" in encoded:
        raise ValueError("context must be a non-empty ASCII string without NUL")
    return _DOMAIN + encoded + b"\x00" + bytes(message)


class Signature:
    """A detached Ed25519 signature (64 bytes)."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 64:
            raise KeyFormatError("signature must be 64 bytes")
        self.raw = bytes(raw)

    @classmethod
    def parse(cls, text: str) -> Signature:
        return cls(bech32.decode_key(text, SIGNATURE_HRP, upper=False, what="signature", size=64))

    def __str__(self) -> str:
        return bech32.encode(SIGNATURE_HRP, self.raw)

    def __repr__(self) -> str:
        return f"Signature({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signature) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)


class VerifyKey:
    """An Ed25519 public key: what a kiosk pins, what a signature is checked with."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise KeyFormatError("verify key must be 32 bytes")
        self.raw = bytes(raw)
        _check_verify_key(self.raw)
        try:
            self._key = Ed25519PublicKey.from_public_bytes(self.raw)
        except ValueError:  # not expected after the check above; keep the error type
            raise KeyFormatError("verify key refused by the Ed25519 library") from None

    @classmethod
    def parse(cls, text: str) -> VerifyKey:
        return cls(bech32.decode_key(text, VERIFY_KEY_HRP, upper=False, what="verify key", size=32))

    @property
    def key_id(self) -> str:
        """A short, stable name for logs and screens (16 hex digits of SHA-256)."""
        return hashlib.sha256(self.raw).hexdigest()[:16]

    def verify(self, message: bytes, signature: Signature | str, *, context: str) -> None:
        """Return if ``signature`` is this key's over ``message`` in ``context``; else raise."""
        if isinstance(signature, str):
            try:
                signature = Signature.parse(signature)
            except KeyFormatError as exc:
                raise BadSignatureError(f"malformed signature: {exc}") from None
        try:
            self._key.verify(signature.raw, _signed_message(message, context))
        except InvalidSignature:
            raise BadSignatureError(
                f"signature does not verify for key {self.key_id} in context {context!r}"
            ) from None

    def __str__(self) -> str:
        return bech32.encode(VERIFY_KEY_HRP, self.raw)

    def __repr__(self) -> str:
        return f"VerifyKey({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)


class SigningKey:
    """An Ed25519 private key. ``str()`` is the secret encoding; ``repr()`` never is."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise KeyFormatError("signing key must be 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(bytes(seed))
        self.verify_key = VerifyKey(self._key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def parse(cls, text: str) -> SigningKey:
        # Messages never quote the text: it is a secret.
        return cls(bech32.decode_key(text, SIGNING_KEY_HRP, upper=True, what="signing key",
                                     size=32))

    def sign(self, message: bytes, *, context: str) -> Signature:
        return Signature(self._key.sign(_signed_message(message, context)))

    def __str__(self) -> str:
        return bech32.encode(SIGNING_KEY_HRP, self._key.private_bytes_raw(), upper=True)

    def __repr__(self) -> str:
        return f"SigningKey(verify_key={str(self.verify_key)!r})"


def format_signing_key_file(key: SigningKey, *, created: datetime | None = None) -> str:
    """A key file in the style of ``age-keygen``: two comment lines, then the key."""
    when = (created or datetime.now(UTC)).replace(microsecond=0)
    stamp = when.isoformat().replace("+00:00", "Z")
    return f"# created: {stamp}\n# verify key: {key.verify_key}\n{key}\n"


def parse_signing_key_file(text: str) -> SigningKey:
    """The one signing key in a key file (``#`` comments and blank lines ignored)."""
    keys = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(SigningKey.parse(line))
        except KeyFormatError as exc:
            raise KeyFormatError(f"signing key file line {number}: {exc}") from None
    if len(keys) != 1:
        raise KeyFormatError(f"a signing key file holds exactly one key, found {len(keys)}")
    return keys[0]
