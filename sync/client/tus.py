"""A tus 1.0.0 client for the kiosk: create, HEAD, PATCH in checksummed chunks.

Only what the kiosk needs (creation and checksum extensions), on top of
:func:`sync.client.http.send`. Every PATCH carries ``Upload-Checksum: sha256 ...`` of
its chunk, so the service keeps a chunk whole or not at all; after a cut, a HEAD
tells where the service's copy ends and the upload goes on from there, so a cut costs
at most the chunk that was in flight.

:func:`upload_file` drives one file. Where the upload URL lives between passes is the
caller's business (``url`` in, ``remember``/``forget`` callbacks): the kiosk commits
it to its store *before* the first PATCH, so that a crash never leaves bytes on the
service that the kiosk cannot find again.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from sync.wire import API, TUS_VERSION, checksum_header, encode_metadata

from .errors import Rejected, Stopped, Transient
from .http import TRANSIENT_STATUSES, Reply, Timeouts, send, transient_for

UPLOADS = f"{API}/uploads/"
#: A chunk the service refused for a checksum mismatch (460) is sent again this often.
CHECKSUM_RESENDS = 3
#: A finished file's upload vanished on the service (404/410) this often: give up.
RECREATES = 2


class UploadGone(Exception):
    """The upload URL no longer names an upload of ours (404, 410, 403)."""


class OffsetMismatch(Exception):
    def __init__(self, offset: int | None) -> None:
        super().__init__(offset)
        self.offset = offset


class ChecksumMismatch(Exception):
    """The service's SHA-256 of the chunk is not ours (460): the bytes were damaged."""


def _int_header(reply: Reply, name: str) -> int:
    text = reply.headers.get(name)
    if text is None or not text.isdigit():
        raise Transient("bad_tus_reply", status=reply.status)
    return int(text)


class TusClient:
    def __init__(self, client: httpx.Client, *, timeouts: Timeouts) -> None:
        self.client = client
        self.timeouts = timeouts

    def _send(self, method: str, url: str, **kwargs: object) -> Reply:
        headers = {"Tus-Resumable": TUS_VERSION, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        return send(self.client, method, url, timeouts=self.timeouts, headers=headers,
                    **kwargs)  # type: ignore[arg-type]

    def _trouble(self, reply: Reply) -> Exception:
        if reply.status in TRANSIENT_STATUSES:
            return transient_for(reply)
        return Transient(f"http_{reply.status}", status=reply.status)

    def create(self, length: int, metadata: dict[str, str]) -> str:
        """POST a new upload of ``length`` bytes; returns its absolute URL."""
        reply = self._send("POST", UPLOADS, headers={
            "Upload-Length": str(length), "Upload-Metadata": encode_metadata(metadata)})
        if reply.status == 201 and reply.headers.get("location"):
            return str(reply.url.join(reply.headers["location"]))
        if reply.status == 413:
            raise Rejected("too_large", status=413)
        if reply.status == 400:
            raise Rejected(reply.error_code(), status=400)
        raise self._trouble(reply)

    def head(self, url: str) -> tuple[int, int]:
        """(offset, length) of the service's copy."""
        reply = self._send("HEAD", url, headers={"Cache-Control": "no-store"})
        if reply.status in (200, 204):
            return _int_header(reply, "upload-offset"), _int_header(reply, "upload-length")
        if reply.status in (403, 404, 410):
            raise UploadGone(reply.status)
        raise self._trouble(reply)

    def patch(self, url: str, offset: int, data: bytes) -> int:
        """Send ``data`` at ``offset``; returns the service's new offset."""
        reply = self._send("PATCH", url, content=data, headers={
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            "Upload-Checksum": checksum_header("sha256", hashlib.sha256(data).digest())})
        if reply.status in (200, 204):
            return _int_header(reply, "upload-offset")
        if reply.status == 409:
            text = reply.headers.get("upload-offset")
            raise OffsetMismatch(int(text) if text and text.isdigit() else None)
        if reply.status == 460:
            raise ChecksumMismatch()
        if reply.status in (403, 404, 410):
            raise UploadGone(reply.status)
        raise self._trouble(reply)


@dataclass(frozen=True)
class LocalFile:
    """One sealed file to upload: its part name (as the index names it) and what the
    store says its size and SHA-256 are."""

    name: str
    path: Path
    size: int
    sha256: str


def check_local_file(file: LocalFile, *, stop: threading.Event | None = None) -> None:
    """Raise Rejected unless the file on disk is exactly what was sealed.

    Never upload bytes the store does not vouch for: the service would refuse the
    index anyway, but a damaged file must reach staff as such, not loop forever.
    """
    digest = hashlib.sha256()
    size = 0
    try:
        with open(file.path, "rb") as f:
            while block := f.read(1024 * 1024):
                digest.update(block)
                size += len(block)
                if stop is not None and stop.is_set():
                    raise Stopped()
    except FileNotFoundError:
        raise Rejected("local_file_missing") from None
    except IsADirectoryError:
        raise Rejected("local_file_damaged") from None
    if size != file.size or digest.hexdigest() != file.sha256:
        raise Rejected("local_file_damaged")


@dataclass
class UploadCounters:
    #: Bytes put in PATCH bodies (sent on the wire, whether the service kept them or not).
    sent_bytes: int = 0
    #: Chunks sent again after a 460.
    resent_chunks: int = 0


def upload_file(tus: TusClient, file: LocalFile, *, submission_id: str, url: str | None,
                remember: Callable[[str], None], forget: Callable[[], None],
                chunk_bytes: int, counters: UploadCounters,
                stop: threading.Event | None = None,
                on_offset: Callable[[int], None] | None = None) -> None:
    """Make the service's upload of ``file`` complete, resuming from its offset.

    ``url``: the upload URL committed by an earlier attempt, or None. ``remember(url)``
    must commit a new URL durably before it returns (it is called before the first
    PATCH); ``forget()`` drops a URL the service no longer knows. ``on_offset(n)``
    reports the service's offset after every chunk (progress).
    """
    recreated = 0
    resends = 0
    offset = 0
    if url is not None:
        try:
            offset, length = tus.head(url)
            if length != file.size or offset > file.size:
                forget()  # not an upload of this file (a store mix-up): start afresh
                url = None
        except UploadGone:
            forget()
            url = None
    with open(file.path, "rb") as f:
        while True:
            if url is None:
                if recreated >= RECREATES:
                    raise Transient("upload_gone")
                recreated += 1
                url = tus.create(file.size, {"submission_id": submission_id,
                                             "part": file.name})
                remember(url)
                offset = 0
            if on_offset is not None:
                on_offset(offset)
            if offset >= file.size:
                return
            if stop is not None and stop.is_set():
                raise Stopped()
            f.seek(offset)
            data = f.read(min(chunk_bytes, file.size - offset))
            if len(data) != min(chunk_bytes, file.size - offset):
                raise Rejected("local_file_damaged")  # shrank since it was checked
            counters.sent_bytes += len(data)
            try:
                new_offset = tus.patch(url, offset, data)
            except OffsetMismatch:
                # The service's copy does not end where we thought (an earlier attempt
                # was cut after the service kept its chunk): ask, and go on from there.
                offset, url = _where(tus, url, file, forget)
                continue
            except ChecksumMismatch:
                resends += 1
                counters.resent_chunks += 1
                if resends > CHECKSUM_RESENDS:
                    raise Transient("checksum_mismatch", status=460) from None
                continue
            except UploadGone:
                forget()
                url = None
                continue
            if new_offset != offset + len(data):
                # The service must have moved by exactly this chunk; anything else is
                # checked against its own view before another byte goes.
                offset, url = _where(tus, url, file, forget)
                continue
            offset = new_offset


def _where(tus: TusClient, url: str, file: LocalFile,
           forget: Callable[[], None]) -> tuple[int, str | None]:
    """(the service's offset, url), or (0, None) if the upload is gone or not this file."""
    try:
        offset, length = tus.head(url)
    except UploadGone:
        forget()
        return 0, None
    if length != file.size or offset > file.size:
        forget()
        return 0, None
    return offset, url
