"""The recipient stanza and the two small interfaces every recipient type implements.

A recipient type (X25519, the hybrid ML-KEM-768 + X25519) wraps the 16-byte
file key into one or more stanzas; an identity tries to unwrap it from the
stanzas of a header. Keeping this seam small lets the header code stay
ignorant of any key type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Stanza:
    """One ``-> type arg...`` line and its body, as bytes already decoded from base64."""

    type: str
    args: tuple[str, ...]
    body: bytes


class Recipient(Protocol):
    """Something a file key can be sealed to."""

    #: True for recipient types that resist a quantum adversary.
    post_quantum: bool

    def wrap(self, file_key: bytes) -> list[Stanza]: ...

    def __str__(self) -> str:  # the age1... / age1pq1... encoding
        ...


class Identity(Protocol):
    """Something that can open a file key sealed to its recipient."""

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Return the file key, or None when no stanza is for this identity.

        Raise :class:`sync.envelope.errors.HeaderError` when a stanza of this
        identity's type is malformed (the age spec makes that a hard failure,
        not a "no match").
        """
        ...

    def recipient(self) -> Recipient: ...
