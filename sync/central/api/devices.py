"""Enrolment (a one-time code and the device's public key) and heartbeats."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from sync.envelope.errors import KeyFormatError
from sync.signing import VerifyKey

from ..core import hash_secret, make_device_id, make_device_token, normalise_code
from ..storage.base import AuditEvent
from .auth import DeviceDep, central
from .errors import ApiError, responses

router = APIRouter()


class EnrolRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: StrictStr = Field(max_length=64)
    public_key: StrictStr = Field(max_length=128)


class EnrolResponse(BaseModel):
    device_id: str
    token: str
    service_key: str


class Heartbeat(BaseModel):
    # Closed schema: an extra field (something personal) is refused, not ignored.
    model_config = ConfigDict(extra="forbid")
    queue_depth: Annotated[StrictInt, Field(ge=0, le=2**53 - 1)]
    free_disk_bytes: Annotated[StrictInt, Field(ge=0, le=2**63 - 1)] | None
    app_version: StrictStr = Field(max_length=32, pattern=r"^[0-9A-Za-z.+-]{1,32}$")
    last_error: StrictStr | None = Field(pattern=r"^[a-z0-9_]{1,64}$")


@router.post("/devices/enrol", status_code=201, response_model=EnrolResponse,
             responses=responses(400, 403))
def enrol(body: EnrolRequest, request: Request) -> EnrolResponse:
    """Trade a one-time enrolment code and the device's Ed25519 key for a token."""
    try:
        key = VerifyKey.parse(body.public_key)
    except (KeyFormatError, ValueError):
        raise ApiError(400, "bad_key", "public_key is not an idrverify1 key") from None
    code = normalise_code(body.code)
    svc = central(request)
    refused = ApiError(403, "enrol_code_refused",
                       "the enrolment code is wrong, expired or already used")
    if code is None:
        raise refused
    device_id = make_device_id()
    token = make_device_token()
    ok = svc.meta.enrol_device(hash_secret(code), time.time(), device_id, str(key),
                               hash_secret(token),
                               audit=AuditEvent(device_id, "device_enrolled", device_id))
    if not ok:
        raise refused
    return EnrolResponse(device_id=device_id, token=token, service_key=str(svc.key.verify_key))


@router.post("/devices/heartbeat", status_code=204, response_class=Response,
             responses=responses(400, 401))
def heartbeat(body: Heartbeat, request: Request,
              device: DeviceDep) -> Response:
    """The device's queue depth, free disk, version and last error code."""
    central(request).meta.record_heartbeat(device.id, time.time(), body.queue_depth,
                                           body.free_disk_bytes, body.app_version,
                                           body.last_error)
    return Response(status_code=204)
