"""The fleet view for the service's administrator: every device's last heartbeat, queue
depth, free disk, version and last error, read-only.

* ``GET /api/v1/admin/fleet``: JSON.
* ``GET /admin/fleet``: the same as one HTML page (no script, no outside resources).

Both need an administrator token (``idradm_...``, from ``central admin add``) as a
bearer token; the page also takes it as the password of HTTP Basic, so that a browser
can open it (it prompts for it). A device or vetter token is answered 403 (its kind can
never read this), anything else 401. Nothing personal is shown: device names are labels
staff chose, the last error is a short code. Both still come from outside (staff typed
the name, the device sent the code), so every value is escaped, and the page's
Content-Security-Policy forbids scripts should anything slip through.
"""

from __future__ import annotations

import html
import secrets
import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from pydantic import BaseModel

from sync.wire import API

from ..core import hash_secret
from ..storage.base import Admin, AuditEvent, Device
from .auth import central
from .errors import ApiError, responses, unauthorized

ADMIN_PREFIX = "idradm_"
#: Kiosks send a heartbeat every sync pass (a minute by default): a quarter of an hour
#: without one means the kiosk is off, offline or stuck.
STALE_AFTER = 15 * 60.0
_OTHER_KINDS = ("idrdev_", "idrvet_")

router = APIRouter()
_admin_scheme = HTTPBearer(auto_error=False, scheme_name="adminToken",
                           description="an administrator token from `central admin add`")
_basic_scheme = HTTPBasic(auto_error=False, scheme_name="adminTokenAsPassword",
                          description="the page only: any user name, the administrator"
                                      " token as the password (for a browser)")


def make_admin_token() -> str:
    return ADMIN_PREFIX + secrets.token_urlsafe(32)


def admin_auth(request: Request, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(_admin_scheme)]) -> Admin:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorized("unauthorized", "an administrator token is needed")
    return _admin_for(request, credentials.credentials)


def page_auth(request: Request,
              bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_scheme)],
              basic: Annotated[HTTPBasicCredentials | None, Depends(_basic_scheme)]) -> Admin:
    """A bearer token, or HTTP Basic with the token as the password (any user name): a
    browser asks for that password itself after a 401 that offers Basic."""
    if bearer is not None:
        return admin_auth(request, bearer)
    try:
        if basic is None:
            raise unauthorized("unauthorized", "an administrator token is needed")
        return _admin_for(request, basic.password)
    except ApiError as exc:
        if exc.status == 401:
            exc.headers = {"WWW-Authenticate": 'Basic realm="fleet", charset="UTF-8"'}
        raise


def _admin_for(request: Request, token: str) -> Admin:
    if token.startswith(_OTHER_KINDS):
        raise ApiError(403, "forbidden", "the fleet view needs an administrator token")
    if not token.startswith(ADMIN_PREFIX) or len(token) > 200:
        raise unauthorized("unauthorized", "unknown token")
    admin = central(request).meta.admin_by_token(hash_secret(token))
    if admin is None:
        raise unauthorized("unauthorized", "unknown token")
    if admin.revoked_at is not None:
        raise unauthorized("revoked", "this administrator token has been revoked")
    return admin


AdminDep = Annotated[Admin, Depends(admin_auth)]


class FleetDevice(BaseModel):
    id: str
    #: The label staff gave the device at enrolment (``central enrol-code --name``).
    name: str | None
    enrolled_at: str
    revoked_at: str | None
    last_heartbeat_at: str | None
    queue_depth: int | None
    free_disk_bytes: int | None
    app_version: str | None
    last_error: str | None
    #: No heartbeat for STALE_AFTER seconds (or never), and not revoked.
    stale: bool


class Fleet(BaseModel):
    generated_at: str
    stale_after_s: float
    devices: list[FleetDevice]


def _when(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_stale(device: Device, now: float) -> bool:
    if device.revoked_at is not None:
        return False
    return device.last_heartbeat_at is None or now - device.last_heartbeat_at > STALE_AFTER


def _fleet(request: Request, admin: Admin) -> Fleet:
    svc = central(request)
    now = time.time()
    devices = [FleetDevice(
        id=d.id, name=d.name, enrolled_at=_when(d.enrolled_at) or "",
        revoked_at=_when(d.revoked_at), last_heartbeat_at=_when(d.last_heartbeat_at),
        queue_depth=d.queue_depth, free_disk_bytes=d.free_disk_bytes,
        app_version=d.app_version, last_error=d.last_error, stale=_is_stale(d, now))
        for d in svc.meta.list_devices()]
    svc.meta.append_audit(AuditEvent(admin.id, "fleet_viewed", "fleet"))
    return Fleet(generated_at=_when(now) or "", stale_after_s=STALE_AFTER, devices=devices)


_NO_STORE = {"Cache-Control": "no-store"}


@router.get(f"{API}/admin/fleet", response_model=Fleet, responses=responses(401, 403),
            tags=["administrator"])
def fleet_json(request: Request, response: Response, admin: AdminDep) -> Fleet:
    """Every device's last heartbeat, queue depth, free disk, version and last error."""
    response.headers.update(_NO_STORE)
    return _fleet(request, admin)


@router.get("/admin/fleet", response_class=Response, tags=["administrator"],
            responses={200: {"content": {"text/html": {"schema": {"type": "string"}}},
                             "description": "the fleet as an HTML page"},
                       **responses(401, 403)})
def fleet_page(request: Request, admin: Annotated[Admin, Depends(page_auth)]) -> Response:
    """The fleet view as a read-only HTML page (bearer token, or HTTP Basic with the
    token as the password)."""
    page = render(_fleet(request, admin))
    return Response(page, media_type="text/html; charset=utf-8", headers={
        **_NO_STORE, "Content-Security-Policy":
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff"})


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # not reached


def render(fleet: Fleet) -> str:
    """The page; every value from the store goes through html.escape."""
    def cell(value: object) -> str:
        return f"<td>{html.escape('-' if value is None else str(value), quote=True)}</td>"

    rows = []
    for d in fleet.devices:
        status = "revoked" if d.revoked_at else "stale" if d.stale else "ok"
        rows.append(
            f'<tr class="{status}">' + cell(d.id) + cell(d.name) + cell(status)
            + cell(d.last_heartbeat_at or "never") + cell(d.queue_depth)
            + cell(_size(d.free_disk_bytes)) + cell(d.app_version) + cell(d.last_error)
            + cell(d.enrolled_at) + "</tr>")
    body = "\n".join(rows) or '<tr><td colspan="9">No devices are enrolled.</td></tr>'
    stale_minutes = int(fleet.stale_after_s // 60)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Fleet - I Defend Rights central service</title>
<style>
body {{ font-family: sans-serif; margin: 1.5rem; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #999; padding: .3rem .6rem; text-align: left; }}
tr.stale td {{ background: #fde2c8; }}
tr.stale td:nth-child(3) {{ font-weight: bold; color: #8a2c00; }}
tr.revoked td {{ color: #777; text-decoration: line-through; }}
</style></head><body>
<h1>Fleet</h1>
<p>As of {html.escape(fleet.generated_at)} (UTC). A device is <strong>stale</strong> when it
has sent no heartbeat for {stale_minutes} minutes. This page is read-only.</p>
<table>
<thead><tr><th>Device</th><th>Name</th><th>Status</th><th>Last heartbeat (UTC)</th>
<th>Queue</th><th>Free disk</th><th>Version</th><th>Last error</th><th>Enrolled</th></tr>
</thead>
<tbody>
{body}
</tbody></table></body></html>
"""
