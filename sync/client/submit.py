"""``POST /submissions``: hand over the signed index, get the service's signed receipt.

A 2xx answer is an acknowledgement only if its receipt verifies under the service key
pinned at enrolment *and* names this submission, this device and this exact index
(:meth:`sync.wire.Receipt.verify`). Anything else is :class:`BadReceipt`: the
submission stays where it is and the index is sent again later (the service answers
the same index with its stored receipt, so a retry is harmless).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from sync.signing import VerifyKey
from sync.wire import API, BadIndex, Receipt, SignedDocument, is_part_name

from .errors import BadReceipt, Rejected, Transient
from .http import TRANSIENT_STATUSES, Timeouts, send, transient_for

SUBMISSIONS = f"{API}/submissions"


class PartsNotUploaded(Exception):
    """422: the service has no finished upload for these parts (names)."""

    def __init__(self, parts: tuple[str, ...]) -> None:
        super().__init__(parts)
        self.parts = parts


@dataclass(frozen=True)
class Acknowledgement:
    receipt: Receipt
    #: The receipt as it travelled: exact text and signature, kept by the kiosk.
    signed: SignedDocument


def post_index(client: httpx.Client, signed_index: SignedDocument, *,
               service_key: VerifyKey, timeouts: Timeouts) -> Acknowledgement:
    """Send the index; return the verified receipt or raise (see the module doc)."""
    reply = send(client, "POST", SUBMISSIONS, timeouts=timeouts, json_body={
        "index": signed_index.data.decode("utf-8"), "signature": signed_index.signature})
    if reply.status in (200, 201):
        doc = reply.json()
        if not isinstance(doc, dict) or not isinstance(doc.get("receipt"), str) \
                or not isinstance(doc.get("signature"), str):
            raise BadReceipt()
        signed = SignedDocument(doc["receipt"].encode("utf-8"), doc["signature"])
        try:
            receipt = Receipt.verify(signed, service_key, expect_index=signed_index)
        except BadIndex:
            raise BadReceipt() from None
        return Acknowledgement(receipt, signed)
    if reply.status == 422:
        doc = reply.json()
        names = doc.get("parts") if isinstance(doc, dict) else None
        if isinstance(names, list) and all(is_part_name(n) for n in names):
            raise PartsNotUploaded(tuple(names))
        raise PartsNotUploaded(())  # all of them, then
    if reply.status in (400, 403, 409):
        # Permanent: a malformed or refused index, or another index under this id.
        raise Rejected(reply.error_code(), status=reply.status)
    if reply.status in TRANSIENT_STATUSES:
        raise transient_for(reply)
    raise Transient(f"http_{reply.status}", status=reply.status)
