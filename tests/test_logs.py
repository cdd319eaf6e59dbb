"""Event logs: one line per event, rotated, and refusing free text."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kiosk import logs


def test_one_line_per_event_under_the_data_dir(tmp_path: Path) -> None:
    path = logs.setup(tmp_path, name="kiosk-test")
    logger = logging.getLogger("kiosk-test.unit")
    logs.event(logger, "take_sealed", part=3, seconds=41.2, overflows=0)
    logs.event(logger, "sync_failed", error="ConnectionRefused")
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("take_sealed part=3 seconds=41.2 overflows=0")
    assert lines[1].endswith("sync_failed error=ConnectionRefused")


@pytest.mark.parametrize("value", ["Amina Diallo", "My answer is that we", "x" * 65, b"pcm"])
def test_free_text_is_refused(tmp_path: Path, value: object) -> None:
    logs.setup(tmp_path, name="kiosk-test2")
    with pytest.raises(logs.LogFieldError, match="not an id or a count"):
        logs.event(logging.getLogger("kiosk-test2"), "name_given", name=value)
    assert (tmp_path / "logs" / "kiosk-test2.log").read_text() == ""


def test_in_the_field_a_bad_field_is_dropped_and_the_event_still_logged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(logs.STRICT_ENV, raising=False)
    path = logs.setup(tmp_path, name="kiosk-test3")
    logs.event(logging.getLogger("kiosk-test3"), "take_started", part="Amina Diallo.age",
               seconds=3)
    text = path.read_text()
    assert "Amina" not in text
    lines = text.splitlines()
    assert lines[0].endswith("log_field_dropped event=take_started field=part")
    assert lines[1].endswith("take_started seconds=3")


def test_a_bad_log_field_never_aborts_a_take(tmp_path: Path, monkeypatch) -> None:
    # "take_started" logs the part's file name after the take's thread has started: a
    # name the log refuses must not leave a running take behind an exception.
    from kiosk.audio.recorder import Recorder
    from sync.envelope import X25519Identity
    from tests.audio_fakes import FakeStreams, start, tone

    monkeypatch.delenv(logs.STRICT_ENV, raising=False)
    team = X25519Identity.generate()
    take = start(Recorder(FakeStreams([tone(0.2)])), tmp_path / "answer one.age",
                 [team.recipient()])
    while take.meters().elapsed_s < 0.2:
        import time

        time.sleep(0.01)
    assert take.stop().kept
