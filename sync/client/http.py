"""One HTTP request to the central service, with every limit explicit.

httpx's timeouts bound each network operation (connect, each read, each write, waiting
for a pooled connection), but a server, or a proxy, that trickles one byte just before
each read timeout could hold a request forever. So every request here also has an
overall deadline (``attempt_deadline_s``): the request body is handed to httpx in
64 KiB slices and the reply is read in pieces, and the deadline is checked between
them. A request therefore ends at most one network operation after its deadline.

Replies are read whole (they are small: tus answers have no body, JSON answers a few
KiB) into a :class:`Reply`, and every transport error becomes
:class:`~sync.client.errors.Transient` with the code ``network`` (or ``deadline``), so
callers deal with statuses only.

``transport`` is the seam for tests (``httpx.MockTransport``) and for the fault proxy.
"""

from __future__ import annotations

import email.utils
import functools
import json
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from .errors import Revoked, Transient, safe_code

__all__ = ["Reply", "Timeouts", "make_client", "send"]

#: The largest reply body read; anything longer is a misbehaving server.
MAX_REPLY_BYTES = 1024 * 1024
_SLICE = 64 * 1024


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 10.0
    read_s: float = 30.0
    write_s: float = 30.0
    pool_s: float = 10.0
    #: Overall limit for one request, body and reply included.
    attempt_deadline_s: float = 120.0

    def httpx(self, remaining: float) -> httpx.Timeout:
        return httpx.Timeout(connect=min(self.connect_s, remaining),
                             read=min(self.read_s, remaining),
                             write=min(self.write_s, remaining),
                             pool=min(self.pool_s, remaining))


DEFAULT_TIMEOUTS = Timeouts()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: httpx.Headers
    body: bytes
    url: httpx.URL

    def json(self) -> Any:
        """The body as JSON; None if it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None

    def error_code(self) -> str:
        """The ``error`` machine code of an error body, else ``http_<status>``."""
        doc = self.json()
        value = doc.get("error") if isinstance(doc, dict) else None
        return safe_code(value, f"http_{self.status}")

    def retry_after(self, *, now: float | None = None) -> float | None:
        """``Retry-After`` in seconds from now (delta-seconds or an HTTP date); None."""
        text = self.headers.get("retry-after")
        if text is None:
            return None
        text = text.strip()
        if text.isdigit():
            return float(text)
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when is None or when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - (time.time() if now is None else now))


def make_client(base_url: str, *, token: str | None = None,
                transport: httpx.BaseTransport | None = None,
                timeouts: Timeouts = DEFAULT_TIMEOUTS) -> httpx.Client:
    """An httpx client for the service at ``base_url``; the token goes in every request.

    Redirects are not followed: an upload or an index must reach the service it is
    addressed to, and a redirect would drop the body anyway.
    """
    headers = {"User-Agent": "idefendrights-kiosk"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=base_url, headers=headers, transport=transport,
                        timeout=timeouts.httpx(timeouts.attempt_deadline_s),
                        follow_redirects=False, verify=_tls_context())


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # httpx's default context (certificate checks on, its CA bundle), made once per
    # process: loading the CA bundle took 18 ms of every sync pass, and a context is
    # safe to share between clients and threads.
    return httpx.create_ssl_context()


class Body(Protocol):
    """A request body read as it is sent (a slice of a file), of a known length."""

    def __len__(self) -> int: ...

    def blocks(self) -> Iterator[bytes]: ...


def _sliced(data: bytes, check: Callable[[], float]) -> Iterator[memoryview]:
    # Views, not copies: the socket sends straight from the body.
    view = memoryview(data)
    for start in range(0, len(view), _SLICE):
        check()
        yield view[start:start + _SLICE]


def _checked(body: Body, check: Callable[[], float]) -> Iterator[bytes]:
    for block in body.blocks():
        check()
        yield block


def send(client: httpx.Client, method: str, url: str | httpx.URL, *, timeouts: Timeouts,
         headers: dict[str, str] | None = None, content: bytes | Body | None = None,
         json_body: Any = None, revoked_on_401: bool = True) -> Reply:
    """Send one request within ``timeouts.attempt_deadline_s``; raise Transient on trouble.

    A 401 raises :class:`Revoked` (unless ``revoked_on_401`` is false): no request of a
    device makes sense once its token is refused. ``content`` is bytes, or a
    :class:`Body` read as it goes (what its blocks raise is raised here).
    """
    deadline = time.monotonic() + timeouts.attempt_deadline_s

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Transient("deadline")
        return left

    headers = dict(headers or {})
    body: Any = None
    if json_body is not None:
        content = json.dumps(json_body, separators=(",", ":")).encode("utf-8")
        headers["Content-Type"] = "application/json"
    if content is not None:
        # An explicit length: httpx then sends the slices as one ordinary body (no
        # chunked encoding), which tus servers expect.
        headers["Content-Length"] = str(len(content))
        body = _sliced(content, remaining) if isinstance(content, bytes | bytearray) \
            else _checked(content, remaining)
    try:
        request = client.build_request(method, url, headers=headers, content=body,
                                       timeout=timeouts.httpx(remaining()))
        response = client.send(request, stream=True)
        try:
            pieces: list[bytes] = []
            size = 0
            for piece in response.iter_bytes():
                remaining()
                size += len(piece)
                if size > MAX_REPLY_BYTES:
                    raise Transient("reply_too_large", status=response.status_code)
                pieces.append(piece)
            remaining()  # an empty body is no excuse
        finally:
            response.close()
    except httpx.TimeoutException:
        raise Transient("network") from None
    except httpx.TransportError:
        raise Transient("network") from None
    except httpx.StreamError:
        raise Transient("network") from None
    reply = Reply(response.status_code, response.headers, b"".join(pieces), response.url)
    if reply.status == 401 and revoked_on_401:
        raise Revoked(safe_code(reply.error_code(), "unauthorized"), status=401)
    return reply


def transient_for(reply: Reply) -> Transient:
    """The Transient error for a busy or failing service's reply."""
    retry = reply.retry_after()
    if reply.status == 423:
        return Transient("locked", status=423, retry_after=retry)
    if reply.status == 429:
        return Transient("rate_limited", status=429, retry_after=retry)
    if reply.status == 507:
        return Transient("storage_full", status=507, retry_after=retry)
    if reply.status >= 500:
        return Transient("server_error", status=reply.status, retry_after=retry)
    return Transient(f"http_{reply.status}", status=reply.status, retry_after=retry)


#: Statuses that mean "the service is busy or failing: stop this pass, come back later".
TRANSIENT_STATUSES = frozenset({408, 423, 429, 500, 502, 503, 504, 507})
