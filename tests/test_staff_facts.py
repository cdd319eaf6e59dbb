"""What staff see (kiosk.staff.facts) and the wipe of unsent submissions (kiosk.staff.wipe)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiosk import __version__
from kiosk.audio.recorder import Recorder
from kiosk.config import KioskConfig
from kiosk.ids import new_submission_id
from kiosk.staff.facts import gather
from kiosk.staff.wipe import UNSENT_OUTBOX_STATES, UNSENT_STATES, wipe_unsent
from kiosk.vault.custody import SessionCustody
from kiosk.vault.store import OPEN, SUBMITTED, PartRecord, Store
from kiosk.vault.sweep import sweep
from sync.envelope import X25519Identity
from sync.envelope.mlkem import MlkemIdentity
from tests.audio_fakes import OVERFLOW, FakeStreams, record, tone

NOW = 1_800_000_000.0


@pytest.fixture
def team() -> X25519Identity:
    return X25519Identity.generate()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    store = Store.in_data_dir(data_dir)
    yield store
    store.close()


def recorded(data_dir: Path, store: Store, team: X25519Identity,
             script: list | None = None) -> SessionCustody:
    """A real session with one sealed answer (the fake microphone plays ``script``)."""
    session = SessionCustody(data_dir=data_dir, store=store, recipients=[team.recipient()])
    name, take = record(session, Recorder(FakeStreams(script or [tone(0.3)])), "q1")
    while take.meters().elapsed_s < 0.3:
        time.sleep(0.01)
    take.stop()
    return session


def row_only(store: Store, state: str, *, parts: int = 1, overflows: int = 0) -> str:
    """A submission as rows only (no files), in ``state``."""
    sid = new_submission_id()
    store.open_submission(sid, now=NOW)
    for i in range(parts):
        store.add_part(PartRecord(
            submission_id=sid, name=f"q{i}-{i}", prompt_id=f"q{i}", duration_s=1.0,
            sample_rate=48_000, frames=48_000, overflows=overflows, size=100, sha256="0" * 64,
            opus_bytes=80, end_reason="stopped", silent=False, created_at=NOW))
    if state == SUBMITTED:
        store.mark_submitted(sid, manifest_size=10, manifest_sha256="1" * 64, now=NOW)
    elif state != OPEN:
        store.db.execute("update submissions set state = ? where id = ?", [state, sid])
    return sid


class FakeLibrary:
    def __init__(self, version: int | None, stories: int, error: object = None) -> None:
        self.version = version
        self._stories = [object()] * stories
        self._error = error

    def stories(self) -> list[object]:
        return list(self._stories)

    def last_error(self) -> object:
        return self._error


# -- facts ------------------------------------------------------------------------------------

def test_facts_of_a_fresh_kiosk(data_dir: Path, store: Store) -> None:
    cfg = KioskConfig(data_dir=data_dir)
    facts = gather(cfg, store=store, now=NOW)
    assert facts.submissions == {}
    assert facts.recording == {"parts": 0, "overflows": 0, "parts_with_overflows": 0}
    assert facts.catalog_version is None and facts.catalog_stories is None
    assert facts.last_sync_at is None and facts.last_sync_error is None
    assert facts.device_id is None and facts.device_error is None
    assert facts.free_disk_bytes and facts.free_disk_bytes > 0
    assert facts.version == __version__
    assert facts.sealing["recipients"] == 0
    lines = dict(facts.lines())
    assert lines["Submissions"] == "none"
    assert lines["Catalog"] == "no catalog"
    assert lines["Last sync"] == "never"
    assert lines["Device"] == "not enrolled"
    assert lines["Sealing"].startswith("no recipients")
    assert lines["Recording"] == "0 parts kept, 0 input overflows in 0 of them"
    doc = json.loads(json.dumps(facts.as_dict()))
    assert doc["data_dir"] == str(data_dir) and doc["gathered_at"] == NOW
    assert doc["catalog"] == {"version": None, "stories": None, "error": None}
    assert doc["device"] == {"id": None, "error": None, "server_url": None, "revoked": False}
    assert doc["outbox"] == {}
    assert doc["sync"] == {"last_sync_at": None, "last_error": None, "revoked": False,
                           "last_attempt_at": None}
    assert lines["Outbox"] == "none" and lines["Enrolled service"] == "not enrolled"


def test_facts_of_a_busy_kiosk(data_dir: Path, store: Store, team: X25519Identity) -> None:
    recorded(data_dir, store, team, [OVERFLOW, tone(0.3)]).submit({})
    recorded(data_dir, store, team)  # a session in the making
    row_only(store, SUBMITTED, parts=2)
    acked = row_only(store, SUBMITTED)
    store.db.execute("update outbox set state = 'acknowledged' where submission_id = ?",
                     [acked])
    row_only(store, "archived")  # a state the store does not know: counted as it is
    exported = row_only(store, SUBMITTED)  # on a USB stick, receipt not back yet
    assert store.mark_exported([exported], now=NOW) == 1
    # Exported, then acknowledged (a receipt came back): no longer waiting.
    store.db.execute("update outbox set exported_at = ? where submission_id = ?",
                     [NOW, acked])
    (data_dir / "sync-state.json").write_text(json.dumps(
        {"last_sync_at": NOW - 60, "last_error": "server said 503"}))
    (data_dir / "device.json").write_text(json.dumps(
        {"device_id": "dev-0042", "server_url": "https://vetting.example.org"}))
    pq = str(MlkemIdentity.generate().recipient())
    cfg = KioskConfig(data_dir=data_dir, recipients=(pq,))
    facts = gather(cfg, store=store, library=FakeLibrary(7, 12, "signature did not verify"))

    assert facts.submissions == {"archived": 1, "open": 1, "submitted": 4}
    assert facts.outbox == {"acknowledged": 1, "sealed": 3}
    assert facts.exported_waiting == 1
    assert facts.recording["parts"] == 7
    assert facts.recording["overflows"] >= 1 and facts.recording["parts_with_overflows"] == 1
    assert (facts.catalog_version, facts.catalog_stories) == (7, 12)
    assert facts.catalog_error == "signature did not verify"
    assert facts.last_sync_at == NOW - 60 and facts.last_sync_error == "server said 503"
    assert facts.device_id == "dev-0042"
    assert facts.sealing["post_quantum"] is True
    lines = dict(facts.lines())
    assert lines["Submissions"] == "4 submitted, 1 archived, 1 open"
    assert lines["Outbox"] == "3 sealed, 1 acknowledged"
    assert lines["Exported by USB"] == "1 waiting for receipts"
    assert lines["Enrolled service"] == "https://vetting.example.org"
    assert lines["Catalog"] == "version 7, 12 stories"
    assert lines["Last sync"] == "2027-01-15 07:59 UTC"
    assert lines["Last sync error"] == "server said 503"
    assert lines["Device"] == "dev-0042"
    assert [label for label, _ in facts.lines()] == [
        "Data directory", "Central service", "Sealing", "Submissions", "Outbox",
        "Exported by USB", "Catalog", "Catalog error", "Last sync", "Last sync error",
        "Free disk", "Device", "Enrolled service", "Recording", "Version"]
    json.dumps(facts.as_dict())


def test_facts_say_when_the_device_is_revoked(data_dir: Path, store: Store) -> None:
    (data_dir / "device.json").write_text(json.dumps(
        {"device_id": "dev-0123456789abcdef", "server_url": "http://127.0.0.1:9"}))
    (data_dir / "sync-state.json").write_text(json.dumps(
        {"last_sync_at": None, "last_error": "revoked", "revoked": True,
         "last_attempt_at": NOW}))
    facts = gather(KioskConfig(data_dir=data_dir), store=store)
    assert facts.revoked and facts.last_attempt_at == NOW
    lines = dict(facts.lines())
    assert lines["Device"].startswith("dev-0123456789abcdef (REVOKED")
    assert lines["Last sync error"] == "revoked"
    assert facts.as_dict()["sync"]["revoked"] is True


def test_facts_survive_broken_pieces(data_dir: Path, store: Store) -> None:
    (data_dir / "sync-state.json").write_text("{oops")
    (data_dir / "device.json").write_text(json.dumps({"device_id": 5}))

    class Broken:
        version = 3

        def stories(self) -> list[object]:
            raise OSError("catalog file vanished")

    facts = gather(KioskConfig(data_dir=data_dir), store=store, library=Broken())
    assert facts.catalog_version is None
    assert facts.catalog_error == "catalog unreadable (OSError)"
    assert facts.last_sync_at is None and facts.last_sync_error == "sync-state.json is not JSON"
    assert facts.device_id is None and dict(facts.lines())["Device"].startswith("unreadable")
    @dataclass(frozen=True)
    class LastError:  # the shape of kiosk.stories.library.LastError
        code: str
        at: str
        during: str
        story_id: str | None = None
        version: int | None = None

    error = LastError(code="bad_signature", at="2026-11-28T10:00:00Z", during="load")
    facts = gather(KioskConfig(data_dir=data_dir), store=store,
                   library=FakeLibrary(2, 1, error))
    assert facts.catalog_error == "bad_signature during load at 2026-11-28T10:00:00Z"
    no_version = gather(KioskConfig(data_dir=data_dir), store=store,
                        library=FakeLibrary(None, 0))
    assert dict(no_version.lines())["Catalog"] == "no catalog"


# -- wipe ---------------------------------------------------------------------------------------

def test_unsent_states_are_explicit() -> None:
    assert UNSENT_STATES == {"open", "submitted"}
    assert UNSENT_OUTBOX_STATES == {"sealed", "uploading", "finalizing", "rejected"}


def test_wipe_deletes_every_unsent_submission_and_leaves_staff_files(
        data_dir: Path, store: Store, team: X25519Identity) -> None:
    submitted = recorded(data_dir, store, team)
    submitted.submit({"display_name": "Anonymous"})
    in_making = recorded(data_dir, store, team)
    only_rows = row_only(store, SUBMITTED)
    orphan = data_dir / "outbox" / new_submission_id()  # a folder with no row
    orphan.mkdir()
    (orphan / "q1-1.age.part").write_bytes(b"x")
    staff_file = data_dir / "outbox" / "README-staff.txt"
    staff_file.write_text("USB copy made on Tuesday")
    staff_dir = data_dir / "outbox" / "usb-export"
    staff_dir.mkdir()
    (staff_dir / "bundle.tar").write_bytes(b"x")

    report = wipe_unsent(data_dir, store)

    assert sorted(p.name for p in (data_dir / "outbox").iterdir()) == [
        "README-staff.txt", "usb-export"]
    assert staff_file.read_text() == "USB copy made on Tuesday"
    assert (staff_dir / "bundle.tar").exists()
    assert store.submitted_ids() == set() and store.unsubmitted_ids() == set()
    for sid in (submitted.submission_id, in_making.submission_id, only_rows):
        assert store.parts(sid) == []
    assert store.recording_health()["parts"] == 0
    assert report.submissions == 4  # two recorded, one with rows only, the orphan folder
    assert report.files == 2 + 1 + 1  # submitted: part + manifest; in the making: part; orphan
    assert (report.kept, report.strays, report.failed) == (0, 2, 0) and report.complete
    # The next start-up finds nothing to sweep.
    assert sweep(data_dir, store).submissions == 0


def test_wipe_keeps_submissions_in_other_states(data_dir: Path, store: Store) -> None:
    # Acknowledged and purged: the service holds them. Rejected, and every state still
    # on its way (sealed, uploading, finalizing), are unsent and go.
    kept, gone = {}, {}
    for state in ("acknowledged", "purged", "sealed", "uploading", "finalizing", "rejected"):
        sid = row_only(store, SUBMITTED)
        store.db.execute("update outbox set state = ? where submission_id = ?", [state, sid])
        (data_dir / "outbox" / sid).mkdir(parents=True)
        (data_dir / "outbox" / sid / "manifest.json.age").write_bytes(b"x")
        (kept if state in ("acknowledged", "purged") else gone)[sid] = state
    other = row_only(store, "archived")  # a state the wipe does not name: left alone
    report = wipe_unsent(data_dir, store)
    for sid, state in kept.items():
        assert store.submission_state(sid) == SUBMITTED
        assert store.outbox_row(sid).state == state
        assert (data_dir / "outbox" / sid / "manifest.json.age").exists()
    for sid in gone:
        assert store.submission_state(sid) is None and store.outbox_row(sid) is None
        assert not (data_dir / "outbox" / sid).exists()
    assert store.submission_state(other) == "archived"
    assert (report.submissions, report.kept, report.files) == (4, 3, 4)


def test_wipe_of_an_empty_kiosk(data_dir: Path, store: Store) -> None:
    report = wipe_unsent(data_dir, store)
    assert (report.submissions, report.files, report.kept, report.strays) == (0, 0, 0, 0)


def test_wipe_does_not_follow_a_symlink_named_like_a_submission(
        tmp_path: Path, data_dir: Path, store: Store) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("x")
    (data_dir / "outbox").mkdir(parents=True)
    (data_dir / "outbox" / new_submission_id()).symlink_to(elsewhere)
    report = wipe_unsent(data_dir, store)
    assert report.strays == 1 and (elsewhere / "keep.txt").exists()
