"""Enrolment and heartbeat: the device's two requests outside uploading.

:func:`enrol` trades a one-time code and the device's public key for a device id, a
bearer token and the service's public key, which the kiosk then pins: every receipt
must verify under it. Nothing here writes files; the kiosk stores the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from sync.signing import VerifyKey
from sync.wire import API, is_device_id

from .errors import Revoked, Transient
from .http import DEFAULT_TIMEOUTS, Reply, Timeouts, make_client, send, transient_for

_APP_VERSION = re.compile(r"[0-9A-Za-z.+-]{1,32}")
_ERROR_CODE = re.compile(r"[a-z0-9_]{1,64}")


class EnrolRefused(Exception):
    """The service refused the code (wrong, expired or already used)."""


class EnrolFailed(Exception):
    """Enrolment did not happen for another reason; ``code`` says which."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class Enrolment:
    device_id: str
    token: str
    service_key: VerifyKey

    def __repr__(self) -> str:  # the token is a secret: never in a repr or a log
        return f"Enrolment(device_id={self.device_id!r}, service_key={self.service_key!r})"


def enrol(server_url: str, *, code: str, public_key: VerifyKey,
          timeouts: Timeouts = DEFAULT_TIMEOUTS,
          transport: httpx.BaseTransport | None = None) -> Enrolment:
    """POST /devices/enrol; raise EnrolRefused (403) or EnrolFailed."""
    with make_client(server_url, transport=transport, timeouts=timeouts) as client:
        try:
            reply = send(client, "POST", f"{API}/devices/enrol", timeouts=timeouts,
                         json_body={"code": code, "public_key": str(public_key)},
                         revoked_on_401=False)
        except Transient as exc:
            raise EnrolFailed(exc.code) from None
    if reply.status == 403:
        raise EnrolRefused(reply.error_code())
    if reply.status != 201:
        raise EnrolFailed(reply.error_code())
    return _enrolment(reply)


def _enrolment(reply: Reply) -> Enrolment:
    doc = reply.json()
    if not isinstance(doc, dict):
        raise EnrolFailed("bad_enrol_reply")
    device_id, token, key = doc.get("device_id"), doc.get("token"), doc.get("service_key")
    if not is_device_id(device_id) or not isinstance(token, str) \
            or not token.startswith("idrdev_") or not isinstance(key, str):
        raise EnrolFailed("bad_enrol_reply")
    try:
        service_key = VerifyKey.parse(key)
    except Exception:  # a malformed or weak key: never pinned
        raise EnrolFailed("bad_service_key") from None
    return Enrolment(device_id=device_id, token=token, service_key=service_key)


def heartbeat(client: httpx.Client, *, timeouts: Timeouts, queue_depth: int,
              free_disk_bytes: int | None, app_version: str,
              last_error: str | None) -> int:
    """POST /devices/heartbeat; returns the status. Raises Revoked (401) or Transient
    (network trouble, a busy or failing service); another refusal is only returned:
    the heartbeat is a report, not a precondition for uploading."""
    version = app_version if _APP_VERSION.fullmatch(app_version) else "unknown"
    error = last_error if last_error and _ERROR_CODE.fullmatch(last_error) else None
    reply = send(client, "POST", f"{API}/devices/heartbeat", timeouts=timeouts, json_body={
        "queue_depth": max(0, int(queue_depth)),
        "free_disk_bytes": None if free_disk_bytes is None else max(0, int(free_disk_bytes)),
        "app_version": version, "last_error": error})
    if reply.status in (408, 423, 429) or reply.status >= 500:
        raise transient_for(reply)
    return reply.status


__all__ = ["EnrolFailed", "EnrolRefused", "Enrolment", "Revoked", "enrol", "heartbeat"]
