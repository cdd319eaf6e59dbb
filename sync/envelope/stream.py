"""The age STREAM payload: 64 KiB chunks of ChaCha20-Poly1305.

The payload starts with a 16-byte random nonce; the payload key is
HKDF-SHA256(file key, salt=nonce, info="payload"). Chunk ``i`` is sealed with
the 12-byte nonce ``i`` (11 bytes, big-endian) followed by a flag byte that is
1 on the final chunk only, so truncating, reordering or extending the chunk
sequence fails authentication. Every chunk but the last holds exactly
64 KiB of plaintext; the last may be full, and is empty only when the whole
payload is.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENC_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
PAYLOAD_NONCE_SIZE = 16
FILE_KEY_SIZE = 16
_NOT_LAST = b"\x00"
_LAST = b"\x01"


def payload_key(file_key: bytes, nonce: bytes) -> bytes:
    if len(file_key) != FILE_KEY_SIZE:
        raise ValueError("file key must be 16 bytes")
    if len(nonce) != PAYLOAD_NONCE_SIZE:
        raise ValueError("payload nonce must be 16 bytes")
    return HKDF(SHA256(), 32, nonce, b"payload").derive(file_key)


def chunk_nonce(index: int, last: bool) -> bytes:
    # to_bytes raises OverflowError for a negative index or one of 2**88 or more.
    return index.to_bytes(11, "big") + (_LAST if last else _NOT_LAST)


class ChunkSealer:
    """Seals chunks into one reused output buffer.

    The caller passes the chunk index explicitly: a writer that has to retry
    a failed disk write must seal the *same* plaintext under the same nonce
    again, and never different plaintext under a nonce already used.
    """

    def __init__(self, key: bytes) -> None:
        self._aead: ChaCha20Poly1305 | None = ChaCha20Poly1305(key)
        self._out = memoryview(bytearray(ENC_CHUNK_SIZE))

    def seal(self, index: int, plaintext: bytes | bytearray | memoryview, last: bool) -> memoryview:
        """Return the sealed chunk; the view is valid until the next call."""
        if self._aead is None:
            raise ValueError("the sealer was wiped: it holds no key any more")
        n = len(plaintext) + TAG_SIZE
        if n > ENC_CHUNK_SIZE:
            raise ValueError("chunk larger than 64 KiB")
        if not last and n != ENC_CHUNK_SIZE:
            raise ValueError("only the final chunk may be short")
        out = self._out[:n]
        self._aead.encrypt_into(chunk_nonce(index, last), plaintext, None, out)
        return out

    def wipe(self) -> None:
        """Zero the output buffer and let go of the key; the sealer is unusable after."""
        # cryptography keeps the key inside the AEAD object, out of our reach:
        # dropping the last reference is the most we can do to forget it.
        self._aead = None
        self._out[:] = bytes(ENC_CHUNK_SIZE)


class ChunkOpener:
    """Opens chunks into one reused plaintext buffer.

    ``decrypt_into`` writes plaintext before it checks the tag, so on failure
    the buffer is zeroed and nothing of it is ever handed out.
    """

    def __init__(self, key: bytes) -> None:
        self._aead: ChaCha20Poly1305 | None = ChaCha20Poly1305(key)
        self._buf = bytearray(CHUNK_SIZE)
        self._out = memoryview(self._buf)

    def open(
        self, index: int, ciphertext: bytes | bytearray | memoryview, last: bool
    ) -> memoryview | None:
        """Return the plaintext (valid until the next call), or None if it does not authenticate.

        Raises ValueError once wiped: "wiped" must not read as "did not authenticate".
        """
        if self._aead is None:
            raise ValueError("the opener was wiped: it holds no key any more")
        n = len(ciphertext) - TAG_SIZE
        if n < 0 or n > CHUNK_SIZE:
            return None
        out = self._out[:n]
        try:
            self._aead.decrypt_into(chunk_nonce(index, last), ciphertext, None, out)
        except InvalidTag:
            out[:] = bytes(n)
            return None
        return out

    def wipe(self) -> None:
        """Zero the plaintext buffer and let go of the key; the opener is unusable after."""
        self._aead = None  # see ChunkSealer.wipe
        self._out[:] = bytes(CHUNK_SIZE)
