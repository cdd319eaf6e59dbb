"""Staff mode and the kiosk's hardening, in the real app under Xvfb: the hidden gesture
and the PIN, the lockout that outlives a restart, the wipe behind two confirmations,
double touches dropped, Escape and the window's close refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kiosk.audio.recorder import Recorder
from kiosk.vault.custody import SessionCustody
from kiosk.vault.store import Store
from sync.envelope.mlkem import MlkemIdentity
from tests.audio_fakes import FakeStreams, record, tone
from tests.harness.kiosk_app import KioskProcess

PIN = "482915"


@pytest.fixture
def kiosk(tmp_path: Path) -> Path:
    """A kiosk config with recipients and a staff PIN set by `kiosk set-pin`."""
    config = tmp_path / "kiosk.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n'
                      f'recipients = ["{MlkemIdentity.generate().recipient()}"]\n')
    done = subprocess.run([sys.executable, "-m", "kiosk", "--config", str(config), "set-pin"],
                          input=f"{PIN}\n{PIN}\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert PIN not in config.read_text()
    return tmp_path


@pytest.fixture
def env(virtual_audio, virtual_display: str) -> dict[str, str]:
    env = {**os.environ, **virtual_audio.env, "DISPLAY": virtual_display}
    env.pop("KIOSK_CONFIG", None)
    return env


def start(folder: Path, env: dict[str, str]) -> KioskProcess:
    return KioskProcess(config=folder / "kiosk.toml", workdir=folder, env=env,
                        screenshot_dir=folder / "shots")


def gesture(app: KioskProcess) -> None:
    """Long press in the top-left corner, then a touch in the top-right one."""
    app.wait_for_screen("attract")
    app.call("press", x=20, y=780, seconds=2.3)
    time.sleep(2.6)
    app.call("press", x=1260, y=780, seconds=0.05)
    app.wait_for_screen("staff_pin")


def enter(app: KioskProcess, pin: str) -> str:
    for digit in pin:
        app.tap(f"key_{digit}")
        time.sleep(0.3)  # a person's pace: two touches within 250 ms are one
    app.tap("key_ok")
    time.sleep(0.4)
    if app.screen() != "staff_pin":
        return ""  # opened: the keypad is gone
    return app.call("source_text", id="status")


def test_the_right_pin_opens_staff_mode_and_a_plain_touch_does_not(kiosk, env) -> None:
    app = start(kiosk, env)
    try:
        app.wait_for_screen("attract")
        app.call("press", x=20, y=780, seconds=0.3)  # too short
        time.sleep(0.5)
        app.call("press", x=1260, y=780, seconds=0.05)
        time.sleep(0.5)
        assert app.screen() == "attract"
        gesture(app)
        assert enter(app, PIN) == ""
        app.wait_for_screen("staff")
        facts = app.call("call", method="fact_values")
        assert "post-quantum" in facts["Sealing"]
        app.tap("exit_button")  # hidden and disabled: the config does not allow it
        time.sleep(0.5)
        assert app.proc.poll() is None and app.screen() == "staff"
        app.tap("close_button")
        app.wait_for_screen("attract")
    finally:
        app.close()


def test_five_wrong_pins_lock_the_keypad_across_a_restart(kiosk, env) -> None:
    app = start(kiosk, env)
    try:
        gesture(app)
        for tries_left in (4, 3, 2, 1):
            assert enter(app, "000000").endswith(str(tries_left))
        assert "Try again in 5 min" in enter(app, "000000")
        assert "Try again" in enter(app, PIN)  # even the right PIN, while locked
        assert app.screen() == "staff_pin"
    finally:
        app.close()
    app = start(kiosk, env)  # a restart does not reset the lock
    try:
        gesture(app)
        assert "Try again" in enter(app, PIN)
        assert app.screen() == "staff_pin"
    finally:
        app.close()


def tap(app: KioskProcess, widget_id: str) -> None:
    """A touch, then a person's pause (the same spot twice within 250 ms is one touch)."""
    app.tap(widget_id)
    time.sleep(0.35)


def submitted(folder: Path, count: int) -> list[str]:
    """``count`` sealed, submitted submissions in the kiosk's outbox, as a session leaves."""
    from kiosk import config as kiosk_config

    cfg = kiosk_config.load(folder / "kiosk.toml")
    store = Store.in_data_dir(cfg.data_dir)
    ids = []
    try:
        for _ in range(count):
            session = SessionCustody(data_dir=cfg.data_dir, store=store,
                                     recipients=cfg.recipients)
            _name, take = record(session, Recorder(FakeStreams([tone(0.3)])), "work")
            while take.meters().elapsed_s < 0.3:
                time.sleep(0.01)
            take.stop()
            session.submit({"display_name": "Anonymous"})
            ids.append(session.submission_id)
    finally:
        store.close()
    return ids


def test_the_wipe_needs_both_confirmations_and_leaves_nothing_unsent(kiosk, env) -> None:
    ids = submitted(kiosk, 2)
    outbox = kiosk / "data" / "outbox"
    assert sorted(p.name for p in outbox.iterdir()) == sorted(ids)
    app = start(kiosk, env)
    try:
        gesture(app)
        enter(app, PIN)
        app.wait_for_screen("staff")
        assert "2" in app.call("call", method="fact_values")["Submissions"]
        tap(app, "wipe_button")
        tap(app, "keep_button")  # the first "no"
        assert sorted(p.name for p in outbox.iterdir()) == sorted(ids)
        tap(app, "wipe_button")
        tap(app, "wipe_first_button")
        tap(app, "keep_button")  # the second "no"
        assert sorted(p.name for p in outbox.iterdir()) == sorted(ids)
        tap(app, "wipe_button")
        tap(app, "wipe_first_button")
        tap(app, "wipe_confirm_button")
        assert list(outbox.iterdir()) == []
        assert "2" in app.call("source_text", id="result")
    finally:
        app.close()
    store = Store.in_data_dir(kiosk / "data")
    try:
        assert all(store.submission_state(i) is None for i in ids)
    finally:
        store.close()


def test_a_double_touch_counts_once(kiosk, env) -> None:
    app = start(kiosk, env)
    try:
        app.wait_for_screen("attract")
        app.tap("listen_button")
        app.wait_for_screen("stories")
        app.tap("back_button")
        app.wait_for_screen("attract")
        app.tap("share_button")
        app.wait_for_screen("language")
        app.tap("lang_en")
        app.wait_for_screen("who")
        app.tap("next_button")
        app.wait_for_screen("safety")
        app.tap("next_button")
        app.wait_for_screen("consent")
        for button in ("publish_yes", "name_anonymous", "contact_no"):
            app.tap(button)
        app.tap("next_button")
        app.wait_for_screen("identity")
        app.tap("next_button")
        app.wait_for_screen("questions")
        # A bouncing finger on "skip", through Kivy's input path as the touchscreen's
        # touches go: two touches 50 ms apart at one place are one.
        app.call("tap_input", id="skip_button")
        time.sleep(0.05)
        app.call("tap_input", id="skip_button")
        assert app.call("session")["question"] == 1
        time.sleep(0.4)  # a deliberate second touch counts
        app.call("tap_input", id="skip_button")
        assert app.call("session")["question"] == 2
    finally:
        app.close()


def test_escape_and_the_window_close_are_refused(kiosk, env) -> None:
    app = start(kiosk, env)
    try:
        app.wait_for_screen("attract")
        app.call("escape")
        app.call("window_close")
        time.sleep(0.5)
        assert app.proc.poll() is None and app.screen() == "attract"
    finally:
        app.close()


def test_development_mode_lets_the_window_close(kiosk, env) -> None:
    (kiosk / "kiosk.toml").write_text((kiosk / "kiosk.toml").read_text()
                                      + "[display]\nkiosk_mode = false\n")
    app = start(kiosk, env)
    try:
        app.wait_for_screen("attract")
        app.call("window_close")
        assert app.proc.wait(10) == 0  # the app stopped, as a desktop app does
    finally:
        app.close()


def test_the_ui_clock_pings_the_watchdog_and_a_frozen_ui_stops(kiosk, env, tmp_path) -> None:
    import socket

    notify = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(notify))
    server.settimeout(0.2)
    app = KioskProcess(config=kiosk / "kiosk.toml", workdir=kiosk,
                       env={**env, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "400000"},
                       screenshot_dir=kiosk / "shots")

    def received(seconds: float) -> list[tuple[float, bytes]]:
        got, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                got.append((time.monotonic(), server.recv(64)))
            except TimeoutError:
                pass
        return got

    try:
        app.wait_for_screen("attract")
        messages = [m for _t, m in received(1.5)]
        assert messages.count(b"WATCHDOG=1") >= 4  # every 0.2 s: half of WATCHDOG_USEC
        # The UI's thread stuck for 1.5 s: no ping in that time.
        app._stream.write(b'{"cmd": "app_call", "args": {"method": "freeze_for_test",'
                          b' "args": [1.5]}}\n')
        app._stream.flush()
        frozen = received(1.2)
        app._stream.readline()
        assert not [m for _t, m in frozen if m == b"WATCHDOG=1"], frozen
        assert b"WATCHDOG=1" in [m for _t, m in received(1.0)]  # and back once it thaws
    finally:
        app.close()
        server.close()
