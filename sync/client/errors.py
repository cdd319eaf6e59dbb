"""What goes wrong while talking to the central service, as the sync pass sorts it.

Three kinds, because the kiosk does three different things about them:

* :class:`Transient`: the network, a timeout, a busy or broken server (423, 429, 5xx,
  507). Nothing is wrong with the submission: the pass stops, keeps every state as it
  is, and the worker tries again later (honouring ``retry_after``).
* :class:`Rejected`: a permanent answer about one submission (400, 403, 409
  ``index_conflict``) or a local file that no longer matches what was sealed. That
  submission goes to the ``rejected`` state for staff; the pass goes on with the next.
* :class:`Revoked`: the service no longer knows this device's token (401). The pass
  stops; the queue is kept for a USB export or a new enrolment.

Every ``code`` is a short machine code (``[a-z0-9_]``): it goes into logs, the
heartbeat and ``sync-state.json``, so it must never carry text from a server reply.
"""

from __future__ import annotations

import re

_CODE = re.compile(r"[a-z0-9_]{1,64}")


def safe_code(text: object, fallback: str) -> str:
    """``text`` if it is a machine code, else ``fallback``: nothing free-form passes."""
    return text if isinstance(text, str) and _CODE.fullmatch(text) else fallback


class SyncFailure(Exception):
    """Base class; ``code`` is a machine code, never free text."""

    def __init__(self, code: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.status = status
        self.retry_after = retry_after


class Transient(SyncFailure):
    """Try again later; nothing about the submission changes."""


class Rejected(SyncFailure):
    """Permanent for this submission: staff must see it."""


class Revoked(SyncFailure):
    """The service refuses this device's token (401)."""


class BadReceipt(SyncFailure):
    """A 2xx answer to the index whose receipt does not verify: NOT an acknowledgement."""

    def __init__(self) -> None:
        super().__init__("bad_receipt")


class Stopped(SyncFailure):
    """The caller asked the pass to stop (the app is quitting)."""

    def __init__(self) -> None:
        super().__init__("stopped")
