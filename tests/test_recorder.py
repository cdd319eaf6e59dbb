"""The recorder's logic through the injected stream factory, with the real envelope writer."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from kiosk.audio import levels
from kiosk.audio.recorder import SILENT_MESSAGE, EndReason, Recorder
from kiosk.audio.sealed_sink import SealedSink
from kiosk.ids import is_submission_id, uuid7
from sync.envelope import X25519Identity, open_sealed
from tests.audio_fakes import OVERFLOW, RATE, FakeStreams, quiet_noise, start, tone


@pytest.fixture
def team() -> X25519Identity:
    return X25519Identity.generate()


def decode(path, identity) -> np.ndarray:
    with open_sealed(path, identities=[identity]) as f:
        data, rate = sf.read(f, dtype="int16")
    assert rate == RATE
    return data


def test_a_take_is_sealed_to_the_team_and_decodes_to_what_was_heard(tmp_path, team) -> None:
    signal = tone(2.0)
    recorder = Recorder(FakeStreams([signal]))
    take = start(recorder, tmp_path / "q1-1.age", [team.recipient()])
    _wait_frames(take, len(signal))
    result = take.stop()
    assert result.reason is EndReason.STOPPED
    assert result.kept and result.message is None and not result.silent
    assert result.sealed.path == tmp_path / "q1-1.age"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q1-1.age"]
    decoded = decode(result.sealed.path, team)
    assert len(decoded) == result.frames >= len(signal)
    # Opus is lossy: compare the waveform, not the bytes.
    a = signal.astype(float)
    b = decoded[:len(signal)].astype(float)
    assert np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) > 0.95
    assert result.opus_bytes > 0 and result.sealed.size > result.opus_bytes


def _wait_frames(take, frames: int, timeout: float = 10.0) -> bool:
    deadline = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if take.meters().elapsed_s * RATE >= frames:
            return True
        deadline.wait(0.01)
    raise AssertionError("the fake stream did not deliver in time")


def test_the_file_key_opens_the_part_for_review_without_the_team(tmp_path, team) -> None:
    recorder = Recorder(FakeStreams([tone(1.0)]))
    take = start(recorder, tmp_path / "p.age", [team.recipient()])
    key = bytes(take.file_key)
    _wait_frames(take, RATE)
    result = take.stop()
    with open_sealed(result.sealed.path, file_key=key) as f:
        data, _ = sf.read(f, dtype="int16")
    assert len(data) == result.frames


def test_meters_report_peak_rms_elapsed_and_time_left(tmp_path, team) -> None:
    gate = threading.Event()
    # A 0.5 full-scale sine: peak -6.02 dBFS, RMS -9.03 dBFS.
    recorder = Recorder(FakeStreams([tone(1.0, amplitude=0.5), ("wait", gate)]),
                        max_answer_s=60)
    take = start(recorder, tmp_path / "p.age", [team.recipient()])
    _wait_frames(take, RATE)
    reading = take.meters()
    assert reading.elapsed_s == pytest.approx(1.0, abs=0.03)
    assert reading.remaining_s == pytest.approx(59.0, abs=0.03)
    assert reading.peak_dbfs == pytest.approx(-6.02, abs=0.1)
    assert reading.rms_dbfs == pytest.approx(-9.03, abs=0.1)
    assert reading.overflows == 0
    gate.set()
    take.stop()


def test_meters_update_at_least_20_times_a_second_of_audio(tmp_path, team) -> None:
    seen = []
    recorder: Recorder

    class Spy(FakeStreams):
        """Reads the take's meters right after each callback, as a busy screen would."""

        def input_stream(self, **kw):
            inner = kw["callback"]

            def callback(indata, frames, t, status):
                inner(indata, frames, t, status)
                seen.append(take.meters())

            kw["callback"] = callback
            return super().input_stream(**kw)

    recorder = Recorder(Spy([tone(2.0)]))
    take = recorder.start(tmp_path / "p.age", [team.recipient()])
    recorder.streams.go.set()
    _wait_frames(take, 2 * RATE)
    take.stop()
    distinct = len({id(r) for r in seen})
    assert distinct / seen[-1].elapsed_s >= 20, (distinct, seen[-1].elapsed_s)


def test_the_time_limit_stops_cleanly_and_keeps_everything(tmp_path, team) -> None:
    ended = []
    recorder = Recorder(FakeStreams([tone(3.0)]), max_answer_s=1.0)
    take = start(recorder, tmp_path / "p.age", [team.recipient()], on_end=ended.append)
    result = take.wait(10)
    assert ended == [result]
    assert result.reason is EndReason.MAX_LENGTH
    assert result.frames == RATE  # exactly the limit: the block that crossed it is cut
    assert "time limit" in result.message and "kept" in result.message
    assert len(decode(result.sealed.path, team)) == RATE
    assert take.meters().remaining_s == 0


def test_a_take_that_stays_below_the_threshold_is_reported_silent(tmp_path, team) -> None:
    recorder = Recorder(FakeStreams([quiet_noise(1.5, dbfs=-70)]),
                        silence_threshold_dbfs=-50)
    take = start(recorder, tmp_path / "p.age", [team.recipient()])
    _wait_frames(take, int(1.5 * RATE))
    result = take.stop()
    assert result.silent and result.kept
    assert result.message == SILENT_MESSAGE
    assert result.max_rms_dbfs < -60


def test_one_loud_moment_is_enough_to_be_heard(tmp_path, team) -> None:
    signal = quiet_noise(1.0, dbfs=-70)
    signal[24000:24960] = tone(0.02, amplitude=0.1)
    recorder = Recorder(FakeStreams([signal]), silence_threshold_dbfs=-50)
    take = start(recorder, tmp_path / "p.age", [team.recipient()])
    _wait_frames(take, RATE)
    assert not take.stop().silent


def test_input_overflows_are_counted(tmp_path, team) -> None:
    script = [tone(0.2), OVERFLOW, tone(0.2), OVERFLOW, tone(0.02), OVERFLOW, tone(0.2)]
    recorder = Recorder(FakeStreams(script))
    take = start(recorder, tmp_path / "p.age", [team.recipient()])
    _wait_frames(take, int(0.62 * RATE))
    assert take.meters().overflows == 3
    assert take.stop().overflows == 3


def test_the_sink_only_appends() -> None:
    class Writer:
        bytes_accepted = 0

        def write(self, data) -> None:
            self.bytes_accepted += len(data)

    sink = SealedSink(Writer())
    assert sink.seek(0, io.SEEK_END) == 0
    sink.write(b"abc")
    assert sink.tell() == 3 and sink.seek(3) == 3 and sink.seek(0, io.SEEK_CUR) == 3
    with pytest.raises(io.UnsupportedOperation):
        sink.seek(0)
    with pytest.raises(io.UnsupportedOperation):
        sink.read(1)


def test_opus_through_the_sink_never_needs_a_seek_that_moves() -> None:
    out = bytearray()

    class Writer:
        bytes_accepted = 0

        def write(self, data) -> None:
            out.extend(data)
            self.bytes_accepted += len(data)

    sink = SealedSink(Writer())
    with sf.SoundFile(sink, "w", RATE, 1, format="OGG", subtype="OPUS") as f:
        for _ in range(150):
            f.write(tone(0.02))
    # Had libsndfile tried to move, seek() would have raised inside the callback and
    # the stream would be damaged; it decodes whole instead.
    assert len(out) == sink.tell()
    assert len(sf.read(io.BytesIO(bytes(out)), dtype="int16")[0]) == 150 * 960


def test_levels_match_the_meters() -> None:
    x = tone(0.1, amplitude=0.25)
    assert levels.peak_dbfs(x) == pytest.approx(-12.04, abs=0.1)


def test_uuid7_ids_sort_by_time_and_are_version_7() -> None:
    ids = [uuid7() for _ in range(200)]
    assert all(u.version == 7 for u in ids)
    assert [str(u) for u in ids] == sorted(str(u) for u in ids)
    assert is_submission_id(str(ids[0])) and not is_submission_id("../etc")
    assert uuid7(now_ms=1_700_000_000_000).int >> 80 >= 1_700_000_000_000


def test_the_armed_microphone_shows_a_live_level_and_serves_several_takes(tmp_path,
                                                                        team) -> None:
    streams = FakeStreams([tone(0.3, amplitude=0.25), ("wait", threading.Event())])
    recorder = Recorder(streams)
    recorder.open()
    streams.go.set()
    deadline = time.monotonic() + 5
    while recorder.live_meters().peak_dbfs < -13 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recorder.live_meters().peak_dbfs == pytest.approx(-12.04, abs=0.2)
    assert list(tmp_path.iterdir()) == [], "the live level records nothing"
    results = []
    for name in ("a.age", "b.age"):
        take = recorder.start(tmp_path / name, [team.recipient()])
        time.sleep(0.1)
        results.append(take.stop())
    assert len(streams.inputs) == 1 and recorder.armed  # one stream for both takes
    assert all(r.kept for r in results)
    recorder.close()
    assert streams.inputs[0].closed and not recorder.armed


def test_closing_the_recorder_seals_a_running_take(tmp_path, team) -> None:
    recorder = Recorder(FakeStreams([tone(5.0)], realtime=0.005))
    take = start(recorder, tmp_path / "a.age", [team.recipient()])
    time.sleep(0.2)
    recorder.close()
    assert take.done and take.result.reason is EndReason.STOPPED and take.result.kept


def test_a_new_take_may_start_while_the_last_one_is_still_sealing(tmp_path, team) -> None:
    recorder = Recorder(FakeStreams([tone(3.0)], realtime=0.002))
    first = start(recorder, tmp_path / "a.age", [team.recipient()])
    time.sleep(0.2)
    first.request_stop()
    second = recorder.start(tmp_path / "b.age", [team.recipient()])
    time.sleep(0.2)
    r2, r1 = second.stop(), first.wait(5)
    assert r1.kept and r2.kept and r1.frames > 0 and r2.frames > 0
    # Not one block was given to both takes, nor lost between them (one stream).
    delivered = recorder.streams.inputs[0].delivered
    assert r1.frames + r2.frames <= delivered
