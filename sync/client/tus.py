"""A tus 1.0.0 client for the kiosk: create, HEAD, PATCH in checksummed chunks.

Only what the kiosk needs (creation and checksum extensions), on top of
:func:`sync.client.http.send`. Every PATCH carries ``Upload-Checksum: crc32 ...`` of
its chunk (damage on the way; the whole file is checked against the signed index's
SHA-256 by the service), so the service keeps a chunk whole or not at all; after a cut, a HEAD
tells where the service's copy ends and the upload goes on from there, so a cut costs
at most the chunk that was in flight.

:func:`upload_file` drives one file. Where the upload URL lives between passes is the
caller's business (``url`` in, ``remember``/``forget`` callbacks): the kiosk commits
it to its store *before* the first PATCH, so that a crash never leaves bytes on the
service that the kiosk cannot find again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import stat
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import httpx

from sync.wire import API, TUS_VERSION, checksum_header, encode_metadata

from .errors import Rejected, Stopped, Transient
from .http import TRANSIENT_STATUSES, Body, Reply, Timeouts, send, transient_for

UPLOADS = f"{API}/uploads/"
#: A chunk the service refused for a checksum mismatch (460) is sent again this often.
CHECKSUM_RESENDS = 3
#: A finished file's upload vanished on the service (404/410) this often: give up.
RECREATES = 2
#: Chunks start at ``chunk_bytes`` and double while one is answered within GROW_WITHIN_S,
#: up to ``max_chunk_bytes``; one slower than SHRINK_AFTER_S halves them again (never
#: below ``chunk_bytes``). On a fast link that saves a round trip and a
#: durable commit on the service per 4 MiB (on loopback, 16 chunks of 4 MiB cost about
#: twice one PUT of the same 64 MiB); on a slow one chunks stay small, so a cut still
#: costs little. Two chunks are in memory at once (one sent, the next read ahead).
GROW_WITHIN_S = 0.5
SHRINK_AFTER_S = 10.0


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

    def patch(self, url: str, offset: int, data: bytes | Body,
              crc32: bytes | None = None) -> int:
        """Send ``data`` (bytes, or a body read as it is sent, whose CRC-32 is then
        ``crc32``) at ``offset``; returns the service's new offset."""
        if crc32 is None:
            assert isinstance(data, bytes), "a streamed body comes with its checksum"
            crc32 = zlib.crc32(data).to_bytes(4, "big")
        reply = self._send("PATCH", url, content=data, headers={
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            "Upload-Checksum": checksum_header("crc32", crc32)})
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


class _SealedReader:
    """Chunks of one sealed file: their CRC-32 for ``Upload-Checksum`` first (read ahead,
    while the previous chunk is on the wire), then the bytes themselves, read again
    from the page cache as they are sent, like any file upload: no chunk is ever held
    in memory whole (a kiosk has little), and no buffer is filled only to be copied.

    The file's size is checked here; its bytes are checked end to end by the service
    against the SHA-256 in the signed index, and when the service finds a part that
    does not match, push.py checks the local file (a damaged one goes to staff as
    rejected instead of being sent forever). Bytes that change between the checksum and
    the send are refused by the service (460) and sent again.
    """

    BLOCK = 256 * 1024

    def __init__(self, fd: int, file: LocalFile) -> None:
        self.fd = fd
        self.file = file
        if os.fstat(fd).st_size != file.size:
            raise Rejected("local_file_damaged")

    def blocks(self, offset: int, size: int) -> Iterator[bytes]:
        # pread: no file position, so the checksum of the next chunk can be read in
        # another thread while this one is sent.
        end = offset + size
        while offset < end:
            block = os.pread(self.fd, min(self.BLOCK, end - offset), offset)
            if not block:
                raise Rejected("local_file_damaged")  # shrank since it was sealed
            offset += len(block)
            yield block

    def chunk(self, offset: int, size: int) -> _Chunk:
        crc = 0
        for block in self.blocks(offset, size):
            crc = zlib.crc32(block, crc)
        return _Chunk(self, offset, size, crc.to_bytes(4, "big"))


class _Fd:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        os.close(self.fd)


@functools.cache
def _reader_pool() -> ThreadPoolExecutor:
    # Made once per process: starting a thread for each upload took 13 ms of it on a
    # busy machine. Each upload has at most one read in this pool at a time.
    return ThreadPoolExecutor(4, thread_name_prefix="upload-read")


@dataclass(frozen=True)
class _Chunk:
    """A chunk to send: a :class:`sync.client.http.Body` read from the file."""

    reader: _SealedReader
    offset: int
    size: int
    crc32: bytes

    def __len__(self) -> int:
        return self.size

    def blocks(self) -> Iterator[bytes]:
        return self.reader.blocks(self.offset, self.size)


def upload_file(tus: TusClient, file: LocalFile, *, submission_id: str, url: str | None,
                remember: Callable[[str], None], forget: Callable[[], None],
                chunk_bytes: int, counters: UploadCounters,
                max_chunk_bytes: int | None = None,
                stop: threading.Event | None = None,
                on_offset: Callable[[int], None] | None = None) -> None:
    """Make the service's upload of ``file`` complete, resuming from its offset.

    ``url``: the upload URL committed by an earlier attempt, or None. ``remember(url)``
    must commit a new URL durably before it returns (it is called before the first
    PATCH); ``forget()`` drops a URL the service no longer knows. ``on_offset(n)``
    reports the service's offset after every chunk (progress). A file whose size is not
    what the store sealed raises :class:`Rejected`.
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
    try:
        fd = os.open(file.path, os.O_RDONLY)
    except FileNotFoundError:
        raise Rejected("local_file_missing") from None
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise Rejected("local_file_damaged")
    # A thread reads and checksums the next chunk while this one is on the wire: the
    # kiosk's reading then overlaps the service's work instead of adding to it.
    reader_thread = _reader_pool()
    with contextlib.closing(_Fd(fd)):
        reader = _SealedReader(fd, file)
        ahead: tuple[int, int, Future[_Chunk]] | None = None  # (offset, size, its read)
        size = chunk_bytes
        largest = max(chunk_bytes, max_chunk_bytes or chunk_bytes)

        def read_ahead(at: int, *, grown: bool = False) -> tuple[int, int, Future[_Chunk]]:
            wanted = min(min(size * 2, largest) if grown else size, file.size - at)
            return at, wanted, reader_thread.submit(reader.chunk, at, wanted)

        def chunk_at(at: int) -> _Chunk:
            nonlocal ahead
            if ahead is None or ahead[:2] != (at, min(size, file.size - at)):
                # Not the read this chunk needs (a resend, a cut, a new chunk size):
                # let it end (the file's position is shared), then read what is needed.
                if ahead is not None:
                    wait([ahead[2]])
                ahead = read_ahead(at)
            chunk = ahead[2].result()
            following = at + chunk.size
            # Read the next chunk at the size it will have if this one goes fast (on a
            # fast link it does; on a slow one the read is redone at the size kept,
            # which costs nothing next to the link).
            ahead = read_ahead(following, grown=chunk.size == size) \
                if following < file.size else None
            return chunk

        try:
            chunk: _Chunk | None = None
            while True:
                if url is None:
                    if recreated >= RECREATES:
                        raise Transient("upload_gone")
                    if file.size and chunk is None:
                        chunk = chunk_at(0)  # a file that cannot be read makes no upload
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
                if chunk is None or chunk.offset != offset:
                    chunk = chunk_at(offset)
                counters.sent_bytes += chunk.size
                began = time.monotonic()
                try:
                    new_offset = tus.patch(url, offset, chunk, chunk.crc32)
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
                if new_offset != offset + chunk.size:
                    # The service must have moved by exactly this chunk; anything else is
                    # checked against its own view before another byte goes.
                    offset, url = _where(tus, url, file, forget)
                    continue
                offset = new_offset
                took = time.monotonic() - began
                if took < GROW_WITHIN_S and chunk.size == size:
                    size = min(size * 2, largest)
                elif took > SHRINK_AFTER_S:
                    size = max(size // 2, chunk_bytes)
        finally:
            if ahead is not None:
                wait([ahead[2]])  # the file closes next: no read may be left on it


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
