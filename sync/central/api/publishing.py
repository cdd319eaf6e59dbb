"""The public side: story audio and the signed catalog kiosks play.

* ``PUT /stories/{story_id}.ogg`` (vetter): the audio, checked against
  ``X-Content-SHA256``, stored content-addressed (``public/<story_id>/<sha256>.ogg``),
  never overwritten; the same bytes again change nothing.
* ``GET /stories/{story_id}.ogg`` (device or vetter): the audio the newest catalog
  names for the story, with an ETag and a single Range. A device gets only stories of
  that catalog (a taken-down story is gone for kiosks at once); a vetter also gets the
  newest upload of a story not yet in any catalog, to check it before publishing.
* ``PUT /catalog`` (vetter): the service checks what it can check without being trusted
  (DESIGN.md, threat model 2): the signature under the pinned publishing key, a version
  strictly newer than the stored one (a UNIQUE version decides between racing
  writers), every story's audio stored with that SHA-256 and size, and no story of a
  withdrawn submission. It cannot make or alter a catalog: kiosks check the signature
  themselves against the key they pinned at setup.
* ``GET /catalog`` and ``GET /catalog.sig`` (device or vetter): the exact bytes, with
  ``ETag: "<sha256 of the bytes>"`` and 304 for a matching ``If-None-Match``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from sync import catalog as catalog_format
from sync.vetting import is_story_id

from ..core import Central
from ..storage.base import AuditEvent, ChecksumMismatch, StaleCatalog, StoredCatalog
from .auth import ReaderDep, VetterDep, central
from .body import Spool, receive_body
from .errors import ApiError, ErrorBody, responses
from .vetters import byte_range

log = logging.getLogger("central")
router = APIRouter()
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: The catalog text travels inside JSON, where escaping can double it, plus the signature.
MAX_CATALOG_BODY = 2 * catalog_format.MAX_CATALOG_BYTES + 4096
_OGG = b"OggS"


class AudioStored(BaseModel):
    story_id: str
    sha256: str
    size: int


class CatalogStored(BaseModel):
    version: int


class AudioMissingBody(ErrorBody):
    stories: list[str]


def _etag(digest: str) -> str:
    return f'"{digest}"'


def _matches(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    candidates = [t.strip() for t in header.split(",")]
    return "*" in candidates or etag in candidates or f"W/{etag}" in candidates


def _not_modified(etag: str) -> Response:
    return Response(status_code=304, headers={"ETag": etag, "Cache-Control": "no-cache"})


# -- story audio -----------------------------------------------------------------------------

_AUDIO_BODY = {"required": True, "content": {"audio/ogg": {
    "schema": {"type": "string", "format": "binary"}}}}
_SHA_HEADER = [{"name": "X-Content-SHA256", "in": "header", "required": True,
                "description": "SHA-256 of the body, 64 lower-case hex digits",
                "schema": {"type": "string"}}]


@router.put("/stories/{story_id}.ogg", status_code=201, response_model=AudioStored,
            responses=responses(400, 401, 413, 415, 507),
            openapi_extra={"requestBody": _AUDIO_BODY, "parameters": _SHA_HEADER})
async def put_audio(story_id: str, request: Request, vetter: VetterDep) -> AudioStored:
    """Store a story's public audio (Ogg/Opus), checked against X-Content-SHA256."""
    svc = central(request)
    if not is_story_id(story_id):
        raise ApiError(400, "bad_story_id", "a story id is 1 to 64 lower-case letters,"
                                            " digits, '-' or '_'")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "audio/ogg":
        raise ApiError(415, "bad_content_type", "Content-Type must be audio/ogg")
    expected = request.headers.get("x-content-sha256", "").strip().lower()
    if not _SHA256.fullmatch(expected):
        raise ApiError(400, "bad_checksum", "X-Content-SHA256 must be 64 hex digits")
    limit = svc.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the audio is larger than {limit} bytes")
    spool = await run_in_threadpool(Spool, svc.tmp, "sha256")
    try:
        try:
            outcome = await receive_body(request, idle_timeout=svc.settings.body_idle_timeout,
                                          write=spool.write, limit=limit)
        except ClientDisconnect:
            outcome = "cut"
        if outcome == "too_large":
            raise ApiError(413, "too_large", f"the audio is larger than {limit} bytes")
        if outcome is not None:
            raise ApiError(400, "body_incomplete", "the request body stopped before its end")
        assert spool.digest is not None
        if spool.digest.hexdigest() != expected:
            raise ApiError(400, "checksum_mismatch", "the body does not match X-Content-SHA256")
        if spool.size == 0 or not await run_in_threadpool(_is_ogg, spool):
            raise ApiError(400, "not_ogg", "the body is not an Ogg stream")
        try:
            size = await run_in_threadpool(svc.blobs.put_public_audio, story_id, expected,
                                           spool.chunks())
        except ChecksumMismatch:
            raise ApiError(400, "checksum_mismatch",
                           "the body does not match X-Content-SHA256") from None
        except OSError as exc:
            if exc.errno == 28:
                raise ApiError(507, "storage_full", "the service is out of disk space") \
                    from None
            raise
        # The row after the blob is durable: a crash in between leaves a file nobody
        # names, which the next identical PUT adopts.
        await run_in_threadpool(svc.meta.add_public_audio, story_id, expected, size,
                                time.time(),
                                audit=AuditEvent(vetter.id, "audio_stored",
                                                 f"{story_id}/{expected}"))
        return AudioStored(story_id=story_id, sha256=expected, size=size)
    finally:
        await run_in_threadpool(spool.close)


def _is_ogg(spool: Spool) -> bool:
    head = next(spool.chunks(), b"")
    return head.startswith(_OGG)


_story_maps: dict[int, tuple[str, dict[str, tuple[str, int]]]] = {}


def _current_stories(svc: Central) -> dict[str, tuple[str, int]]:
    """story id -> (sha256, size) in the newest catalog, parsed once per catalog."""
    head = svc.meta.latest_catalog(with_data=False)
    if head is None:
        return {}
    cached = _story_maps.get(id(svc))
    if cached is not None and cached[0] == head.sha256:
        return cached[1]
    current = svc.meta.latest_catalog(with_data=True)
    assert current is not None
    stories = {s.id: (s.audio_sha256, s.size)
               for s in catalog_format.parse(current.data).stories}
    _story_maps[id(svc)] = (current.sha256, stories)
    return stories


def _audio_for(svc: Central, story_id: str, reader_kind: str) -> tuple[str, int] | None:
    found = _current_stories(svc).get(story_id)
    if found is not None:
        return found
    if reader_kind == "vetter":
        return svc.meta.latest_public_audio(story_id)
    return None


_AUDIO_OUT = {"content": {"audio/ogg": {"schema": {"type": "string", "format": "binary"}}}}


@router.get("/stories/{story_id}.ogg", response_class=StreamingResponse,
            responses={200: {**_AUDIO_OUT, "description": "the story's audio"},
                       206: {**_AUDIO_OUT, "description": "the requested byte range"},
                       304: {"description": "not modified"},
                       **responses(401, 404, 416)})
def get_audio(story_id: str, request: Request, reader: ReaderDep) -> Response:
    """A published story's audio (device or vetter token), with a single Range."""
    svc = central(request)
    if not is_story_id(story_id):
        raise ApiError(404, "not_found", "no such story")
    found = _audio_for(svc, story_id, reader.kind)
    if found is None:
        raise ApiError(404, "not_found", "no such story")
    sha256, expected_size = found
    size = svc.blobs.public_audio_size(story_id, sha256)
    if size is None or size != expected_size:
        log.error("audio_missing story %s", story_id)
        raise ApiError(404, "not_found", "the story's audio is missing on the service")
    etag = _etag(sha256)
    if _matches(request, etag) and request.headers.get("range") is None:
        return _not_modified(etag)
    wanted = byte_range(request.headers.get("range"), size)
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Cache-Control": "no-cache"}
    if wanted is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(svc.blobs.read_public_audio(story_id, sha256),
                                 media_type="audio/ogg", headers=headers)
    start, end = wanted
    headers["Content-Length"] = str(end - start)
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamingResponse(svc.blobs.read_public_audio(story_id, sha256, start, end),
                             status_code=206, media_type="audio/ogg", headers=headers)


# -- the catalog ---------------------------------------------------------------------------

_CATALOG_BODY = {
    "type": "object", "additionalProperties": False, "required": ["catalog", "signature"],
    "properties": {
        "catalog": {"type": "string", "description": "the exact catalog.json text"},
        "signature": {"type": "string", "description": "idrsig1... by the publishing key"}},
}


@router.put("/catalog", status_code=201, response_model=CatalogStored,
            responses={200: {"model": CatalogStored,
                             "description": "this very catalog is already the current one"},
                       **responses(400, 401, 409, 413),
                       422: {"model": AudioMissingBody,
                             "description": "stories whose audio is not stored"}},
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/json": {"schema": _CATALOG_BODY}}}})
async def put_catalog(request: Request, vetter: VetterDep) -> Response:
    """Publish a catalog signed by the publishing key (checked: signature, version,
    audio)."""
    svc = central(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_CATALOG_BODY:
        raise ApiError(413, "too_large", "the catalog is too large")
    raw = bytearray()
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_CATALOG_BODY:
                raise ApiError(413, "too_large", "the catalog is too large")
    except ClientDisconnect:
        raise ApiError(400, "bad_catalog", "the request body stopped before its end") \
            from None
    return await run_in_threadpool(_publish, svc, vetter.id, bytes(raw))


def _body(raw: bytes) -> tuple[bytes, str]:
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ApiError(400, "bad_catalog", "the body is not JSON") from None
    if not isinstance(body, dict) or set(body) != {"catalog", "signature"} \
            or not isinstance(body["catalog"], str) or not isinstance(body["signature"], str):
        raise ApiError(400, "bad_catalog",
                       'the body must be {"catalog": "<text>", "signature": "<text>"}')
    try:
        return body["catalog"].encode("utf-8"), body["signature"].strip()
    except UnicodeEncodeError:
        raise ApiError(400, "bad_catalog", "the catalog is not UTF-8 text") from None


def _publish(svc: Central, vetter_id: str, raw: bytes) -> Response:
    data, signature = _body(raw)
    key = svc.publisher_key()
    if key is None:
        raise ApiError(409, "no_publisher_key", "no publishing key is set: run `central"
                                                " set-publisher-key` first")
    try:
        catalog = catalog_format.verify(data, signature, key)
    except catalog_format.BadSignature:
        raise ApiError(400, "bad_signature",
                       "the catalog is not signed by the pinned publishing key") from None
    except catalog_format.CatalogError as exc:
        raise ApiError(400, "bad_catalog", str(exc)[:300]) from None
    digest = hashlib.sha256(data).hexdigest()
    current = svc.meta.latest_catalog(with_data=False)
    if current is not None and current.sha256 == digest and current.version == catalog.version:
        # The very catalog already served: a retry after a lost reply.
        return Response(CatalogStored(version=catalog.version).model_dump_json(),
                        status_code=200, media_type="application/json")
    try:
        catalog_format.check_newer(catalog, None if current is None else current.version)
    except catalog_format.StaleCatalog:
        raise ApiError(409, "stale_catalog", f"version {catalog.version} is not newer than"
                                             f" the current {current.version if current else 0}"
                       ) from None
    missing = [story.id for story in catalog.stories
               if svc.meta.public_audio_size(story.id, story.audio_sha256) != story.size
               or svc.blobs.public_audio_size(story.id, story.audio_sha256) != story.size]
    if missing:
        raise ApiError(422, "audio_missing", "some stories have no stored audio with that"
                                             " SHA-256 and size", stories=missing)
    withdrawn = sorted(svc.meta.withdrawn_story_ids(s.id for s in catalog.stories))
    if withdrawn:
        raise ApiError(409, "withdrawn_story", "the catalog holds stories whose defenders"
                                               " withdrew them", stories=withdrawn)
    try:
        svc.meta.put_catalog(
            StoredCatalog(catalog.version, data, signature, digest, time.time()),
            audit=AuditEvent(vetter_id, "catalog_published",
                             f"v{catalog.version} stories={len(catalog.stories)}"))
    except StaleCatalog:
        raise ApiError(409, "stale_catalog", f"version {catalog.version} is not newer than"
                                             " the current one") from None
    return Response(CatalogStored(version=catalog.version).model_dump_json(), status_code=201,
                    media_type="application/json")


@router.get("/catalog", response_class=Response,
            responses={200: {"content": {"application/json": {"schema": {"type": "object"}}},
                             "description": "the catalog's exact bytes"},
                       304: {"description": "not modified"}, **responses(401, 404)})
def get_catalog(request: Request, reader: ReaderDep) -> Response:
    """The newest signed catalog, byte for byte (ETag, 304)."""
    svc = central(request)
    head = svc.meta.latest_catalog(with_data=False)
    if head is None:
        raise ApiError(404, "no_catalog", "nothing has been published yet")
    etag = _etag(head.sha256)
    if _matches(request, etag):
        return _not_modified(etag)
    current = svc.meta.latest_catalog(with_data=True)
    assert current is not None
    return Response(current.data, media_type="application/json",
                    headers={"ETag": _etag(current.sha256), "Cache-Control": "no-cache"})


@router.get("/catalog.sig", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "the catalog's signature (idrsig1...)"},
                       304: {"description": "not modified"}, **responses(401, 404)})
def get_catalog_signature(request: Request, reader: ReaderDep) -> Response:
    """The newest catalog's detached signature (ETag over the signature's bytes)."""
    svc = central(request)
    head = svc.meta.latest_catalog(with_data=False)
    if head is None:
        raise ApiError(404, "no_catalog", "nothing has been published yet")
    data = head.signature.encode("ascii")
    etag = _etag(hashlib.sha256(data).hexdigest())
    if _matches(request, etag):
        return _not_modified(etag)
    return Response(data, media_type="text/plain", headers={"ETag": etag,
                                                            "Cache-Control": "no-cache"})
