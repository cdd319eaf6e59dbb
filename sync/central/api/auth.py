"""Bearer tokens: devices (``idrdev_...``) and vetters (``idrvet_...``), stored hashed.

The public catalog and its audio take either kind (:data:`ReaderDep`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..core import Central, hash_secret
from ..storage.base import Device, Vetter
from .errors import unauthorized

_device_scheme = HTTPBearer(auto_error=False, scheme_name="deviceToken",
                            description="a device token from POST /devices/enrol")
_vetter_scheme = HTTPBearer(auto_error=False, scheme_name="vetterToken",
                            description="a vetter token from `central vetter add`")


def central(request: Request) -> Central:
    value: Central = request.app.state.central
    return value


def _token(credentials: HTTPAuthorizationCredentials | None, prefix: str) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorized("unauthorized", "a bearer token is needed")
    token = credentials.credentials
    if not token.startswith(prefix) or len(token) > 200:
        raise unauthorized("unauthorized", "unknown token")
    return token


def device_auth(request: Request, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(_device_scheme)]) -> Device:
    token = _token(credentials, "idrdev_")
    device = central(request).meta.device_by_token(hash_secret(token))
    if device is None:
        raise unauthorized("unauthorized", "unknown token")
    if device.revoked_at is not None:
        raise unauthorized("revoked", "this device has been revoked")
    return device


def vetter_auth(request: Request, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(_vetter_scheme)]) -> Vetter:
    token = _token(credentials, "idrvet_")
    vetter = central(request).meta.vetter_by_token(hash_secret(token))
    if vetter is None:
        raise unauthorized("unauthorized", "unknown token")
    if vetter.revoked_at is not None:
        raise unauthorized("revoked", "this vetter token has been revoked")
    return vetter


DeviceDep = Annotated[Device, Depends(device_auth)]
VetterDep = Annotated[Vetter, Depends(vetter_auth)]


@dataclass(frozen=True)
class Reader:
    """Who reads the public catalog and audio: a kiosk or a vetter."""

    kind: str  # "device" or "vetter"
    id: str


def reader_auth(request: Request,
                device_credentials: Annotated[HTTPAuthorizationCredentials | None,
                                              Depends(_device_scheme)],
                vetter_credentials: Annotated[HTTPAuthorizationCredentials | None,
                                              Depends(_vetter_scheme)]) -> Reader:
    """A device token or a vetter token (the token's prefix says which)."""
    credentials = device_credentials or vetter_credentials
    if credentials is not None and credentials.credentials.startswith("idrvet_"):
        return Reader("vetter", vetter_auth(request, credentials).id)
    return Reader("device", device_auth(request, credentials).id)


ReaderDep = Annotated[Reader, Depends(reader_auth)]
