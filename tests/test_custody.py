"""Per-session key custody: review with the session's keys, then discard or submit, after
which nothing in the process can open the parts without the team's identity."""

from __future__ import annotations

import gc
import hashlib
import json
import time

import pytest
import soundfile as sf

from kiosk.audio.player import Player, PlayerState
from kiosk.audio.recorder import Recorder
from kiosk.ids import is_submission_id
from kiosk.vault import manifest as manifest_module
from kiosk.vault.custody import CustodyClosed, SessionCustody
from kiosk.vault.store import SUBMITTED, Store
from sync.envelope import EnvelopeError, EnvelopeWriter, X25519Identity, open_bytes, open_sealed
from tests.audio_fakes import RATE, FakeStreams, tone
from tests.audio_fakes import record as record_take


@pytest.fixture
def team() -> X25519Identity:
    return X25519Identity.generate()


@pytest.fixture
def store(tmp_path):
    s = Store.in_data_dir(tmp_path / "data")
    yield s
    s.close()


def make_session(tmp_path, store, team) -> SessionCustody:
    return SessionCustody(data_dir=tmp_path / "data", store=store, recipients=[team.recipient()])


def record_answer(session: SessionCustody, prompt: str, seconds: float = 0.5, **script) -> str:
    recorder = Recorder(FakeStreams([tone(seconds)], **script))
    name, take = record_take(session, recorder, prompt)
    while take.meters().elapsed_s < seconds:
        time.sleep(0.01)
    take.stop()
    return name


def key_digests(session: SessionCustody) -> set[bytes]:
    # The test keeps digests, never the keys: holding them would keep them alive.
    return {hashlib.sha256(k).digest() for k in session._keys.values()}


def live_16_byte_strings() -> list[bytes]:
    """Every bytes/bytearray of 16 bytes reachable from any object the GC tracks.

    The walk goes through untracked containers too (CPython stops tracking a dict
    that holds only atoms, such as a dict of bytearrays).
    """
    gc.collect()
    found = []
    seen: set[int] = set()
    stack = list(gc.get_objects())
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, bytes | bytearray):
            if len(obj) == 16:
                found.append(bytes(obj))
            continue
        stack.extend(gc.get_referents(obj))
    return found


def assert_no_live_key_opens(paths, digests: set[bytes]) -> None:
    candidates = live_16_byte_strings()
    assert not {hashlib.sha256(c).digest() for c in candidates} & digests, \
        "a file key is still held by a live object"
    for path in paths:
        for candidate in set(candidates):
            with pytest.raises((EnvelopeError, ValueError)):
                open_sealed(path, file_key=candidate).close()


def test_review_uses_the_session_key_and_submit_drops_every_key(tmp_path, store, team) -> None:
    session = make_session(tmp_path, store, team)
    assert is_submission_id(session.submission_id)
    first = record_answer(session, "q1")
    second = record_answer(session, "q2", seconds=0.7)
    source = session.review_source(first)
    with source.open() as f:
        assert len(sf.read(f, dtype="int16")[0]) >= RATE // 2
    digests = key_digests(session)
    assert len(digests) == 2
    # The scan below does find keys while they are held: it is not vacuous.
    assert digests <= {hashlib.sha256(c).digest() for c in live_16_byte_strings()}
    paths = [session.directory / f"{first}.age", session.directory / f"{second}.age"]
    del f, source

    manifest_path = session.submit({"display_name": "Anonymous", "language": "en"})

    assert store.submission_state(session.submission_id) == SUBMITTED
    with pytest.raises(CustodyClosed):
        session.review_source(first)
    assert_no_live_key_opens(paths, digests)
    # The team still opens everything: the parts and the manifest that lists them.
    for path in paths:
        with open_sealed(path, identities=[team]) as f:
            assert len(sf.read(f, dtype="int16")[0]) > 0
    manifest = json.loads(open_bytes(manifest_path.read_bytes(), [team]))
    assert manifest["display_name"] == "Anonymous"
    assert manifest["submission_id"] == session.submission_id
    assert [p["name"] for p in manifest["parts"]] == [first, second]
    assert manifest["parts"][1]["duration_s"] >= 0.7
    rows = store.parts(session.submission_id)
    assert [(r.name, r.sha256) for r in rows] == [(p["name"], p["sha256"])
                                                 for p in manifest["parts"]]


def test_discard_deletes_the_parts_and_drops_the_keys(tmp_path, store, team) -> None:
    session = make_session(tmp_path, store, team)
    name = record_answer(session, "q1")
    source = session.review_source(name)
    digests = key_digests(session)
    session.discard()
    assert not session.directory.exists()
    assert store.submission_state(session.submission_id) is None
    assert store.parts(session.submission_id) == []
    # A source handed out for review before the discard opens nothing afterwards.
    with pytest.raises(CustodyClosed):
        source.open()
    del source
    assert_no_live_key_opens([], digests)
    with pytest.raises(CustodyClosed):
        session.submit({})


def test_discard_mid_take_stops_it_and_leaves_nothing(tmp_path, store, team) -> None:
    session = make_session(tmp_path, store, team)
    name, take = record_take(session, Recorder(FakeStreams([tone(30.0)], realtime=0.02)), "q1")
    time.sleep(0.2)
    session.discard()
    assert take.done and take.result.sealed is None
    assert not session.directory.exists()
    assert session._keys == {}


def test_re_recording_an_answer_drops_the_old_part(tmp_path, store, team) -> None:
    session = make_session(tmp_path, store, team)
    old = record_answer(session, "q1")
    session.drop_part(old)
    new = record_answer(session, "q1")
    assert old != new
    assert [p.name for p in session.parts()] == [new]
    assert sorted(p.name for p in session.directory.iterdir()) == [f"{new}.age"]
    with pytest.raises(KeyError):
        session.review_source(old)


def test_overflows_are_kept_in_the_clear_metadata_for_staff(tmp_path, store, team) -> None:
    session = make_session(tmp_path, store, team)
    recorder = Recorder(FakeStreams([tone(0.1), "overflow", tone(0.1), "overflow",
                                     tone(0.3)]))
    name, take = record_take(session, recorder, "q1")
    while take.meters().elapsed_s < 0.5:
        time.sleep(0.01)
    take.stop()
    (part,) = session.parts()
    assert part.overflows == 2 and part.sample_rate == RATE and part.end_reason == "stopped"
    assert store.recording_health() == {"parts": 1, "overflows": 2, "parts_with_overflows": 1}


def test_the_store_is_wal_with_full_sync(store) -> None:
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_nothing_personal_reaches_the_store(tmp_path, store, team) -> None:
    session = make_session(tmp_path, store, team)
    record_answer(session, "q1")
    session.submit({"display_name": "Maria Quispe", "contact": "maria@example.org"})
    store.close()
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"Maria" not in data and b"example.org" not in data, path


@pytest.fixture
def manifest_keys(monkeypatch) -> list[bytes]:
    """SHA-256 digests of every manifest file key, taken as each manifest is sealed."""
    digests: list[bytes] = []

    def writer(path, recipients, *, allow_mixed=False):
        w = EnvelopeWriter(path, recipients, allow_mixed=allow_mixed)
        key = w.file_key
        digests.append(hashlib.sha256(key).digest())
        key[:] = bytes(len(key))
        return w

    monkeypatch.setattr(manifest_module, "envelope_writer", writer)
    return digests


def test_submit_drops_the_manifest_key_too(tmp_path, store, team, manifest_keys) -> None:
    session = make_session(tmp_path, store, team)
    record_answer(session, "q1")
    manifest_path = session.submit({"display_name": "Amina Diallo",
                                    "contact": "+221 77 000 00 00", "country": "SN"})
    assert len(manifest_keys) == 1
    # The manifest holds the name and the contact: nothing live may open it.
    assert_no_live_key_opens([manifest_path], set(manifest_keys))
    assert json.loads(open_bytes(manifest_path.read_bytes(), [team]))["country"] == "SN"


def test_a_kept_manifest_key_is_caught(tmp_path, store, team, manifest_keys,
                                       monkeypatch) -> None:
    # The check above is not vacuous: a seal that keeps its writer (and key) alive fails it.
    kept = []
    real = manifest_module.envelope_writer

    def keeping(path, recipients, *, allow_mixed=False):
        w = real(path, recipients, allow_mixed=allow_mixed)
        kept.append(w)
        w.drop_key = lambda: None  # the broken variant: the key is never dropped
        return w

    monkeypatch.setattr(manifest_module, "envelope_writer", keeping)
    session = make_session(tmp_path, store, team)
    record_answer(session, "q1")
    manifest_path = session.submit({"display_name": "Anonymous"})
    with pytest.raises(AssertionError, match="file key is still held"):
        assert_no_live_key_opens([manifest_path], set(manifest_keys))
    kept.clear()


@pytest.mark.parametrize("ending", ["submit", "discard"])
def test_a_reader_opened_for_review_is_closed_when_the_session_ends(
        tmp_path, store, team, ending) -> None:
    session = make_session(tmp_path, store, team)
    name = record_answer(session, "q1", seconds=1.0)
    reader = session.review_source(name).open()
    assert reader.read(4) == b"OggS"
    if ending == "submit":
        session.submit({"display_name": "Anonymous"})
    else:
        session.discard()
    with pytest.raises(ValueError, match="closed"):
        reader.read(1024)
    with pytest.raises(ValueError, match="closed"):
        reader.seek(0)


def test_the_review_player_is_stopped_when_the_session_is_submitted(
        tmp_path, store, team) -> None:
    session = make_session(tmp_path, store, team)
    name = record_answer(session, "q1", seconds=2.0)
    player = Player(FakeStreams(speed=1.0))
    assert session.play_back(name, player) >= 2.0
    player.play()
    time.sleep(0.2)
    session.submit({"display_name": "Anonymous"})
    assert player.state is PlayerState.CLOSED


def test_custody_zeroes_the_key_buffers_it_held(tmp_path, store, team) -> None:
    session = make_session(tmp_path, store, team)
    name = record_answer(session, "q1")
    # The very buffer custody holds (kept here only to look at it afterwards).
    buffer = session._keys[name]
    assert any(buffer)
    session.submit({"display_name": "Anonymous"})
    assert buffer == bytearray(16), "custody forgot the key without zeroing it"


def test_the_take_zeroes_its_writer_key_once_it_is_over(tmp_path, team) -> None:
    writers = []

    def spy(path, recipients, *, allow_mixed=False):
        w = EnvelopeWriter(path, recipients, allow_mixed=allow_mixed)
        writers.append(w)
        return w

    recorder = Recorder(FakeStreams([tone(0.3)]), writer_factory=spy)
    take = recorder.start(tmp_path / "p.age", [team.recipient()])
    recorder.streams.go.set()
    copy = take.file_key
    held = writers[0]._file_key
    assert held == copy and any(held)
    while take.meters().elapsed_s < 0.3:
        time.sleep(0.01)
    take.stop()
    assert not any(held), "the writer's key buffer was not zeroed"
    with pytest.raises(ValueError):
        _ = writers[0].file_key
    assert any(copy)  # the caller's copy is the caller's to zero
