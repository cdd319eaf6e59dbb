"""A loopback TCP proxy that breaks connections on purpose, for the sync fault tests.

The kiosk talks to ``central`` through it; a test decides what the "network" does:

* ``Fault("pass")``: forward both ways (the default);
* ``Fault("reset", after=N)``: after N bytes of the client->server stream, reset both
  connections (``SO_LINGER`` 0, so the peers see RST, not FIN);
* ``Fault("stall", after=N, seconds=S)``: stop forwarding both ways, sockets kept open,
  for S seconds (``None``: until :meth:`FaultProxy.release` or the proxy stops);
* ``Fault("truncate", after=N)``: close both connections cleanly (FIN) after N bytes;
* ``Fault("http_error", after=N, status=503, retry_after=2, count=K)``: stop
  forwarding at byte N (the upstream connection is reset, so the service sees a broken
  request), answer the client a canned HTTP error itself, then also answer the next
  K - 1 requests that start on any connection.

Where a fault applies:

* :meth:`FaultProxy.arm` is one-shot on the *aggregate* client->server stream: the
  fault fires on whichever connection carries byte number ``after`` counted from the
  moment it was armed. That is what "a cut at a random point of an upload" needs, since
  a client may open new connections at any time.
* :meth:`FaultProxy.queue` gives each of the next new connections its own fault, with
  ``after`` counted on that connection.
* :meth:`FaultProxy.set_default` is the fault of every connection with nothing queued;
  with ``live=True`` it is switched on the live connections too (``after`` counted from
  the switch).
* :meth:`FaultProxy.fail_requests` answers the next K requests with a canned error
  before anything of them is forwarded.

:meth:`FaultProxy.set_rate` throttles each direction to a bit rate with a token bucket
shared by all connections (one link), with a small burst, so that time a client spends
waiting is lost as it would be on a real link. ``bytes_up``/``bytes_down`` count what
was forwarded each way (written to the other side), ``fired`` lists the faults that
went off.

Everything runs on an asyncio loop in one daemon thread of the test process; the
control methods are thread-safe. Use it as a context manager::

    with FaultProxy("127.0.0.1", service_port) as proxy:
        proxy.arm(Fault("reset", after=200_000))
        run_client(proxy.url)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

FaultKind = Literal["pass", "reset", "stall", "truncate", "http_error"]
READ_SIZE = 65_536
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout", 429: "Too Many Requests"}


@dataclass(frozen=True)
class Fault:
    kind: FaultKind = "pass"
    #: Bytes of the client->server stream forwarded before the fault fires.
    after: int = 0
    #: For "stall": how long; None stalls until release() or stop().
    seconds: float | None = None
    #: For "http_error": the canned answer, and how many requests get one.
    status: int = 503
    retry_after: int | None = None
    count: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("pass", "reset", "stall", "truncate", "http_error"):
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.after < 0 or self.count < 1:
            raise ValueError("after must be >= 0 and count >= 1")


PASS = Fault("pass")


@dataclass
class Fired:
    """One fault that went off: where in the streams it hit."""

    kind: str
    connection: int
    #: Client->server bytes forwarded on that connection, and in total, when it fired.
    conn_up: int
    total_up: int
    at: float = field(default_factory=time.monotonic)


def canned_response(status: int, retry_after: int | None = None) -> bytes:
    """What a load balancer in trouble answers: a short non-JSON body, then close."""
    body = f"fault proxy: {status}\n".encode()
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            "Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}",
            "Connection: close"]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class RequestFramer:
    """Finds where HTTP/1.1 requests start in a client->server byte stream.

    Only observes (nothing is buffered): Content-Length and chunked bodies, no
    pipelining assumptions. Used to answer "the next K requests" with a canned error.
    """

    def __init__(self) -> None:
        self._state = "head"
        self._buf = b""
        self._left = 0  # body bytes left (length), or chunk bytes left (chunked)
        self.requests = 0

    @property
    def at_boundary(self) -> bool:
        return self._state == "head" and not self._buf

    def room(self) -> int:
        """Bytes that certainly belong to the current request (0: at a boundary)."""
        if self._state in ("body", "chunk_data") and self._left > 0:
            return self._left
        return 0 if self.at_boundary else 1

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._state == "head":
                if not self._buf:
                    self.requests += 1
                self._buf += bytes(view)
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head, rest = self._buf[:end], self._buf[end + 4:]
                self._buf = b""
                self._start_body(head)
                view = memoryview(rest)
            elif self._state == "body":
                n = min(self._left, len(view))
                self._left -= n
                view = view[n:]
                if self._left == 0:
                    self._state = "head"
            elif self._state == "chunk_data":
                n = min(self._left, len(view))
                self._left -= n
                view = view[n:]
                if self._left == 0:
                    self._state = "chunk_crlf"
                    self._left = 2
            elif self._state == "chunk_crlf":
                n = min(self._left, len(view))
                self._left -= n
                view = view[n:]
                if self._left == 0:
                    self._state = "chunk_size"
            else:  # chunk_size or trailers: line based
                self._buf += bytes(view)
                view = memoryview(b"")
                while self._state in ("chunk_size", "trailers"):
                    end = self._buf.find(b"\r\n")
                    if end < 0:
                        break
                    line, self._buf = self._buf[:end], self._buf[end + 2:]
                    if self._state == "trailers":
                        if not line:
                            self._state = "head"
                    else:
                        size = int(line.split(b";")[0].strip() or b"0", 16)
                        self._state, self._left = ("chunk_data", size) if size else (
                            "trailers", 0)
                if self._state != "chunk_size" and self._state != "trailers":
                    rest, self._buf = self._buf, b""
                    if self._state == "head":
                        if rest:
                            self.feed(rest)
                    else:
                        view = memoryview(rest)

    def _start_body(self, head: bytes) -> None:
        length = 0
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            self._state = "chunk_size"
        elif length:
            self._state, self._left = "body", length
        else:
            self._state = "head"


class TokenBucket:
    """A link of ``rate_bps`` bits per second with a small burst allowance."""

    def __init__(self, rate_bps: float, burst: int | None = None) -> None:
        self.rate = rate_bps / 8.0  # bytes per second
        self.burst = burst if burst is not None else max(4096, int(self.rate * 0.02))
        self._tokens = float(self.burst)
        self._stamp = time.monotonic()

    async def take(self, n: int) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= n
        if self._tokens < 0:
            # Paid in debt: later takers wait for it, so the long-run rate holds.
            await asyncio.sleep(-self._tokens / self.rate)


class _Conn:
    def __init__(self, number: int, fault: Fault) -> None:
        self.number = number
        self.up = 0
        self.down = 0
        self.fault = fault
        self.fault_start = 0
        self.flow = asyncio.Event()
        self.flow.set()
        self.framer = RequestFramer()
        self.client: asyncio.StreamWriter | None = None
        self.server: asyncio.StreamWriter | None = None
        self.server_reader: asyncio.StreamReader | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.done = False


class FaultProxy:
    """Listen on a free loopback port and forward to ``host:port``, faults included."""

    def __init__(self, host: str, port: int, *, listen_host: str = "127.0.0.1") -> None:
        self.target = (host, port)
        self.listen_host = listen_host
        self.port = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.connections = 0
        self.fired: list[Fired] = []
        self._default = PASS
        self._queued: list[Fault] = []
        self._armed: tuple[Fault, int] | None = None
        self._http_budget = 0
        self._http_answer = (503, None)
        self._rates: dict[str, TokenBucket | None] = {"up": None, "down": None}
        self._conns: list[_Conn] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        #: Bumped by release() and stop(): a stall ends when it changes.
        self._release_gen = 0
        self._stopping = False

    # -- life cycle ------------------------------------------------------------------
    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.listen_host}:{self.port}"

    def start(self) -> None:
        ready = threading.Event()
        problem: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(asyncio.start_server(
                    self._handle, self.listen_host, 0, backlog=512))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                problem.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="faultproxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if problem:
            raise problem[0]

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        self._stopping = True
        self.release()

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self._conns):
                self._abort(conn, rst=False)
            tasks = [t for c in self._conns for t in c.tasks]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = None
        self._thread = None

    # -- control (any thread) --------------------------------------------------------
    def set_default(self, fault: Fault, *, live: bool = False) -> None:
        with self._lock:
            self._default = fault
            if live:
                for conn in self._conns:
                    if not conn.done:
                        conn.fault, conn.fault_start = fault, conn.up

    def queue(self, *faults: Fault) -> None:
        """Each of the next new connections takes one of these, in order."""
        with self._lock:
            self._queued.extend(faults)

    def arm(self, fault: Fault) -> None:
        """One-shot: fire after ``fault.after`` more client->server bytes, anywhere."""
        with self._lock:
            self._armed = (fault, self.bytes_up)

    def disarm(self) -> None:
        with self._lock:
            self._armed = None
            self._http_budget = 0

    def fail_requests(self, count: int, *, status: int = 503,
                      retry_after: int | None = None) -> None:
        """Answer the next ``count`` requests (on any connection) with a canned error."""
        with self._lock:
            self._http_budget = count
            self._http_answer = (status, retry_after)

    def set_rate(self, up_bps: float | None = None, down_bps: float | None = None) -> None:
        """Throttle each direction to a bit rate (None: unlimited)."""
        with self._lock:
            self._rates = {"up": TokenBucket(up_bps) if up_bps else None,
                           "down": TokenBucket(down_bps) if down_bps else None}

    def release(self) -> None:
        """End every stall now (those with ``seconds=None`` included)."""
        with self._lock:
            self._release_gen += 1

    def reset_counts(self) -> None:
        with self._lock:
            self.bytes_up = self.bytes_down = 0
            self.fired.clear()
            if self._armed is not None:
                self._armed = (self._armed[0], 0)

    @property
    def pending(self) -> bool:
        """True while an armed fault or a canned-answer budget has not gone off yet."""
        with self._lock:
            return self._armed is not None or self._http_budget > 0

    # -- the connections ---------------------------------------------------------------
    async def _handle(self, creader: asyncio.StreamReader,
                      cwriter: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
            fault = self._queued.pop(0) if self._queued else self._default
            conn = _Conn(self.connections, fault)
            self._conns = [c for c in self._conns if not c.done] + [conn]
        conn.client = cwriter
        try:
            sreader, swriter = await asyncio.open_connection(*self.target)
        except OSError:
            self._abort(conn, rst=True)
            return
        conn.server, conn.server_reader = swriter, sreader
        up = asyncio.ensure_future(self._pump_up(conn, creader, swriter))
        down = asyncio.ensure_future(self._pump_down(conn, sreader, cwriter))
        conn.tasks = [up, down]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(up, down, return_exceptions=True)
        self._abort(conn, rst=False)

    def _next_stop(self, conn: _Conn) -> tuple[int, str | None]:
        """How many bytes may be forwarded before something fires, and what fires."""
        with self._lock:
            limit, what = 1 << 62, None
            if conn.fault.kind != "pass":
                left = conn.fault_start + conn.fault.after - conn.up
                if left < limit:
                    limit, what = max(0, left), "conn"
            if self._armed is not None:
                fault, start = self._armed
                left = start + fault.after - self.bytes_up
                if left < limit:
                    limit, what = max(0, left), "armed"
            if self._http_budget > 0:
                left = conn.framer.room()
                if left < limit:
                    limit, what = left, "budget"
            return limit, what

    async def _pump_up(self, conn: _Conn, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                bucket = self._rates["up"]
                size = min(READ_SIZE, bucket.burst) if bucket else READ_SIZE
                data = await reader.read(size)
                if not data:
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.write_eof()
                    return
                view = memoryview(data)
                while view:
                    limit, what = self._next_stop(conn)
                    if limit == 0 and what is not None:
                        if not await self._fire(conn, what, reader):
                            return
                        continue
                    piece = bytes(view[:limit])
                    view = view[len(piece):]
                    await conn.flow.wait()
                    if bucket := self._rates["up"]:
                        await bucket.take(len(piece))
                    conn.framer.feed(piece)
                    with self._lock:  # counted first: the peer may read it at once
                        conn.up += len(piece)
                        self.bytes_up += len(piece)
                    writer.write(piece)
                    await writer.drain()
        except (ConnectionError, OSError):
            self._abort(conn, rst=True)

    async def _pump_down(self, conn: _Conn, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                bucket = self._rates["down"]
                size = min(READ_SIZE, bucket.burst) if bucket else READ_SIZE
                data = await reader.read(size)
                if not data:
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.write_eof()
                    return
                await conn.flow.wait()
                if bucket := self._rates["down"]:
                    await bucket.take(len(data))
                with self._lock:
                    conn.down += len(data)
                    self.bytes_down += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            self._abort(conn, rst=True)

    async def _fire(self, conn: _Conn, what: str, creader: asyncio.StreamReader) -> bool:
        """Apply the fault due now; True if forwarding goes on afterwards."""
        with self._lock:
            if what == "conn":
                fault = conn.fault
                conn.fault = PASS
            elif what == "armed":
                if self._armed is None:  # another connection got there first
                    return True
                fault = self._armed[0]
                self._armed = None
                if fault.kind == "http_error" and fault.count > 1:
                    self._http_budget = fault.count - 1
                    self._http_answer = (fault.status, fault.retry_after)
            else:
                if self._http_budget <= 0:
                    return True
                status, retry_after = self._http_answer
                fault = Fault("http_error", status=status, retry_after=retry_after)
                self._http_budget -= 1
            self.fired.append(Fired(fault.kind, conn.number, conn.up, self.bytes_up))
            generation = self._release_gen
        if fault.kind == "pass":
            return True
        if fault.kind == "stall":
            conn.flow.clear()
            deadline = None if fault.seconds is None else time.monotonic() + fault.seconds
            while self._release_gen == generation and not self._stopping:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.02)
            conn.flow.set()
            return True
        if fault.kind == "reset":
            self._abort(conn, rst=True)
            return False
        if fault.kind == "truncate":
            await self._truncate(conn, creader)
            return False
        # http_error: the service loses this request; the client gets the canned answer.
        for task in conn.tasks[1:]:
            task.cancel()
        if conn.server is not None:
            if conn.framer.at_boundary:  # nothing of this request went upstream
                with contextlib.suppress(OSError, RuntimeError):
                    conn.server.close()
            else:  # the service sees a request broken off
                _rst(conn.server)
        assert conn.client is not None
        conn.client.write(canned_response(fault.status, fault.retry_after))
        with contextlib.suppress(OSError, RuntimeError, ConnectionError):
            await conn.client.drain()
        # Swallow what the client still sends of its request (it reads the answer once
        # its body is out), until it closes or a few seconds pass.
        with contextlib.suppress(OSError, ConnectionError, asyncio.TimeoutError):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if not await asyncio.wait_for(creader.read(READ_SIZE), 5):
                    break
        self._abort(conn, rst=False)
        return False

    async def _truncate(self, conn: _Conn, creader: asyncio.StreamReader) -> None:
        """FIN both ways, then swallow what either peer still sends until it closes.

        Closing a socket with unread bytes in it would make the kernel send RST, which
        is the other fault; a clean cut drains first (for a few seconds at most).
        """
        for task in conn.tasks[1:]:
            task.cancel()
        readers = [creader]
        for writer in (conn.client, conn.server):
            if writer is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    writer.write_eof()
        if conn.server is not None and conn.server_reader is not None:
            readers.append(conn.server_reader)

        async def drain(reader: asyncio.StreamReader) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while await reader.read(READ_SIZE):
                    pass

        drains = [asyncio.ensure_future(drain(r)) for r in readers]
        try:
            await asyncio.wait(drains, timeout=5)
        finally:
            for task in drains:
                task.cancel()
            self._abort(conn, rst=False)

    def _abort(self, conn: _Conn, *, rst: bool) -> None:
        if conn.done:
            return
        conn.done = True
        conn.flow.set()
        for writer in (conn.client, conn.server):
            if writer is None:
                continue
            if rst:
                _rst(writer)
            else:
                with contextlib.suppress(OSError, RuntimeError):
                    writer.close()
        current = asyncio.current_task()
        for task in conn.tasks:
            if task is not current:
                task.cancel()


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP RST, not a FIN."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
