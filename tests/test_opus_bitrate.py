"""Speech is encoded at about 32 kbit/s: half the bytes of libsndfile's default, so half
the upload time on a venue's slow link, and still the same speech."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import soundfile as sf

from kiosk.audio.opus import DEFAULT_KBPS, compression_level_for
from kiosk.audio.recorder import Recorder
from sync.envelope import X25519Identity, open_sealed
from tests.audio_fakes import RATE, FakeStreams, start
from tests.harness.pulse import read_wav

#: The sync budget: sealed bytes per minute of continuous speech.
BUDGET_PER_MINUTE = 240_000


def sealed_take(tmp_path, name, speech_pcm: np.ndarray, **recorder_options):
    team = X25519Identity.generate()
    recorder = Recorder(FakeStreams([speech_pcm]), **recorder_options)
    take = start(recorder, tmp_path / f"{name}.age", [team.recipient()])
    while take.meters().elapsed_s < len(speech_pcm) / RATE:
        time.sleep(0.01)
    result = take.stop()
    with open_sealed(result.sealed.path, identities=[team]) as f:
        decoded = sf.read(io.BytesIO(f.read()), dtype="int16")[0]
    return result, decoded


def test_the_mapping_to_libsndfile_levels() -> None:
    assert compression_level_for(256) == 0.0 and compression_level_for(6) == 1.0
    with pytest.raises(ValueError, match="between 6 and 256"):
        compression_level_for(4)


def test_speech_is_sealed_within_the_budget_at_half_the_default(tmp_path, speech) -> None:
    pcm, rate = read_wav(speech("en", repeat=3))
    assert rate == RATE
    ours, decoded = sealed_take(tmp_path, "ours", pcm)
    default, _ = sealed_take(tmp_path, "default", pcm, opus_bitrate_kbps=None)
    minutes = ours.duration_s / 60
    per_minute = ours.sealed.size / minutes
    default_per_minute = default.sealed.size / (default.duration_s / 60)
    kbps = ours.opus_bytes * 8 / ours.duration_s / 1000
    print(f"{DEFAULT_KBPS:g} kbit/s asked: {kbps:.1f} kbit/s, {per_minute:,.0f} sealed B/min;"
          f" libsndfile default: {default_per_minute:,.0f} B/min")
    assert per_minute <= BUDGET_PER_MINUTE
    assert per_minute / default_per_minute <= 0.6
    # The same speech comes out: same length, and close to the source sample by sample.
    assert len(decoded) == ours.frames
    n = min(len(pcm), len(decoded))
    a, b = pcm[:n].astype(float), decoded[:n].astype(float)
    lag = int(np.argmax(np.correlate(b[:RATE], a[:RATE], "full"))) - (RATE - 1)
    if lag > 0:
        b = b[lag:]
        a = a[:len(b)]
    score = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert score >= 0.8, score
