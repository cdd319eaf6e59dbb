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
    with pytest.raises(ValueError, match="not an id or a count"):
        logs.event(logging.getLogger("kiosk-test2"), "name_given", name=value)
    assert (tmp_path / "logs" / "kiosk-test2.log").read_text() == ""
