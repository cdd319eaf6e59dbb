"""The fault proxy the sync fault tests rely on: each fault does what it says, on the
byte it says, against a tiny echo server and a tiny HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.harness.faultproxy import Fault, FaultProxy, RequestFramer, canned_response


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        got = 0
        try:
            while data := self.request.recv(65536):
                got += len(data)
                self.request.sendall(data)
        except OSError as exc:
            self.server.errors.append(type(exc).__name__)  # type: ignore[attr-defined]
        finally:
            self.server.received.append(got)  # type: ignore[attr-defined]


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.received: list[int] = []
        self.errors: list[str] = []


class _Http(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        if len(body) < length:
            return  # a broken request: never counted as complete
        self.server.completed.append(len(body))  # type: ignore[attr-defined]
        answer = hashlib.sha256(body).hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self) -> None:  # noqa: N802
        size = int(self.path.strip("/") or "10")
        self.server.completed.append(0)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.wfile.write(b"x" * size)


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Http)
        self.completed: list[int] = []
        self.errors: list[str] = []

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        self.errors.append(type(sys.exc_info()[1]).__name__)  # a reset is the point


@pytest.fixture
def echo() -> Iterator[_EchoServer]:
    server = _EchoServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def web() -> Iterator[_HttpServer]:
    server = _HttpServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = sock.recv(n - len(out))
        if not data:
            break
        out += data
    return bytes(out)


def _wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_pass_through_counts_bytes_both_ways(echo: _EchoServer) -> None:
    with FaultProxy(*echo.server_address) as proxy:
        with _connect(proxy) as sock:
            payload = bytes(range(256)) * 1000
            sock.sendall(payload)
            assert _recv_exactly(sock, len(payload)) == payload
        _wait(lambda: echo.received == [len(payload)])
        assert proxy.bytes_up == proxy.bytes_down == len(payload)
        assert proxy.connections == 1 and proxy.fired == []


def test_reset_after_n_bytes_sends_rst_to_both_sides(echo: _EchoServer) -> None:
    with FaultProxy(*echo.server_address) as proxy:
        proxy.queue(Fault("reset", after=1000))
        with _connect(proxy) as sock:
            sock.sendall(b"a" * 5000)
            with pytest.raises(ConnectionResetError):
                while sock.recv(65536):
                    pass
        _wait(lambda: len(echo.received) == 1)
        assert echo.received == [1000]
        assert proxy.bytes_up == 1000
        assert [(f.kind, f.conn_up) for f in proxy.fired] == [("reset", 1000)]


def test_truncate_closes_cleanly_after_n_bytes(echo: _EchoServer) -> None:
    with FaultProxy(*echo.server_address) as proxy:
        proxy.queue(Fault("truncate", after=3000))
        with _connect(proxy) as sock:
            sock.sendall(b"b" * 10_000)
            got = b""
            while data := sock.recv(65536):  # a clean EOF, no exception
                got += data
        assert set(got) <= {ord("b")} and len(got) <= 3000
        _wait(lambda: len(echo.received) == 1)
        assert echo.received == [3000] and echo.errors == []


def test_stall_for_some_seconds_then_goes_on(echo: _EchoServer) -> None:
    with FaultProxy(*echo.server_address) as proxy:
        proxy.queue(Fault("stall", after=100, seconds=0.6))
        with _connect(proxy) as sock:
            start = time.monotonic()
            sock.sendall(b"c" * 300)
            assert _recv_exactly(sock, 100) == b"c" * 100
            assert _recv_exactly(sock, 200) == b"c" * 200
            assert time.monotonic() - start >= 0.55
        assert proxy.bytes_up == 300


def test_stall_forever_holds_until_released(echo: _EchoServer) -> None:
    with FaultProxy(*echo.server_address) as proxy:
        proxy.queue(Fault("stall", after=10))
        with _connect(proxy) as sock:
            sock.sendall(b"d" * 10)
            assert _recv_exactly(sock, 10) == b"d" * 10
            sock.sendall(b"d" * 40)  # the stall fires on the next byte, both ways
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                sock.recv(100)
            assert proxy.bytes_up == 10  # the socket stays open, nothing moves
            proxy.release()
            sock.settimeout(5)
            assert _recv_exactly(sock, 40) == b"d" * 40


def test_armed_fault_counts_the_aggregate_stream_across_connections(
        echo: _EchoServer) -> None:
    with FaultProxy(*echo.server_address) as proxy:
        proxy.arm(Fault("reset", after=1500))
        first, second = _connect(proxy), _connect(proxy)
        with first, second:
            first.sendall(b"1" * 1000)
            assert _recv_exactly(first, 1000) == b"1" * 1000
            second.sendall(b"2" * 1000)
            with pytest.raises(ConnectionResetError):
                while second.recv(65536):
                    pass
            # One-shot: the first connection goes on untouched.
            first.sendall(b"1" * 1000)
            assert _recv_exactly(first, 1000) == b"1" * 1000
        assert [(f.connection, f.conn_up, f.total_up) for f in proxy.fired] == [(2, 500, 1500)]
        assert not proxy.pending


def test_default_switched_on_live_connections(echo: _EchoServer) -> None:
    with FaultProxy(*echo.server_address) as proxy:
        with _connect(proxy) as sock:
            sock.sendall(b"e" * 100)
            assert _recv_exactly(sock, 100) == b"e" * 100
            proxy.set_default(Fault("truncate", after=50), live=True)
            sock.sendall(b"e" * 100)
            assert len(_recv_exactly(sock, 100)) <= 50  # then a clean EOF
        with _connect(proxy) as sock:  # a new connection gets the default too
            sock.sendall(b"f" * 100)
            assert len(_recv_exactly(sock, 100)) <= 50
        _wait(lambda: len(echo.received) == 2)
        assert sorted(echo.received) == [50, 150]


def test_canned_http_errors_for_the_next_requests(web: _HttpServer) -> None:
    with FaultProxy(*web.server_address) as proxy, httpx.Client(base_url=proxy.url,
                                                                 timeout=5) as client:
        assert client.get("/5").content == b"xxxxx"  # a keep-alive connection is open
        proxy.fail_requests(2, status=503, retry_after=3)
        first = client.put("/", content=b"p" * 100_000)
        second = client.get("/5")
        assert (first.status_code, first.headers["retry-after"]) == (503, "3")
        assert second.status_code == 503
        third = client.put("/", content=b"q" * 1000)
        assert third.status_code == 200
        assert third.text == hashlib.sha256(b"q" * 1000).hexdigest()
        assert web.completed == [0, 1000]  # the failed ones never reached the server
        assert web.errors == []  # nothing of them went upstream: closed cleanly
        assert [f.kind for f in proxy.fired] == ["http_error", "http_error"]


def test_canned_http_error_mid_body_breaks_the_request_upstream(web: _HttpServer) -> None:
    with FaultProxy(*web.server_address) as proxy, httpx.Client(base_url=proxy.url,
                                                                 timeout=5) as client:
        proxy.arm(Fault("http_error", after=20_000, status=500))
        answer = client.put("/", content=b"r" * 200_000)
        assert answer.status_code == 500 and "retry-after" not in answer.headers
        assert proxy.bytes_up == 20_000
        assert client.put("/", content=b"s" * 10).status_code == 200
        assert web.completed == [10]
        _wait(lambda: web.errors == ["ConnectionResetError"])  # the service saw an RST


def test_throttle_holds_the_bit_rate_each_way(echo: _EchoServer) -> None:
    with FaultProxy(*echo.server_address) as proxy:
        proxy.set_rate(up_bps=4_000_000, down_bps=4_000_000)  # 500 kB/s
        payload = b"t" * 400_000
        with _connect(proxy) as sock:
            start = time.monotonic()
            sender = threading.Thread(target=sock.sendall, args=(payload,))
            sender.start()
            assert _recv_exactly(sock, len(payload)) == payload
            elapsed = time.monotonic() - start
            sender.join()
        rate = len(payload) * 8 / elapsed
        assert 3_200_000 < rate < 4_300_000, rate
        assert proxy.bytes_up == proxy.bytes_down == len(payload)


def test_unreachable_target_closes_the_client() -> None:
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()  # nothing listens there now
    with FaultProxy("127.0.0.1", port) as proxy:
        # The RST may come while connecting already, or on the first send or read.
        with pytest.raises((ConnectionResetError, BrokenPipeError)), _connect(proxy) as sock:
            sock.sendall(b"x")
            if not sock.recv(10):
                raise ConnectionResetError


def test_request_framer_finds_request_starts() -> None:
    framer = RequestFramer()
    assert framer.at_boundary
    stream = (b"PUT /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
              b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"3\r\nabc\r\n10;x=y\r\n" + b"z" * 16 + b"\r\n0\r\nT: 1\r\n\r\n"
              b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n")
    for i in range(0, len(stream), 7):  # arbitrary splits
        framer.feed(stream[i:i + 7])
    assert framer.requests == 3 and framer.at_boundary
    framer.feed(b"PUT /d HTTP/1.1\r\ncontent-length: 1000\r\n\r\n")
    assert framer.room() == 1000 and not framer.at_boundary


def test_canned_response_is_well_formed_http() -> None:
    raw = canned_response(503, 7)
    head, body = raw.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable")
    assert b"Retry-After: 7" in head and f"Content-Length: {len(body)}".encode() in head
