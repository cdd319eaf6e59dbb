"""Distinct failures of reading an age file, one class per cause.

The vetting tool and the tests tell these apart: a truncated recording is
recoverable, a tampered one is not, and "no matching identity" means the
wrong key was used rather than a damaged file.

This module imports nothing, so that every other module of the package (the
low-level ``b64`` and ``bech32`` included) can import its errors at the top
without an import cycle.
"""

from __future__ import annotations


class EnvelopeError(Exception):
    """Base class of every envelope failure."""


class HeaderError(EnvelopeError):
    """The header is malformed, too large, or uses an unsupported feature."""


class NoIdentityMatchError(EnvelopeError):
    """No identity given could unwrap the file key from any stanza."""


class WrongPassphrase(NoIdentityMatchError):
    """The passphrase does not open this passphrase-encrypted (scrypt) file."""


class HmacError(EnvelopeError):
    """The header MAC does not verify: the header was altered."""


class PayloadError(EnvelopeError):
    """A payload chunk failed to authenticate, or data follows the final chunk."""


class TruncatedError(PayloadError):
    """The payload ends without a final chunk: the file was cut short."""


class ArmorError(EnvelopeError):
    """The ASCII armor around an age file is not the strict PEM form age writes.

    Its own class, neither a header nor a payload failure: the armor wraps
    both, and the age test vectors tell "armor failure" apart from those.
    """


class KeyFormatError(EnvelopeError, ValueError):
    """A recipient, identity or signing key string is not valid."""
