"""Staff mode's "Sync now" and the background sync worker, in the real app under Xvfb.

First with a scripted pass (the driver's ``fake_sync``): the progress bar moves while
the worker reports, the result line says what happened in plain words, and the UI
never waits for the pass. Then against the real central service on loopback (the
``central`` fixture): a session recorded in the app reaches the vetting queue byte for
byte by "Sync now"; and a take recorded through PortAudio while the worker uploads a
60 MB backlog has no input overflow."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SCREENSHOT_DIR
from tests.harness.kiosk_app import KioskProcess, png_pixels
from tests.test_app_staff import PIN, enter, gesture
from tests.test_app_staff import env as env  # noqa: F401 (a fixture, used by name)
from tests.test_app_staff import kiosk as kiosk  # noqa: F401 (a fixture, used by name)

REPO = Path(__file__).resolve().parent.parent


def start(folder: Path, env: dict[str, str]) -> KioskProcess:
    """The app, its screenshots kept for people to look at (screenshots/tests/)."""
    return KioskProcess(config=folder / "kiosk.toml", workdir=folder, env=env,
                        screenshot_dir=SCREENSHOT_DIR)


def open_staff(app: KioskProcess) -> None:
    gesture(app)
    assert enter(app, PIN) == ""
    app.wait_for_screen("staff")


def sync_state(app: KioskProcess) -> dict[str, Any]:
    return app.call("call", method="sync_state")


def wait_for_sync_end(app: KioskProcess, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (state := sync_state(app))["syncing"]:
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    return state


def upload_steps(total_bytes: int, count: int, submissions: int) -> list[dict[str, Any]]:
    return [{"phase": "upload", "sent_bytes": total_bytes * i // count,
             "total_bytes": total_bytes, "done": submissions * i // count,
             "total": submissions} for i in range(1, count + 1)]


# -- a scripted pass ------------------------------------------------------------------------

def test_sync_now_moves_the_bar_then_says_what_was_acknowledged(kiosk, env) -> None:
    app = start(kiosk, env)
    try:
        open_staff(app)
        before = sync_state(app)
        assert not before["visible"] and not before["button_disabled"]
        app.call("fake_sync", result={"acknowledged": 2, "pending": 0,
                                      "sent_bytes": 12_000_000},
                 steps=upload_steps(12_000_000, 12, 2), step_s=0.15)
        tapped = time.monotonic()
        app.tap("sync_button")
        assert time.monotonic() - tapped < 1.0  # the touch returns: the pass is elsewhere
        deadline = time.monotonic() + 10
        while len((during := sync_state(app))["seen"]) < 4:
            assert time.monotonic() < deadline, during
            time.sleep(0.02)
        assert during["syncing"] and during["button_disabled"] and during["visible"]
        assert 0 < during["value"] < 1000
        assert during["status"].startswith("Sending: ")
        app.screenshot("staff-sync-progress")
        after = wait_for_sync_end(app)
        assert after["value"] == after["max"] == 1000
        assert after["status"] == "Sync done. Acknowledged: 2. Still to send: 0."
        assert not after["button_disabled"]
        seen = after["seen"]
        assert seen == sorted(seen) and len(set(seen)) >= 4 and seen[-1] == 1000, seen
        # A touch while nothing else happens: the UI answered during the whole pass.
        assert app.screen() == "staff"
    finally:
        app.close()


@pytest.mark.parametrize("result, expected", [
    ({"error": "revoked", "revoked": True, "pending": 3},
     "This kiosk was revoked by the service: its submissions are kept; export them by USB."
     " Still to send: 3."),
    ({"error": "network", "pending": 1}, "No network: will retry. Still to send: 1."),
    ({"error": "not_enrolled", "pending": 2},
     "Not enrolled: this kiosk has no central service yet (kiosk enrol). Still to send: 2."),
    ({"error": "conflict_thing", "pending": 0}, "Sync failed (conflict_thing): will retry."),
])
def test_a_failed_pass_is_said_in_plain_words(kiosk, env, result, expected) -> None:
    app = start(kiosk, env)
    try:
        open_staff(app)
        app.call("fake_sync", result=result, steps=[], step_s=0.0)
        app.tap("sync_button")
        state = wait_for_sync_end(app)
        assert state["status"] == expected
        assert state["value"] < 1000  # a failed pass never shows as done
    finally:
        app.close()


def test_the_result_line_follows_the_language(kiosk, env) -> None:
    app = start(kiosk, env)
    try:
        open_staff(app)
        app.call("app_call", method="switch_language", args=["ar"])
        app.call("fake_sync", result={"error": "network", "pending": 1}, steps=[],
                 step_s=0.0)
        app.tap("sync_button")
        status = wait_for_sync_end(app)["status"]
        assert "لا توجد شبكة" in status and "1" in status
        shot = app.screenshot("staff-sync-ar")
        assert len(png_pixels(shot).reshape(-1, 3)) > 0
    finally:
        app.close()


def test_a_kiosk_that_is_not_enrolled_runs_no_pass_by_itself(kiosk, env) -> None:
    app = start(kiosk, env)
    try:
        app.wait_for_screen("attract")
        assert app.call("app_call", method="sync_worker_state")["alive"] is False
    finally:
        app.close()


# -- against the real central service on loopback -----------------------------------------

#: The background worker's own passes stay out of the way of these tests (its first
#: pass comes 10 s after start, then none for an hour).
QUIET_WORKER = "[sync]\ninterval_s = 3600\n"


def kiosk_cli(folder: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kiosk", "--config",
                           str(folder / "kiosk.toml"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def enrol(folder: Path, central: Any) -> None:
    done = kiosk_cli(folder, "enrol", "--server", central.url, "--code", central.enrol_code())
    assert done.returncode == 0, done.stdout + done.stderr
    assert (folder / "data" / "device.json").is_file()


def queue(central: Any, token: str) -> dict[str, Any]:
    reply = httpx.get(f"{central.url}/api/v1/queue", timeout=10,
                      headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 200, reply.text
    return {s["id"]: s for s in reply.json()["submissions"]}


def download(central: Any, token: str, submission_id: str, name: str) -> bytes:
    reply = httpx.get(f"{central.url}/api/v1/submissions/{submission_id}/parts/{name}",
                      timeout=30, headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 200, reply.text
    return reply.content


def outbox_states(data: Path) -> dict[str, str]:
    """The kiosk's outbox, read-only (the app holds the store open meanwhile)."""
    conn = sqlite3.connect(f"file:{data / 'kiosk.db'}?mode=ro", uri=True)
    try:
        return dict(conn.execute("select submission_id, state from outbox"))
    finally:
        conn.close()


def worker(app: KioskProcess) -> dict[str, Any]:
    return app.call("app_call", method="sync_worker_state")


def test_a_session_recorded_in_the_app_reaches_the_vetting_queue_by_sync_now(
        kiosk, env, central, virtual_audio, speech) -> None:
    from tests.test_app_session import record_answer, to_questions, wait_until

    with (kiosk / "kiosk.toml").open("a") as f:
        f.write(QUIET_WORKER)
    enrol(kiosk, central)
    data = kiosk / "data"
    app = start(kiosk, env)
    try:
        # A defender's session through the app: one answer spoken into the microphone.
        to_questions(app, named=False)
        record_answer(app, virtual_audio, speech("en"))
        app.tap("next_button")
        for _ in range(3):
            time.sleep(0.35)
            app.tap("skip_button")
        app.wait_for_screen("review")
        # The worker's first pass (10 s after start) has run, with nothing to send yet.
        wait_until(lambda: worker(app)["passes"] >= 1, 20, "the first background pass")
        assert worker(app)["last_acknowledged"] == 0 and worker(app)["niceness"] >= 10
        app.tap("submit_button")
        app.wait_for_screen("receipt", 30)
        submission = app.call("session")["submission"]
        app.tap("done_button")
        app.wait_for_screen("attract")
        assert outbox_states(data) == {submission: "sealed"}

        open_staff(app)
        app.tap("sync_button")
        state = wait_for_sync_end(app, 60)
        print(f"sync now: bar {state['seen']} -> {state['value']}/{state['max']},"
              f" {state['status']!r}")
        assert state["status"] == "Sync done. Acknowledged: 1. Still to send: 0."
        assert state["value"] == state["max"] == 1000 and state["seen"][-1] == 1000
        facts = app.call("call", method="fact_values")
        assert "1 acknowledged" in facts["Outbox"] and facts["Last sync"] != "never"
        app.screenshot("staff-sync-done")
    finally:
        app.close()
    assert outbox_states(data) == {submission: "acknowledged"}
    # The vetting team's queue holds it, byte for byte what the kiosk sealed.
    token = central.vetter_token()
    queued = queue(central, token)
    assert list(queued) == [submission] and queued[submission]["state"] == "received"
    folder = data / "outbox" / submission
    local = sorted(p.name for p in folder.iterdir())
    assert sorted(p["name"] for p in queued[submission]["parts"]) == local
    for name in local:
        assert download(central, token, submission, name) == (folder / name).read_bytes()


def make_backlog(folder: Path, count: int, size: int) -> list[str]:
    """``count`` sealed, submitted submissions of one ``size``-byte part each, written as
    the session leaves them (store rows, outbox entry at submit), without recording
    hours of audio: the sealed plaintext is random bytes."""
    from kiosk import config as kiosk_config
    from kiosk.vault.layout import MANIFEST_FILE, OUTBOX, make_dir_durably
    from kiosk.vault.store import PartRecord, Store
    from sync.envelope import seal_bytes
    from tests.harness.central import new_submission_id

    cfg = kiosk_config.load(folder / "kiosk.toml")
    store = Store.in_data_dir(cfg.data_dir)
    ids = []
    try:
        for _ in range(count):
            submission_id = new_submission_id()
            time.sleep(0.002)  # UUIDv7s in order
            target = cfg.data_dir / OUTBOX / submission_id
            make_dir_durably(target)
            now = time.time()
            store.open_submission(submission_id, now=now)
            sealed = seal_bytes(os.urandom(size), cfg.recipients)
            (target / "q1-1.age").write_bytes(sealed)
            store.add_part(PartRecord(
                submission_id=submission_id, name="q1-1", prompt_id="q1",
                duration_s=size / 3000, sample_rate=48000, frames=int(size / 3000 * 48000),
                overflows=0, size=len(sealed), sha256=hashlib.sha256(sealed).hexdigest(),
                opus_bytes=size, end_reason="stopped", silent=False, created_at=now))
            manifest = seal_bytes(json.dumps({"parts": ["q1-1.age"]}).encode(),
                                  cfg.recipients)
            (target / MANIFEST_FILE).write_bytes(manifest)
            store.mark_submitted(submission_id, manifest_size=len(manifest),
                                 manifest_sha256=hashlib.sha256(manifest).hexdigest(),
                                 now=now)
            ids.append(submission_id)
    finally:
        store.close()
    return ids


BACKLOG = 6
BACKLOG_PART = 10_000_000


def test_a_take_has_no_overflows_while_the_worker_uploads_a_large_backlog(
        kiosk, env, central, virtual_audio, speech) -> None:
    """The overflow test of issue 11: 60 MB going up while a defender records."""
    from tests.test_app_session import to_questions, wait_until

    with (kiosk / "kiosk.toml").open("a") as f:
        f.write(QUIET_WORKER)
    backlog = make_backlog(kiosk, BACKLOG, BACKLOG_PART)
    data = kiosk / "data"
    app = start(kiosk, env)
    feeding = threading.Event()

    def feed() -> None:  # speech into the microphone for as long as the take runs
        while not feeding.is_set():
            virtual_audio.play_into_mic(speech("en")).wait()

    feeder = threading.Thread(target=feed, daemon=True)
    try:
        to_questions(app, named=False)
        # Enrolled only now, so that no pass of the worker runs before the take starts;
        # the worker finds device.json at its next pass.
        enrol(kiosk, central)
        app.tap("record_button")
        take_began = time.monotonic()
        feeder.start()
        time.sleep(1.0)
        app.call("sync_run_now")  # the pass the timer would start, on the worker thread
        wait_until(lambda: worker(app)["passes"] >= 1, 180, "the upload pass to end")
        time.sleep(1.0)
        app.tap("record_button")  # stop
        take_ended = time.monotonic()
        state = worker(app)
        wait_until(lambda: any(app.call("session")["answers"].values()), 15,
                   "the answer to be sealed")
        session = app.call("session")
        part = next(p for p in session["answers"].values() if p)
        # Read before the app stops: stopping shreds the open session, its part row too.
        conn = sqlite3.connect(f"file:{data / 'kiosk.db'}?mode=ro", uri=True)
        try:
            rows = [(name, overflows, duration) for submission_id, name, overflows,
                    duration in conn.execute("select submission_id, name, overflows,"
                                             " duration_s from parts")
                    if submission_id not in backlog]
        finally:
            conn.close()
        ((name, overflows, duration),) = rows
        assert name == part
    finally:
        feeding.set()
        app.close()
    seconds = state["ended"] - state["started"]
    print(f"take {duration:.1f} s with {overflows} input overflows; the pass sent"
          f" {state['last_sent_bytes'] / 1e6:.1f} MB ({state['last_acknowledged']}"
          f" submissions acknowledged) in {seconds:.2f} s"
          f" ({state['last_sent_bytes'] / 1e6 / seconds:.1f} MB/s), worker nice"
          f" {state['niceness']}")
    # The whole upload happened inside the take.
    assert take_began < state["started"] < state["ended"] < take_ended
    assert state["last_error"] is None and state["last_acknowledged"] == BACKLOG
    assert state["last_sent_bytes"] >= BACKLOG * BACKLOG_PART
    states = outbox_states(data)
    assert all(states[s] == "acknowledged" for s in backlog), states
    assert state["niceness"] >= 10
    assert overflows == 0
    assert duration >= seconds
