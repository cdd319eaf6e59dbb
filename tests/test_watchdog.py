"""systemd notifications without a dependency: READY=1 and WATCHDOG=1 over AF_UNIX."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiosk.watchdog import Watchdog


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """What systemd listens on: a datagram socket at a path (short: sun_path is 108 bytes)."""
    path = tmp_path / "n.sock"
    if len(str(path)) > 100:
        pytest.skip("tmp path too long for an AF_UNIX socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield sock, str(path)
    sock.close()


def test_pings_and_ready_reach_the_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    dog = Watchdog.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000",
                             "WATCHDOG_PID": str(os.getpid())})
    assert dog.enabled and dog.interval_s == 10.0
    assert dog.ready()
    assert sock.recv(64) == b"READY=1"
    assert dog.ping() and dog.ping()
    assert sock.recv(64) == b"WATCHDOG=1"
    assert sock.recv(64) == b"WATCHDOG=1"
    assert dog.stopping()
    assert sock.recv(64) == b"STOPPING=1"
    dog.close()


def test_abstract_socket() -> None:
    name = f"kiosk-test-{os.getpid()}-{id(object())}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        dog = Watchdog.from_env({"NOTIFY_SOCKET": f"@{name}", "WATCHDOG_USEC": "3000000"})
        assert dog.interval_s == 1.5
        assert dog.ping()
        assert sock.recv(64) == b"WATCHDOG=1"
        assert dog.ready()
        assert sock.recv(64) == b"READY=1"
        dog.close()
    finally:
        sock.close()


def test_no_notify_socket_is_a_no_op() -> None:
    for env in ({}, {"WATCHDOG_USEC": "1000000"}, {"NOTIFY_SOCKET": ""},
                {"NOTIFY_SOCKET": "relative/path", "WATCHDOG_USEC": "1000000"}):
        dog = Watchdog.from_env(env)
        assert not dog.enabled and dog.interval_s is None
        assert dog.ping() is False and dog.ready() is False


def test_a_watchdog_meant_for_another_process_is_disabled(
        notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    dog = Watchdog.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000",
                             "WATCHDOG_PID": str(os.getpid() + 1)})
    assert not dog.enabled and dog.interval_s is None
    assert dog.ping() is False
    # READY=1 is not the watchdog's: it still goes where systemd said.
    assert dog.ready()
    assert sock.recv(64) == b"READY=1"
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(64)  # and no WATCHDOG=1 was sent


@pytest.mark.parametrize("usec", ["0", "-5", "soon", ""])
def test_bad_watchdog_usec_means_no_watchdog(usec: str, tmp_path: Path) -> None:
    dog = Watchdog.from_env({"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": usec})
    assert dog.interval_s is None and dog.ping() is False


def test_a_vanished_socket_is_reported_not_raised(tmp_path: Path) -> None:
    dog = Watchdog.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone.sock"),
                             "WATCHDOG_USEC": "1000000"})
    assert dog.enabled
    assert dog.ping() is False
    assert dog.ready() is False
