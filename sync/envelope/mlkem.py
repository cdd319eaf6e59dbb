"""age's post-quantum hybrid recipient type ``mlkem768x25519``.

Keys are ``age1pq1...`` recipients and ``AGE-SECRET-KEY-PQ-1...`` identities.
The file key is sealed with HPKE (RFC 9180, base mode) using the X-Wing KEM
(ML-KEM-768 combined with X25519), HKDF-SHA256 and ChaCha20-Poly1305, with the
info string ``age-encryption.org/mlkem768x25519``. The stanza is::

    -> mlkem768x25519 <base64 of enc, 1120 bytes>
    <base64 of the HPKE ciphertext of the 16-byte file key, 32 bytes>

The identity is a 32-byte seed; X-Wing expands it with SHAKE-256 into the
64-byte ML-KEM-768 seed (d || z) followed by the 32-byte X25519 private key.
The recipient is the ML-KEM-768 encapsulation key (1184 bytes) followed by
the X25519 public key (32 bytes); it is far longer than Bech32's usual
90-character limit, which :mod:`sync.envelope.bech32` does not enforce.

Why this type is the default for real keys: a testimony must stay sealed for
decades, longer than we can bet X25519 alone survives a quantum adversary who
records ciphertexts today. The hybrid holds as long as *either* half holds.

All the cryptography is ``cryptography``'s (OpenSSL): this module only
derives keys, encodes strings and enforces age's strict stanza rules. It was
checked against the C2SP ``hybrid*`` test vectors and against typage, the
reference TypeScript implementation.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from . import b64, bech32
from .errors import HeaderError, KeyFormatError
from .stanza import Stanza

__all__ = [
    "HPKE_INFO",
    "STANZA_TYPE",
    "MlkemIdentity",
    "MlkemRecipient",
]

STANZA_TYPE = "mlkem768x25519"
HPKE_INFO = b"age-encryption.org/mlkem768x25519"

RECIPIENT_HRP = "age1pq"
IDENTITY_HRP = "age-secret-key-pq-"

SEED_SIZE = 32
_MLKEM_SEED_SIZE = 64
_MLKEM_PUBLIC_SIZE = 1184
_MLKEM_CIPHERTEXT_SIZE = 1088
_X25519_SIZE = 32
PUBLIC_KEY_SIZE = _MLKEM_PUBLIC_SIZE + _X25519_SIZE  # 1216
ENC_SIZE = _MLKEM_CIPHERTEXT_SIZE + _X25519_SIZE  # 1120
FILE_KEY_SIZE = 16
BODY_SIZE = FILE_KEY_SIZE + 16  # ChaCha20-Poly1305 tag

_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


def _is_low_order(point: bytes, scalar: x25519.X25519PrivateKey | None = None) -> bool:
    """True if the X25519 ``point`` yields the all-zero shared secret.

    Every X25519 scalar is clamped to a multiple of the cofactor, so a point
    of small order gives zero with *any* scalar; OpenSSL refuses that result
    and ``cryptography`` raises ValueError. So the identity's own key serves
    when we have one, and a throwaway key otherwise.
    """
    if scalar is None:
        scalar = x25519.X25519PrivateKey.generate()
    try:
        scalar.exchange(x25519.X25519PublicKey.from_public_bytes(point))
    except ValueError:
        return True
    return False


class MlkemRecipient:
    """An ``age1pq1...`` recipient: wraps file keys with HPKE over X-Wing."""

    #: Resists a quantum adversary; the writer uses this to refuse mixing
    #: hybrid and classical recipients in one file unless asked explicitly.
    post_quantum: bool = True

    def __init__(self, public_key: bytes) -> None:
        """Build from the 1216 raw bytes (ML-KEM-768 key || X25519 key).

        Raises :class:`KeyFormatError` for a wrong length, an ML-KEM key that
        fails FIPS 203's modulus check, or a small-order X25519 point (which
        would make the classical half contribute nothing).
        """
        public_key = bytes(public_key)
        if len(public_key) != PUBLIC_KEY_SIZE:
            raise KeyFormatError(
                f"hybrid recipient must be {PUBLIC_KEY_SIZE} bytes, got {len(public_key)}"
            )
        mlkem_part = public_key[:_MLKEM_PUBLIC_SIZE]
        x25519_part = public_key[_MLKEM_PUBLIC_SIZE:]
        try:
            mlkem_key = mlkem.MLKEM768PublicKey.from_public_bytes(mlkem_part)
        except ValueError as exc:
            raise KeyFormatError("invalid ML-KEM-768 public key in hybrid recipient") from exc
        if _is_low_order(x25519_part):
            raise KeyFormatError("hybrid recipient has a small-order X25519 key")
        x25519_key = x25519.X25519PublicKey.from_public_bytes(x25519_part)
        self._bytes = public_key
        self._hpke_key = hpke.MLKEM768X25519PublicKey(mlkem_key, x25519_key)

    @classmethod
    def parse(cls, text: str) -> MlkemRecipient:
        """Parse an ``age1pq1...`` string (lower case only, as age writes it)."""
        return cls(bech32.decode_key(text, RECIPIENT_HRP, upper=False,
                                     what="age1pq1... hybrid recipient"))

    @property
    def public_bytes(self) -> bytes:
        """The 1216 raw bytes: ML-KEM-768 encapsulation key || X25519 public key."""
        return self._bytes

    def wrap(self, file_key: bytes) -> list[Stanza]:
        """Seal ``file_key`` to this recipient as one ``mlkem768x25519`` stanza."""
        if len(file_key) != FILE_KEY_SIZE:
            raise ValueError(f"file key must be {FILE_KEY_SIZE} bytes")
        # Single-shot HPKE returns enc || ciphertext; the stanza carries enc
        # as its argument and the ciphertext (file key + tag) as its body.
        sealed = _SUITE.encrypt(file_key, self._hpke_key, info=HPKE_INFO)
        enc, body = sealed[:ENC_SIZE], sealed[ENC_SIZE:]
        if len(body) != BODY_SIZE:  # pragma: no cover - would be a library change
            raise AssertionError("unexpected HPKE output size")
        return [Stanza(STANZA_TYPE, (b64.encode(enc),), body)]

    def __str__(self) -> str:
        return bech32.encode(RECIPIENT_HRP, self._bytes)

    def __repr__(self) -> str:
        text = str(self)
        return f"MlkemRecipient({text[:16]}...{text[-8:]})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MlkemRecipient):
            return NotImplemented
        return self._bytes == other._bytes

    def __hash__(self) -> int:
        return hash((MlkemRecipient, self._bytes))


class MlkemIdentity:
    """An ``AGE-SECRET-KEY-PQ-1...`` identity: unwraps ``mlkem768x25519`` stanzas."""

    def __init__(self, seed: bytes) -> None:
        """Build from the 32-byte seed (the payload of the identity string)."""
        seed = bytes(seed)
        if len(seed) != SEED_SIZE:
            raise KeyFormatError(f"hybrid identity seed must be {SEED_SIZE} bytes")
        # X-Wing key derivation: SHAKE-256(seed) -> ML-KEM seed || X25519 key.
        expanded = hashlib.shake_256(seed).digest(_MLKEM_SEED_SIZE + _X25519_SIZE)
        self._seed = seed
        self._mlkem_key = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:_MLKEM_SEED_SIZE])
        self._x25519_key = x25519.X25519PrivateKey.from_private_bytes(expanded[_MLKEM_SEED_SIZE:])
        self._hpke_key = hpke.MLKEM768X25519PrivateKey(self._mlkem_key, self._x25519_key)
        self._recipient: MlkemRecipient | None = None

    @classmethod
    def generate(cls) -> MlkemIdentity:
        """A fresh identity from 32 bytes of the OS CSPRNG."""
        return cls(secrets.token_bytes(SEED_SIZE))

    @classmethod
    def parse(cls, text: str) -> MlkemIdentity:
        """Parse an ``AGE-SECRET-KEY-PQ-1...`` string (upper case only, as age writes it)."""
        return cls(bech32.decode_key(text, IDENTITY_HRP, upper=True,
                                     what="AGE-SECRET-KEY-PQ-1... hybrid identity"))

    def recipient(self) -> MlkemRecipient:
        if self._recipient is None:
            self._recipient = MlkemRecipient(
                self._mlkem_key.public_key().public_bytes_raw()
                + self._x25519_key.public_key().public_bytes_raw()
            )
        return self._recipient

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Return the file key from the first stanza sealed to us, else None.

        Every ``mlkem768x25519`` stanza is validated first, so a malformed
        one fails the header (HeaderError) wherever it sits, rather than only
        when it happens to come before ours. Stanzas of other types, including
        ``MLKEM768X25519`` in another case, are not ours and are ignored.
        """
        candidates: list[tuple[bytes, bytes]] = []
        for stanza in stanzas:
            if stanza.type != STANZA_TYPE:
                continue
            candidates.append(_parse_stanza(stanza, self._x25519_key))
        for enc, body in candidates:
            try:
                file_key = _SUITE.decrypt(enc + body, self._hpke_key, info=HPKE_INFO)
            except InvalidTag:
                # Sealed to someone else, or the ML-KEM half / body was
                # altered: ML-KEM's implicit rejection turns a corrupted
                # ciphertext into a wrong key, so both read as "not ours".
                continue
            except ValueError as exc:  # pragma: no cover - lengths checked above
                raise HeaderError("mlkem768x25519 stanza rejected by HPKE") from exc
            if len(file_key) != FILE_KEY_SIZE:  # pragma: no cover - body length fixed
                raise HeaderError("mlkem768x25519 stanza holds a file key of the wrong size")
            return file_key
        return None

    def __str__(self) -> str:
        return bech32.encode(IDENTITY_HRP, self._seed, upper=True)

    def __repr__(self) -> str:
        # Deliberately not the secret: reprs end up in logs and tracebacks.
        return f"MlkemIdentity(recipient={self.recipient()!r})"


def _parse_stanza(stanza: Stanza, x25519_key: x25519.X25519PrivateKey) -> tuple[bytes, bytes]:
    """Check an ``mlkem768x25519`` stanza's shape and return ``(enc, body)``.

    Failures are HeaderError, not "no match": the age spec makes a malformed
    stanza of a known type fatal, so that no two parsers disagree on a file.
    """
    enc = b64.decode_stanza_arg(stanza.args, ENC_SIZE, STANZA_TYPE)
    # An exact body length also stops an over-long "file key" before any
    # decryption is attempted (C2SP hybrid_long_file_key).
    if len(stanza.body) != BODY_SIZE:
        raise HeaderError(f"mlkem768x25519 body must be {BODY_SIZE} bytes")
    # The HPKE layer reports a small-order X25519 share as a bad tag, which
    # would read as "no match"; age treats it as a malformed header, and so
    # does the C2SP suite (hybrid_identity, hybrid_low_order).
    if _is_low_order(enc[_MLKEM_CIPHERTEXT_SIZE:], x25519_key):
        raise HeaderError("mlkem768x25519 enc has a small-order X25519 share")
    return enc, bytes(stanza.body)
