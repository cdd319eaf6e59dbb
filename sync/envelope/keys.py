"""Parsing recipients and identities by their prefix, and the key-file formats.

Identity files are ``age-keygen``'s format: one ``AGE-SECRET-KEY-...`` per
line, ``#`` comments and empty lines ignored. Recipients files are the same
with ``age1...`` lines. Error messages never quote a secret key.

The post-quantum type lives in :mod:`sync.envelope.mlkem` and is imported only
when such a key is met, so that this module works without it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from .errors import KeyFormatError
from .stanza import Identity, Recipient
from .x25519 import X25519Identity, X25519Recipient

__all__ = [
    "format_identity_file",
    "parse_identity",
    "parse_identity_file",
    "parse_recipient",
    "parse_recipients_file",
]

PQ_RECIPIENT_PREFIX = "age1pq1"
PQ_IDENTITY_PREFIX = "AGE-SECRET-KEY-PQ-1"


def _mlkem():  # type: ignore[no-untyped-def]
    try:
        from . import mlkem
    except ImportError as exc:
        raise KeyFormatError("post-quantum keys not supported") from exc
    return mlkem


def parse_recipient(text: str) -> Recipient:
    """Parse one ``age1...`` or ``age1pq1...`` recipient."""
    if text.startswith(PQ_RECIPIENT_PREFIX):
        return _mlkem().MlkemRecipient.parse(text)
    if text.startswith("age1"):
        return X25519Recipient.parse(text)
    if text.startswith(("ssh-", "ecdsa-")):
        raise KeyFormatError("SSH recipients are not supported")
    raise KeyFormatError("unknown recipient type (expected age1...)")


def parse_identity(text: str) -> Identity:
    """Parse one ``AGE-SECRET-KEY-1...`` or ``AGE-SECRET-KEY-PQ-1...`` identity."""
    if text.startswith(PQ_IDENTITY_PREFIX):
        return _mlkem().MlkemIdentity.parse(text)
    if text.startswith("AGE-SECRET-KEY-1"):
        return X25519Identity.parse(text)
    if text.startswith("AGE-PLUGIN-"):
        raise KeyFormatError("plugin identities are not supported")
    raise KeyFormatError("unknown identity type (expected AGE-SECRET-KEY-1...)")


def _key_lines(text: str) -> list[tuple[int, str]]:
    lines = []
    for number, line in enumerate(text.split("\n"), start=1):
        # Like age (Go's line scanner): a trailing CR belongs to the newline.
        if line.endswith("\r"):
            line = line[:-1]
        if line == "" or line.startswith("#"):
            continue
        lines.append((number, line))
    return lines


def parse_identity_file(text: str) -> list[Identity]:
    """Parse an identity file as ``age-keygen`` writes it; at least one key required."""
    if text.lstrip().startswith("-----BEGIN") or text.startswith("age-encryption.org/"):
        raise KeyFormatError(
            "passphrase-protected identity file: read it with read_protected_identity_file"
        )
    identities = []
    for number, line in _key_lines(text):
        try:
            identities.append(parse_identity(line))
        except KeyFormatError as exc:
            raise KeyFormatError(f"identity file line {number}: {exc}") from None
    if not identities:
        raise KeyFormatError("no secret keys found in the identity file")
    return identities


def parse_recipients_file(text: str) -> list[Recipient]:
    """Parse a recipients file: one recipient per line; at least one required."""
    recipients = []
    for number, line in _key_lines(text):
        try:
            recipients.append(parse_recipient(line))
        except KeyFormatError as exc:
            raise KeyFormatError(f"recipients file line {number}: {exc}") from None
    if not recipients:
        raise KeyFormatError("no recipients found in the recipients file")
    return recipients


def format_identity_file(identity: Identity, *, created: datetime | None = None) -> str:
    """The text ``age-keygen`` writes for one identity, comments included."""
    when = (created or datetime.now(UTC)).replace(microsecond=0)
    stamp = when.isoformat().replace("+00:00", "Z")
    return f"# created: {stamp}\n# public key: {identity.recipient()}\n{identity}\n"
