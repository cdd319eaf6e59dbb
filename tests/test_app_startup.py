"""`kiosk run` applies the start-up rule before the first screen shows."""

from __future__ import annotations

from pathlib import Path

from kiosk.ids import new_submission_id


def test_leftovers_of_a_crash_are_gone_when_the_attract_screen_shows(kiosk_app,
                                                                     tmp_path: Path) -> None:
    # What a kill mid-take leaves: a submission folder with a sealed answer and the
    # .part of the take being recorded, never submitted.
    lost = tmp_path / "data" / "outbox" / new_submission_id()
    lost.mkdir(parents=True)
    (lost / "q1-1.age").write_bytes(b"age-encryption.org/v1\n-> X25519 ...")
    (lost / "q2-2.age.part").write_bytes(b"age-encryption.org/v1\n-> X25519 ...")
    app = kiosk_app()
    app.wait_for_screen("attract")
    assert not lost.exists()
    assert list((tmp_path / "data" / "outbox").iterdir()) == []
    log = (tmp_path / "data" / "logs" / "kiosk.log").read_text()
    assert "outbox_swept submissions=1 files=2 partial=1" in log
