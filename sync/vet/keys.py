"""The vetting team's keys at rest: passphrase-protected files, the ``age -p`` way.

Every secret key the tool keeps is an age file sealed to one scrypt recipient
(:mod:`sync.envelope.passphrase`): ``keys/team.age`` holds an ``age-keygen`` identity
file (``age -d keys/team.age`` or typage opens it with the passphrase), and
``keys/publisher.age`` the Ed25519 publishing key file (sync/signing.py's format). The
escrow identity is shown once, armored (``-----BEGIN AGE ENCRYPTED FILE-----``), for
offline storage.

A key file that is not sealed to a passphrase is refused: a stolen workstation must
not hand over the team key.
"""

from __future__ import annotations

from pathlib import Path

from sync.envelope import (
    EnvelopeError,
    Identity,
    KeyFormatError,
    NoIdentityMatchError,
    WrongPassphrase,
    format_identity_file,
    open_with_passphrase,
    parse_identity_file,
    seal_with_passphrase,
    write_protected_identity_file,
)
from sync.envelope.passphrase import is_age_file
from sync.signing import SigningKey, format_signing_key_file, parse_signing_key_file

from .workspace import atomic_write

__all__ = [
    "DEFAULT_WORK_FACTOR",
    "MAX_WORK_FACTOR",
    "KeyFileError",
    "WrongPassphrase",
    "escrow_armor",
    "read_identities",
    "read_signing_key",
    "write_identity",
    "write_signing_key",
]

#: log2 of scrypt's N, as ``age -p`` uses by default.
DEFAULT_WORK_FACTOR = 18
#: The most a key file may ask for (age's reader limit).
MAX_WORK_FACTOR = 22


class KeyFileError(Exception):
    """A key file that cannot be used: not protected, damaged, or holding no key."""


def _open(data: bytes, passphrase: str, what: str) -> bytes:
    if not is_age_file(data):
        raise KeyFileError(f"{what} is not passphrase-protected; make the keys again with"
                           " `vet keygen --force`")
    try:
        return open_with_passphrase(data, passphrase, max_log2_n=MAX_WORK_FACTOR)
    except WrongPassphrase:
        raise
    except NoIdentityMatchError:
        raise KeyFileError(f"{what} is sealed to a key, not to a passphrase") from None
    except EnvelopeError as exc:
        raise KeyFileError(f"{what} cannot be opened: {exc}") from None


def write_identity(path: Path, identity: Identity, passphrase: str, *,
                   work_factor: int = DEFAULT_WORK_FACTOR) -> None:
    """An identity file sealed to ``passphrase``, written durably with mode 0600."""
    write_protected_identity_file(path, format_identity_file(identity), passphrase,
                                  log2_n=work_factor)


def write_signing_key(path: Path, key: SigningKey, passphrase: str, *,
                      work_factor: int = DEFAULT_WORK_FACTOR) -> None:
    """The publishing key file sealed to ``passphrase``, written durably with mode 0600."""
    data = seal_with_passphrase(format_signing_key_file(key).encode("utf-8"), passphrase,
                                log2_n=work_factor)
    atomic_write(path, data, mode=0o600)


def escrow_armor(identity: Identity, passphrase: str, *,
                 work_factor: int = DEFAULT_WORK_FACTOR) -> str:
    """The armored, passphrase-sealed identity file (what ``age -p -a`` prints)."""
    return seal_with_passphrase(format_identity_file(identity).encode("utf-8"), passphrase,
                                armor=True, log2_n=work_factor).decode("ascii")


def read_identities(data: bytes, passphrase: str, what: str = "the identity file"
                    ) -> list[Identity]:
    """The identities in a protected identity file."""
    text = _open(data, passphrase, what)
    try:
        return parse_identity_file(text.decode("utf-8"))
    except (UnicodeDecodeError, KeyFormatError) as exc:
        raise KeyFileError(f"{what} holds no valid identity: {exc}") from None


def read_signing_key(data: bytes, passphrase: str, what: str = "the publishing key file"
                     ) -> SigningKey:
    """The publishing key in a protected key file."""
    text = _open(data, passphrase, what)
    try:
        return parse_signing_key_file(text.decode("utf-8"))
    except (UnicodeDecodeError, KeyFormatError) as exc:
        raise KeyFileError(f"{what} holds no valid key: {exc}") from None
