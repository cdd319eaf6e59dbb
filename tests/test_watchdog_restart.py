"""The kiosk unit's watchdog, end to end: the real app under Xvfb, started as the real unit
file says (deploy/kiosk/idefendrights-kiosk.service), with systemd's side played by
tests/harness/notify_supervisor.py (this machine's PID 1 is not systemd, and `systemd
--user` refuses to start without it). A frozen UI thread stops the pings; the unit is
killed with SIGABRT and started again, and the new app says READY=1 and pings again.

Takes about 20 s (two app start-ups).
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

from tests.harness.notify_supervisor import NotifySupervisor, ServiceSettings, parse_timespan

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "kiosk" / "idefendrights-kiosk.service"
# cage's part: it runs its client as a child and exits when the client does. The real
# cage needs a seat and a GPU; this stand-in keeps what matters here: the app is not the
# unit's main process, and systemd's WATCHDOG_PID names cage, not the app.
CAGE = ("import subprocess, sys; sys.exit(subprocess.call(sys.argv[sys.argv.index('--') + 1:]))")


def test_the_unit_file_parses_as_systemd_reads_it() -> None:
    settings = ServiceSettings.from_unit(UNIT)
    assert (settings.type, settings.notify_access, settings.restart) == ("notify", "all",
                                                                         "always")
    assert settings.watchdog_s == 30 and settings.start_limit_interval_s == 0
    assert settings.limit_core == 0
    assert settings.exec_start[:3] == ["/usr/bin/cage", "-d", "--"]
    assert parse_timespan("1min 30s") == 90 and parse_timespan("500ms") == 0.5


def _unit_argv(settings: ServiceSettings, config: Path) -> list[str]:
    """ExecStart with this machine's paths: cage's stand-in, the test venv, the config."""
    argv = settings.exec_start
    cut = argv.index("--")
    assert argv[0].endswith("/cage")
    client = []
    for word in argv[cut + 1:]:
        if word == "/opt/idefendrights/venv/bin/kiosk":
            client += [sys.executable, "-m", "kiosk"]
        elif word == "/etc/idefendrights/kiosk.toml":
            client.append(str(config))
        else:
            client.append(word)
    return [sys.executable, "-c", CAGE, "--", *client]


def _freeze(driver: Path, seconds: float) -> socket.socket:
    """Ask the app's UI thread to hang for ``seconds`` (the test driver's freeze_for_test)."""
    deadline = time.monotonic() + 30
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(driver))
            break
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    sock.sendall(json.dumps({"cmd": "app_call", "args": {"method": "freeze_for_test",
                                                           "args": [seconds]}}).encode() + b"\n")
    return sock


def test_a_frozen_ui_is_killed_and_the_unit_restarted(kiosk_env: dict[str, str],
                                                       write_config, tmp_path: Path) -> None:
    real = ServiceSettings.from_unit(UNIT)
    # Everything from the unit but the watchdog's length: 30 s (right for a kiosk) would make
    # this test take minutes; 1.5 s is what `systemctl edit` with WatchdogSec=1.5 gives.
    settings = ServiceSettings(**{**real.__dict__, "watchdog_s": 1.5})
    config = write_config()
    driver = tmp_path / "driver.sock"
    supervisor = NotifySupervisor(
        settings, _unit_argv(real, config),
        env={**kiosk_env, "KIOSK_TEST_DRIVER": str(driver), "KIVY_HOME": str(tmp_path / "kivy")},
        socket_path=tmp_path / "notify.sock", cwd=tmp_path)
    frozen: socket.socket | None = None
    try:
        supervisor.start()
        first_main = supervisor.proc.pid
        ready = supervisor.wait_for(lambda e: e.detail == "READY=1", 60)
        assert ready is not None, supervisor.events
        # From the app, cage's child, not the main process: NotifyAccess=all is needed.
        assert ready.pid != first_main
        supervisor.run_for(2.0)
        pings = [e for e in supervisor.events if e.detail == "WATCHDOG=1"]
        assert len(pings) >= 2, supervisor.events  # every WatchdogSec/2
        frozen = _freeze(driver, 30.0)
        timeout = supervisor.wait_for(lambda e: e.what == "watchdog_timeout", 10)
        assert timeout is not None, supervisor.events
        # Nothing from the app between the freeze and the kill, for a whole WatchdogSec.
        last_ping = max(e.at for e in supervisor.events
                        if e.detail == "WATCHDOG=1" and e.instance == 1)
        assert timeout.at - last_ping > settings.watchdog_s
        exited = supervisor.wait_for(lambda e: e.what == "exit", 30)
        assert exited is not None and exited.instance == 1
        # Restart=always: a new main process, whose app says READY=1 and pings again.
        ready2 = supervisor.wait_for(lambda e: e.detail == "READY=1" and e.instance == 2, 60)
        assert ready2 is not None, supervisor.events
        restarted = [e for e in supervisor.events if e.what == "start"]
        assert len(restarted) == 2 and restarted[1].pid != first_main
        assert restarted[1].at - exited.at >= settings.restart_s - 0.1
        supervisor.run_for(2.0)
        assert [e for e in supervisor.events if e.detail == "WATCHDOG=1" and e.instance == 2]
        assert not [e for e in supervisor.events if e.what == "refused"], supervisor.events
    finally:
        if frozen is not None:
            frozen.close()
        supervisor.stop()
