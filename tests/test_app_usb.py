"""Staff mode's USB export and import in the real app under Xvfb, with the real central
service on loopback: the bars move, the result lines say what happened, and a stick
that cannot be written is said so plainly. The stick is a folder named by
``KIOSK_USB_DIR`` (kiosk/usb/drive.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kiosk.device import enrol_device
from kiosk.vault.store import ACKNOWLEDGED, PENDING_STATES, Store
from sync.envelope import X25519Identity
from sync.envelope.mlkem import MlkemIdentity
from tests.catalog_fakes import PUBLISHER, CatalogRoutes, audio_for
from tests.harness.kiosk_app import KioskProcess, png_pixels
from tests.sync_fakes import make_submission
from tests.test_app_staff import PIN, enter, gesture
from tests.test_app_staff import env as env  # noqa: F401 (a fixture, used by name)
from tests.test_sync_e2e import submit
from tests.test_usb_transfer import central_run, publish

REPO = Path(__file__).resolve().parent.parent
SHOTS = Path("/tmp/usb-app-shots")


@pytest.fixture
def setup(tmp_path: Path, central) -> dict[str, Any]:  # noqa: ANN001
    """An enrolled kiosk with a PIN, the publishing key pinned, three sealed submissions
    (one recorded as the app records, two large ones so the bar has time to move)."""
    data_dir = tmp_path / "data"
    config = tmp_path / "kiosk.toml"
    config.write_text(f'data_dir = "{data_dir}"\n'
                      f'recipients = ["{MlkemIdentity.generate().recipient()}"]\n'
                      f'publisher_key = "{PUBLISHER.verify_key}"\n'
                      f'server_url = "{central.url}"\n')
    done = subprocess.run([sys.executable, "-m", "kiosk", "--config", str(config), "set-pin"],
                          input=f"{PIN}\n{PIN}\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    enrol_device(data_dir, server_url=central.url, code=central.enrol_code())
    sids = [submit(data_dir, X25519Identity.generate(), 1, "Amina Diallo")]
    store = Store.in_data_dir(data_dir)
    try:
        sids += [make_submission(data_dir, store, (24 * 1024 * 1024,)) for _ in range(2)]
    finally:
        store.close()
    stick = tmp_path / "stick"
    stick.mkdir()
    return {"folder": tmp_path, "data_dir": data_dir, "sids": sids, "stick": stick}


def start(folder: Path, env: dict[str, str], stick: Path) -> KioskProcess:
    return KioskProcess(config=folder / "kiosk.toml", workdir=folder,
                        env={**env, "KIOSK_USB_DIR": str(stick)}, screenshot_dir=SHOTS)


def usb_state(app: KioskProcess) -> dict[str, Any]:
    return app.call("call", method="usb_state")


def press_and_wait(app: KioskProcess, button: str, timeout: float = 60.0) -> dict[str, Any]:
    app.tap(button)
    deadline = time.monotonic() + timeout
    while (state := usb_state(app))["busy"]:
        assert state["buttons_disabled"] and state["visible"]
        assert time.monotonic() < deadline, state
        time.sleep(0.02)
    return state


def states(data_dir: Path) -> dict[str, str]:
    store = Store.in_data_dir(data_dir)
    try:
        return {row.submission_id: row.state for row in store.outbox_rows()}
    finally:
        store.close()


def test_export_then_import_with_progress_bars(setup, central, env) -> None:  # noqa: ANN001
    central.cli("set-publisher-key", str(PUBLISHER.verify_key))
    publish(central, CatalogRoutes().publish(1, {"amina-1": audio_for("amina-1", 300_000),
                                                 "jose-2": audio_for("jose-2", 200_000)},
                                             serve=False))
    app = start(setup["folder"], env, setup["stick"])
    try:
        gesture(app)
        assert enter(app, PIN) == ""
        app.wait_for_screen("staff")
        before = usb_state(app)
        assert not before["visible"] and not before["buttons_disabled"]

        started = time.monotonic()
        after = press_and_wait(app, "usb_export_button")
        assert time.monotonic() - started < 60
        assert after["status"] == ("Exported 3 submissions to the USB stick. They stay on this"
                                   " kiosk until the receipts come back.")
        assert after["value"] == after["max"] == 1000 and not after["buttons_disabled"]
        seen = after["seen"]
        assert seen == sorted(seen) and seen[-1] == 1000
        assert any(0 < v < 1000 for v in seen), seen  # the bar moved on the way
        assert set(states(setup["data_dir"]).values()) <= set(PENDING_STATES)
        shot = app.screenshot("staff-usb-export")
        assert png_pixels(shot).std() > 10

        done = central_run(central, "import", str(setup["stick"]), "--catalog")
        assert done.returncode == 0, done.stderr
        assert "received 3" in done.stdout

        after = press_and_wait(app, "usb_import_button")
        assert after["status"] == ("Receipts: 3 acknowledged, 0 already acknowledged."
                                   " Stories: version 1 installed.")
        assert after["value"] == 1000 and len(after["seen"]) >= 1
        assert set(states(setup["data_dir"]).values()) == {ACKNOWLEDGED}
        facts = app.call("call", method="fact_values")
        assert "3 acknowledged" in facts["Outbox"]
        app.screenshot("staff-usb-import")
    finally:
        app.close()


def test_a_stick_that_cannot_be_written_is_said_plainly(setup, env) -> None:  # noqa: ANN001
    app = start(setup["folder"], env, setup["folder"] / "no-such-stick")
    try:
        gesture(app)
        assert enter(app, PIN) == ""
        app.wait_for_screen("staff")
        after = press_and_wait(app, "usb_export_button")
        assert after["status"] == ("The USB stick could not be written: nothing was marked"
                                   " exported. Try again.")
        assert after["value"] < 1000 and not after["buttons_disabled"]
        after = press_and_wait(app, "usb_import_button")
        assert after["status"] == "Nothing to import on this USB stick."
        assert set(states(setup["data_dir"]).values()) <= set(PENDING_STATES)
        app.screenshot("staff-usb-refused")
    finally:
        app.close()
