"""Passphrase-sealed data and passphrase-protected identity files, as age makes them.

A protected identity file is an ordinary age file sealed to one scrypt
recipient whose plaintext is an identity file: ``age -p`` makes them and
``age -d -i`` reads them, binary or armored. The vetting tool keeps its keys
this way, so that a stolen laptop does not hand over the testimonies.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from .armor import SNIFF_SIZE, looks_armored
from .errors import KeyFormatError, WrongPassphrase
from .keys import parse_identity_file
from .reader import open_bytes
from .scrypt import DEFAULT_LOG2_N, DEFAULT_MAX_LOG2_N, ScryptIdentity, ScryptRecipient
from .stanza import Identity
from .writer import seal_bytes

__all__ = [
    "WrongPassphrase",
    "is_age_file",
    "open_with_passphrase",
    "read_protected_identity_file",
    "seal_with_passphrase",
    "write_protected_identity_file",
]

#: As age: an identity file larger than this is not one.
MAX_IDENTITY_FILE_SIZE = 16 * 1024 * 1024


def seal_with_passphrase(
    data: bytes, passphrase: str, *, armor: bool = False, log2_n: int = DEFAULT_LOG2_N
) -> bytes:
    """``data`` as an age file sealed to ``passphrase`` (scrypt with N = 2**log2_n)."""
    return seal_bytes(data, [ScryptRecipient(passphrase, log2_n=log2_n)], armor=armor)


def open_with_passphrase(
    data: bytes,
    passphrase: str | Callable[[], str],
    *,
    max_log2_n: int = DEFAULT_MAX_LOG2_N,
) -> bytes:
    """The plaintext of a passphrase-sealed age file (binary or armored).

    Raises :class:`WrongPassphrase` for the wrong passphrase, a
    ``NoIdentityMatchError`` for a file sealed to recipients rather than to a
    passphrase, and ``HeaderError`` for a work factor above ``max_log2_n``.
    """
    return open_bytes(data, [ScryptIdentity(passphrase, max_log2_n=max_log2_n)])


def is_age_file(data: bytes) -> bool:
    """Whether ``data`` is an age file (binary or armored) rather than key text."""
    return data.startswith(b"age-encryption.org/") or looks_armored(data[:SNIFF_SIZE])


def write_protected_identity_file(
    path: str | os.PathLike[str],
    identity_file_text: str,
    passphrase: str,
    *,
    armor: bool = False,
    log2_n: int = DEFAULT_LOG2_N,
) -> None:
    """Seal an identity file to ``passphrase`` and write it to ``path`` (mode 0600).

    Written to a temporary file in the same folder, fsynced, then renamed over
    ``path``, and the folder fsynced: a crash leaves the old file or the new
    one, never half of one. The text must hold at least one identity.
    """
    parse_identity_file(identity_file_text)  # never protect something unusable
    sealed = seal_with_passphrase(
        identity_file_text.encode("utf-8"), passphrase, armor=armor, log2_n=log2_n
    )
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(sealed)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_protected_identity_file(
    path: str | os.PathLike[str],
    passphrase: str | Callable[[], str],
    *,
    max_log2_n: int = DEFAULT_MAX_LOG2_N,
) -> list[Identity]:
    """The identities in an identity file, protected (``age -p``, binary or armored) or not.

    ``passphrase`` may be a callable: it is asked only if the file is protected.
    Raises :class:`WrongPassphrase`, ``KeyFormatError`` for a file that holds no
    identities, or another ``EnvelopeError`` for a damaged file.
    """
    with open(path, "rb") as fh:
        data = fh.read(MAX_IDENTITY_FILE_SIZE + 1)
    if len(data) > MAX_IDENTITY_FILE_SIZE:
        raise KeyFormatError("identity file is larger than 16 MiB")
    if is_age_file(data):
        data = open_with_passphrase(data, passphrase, max_log2_n=max_log2_n)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFormatError("identity file is not UTF-8 text") from None
    return parse_identity_file(text)
