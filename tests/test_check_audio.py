"""`kiosk check-audio` through the real stack: PulseAudio null sinks, ALSA, PortAudio."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from kiosk.audio import levels
from tests.harness.pulse import RATE, VirtualAudio, read_wav


@dataclass
class CheckRun:
    result: dict[str, float]
    source: np.ndarray
    speakers: np.ndarray


def _run_check(env: dict[str, str], config: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kiosk", "--config", str(config),
                           "check-audio", *extra], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture(scope="module")
def check_run(virtual_audio: VirtualAudio, speech, tmp_path_factory) -> CheckRun:
    """Play continuous speech into the mic while check-audio runs; record the speakers."""
    folder = tmp_path_factory.mktemp("check-audio")
    config = folder / "kiosk.toml"
    config.write_text(f'data_dir = "{folder / "data"}"\n')
    wav = speech("en", repeat=3)
    source, rate = read_wav(wav)
    assert rate == RATE
    assert len(source) / RATE > 8, "the speech must outlast the 3 s recording"
    speakers = virtual_audio.record_speakers()
    player = virtual_audio.play_into_mic(wav)
    time.sleep(1.0)  # the mic is mid-sentence when recording starts
    done = _run_check(virtual_audio.full_env(), config, "--json")
    captured = speakers.stop()
    player.kill()
    player.wait()
    assert done.returncode == 0, done.stderr
    return CheckRun(json.loads(done.stdout), source, captured)


def test_speech_is_captured_at_the_level_it_was_played(check_run: CheckRun) -> None:
    # The 3 s recording is some 3 s window of the source: its RMS must lie within 3 dB
    # of the RMS of the source over a window of the same length.
    window = 3 * RATE
    hop = RATE // 10
    source = check_run.source
    windows = [levels.rms_dbfs(source[i:i + window])
               for i in range(0, len(source) - window, hop)]
    measured = check_run.result["rms_dbfs"]
    assert min(windows) - 3 <= measured <= max(windows) + 3, (measured, min(windows),
                                                               max(windows))
    # And the spread of the source's own windows is small enough for that to mean
    # something: the recording is speech at its level, not silence or noise.
    assert max(windows) - min(windows) < 3
    assert check_run.result["input_overflows"] == 0
    assert check_run.result["peak_dbfs"] > measured


def test_tone_is_played_to_the_speakers_at_1khz(check_run: CheckRun) -> None:
    captured = check_run.speakers.astype(np.float64) / 32768
    loud = np.abs(captured) > 0.05
    assert loud.sum() > 0.8 * RATE, "less than 0.8 s of the 1 s tone reached the speakers"
    tone = captured[np.flatnonzero(loud)[0]:][:RATE // 2]
    spectrum = np.abs(np.fft.rfft(tone * np.hanning(len(tone))))
    peak_hz = np.fft.rfftfreq(len(tone), 1 / RATE)[np.argmax(spectrum)]
    assert abs(peak_hz - 1000) <= 4, peak_hz
    assert levels.peak_dbfs(tone) == pytest.approx(-12, abs=1.5)


def test_missing_device_exits_non_zero_with_its_sentence(virtual_audio: VirtualAudio,
                                                          tmp_path: Path) -> None:
    config = tmp_path / "kiosk.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n'
                      '[audio]\ninput_device = "USB Conference Mic"\n')
    done = _run_check(virtual_audio.full_env(), config)
    assert done.returncode != 0
    assert done.stderr.strip() == (
        "The microphone 'USB Conference Mic' named in the config was not found: check that"
        " it is connected, or correct the [audio] section of the config.")
    assert "Traceback" not in done.stderr


def test_no_audio_server_at_all_is_a_clear_error(tmp_path: Path) -> None:
    # With no sound server and no sound card, PortAudio finds no input device at all.
    config = tmp_path / "kiosk.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    env = {"PATH": "/usr/bin:/bin", "PULSE_SERVER": f"unix:{tmp_path / 'nothing'}",
           "HOME": str(tmp_path)}
    done = _run_check(env, config)
    assert done.returncode != 0
    assert done.stderr.strip().startswith("No microphone was found")
