"""Faults during a take: no microphone, a microphone that goes away, a stream error, a
full disk (on a real small filesystem), and a crash mid-take."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from kiosk.audio.devices import AudioDeviceError
from kiosk.audio.recorder import EndReason, Recorder, StorageFullError
from kiosk.audio.streams import StreamError
from kiosk.vault.ballast import Ballast
from kiosk.vault.store import SUBMITTED, Store
from kiosk.vault.sweep import sweep
from sync.envelope import X25519Identity, open_sealed
from tests.audio_fakes import FAIL, RATE, STALL, FakeStreams, loud_noise, start, tone

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def team() -> X25519Identity:
    return X25519Identity.generate()


def decode(path: Path, identity: X25519Identity) -> int:
    with open_sealed(path, identities=[identity]) as f:
        return len(sf.read(f, dtype="int16")[0])


# -- the microphone --------------------------------------------------------------------
def test_no_microphone_at_start_is_a_clear_error_and_leaves_no_file(tmp_path, team) -> None:
    recorder = Recorder(FakeStreams(missing=True))
    with pytest.raises(AudioDeviceError, match="No microphone was found"):
        start(recorder, tmp_path / "p.age", [team.recipient()])
    assert list(tmp_path.iterdir()) == []


def test_a_stream_that_cannot_start_leaves_no_file(tmp_path, team) -> None:
    streams = FakeStreams([tone(1)], fail_on_start=True)
    with pytest.raises(StreamError, match="microphone could not be started"):
        start(Recorder(streams), tmp_path / "p.age", [team.recipient()])
    assert list(tmp_path.iterdir()) == []
    assert streams.inputs[0].closed


def test_an_unplugged_microphone_keeps_what_was_said(tmp_path, team) -> None:
    # Two seconds of sound, then the stream goes quiet for good (a pulled USB cable).
    recorder = Recorder(FakeStreams([tone(2.0), STALL]), stall_timeout_s=0.3)
    take = start(recorder, tmp_path / "p.age", [team.recipient()])
    result = take.wait(10)
    assert result.reason is EndReason.DEVICE_LOST
    assert result.kept and result.frames == 2 * RATE
    assert "microphone stopped working" in result.message and "kept" in result.message
    assert decode(result.sealed.path, team) == 2 * RATE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.age"]


def test_a_stream_error_mid_take_keeps_what_was_said(tmp_path, team) -> None:
    ended = []
    recorder = Recorder(FakeStreams([tone(1.5), FAIL]))
    take = start(recorder, tmp_path / "p.age", [team.recipient()], on_end=ended.append)
    result = take.wait(10)
    assert ended == [result]
    assert result.reason is EndReason.DEVICE_LOST and result.kept
    assert decode(result.sealed.path, team) == int(1.5 * RATE)


def test_a_stream_that_fails_to_stop_still_seals(tmp_path, team) -> None:
    recorder = Recorder(FakeStreams([tone(1.0)], fail_on_stop=True))
    take = start(recorder, tmp_path / "p.age", [team.recipient()])
    while take.meters().elapsed_s < 1.0:
        time.sleep(0.01)
    result = take.stop()
    assert result.reason is EndReason.STOPPED and result.kept
    assert decode(result.sealed.path, team) == result.frames >= RATE


# -- the disk, on a real 2 MiB filesystem ---------------------------------------------------
@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, mounted for this test only (the kiosk runs as root in tests)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs",
                           str(mount_point)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("mounting a 2 MiB tmpfs is not permitted here (needs root/CAP_SYS_ADMIN):"
                    f" {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path, *, leave: int = 0) -> Path:
    """Fill the filesystem, then give back ``leave`` bytes."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        block = b"\xa5" * 4096
        try:
            while True:
                f.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        size = f.tell()
        f.truncate(max(0, size - leave))
        os.fsync(f.fileno())
    return filler


def test_disk_full_mid_take_seals_what_was_written(small_fs: Path, team) -> None:
    ballast = Ballast(small_fs)
    assert ballast.ensure()
    fill(small_fs, leave=24 * 1024)  # room for the header, not for the first 64 KiB chunk
    recorder = Recorder(FakeStreams([loud_noise(30.0)]), ballast=ballast)
    take = start(recorder, small_fs / "p.age", [team.recipient()])
    result = take.wait(20)
    assert result.reason is EndReason.DISK_FULL
    assert result.kept, "the audio up to the full disk must be sealed"
    assert "ran out of storage" in result.message and "kept" in result.message
    assert not ballast.present, "the ballast was given up to seal the take"
    # More than one 64 KiB chunk of Opus was held back and is in the file now.
    assert result.opus_bytes > 64 * 1024 and result.frames > 2 * RATE
    assert decode(result.sealed.path, team) == result.frames
    assert not list(small_fs.glob("*.part"))
    # The next take is refused up front while the disk stays full, and leaves nothing.
    with pytest.raises(StorageFullError, match="storage is full"):
        start(recorder, small_fs / "q.age", [team.recipient()])
    assert not (small_fs / "q.age.part").exists()
    # Once staff free space, the ballast comes back and recording works again.
    (small_fs / "filler").unlink()
    recorder.streams = FakeStreams([tone(0.5)])
    take = start(recorder, small_fs / "q.age", [team.recipient()])
    assert ballast.present
    while take.meters().elapsed_s < 0.5:
        time.sleep(0.01)
    assert take.stop().reason is EndReason.STOPPED


def test_disk_full_at_the_final_chunk_seals_with_the_ballast(small_fs: Path, team) -> None:
    ballast = Ballast(small_fs)
    recorder = Recorder(FakeStreams([tone(1.0)]), ballast=ballast)
    take = start(recorder, small_fs / "p.age", [team.recipient()])
    while take.meters().elapsed_s < 1.0:
        time.sleep(0.01)
    fill(small_fs)  # not one byte left for the final chunk
    result = take.stop()
    assert result.reason is EndReason.DISK_FULL and result.kept
    assert decode(result.sealed.path, team) == result.frames >= RATE


def test_disk_full_at_start_is_refused_with_no_file(small_fs: Path, team) -> None:
    fill(small_fs, leave=8 * 1024)
    recorder = Recorder(FakeStreams([tone(1.0)]), ballast=Ballast(small_fs))
    with pytest.raises(StorageFullError):
        start(recorder, small_fs / "p.age", [team.recipient()])
    assert sorted(p.name for p in small_fs.iterdir()) == ["filler"]


# -- a crash mid-take ----------------------------------------------------------------------
CRASHING_KIOSK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from kiosk.audio.recorder import Recorder
    from kiosk.vault.custody import SessionCustody
    from kiosk.vault.store import Store
    from tests.audio_fakes import start, record, FakeStreams, loud_noise, tone

    data_dir = Path(sys.argv[1])
    recipients = [sys.argv[2]]
    store = Store.in_data_dir(data_dir)
    # One submission is submitted before the crash: it must survive the sweep.
    kept = SessionCustody(data_dir=data_dir, store=store, recipients=recipients)
    name, take = record(kept, Recorder(FakeStreams([tone(0.5)])), "q1")
    while take.meters().elapsed_s < 0.5:
        time.sleep(0.01)
    take.stop()
    kept.submit({"name": "Anonymous"})
    print("SUBMITTED", kept.submission_id, flush=True)
    # The next defender is mid-answer when the power goes.
    session = SessionCustody(data_dir=data_dir, store=store, recipients=recipients)
    name, take = record(session, Recorder(FakeStreams([loud_noise(20.0)], realtime=0.002)),
                                "q1")
    part = session.directory / (name + ".age.part")
    while part.stat().st_size <= 65_536:  # at least one sealed chunk on disk
        time.sleep(0.02)
    print("RECORDING", session.submission_id, part, flush=True)
    time.sleep(60)
""")


def test_a_crash_mid_take_leaves_a_part_that_the_next_start_deletes(tmp_path, team) -> None:
    data_dir = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_KIOSK, str(data_dir),
                             str(team.recipient())], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        submitted = proc.stdout.readline().split()
        recording = proc.stdout.readline().split()
        assert submitted[:1] == ["SUBMITTED"] and recording[:1] == ["RECORDING"], \
            proc.stderr.read() if proc.poll() is not None else (submitted, recording)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    part = Path(recording[2])
    assert part.exists() and part.stat().st_size > 65_536, "the kill left the .part behind"
    # The kiosk starts again.
    store = Store.in_data_dir(data_dir)
    assert store.submission_state(recording[1]) == "open"
    report = sweep(data_dir, store)
    assert not part.parent.exists()
    assert report.partial == 1 and report.submissions == 1
    assert store.submission_state(recording[1]) is None
    assert store.parts(recording[1]) == []
    # The submitted submission is untouched, and still opens with the team's key.
    kept = data_dir / "outbox" / submitted[1]
    assert store.submission_state(submitted[1]) == SUBMITTED
    assert sorted(p.name for p in kept.iterdir()) == ["manifest.json.age", "q1-1.age"]
    assert decode(kept / "q1-1.age", team) >= RATE // 2
    assert report.ballast and Ballast(data_dir).present


# -- the armed microphone between takes ---------------------------------------------------
def test_a_lost_microphone_is_reopened_for_the_next_take_or_reported(tmp_path, team) -> None:
    streams = FakeStreams([tone(0.5), FAIL])
    recorder = Recorder(streams)
    take = start(recorder, tmp_path / "a.age", [team.recipient()])
    assert take.wait(10).reason is EndReason.DEVICE_LOST
    assert not recorder.armed, "a failed stream is closed, not reused"
    streams.missing = True  # still unplugged when the person tries again
    with pytest.raises(AudioDeviceError, match="No microphone"):
        recorder.start(tmp_path / "b.age", [team.recipient()])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.age"]


def test_a_microphone_that_died_between_takes_is_reopened(tmp_path, team) -> None:
    streams = FakeStreams([tone(0.5), STALL])
    recorder = Recorder(streams)
    take = start(recorder, tmp_path / "a.age", [team.recipient()])
    while take.meters().elapsed_s < 0.5:
        time.sleep(0.01)
    assert take.stop().reason is EndReason.STOPPED
    time.sleep(0.7)  # the stream has delivered nothing for longer than 0.5 s
    streams.go.clear()
    take = start(recorder, tmp_path / "b.age", [team.recipient()])
    assert len(streams.inputs) == 2 and streams.inputs[0].closed
    deadline = time.monotonic() + 5
    while take.meters().elapsed_s < 0.5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert take.stop().frames >= RATE // 2


def test_a_device_lost_before_any_audio_keeps_no_empty_part(tmp_path, team) -> None:
    recorder = Recorder(FakeStreams([FAIL]))
    result = start(recorder, tmp_path / "a.age", [team.recipient()]).wait(10)
    assert result.reason is EndReason.DEVICE_LOST and not result.kept
    assert "before anything was recorded" in result.message
    assert list(tmp_path.iterdir()) == []


def test_a_stream_error_between_takes_opens_a_new_stream(tmp_path, team) -> None:
    streams = FakeStreams([tone(0.2), FAIL])
    recorder = Recorder(streams)
    recorder.open()
    streams.go.set()
    deadline = time.monotonic() + 5
    while streams.inputs[0].active and time.monotonic() < deadline:
        time.sleep(0.01)
    streams.go.clear()
    take = start(recorder, tmp_path / "a.age", [team.recipient()])
    assert len(streams.inputs) == 2
    assert take.wait(10).frames == int(0.2 * RATE)


# -- the envelope writer ------------------------------------------------------------------
def test_a_writer_that_refuses_the_recipients_is_a_recording_error(tmp_path) -> None:
    from kiosk.audio.recorder import RecordingError
    from sync.envelope.mlkem import MlkemIdentity

    mixed = [MlkemIdentity.generate().recipient(), X25519Identity.generate().recipient()]
    with pytest.raises(RecordingError, match="could not start recording"):
        start(Recorder(FakeStreams([tone(1)])), tmp_path / "p.age", mixed)
    assert list(tmp_path.iterdir()) == []
    # Allowed on purpose (allow_classic_recipients in the config), the same set records.
    take = start(Recorder(FakeStreams([tone(0.3)])), tmp_path / "q.age", mixed,
                 allow_mixed=True)
    while take.meters().elapsed_s < 0.3:
        time.sleep(0.01)
    assert take.stop().kept


def test_a_writer_failure_mid_take_is_told_and_keeps_what_it_can(tmp_path, team) -> None:
    from kiosk.audio.take import envelope_writer

    class Breaking:
        """A writer whose write fails once, with a non-OSError, after some audio."""

        def __init__(self, path, recipients, *, allow_mixed=False):
            self._w = envelope_writer(path, recipients, allow_mixed=allow_mixed)
            self.failed = False

        def __getattr__(self, name):
            return getattr(self._w, name)

        def write(self, data):
            if self._w.bytes_accepted > 4000 and not self.failed:
                self.failed = True
                raise RuntimeError("the writer broke")
            self._w.write(data)

    recorder = Recorder(FakeStreams([tone(3.0)]), writer_factory=Breaking)
    take = start(recorder, tmp_path / "p.age", [team.recipient()])
    result = take.wait(10)
    assert result.reason is EndReason.WRITE_FAILED
    assert "problem saving this answer" in result.message
    # The take ended there, and what the encoder made (held in RAM since) is sealed.
    assert result.kept and decode(result.sealed.path, team) > 0


def test_a_failed_directory_fsync_after_the_rename_keeps_the_part(tmp_path, team,
                                                                 monkeypatch) -> None:
    from sync.envelope import writer as writer_module

    def failing(directory):
        raise OSError(errno.EIO, "fsync failed")

    monkeypatch.setattr(writer_module, "_fsync_dir", failing)
    take = start(Recorder(FakeStreams([tone(1.0)])), tmp_path / "p.age", [team.recipient()])
    while take.meters().elapsed_s < 1.0:
        time.sleep(0.01)
    result = take.stop()
    assert result.kept and result.reason is EndReason.WRITE_FAILED
    assert (tmp_path / "p.age").exists()
    assert decode(result.sealed.path, team) == result.frames >= RATE
