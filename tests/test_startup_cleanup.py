"""The start-up rule: every part that belongs to no submitted submission is deleted."""

from __future__ import annotations

import time

import pytest

from kiosk.audio.recorder import Recorder
from kiosk.ids import new_submission_id
from kiosk.vault.ballast import Ballast
from kiosk.vault.custody import SessionCustody
from kiosk.vault.store import SUBMITTED, Store
from kiosk.vault.sweep import sweep
from sync.envelope import X25519Identity
from tests.audio_fakes import FakeStreams, record, tone


@pytest.fixture
def team() -> X25519Identity:
    return X25519Identity.generate()


def recorded(data_dir, store, team, prompts=("q1",)) -> SessionCustody:
    session = SessionCustody(data_dir=data_dir, store=store, recipients=[team.recipient()])
    for prompt in prompts:
        name, take = record(session, Recorder(FakeStreams([tone(0.3)])), prompt)
        while take.meters().elapsed_s < 0.3:
            time.sleep(0.01)
        take.stop()
    return session


def test_submitted_stays_and_everything_else_goes(tmp_path, team) -> None:
    data_dir = tmp_path / "data"
    store = Store.in_data_dir(data_dir)
    kept = recorded(data_dir, store, team, ("q1", "q2"))
    kept.submit({"display_name": "Anonymous"})
    # A session the kiosk lost mid-way (crash after two sealed answers, keys gone).
    lost = recorded(data_dir, store, team, ("q1", "q2"))
    # Leftovers of a crash: a .part in the lost one, and inside the submitted one a
    # .part and a dropped take whose file survived.
    (lost.directory / "q3-3.age.part").write_bytes(b"age-encryption.org/v1\n...")
    (kept.directory / "manifest.json.age.part").write_bytes(b"x")
    (kept.directory / "q1-9.age").write_bytes(b"x")
    # A folder with no row at all.
    orphan = data_dir / "outbox" / new_submission_id()
    orphan.mkdir()
    (orphan / "q1-1.age").write_bytes(b"x")
    store.close()

    store = Store.in_data_dir(data_dir)  # the kiosk starts again
    report = sweep(data_dir, store)

    assert sorted(p.name for p in (data_dir / "outbox").iterdir()) == [kept.submission_id]
    assert sorted(p.name for p in kept.directory.iterdir()) == [
        "manifest.json.age", "q1-1.age", "q2-2.age"]
    assert store.submission_state(kept.submission_id) == SUBMITTED
    assert len(store.parts(kept.submission_id)) == 2
    assert store.submission_state(lost.submission_id) is None
    assert store.parts(lost.submission_id) == []
    assert report.submissions == 2  # lost, orphan
    assert report.files == 2 + 1 + 2 + 1  # lost's parts + .part, kept's 2, orphan
    assert report.partial == 2 and report.strays == 0
    assert report.ballast and Ballast(data_dir).present


def test_a_sweep_of_a_clean_outbox_changes_nothing(tmp_path, team) -> None:
    data_dir = tmp_path / "data"
    store = Store.in_data_dir(data_dir)
    session = recorded(data_dir, store, team)
    session.submit({})
    before = sorted(p.relative_to(data_dir) for p in (data_dir / "outbox").rglob("*"))
    report = sweep(data_dir, store)
    assert (report.submissions, report.files, report.partial) == (0, 0, 0)
    assert sorted(p.relative_to(data_dir) for p in (data_dir / "outbox").rglob("*")) == before


def test_rows_of_an_unsubmitted_submission_without_files_are_removed(tmp_path) -> None:
    data_dir = tmp_path / "data"
    store = Store.in_data_dir(data_dir)
    sid = new_submission_id()
    store.open_submission(sid, now=1.0)
    assert sweep(data_dir, store).submissions == 1
    assert store.submission_state(sid) is None


def test_what_is_not_a_submission_folder_is_left_for_staff(tmp_path, team) -> None:
    data_dir = tmp_path / "data"
    store = Store.in_data_dir(data_dir)
    outbox = data_dir / "outbox"
    outbox.mkdir(parents=True)
    # A staff member's notes, a tool's left-over folder, a link: none is a submission.
    (outbox / "stray.tmp").write_bytes(b"x")
    (outbox / "README.txt").write_text("copied here by staff")
    (outbox / "backup").mkdir()
    (outbox / "backup" / "q1-1.age").write_bytes(b"x")
    (outbox / new_submission_id()).symlink_to(outbox / "backup")
    before = sorted(p.relative_to(data_dir) for p in outbox.rglob("*"))
    report = sweep(data_dir, store)
    assert sorted(p.relative_to(data_dir) for p in outbox.rglob("*")) == before
    assert (report.submissions, report.files, report.strays) == (0, 0, 4)


def test_a_new_submission_folder_is_made_durable(tmp_path, team, monkeypatch) -> None:
    from kiosk.vault import layout

    synced = []
    real = layout.fsync_dir
    monkeypatch.setattr(layout, "fsync_dir", lambda d: (synced.append(d), real(d)))
    data_dir = tmp_path / "data"
    store = Store.in_data_dir(data_dir)
    session = recorded(data_dir, store, team)
    # outbox/ (whose entry the new submission folder is) and data/ (outbox's own entry).
    assert data_dir / "outbox" in synced and data_dir in synced
    session.submit({})
