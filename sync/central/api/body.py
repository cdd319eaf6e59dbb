"""Request bodies read as they arrive and handed, a megabyte at a time, to a blocking
writer in a worker thread.

One write is in flight while the event loop reads on: the thread hashes and writes
(hashlib and ``os.pwrite`` release the GIL) while the loop takes in the next megabyte,
so the two use both cores instead of taking turns. Every read has an idle timeout, so a
stalled client cannot hold a request (and the upload's lock) forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

FLUSH_BYTES = 1024 * 1024
READ_BYTES = 1024 * 1024


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


class Crc32:
    """zlib's CRC-32 in hashlib's shape (4 bytes, big-endian), for ``Upload-Checksum``.

    A chunk's checksum guards it against accidental damage on the way (TLS guards it
    against anyone on the path); what the service stores is checked end to end against
    the SHA-256 in the device-signed index. CRC-32 runs at 5 GB/s here, SHA-256 at
    1.6 GB/s: on this 2-core machine a SHA-256 per chunk on both ends was the CPU that
    kept an upload from keeping up with a plain PUT.
    """

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes, /) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


#: ``Upload-Checksum`` algorithms, in the order ``Tus-Checksum-Algorithm`` lists them
#: (sha1 is the one tus requires every server to have).
DIGESTS: dict[str, Callable[[], Digest]] = {
    "crc32": Crc32, "sha1": hashlib.sha1, "sha256": hashlib.sha256}

#: How a body ended short: "cut" (the client went), "timeout" (it stalled), "too_large"
#: (it went past the limit; the rest was not read). None: it arrived whole.
Outcome = str | None


async def receive_body(request: Request, *, idle_timeout: float,
                       write: Callable[[bytes], None], limit: int) -> Outcome:
    """Stream the body to ``write`` in order; what ``write`` raises is raised here.

    When this returns or raises, no write is running any more (unless the request
    itself was cancelled: then one may finish late, past the caller's committed offset,
    where the next append drops it).
    """
    stream = request.stream().__aiter__()
    pending: list[bytes] = []
    pending_size = handed = 0
    in_flight: asyncio.Future[None] | None = None
    outcome: Outcome = None

    async def hand_over() -> None:
        nonlocal in_flight, pending, pending_size, handed
        if in_flight is not None:
            await in_flight
        in_flight = asyncio.ensure_future(run_in_threadpool(write, b"".join(pending)))
        handed += pending_size
        pending, pending_size = [], 0

    try:
        while True:
            try:
                with anyio.fail_after(idle_timeout):
                    data = await stream.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError:
                outcome = "timeout"
                break
            except ClientDisconnect:
                outcome = "cut"
                break
            if not data:
                continue
            if handed + pending_size + len(data) > limit:
                return "too_large"
            pending.append(data)
            pending_size += len(data)
            if pending_size >= FLUSH_BYTES:
                await hand_over()
        if pending:
            await hand_over()
        if in_flight is not None:
            await in_flight
        return outcome
    finally:
        if in_flight is not None and not in_flight.done():
            # Leaving early (too large, an error): let the write end before the caller
            # cuts the file back, without raising its outcome over ours.
            await asyncio.wait([in_flight])
        if in_flight is not None and in_flight.done() and not in_flight.cancelled():
            in_flight.exception()  # retrieved: never "exception was never retrieved"


class Spool:
    """A temp file in the data directory, written and hashed as a body arrives (for
    bodies that must be looked at whole before they are stored, such as story audio)."""

    def __init__(self, folder: Path, algorithm: str | None) -> None:
        self.path = folder / f"chunk-{secrets.token_hex(8)}"
        self.file: BinaryIO = self.path.open("xb")
        self.digest: Digest | None = DIGESTS[algorithm]() if algorithm else None
        self.size = 0

    def write(self, data: bytes) -> None:
        if self.digest is not None:
            self.digest.update(data)
        self.file.write(data)
        self.size += len(data)

    def chunks(self) -> Iterator[bytes]:
        self.file.flush()
        with self.path.open("rb") as source:
            while data := source.read(READ_BYTES):
                yield data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        self.path.unlink(missing_ok=True)
