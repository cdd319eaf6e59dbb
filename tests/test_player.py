"""The player's logic through the injected stream factory: sealed parts and story files."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import soundfile as sf

from kiosk.audio.devices import AudioDeviceError
from kiosk.audio.player import PlaybackError, Player, PlayerState, SealedPart, StoryFile
from kiosk.audio.recorder import Recorder
from sync.envelope import X25519Identity, open_sealed
from tests.audio_fakes import RATE, FakeStreams, start, tone


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    """A sealed 2 s part (a 440 Hz then a 880 Hz second), its key and its decoded audio."""
    folder = tmp_path_factory.mktemp("player")
    team = X25519Identity.generate()
    signal = np.concatenate([tone(1.0, hz=440), tone(1.0, hz=880)])
    take = start(Recorder(FakeStreams([signal])), folder / "p.age", [team.recipient()])
    key = bytearray(take.file_key)
    while take.meters().elapsed_s < 2.0:
        time.sleep(0.01)
    result = take.stop()
    with open_sealed(result.sealed.path, file_key=bytes(key)) as f:
        decoded = sf.read(f, dtype="int16")[0]
    return result.sealed.path, key, decoded, folder


def dominant_hz(x: np.ndarray) -> float:
    x = x.astype(float)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / RATE)[np.argmax(spectrum)])


def play_to_end(player: Player, ended: threading.Event) -> None:
    player.play()
    assert ended.wait(10), "no end callback"


def test_review_plays_the_sealed_part_sample_for_sample(sealed) -> None:
    path, key, decoded, folder = sealed
    before = sorted(folder.rglob("*"))
    streams = FakeStreams()
    ended = threading.Event()
    positions: list[float] = []
    outcome: list[bool] = []
    player = Player(streams, on_position=positions.append,
                    on_end=lambda ok: (outcome.append(ok), ended.set()))
    assert player.load(SealedPart(path, key)) == pytest.approx(len(decoded) / RATE)
    play_to_end(player, ended)
    out = streams.outputs[0].samples()[:, 0]
    start = int(np.flatnonzero(out != 0)[0]) if np.any(out) else 0
    assert np.array_equal(out[start:start + len(decoded)], decoded)
    assert outcome == [True] and player.state is PlayerState.ENDED
    assert positions == sorted(positions) and positions[-1] == pytest.approx(len(decoded) / RATE)
    assert len(positions) >= 5
    player.stop()
    assert streams.outputs[0].closed
    # Playback wrote nothing anywhere near the data.
    assert sorted(folder.rglob("*")) == before


def test_pause_holds_the_position_and_play_resumes(sealed) -> None:
    path, key, decoded, _ = sealed
    streams = FakeStreams(speed=5)
    player = Player(streams)
    player.load(SealedPart(path, key))
    player.play()
    while player.position_s < 0.3:
        time.sleep(0.005)
    player.pause()
    held = player.position_s
    time.sleep(0.2)
    assert player.position_s == held and player.state is PlayerState.PAUSED
    player.play()
    while player.position_s < held + 0.2:
        time.sleep(0.005)
    player.stop()
    assert player.state is PlayerState.CLOSED


def test_seek_jumps_to_the_second_tone(sealed) -> None:
    path, key, decoded, _ = sealed
    streams = FakeStreams(speed=5)
    ended = threading.Event()
    player = Player(streams, on_end=lambda ok: ended.set())
    player.load(SealedPart(path, key))
    player.seek(1.2)
    assert player.position_s == pytest.approx(1.2)
    play_to_end(player, ended)
    out = streams.outputs[0].samples()[:, 0]
    heard = out[np.flatnonzero(out)[0]:]
    rest = decoded[int(1.2 * RATE):]
    assert np.array_equal(heard[:len(rest)], rest)
    assert dominant_hz(heard[:RATE // 4]) == pytest.approx(880, abs=8)
    # Playing again after the end starts from the top.
    ended.clear()
    play_to_end(player, ended)
    player.stop()


def test_a_dropped_key_cannot_be_played(sealed) -> None:
    path, key, _, _ = sealed
    dropped = bytearray(len(key))
    with pytest.raises(PlaybackError):
        Player(FakeStreams()).load(SealedPart(path, dropped))


def test_a_published_story_file_plays(tmp_path) -> None:
    story = tmp_path / "story.opus"
    stereo = np.stack([tone(0.5, hz=660), tone(0.5, hz=660)], axis=1)
    sf.write(story, stereo, RATE, format="OGG", subtype="OPUS")
    streams = FakeStreams()
    ended = threading.Event()
    player = Player(streams, on_end=lambda ok: ended.set())
    assert player.load(StoryFile(story)) == pytest.approx(0.5)
    play_to_end(player, ended)
    out = streams.outputs[0].samples()
    assert out.shape[1] == 2
    heard = out[np.flatnonzero(out[:, 0])[0]:, 0]
    assert dominant_hz(heard[:RATE // 4]) == pytest.approx(660, abs=8)
    player.stop()


def test_no_speakers_is_a_clear_error(sealed) -> None:
    path, key, _, _ = sealed
    with pytest.raises(AudioDeviceError, match="No speaker"):
        Player(FakeStreams(missing=True)).load(SealedPart(path, key))


def test_speakers_failing_mid_playback_end_it_with_a_message(sealed) -> None:
    path, key, _, _ = sealed
    streams = FakeStreams(speed=2)
    ended = threading.Event()
    outcome: list[bool] = []
    player = Player(streams, on_end=lambda ok: (outcome.append(ok), ended.set()))
    player.load(SealedPart(path, key))
    player.play()
    time.sleep(0.1)
    # The stream stops on its own, as PortAudio does when the device goes away.
    stream = streams.outputs[0]
    stream._halt.set()
    stream._thread.join()
    stream.active = False
    stream.finished_callback()
    assert ended.wait(5)
    assert outcome == [False] and "sound stopped" in player.error
    player.stop()
