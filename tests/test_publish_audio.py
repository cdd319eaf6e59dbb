"""The publish audio pipeline (sync/vet/audio.py), measured on espeak-ng speech.

The parts are encoded as the kiosk encodes a take (Ogg/Opus, 48 kHz mono, ~28 kbit/s
through soundfile), and every figure is measured on the *decoded* published Opus, as a
kiosk will play it. The figures print (run with ``-s`` to see them).

Measurements here are independent of the module under test where it matters: F0 by
WORLD's Harvest (the disguise uses DIO + StoneMask), formants by LPC root-finding,
loudness by pyloudnorm and true peak by 4x oversampling, both called directly.
"""

from __future__ import annotations

import builtins
import io
import os
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import pyworld
import soundfile as sf
from scipy.linalg import solve_toeplitz
from scipy.signal import correlate, resample_poly

from sync.vet import audio, disguise
from tests.harness.speech import make_speech

RATE = 48_000
KIOSK_KBPS = 28.0  # kiosk/audio/opus.py DEFAULT_KBPS


def kiosk_encode(samples: np.ndarray) -> bytes:
    """Ogg/Opus as kiosk/audio/take.py writes a take (same soundfile call)."""
    out = io.BytesIO()
    with sf.SoundFile(out, mode="w", samplerate=RATE, channels=1, format="OGG",
                      subtype="OPUS",
                      compression_level=audio.compression_level_for(KIOSK_KBPS)) as f:
        f.write(samples.astype(np.float32))
    return out.getvalue()


def decoded(ogg: bytes) -> np.ndarray:
    samples, rate = sf.read(io.BytesIO(ogg), dtype="float64")
    assert rate == RATE
    return samples


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    folder = tmp_path_factory.mktemp("speech")
    out = {}
    for language in ("en", "es"):
        samples, rate = sf.read(make_speech(folder / f"{language}.wav", language, repeat=2),
                                dtype="float32")
        assert rate == RATE
        out[language] = samples
    return out


@pytest.fixture(scope="module")
def parts(speech: dict[str, np.ndarray]) -> dict[str, bytes]:
    return {language: kiosk_encode(samples) for language, samples in speech.items()}


# -- independent measurements --------------------------------------------------------

def f0_track(samples: np.ndarray) -> np.ndarray:
    """F0 per 10 ms frame by Harvest at 16 kHz (0 where unvoiced)."""
    x = resample_poly(samples, 1, 3).astype(np.float64)
    f0, _ = pyworld.harvest(x, 16_000, f0_floor=60.0, f0_ceil=500.0, frame_period=10.0)
    return f0


def formants(samples: np.ndarray, voiced: np.ndarray) -> tuple[float, float]:
    """Median F1 and F2 (Hz) over voiced 10 ms frames, by LPC on 25 ms windows at 10 kHz.

    The classic method (as Praat's Burg, with autocorrelation LPC): pre-emphasis,
    Hamming window, order 12, roots of the predictor; a root is a formant when its
    frequency is above 90 Hz and its bandwidth under 400 Hz.
    """
    fs = 10_000
    x = resample_poly(samples, 5, 24).astype(np.float64)
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    hop, win, order = fs // 100, int(0.025 * fs), 12
    window = np.hamming(win)
    f1s, f2s = [], []
    for i in np.flatnonzero(voiced):
        frame = x[i * hop:i * hop + win]
        if frame.shape[0] < win or not np.any(frame):
            continue
        frame = frame * window
        r = np.correlate(frame, frame, "full")[win - 1:win + order]
        if r[0] <= 0:
            continue
        a = solve_toeplitz(r[:order], -r[1:order + 1])
        roots = np.roots(np.concatenate([[1.0], a]))
        roots = roots[np.imag(roots) > 0]
        freqs = np.angle(roots) * fs / (2 * np.pi)
        bands = -np.log(np.abs(roots)) * fs / np.pi
        found = np.sort(freqs[(freqs > 90) & (bands < 400)])
        if found.shape[0] >= 2:
            f1s.append(found[0])
            f2s.append(found[1])
    return float(np.median(f1s)), float(np.median(f2s))


def energy_envelope(samples: np.ndarray, frame_s: float = 0.02) -> np.ndarray:
    frame = int(frame_s * RATE)
    count = samples.shape[0] // frame
    return np.sqrt(np.mean(np.square(samples[:count * frame]).reshape(count, frame), axis=1))


def envelope_correlation(a: np.ndarray, b: np.ndarray, *, db: bool = False) -> float:
    """Pearson correlation of two 20 ms RMS envelopes (in dB: floored 60 dB down)."""
    ea, eb = energy_envelope(a), energy_envelope(b)
    count = min(ea.shape[0], eb.shape[0])
    ea, eb = ea[:count], eb[:count]
    if db:
        ea = 20 * np.log10(np.maximum(ea, ea.max() * 1e-3))
        eb = 20 * np.log10(np.maximum(eb, eb.max() * 1e-3))
    return float(np.corrcoef(ea, eb)[0, 1])


def lufs_and_true_peak(samples: np.ndarray) -> tuple[float, float]:
    lufs = pyloudnorm.Meter(RATE).integrated_loudness(samples)
    peak = np.max(np.abs(resample_poly(samples, 4, 1)))
    return float(lufs), float(20 * np.log10(peak))


def lag_of(piece: np.ndarray, source: np.ndarray) -> float:
    """Where ``piece`` sits in ``source``, in seconds (waveform cross-correlation)."""
    c = correlate(source, piece, mode="valid", method="fft")
    return int(np.argmax(c)) / RATE


# -- voice disguise ------------------------------------------------------------------

def test_disguise_moves_f0_and_formants_and_keeps_speech(parts: dict[str, bytes]) -> None:
    amount = audio.DEFAULT_DISGUISE_SEMITONES
    source = decoded(parts["en"])
    published = audio.prepare_story_audio([parts["en"]], disguise=True)
    out = decoded(published.ogg_bytes)
    assert out.shape[0] == source.shape[0]  # same timing, sample for sample

    f0_in, f0_out = f0_track(source), f0_track(out)
    median_in = float(np.median(f0_in[f0_in > 0]))
    median_out = float(np.median(f0_out[f0_out > 0]))
    intended = median_in * (disguise.f0_ratio(amount) - 1.0)
    moved = median_out - median_in

    both = (f0_in > 0) & (f0_out[:f0_in.shape[0]] > 0)
    f1_in, f2_in = formants(source, both)
    f1_out, f2_out = formants(out, both)
    formant_intended = disguise.formant_ratio(amount)

    # Speech remains. The disguise itself, against the source; and the published story
    # against the same story published without disguise (both through the loudness
    # stage: on espeak-ng's peaky speech the limiter takes 8-9 dB off the loudest
    # syllables, which alone brings a linear envelope's correlation with the raw source
    # to ~0.75; the dB envelope, which a limiter only bends, is shown against it too).
    disguised_only = disguise.disguise_voice(source.astype(np.float32), RATE, amount)
    plain = decoded(audio.prepare_story_audio([parts["en"]]).ogg_bytes)
    correlation = envelope_correlation(source, disguised_only)
    correlation_published = envelope_correlation(plain, out)
    raw_linear = envelope_correlation(source, out)
    raw_db = envelope_correlation(source, out, db=True)

    print(f"\nvoice disguise {amount:+g} semitones (F0 x{disguise.f0_ratio(amount):.3f},"
          f" formants x{formant_intended:.3f}), espeak-ng en, {source.shape[0] / RATE:.1f} s")
    print(f"  median F0   {median_in:7.1f} Hz -> {median_out:7.1f} Hz: moved {moved:+.1f} Hz,"
          f" intended {intended:+.1f} Hz ({100 * (moved / intended - 1):+.1f} %)")
    print(f"  median F1   {f1_in:7.0f} Hz -> {f1_out:7.0f} Hz (x{f1_out / f1_in:.3f})")
    print(f"  median F2   {f2_in:7.0f} Hz -> {f2_out:7.0f} Hz (x{f2_out / f2_in:.3f})")
    print(f"  energy-envelope correlation, disguise vs source: {correlation:.3f}")
    print(f"  energy-envelope correlation, published disguised vs published plain:"
          f" {correlation_published:.3f}")
    print(f"  published disguised vs raw source: {raw_linear:.3f} (linear),"
          f" {raw_db:.3f} (dB)")
    print(f"  published: {published.lufs:.2f} LUFS, {published.true_peak_dbtp:.2f} dBTP")

    assert abs(moved - intended) <= 0.10 * abs(intended)
    # Measurably: each of the first two formants up by at least 4 % (intended 12 %).
    assert f1_out / f1_in >= 1.04
    assert f2_out / f2_in >= 1.04
    assert correlation >= 0.8
    assert correlation_published >= 0.8
    assert raw_db >= 0.8
    assert abs(published.lufs - audio.TARGET_LUFS) <= 0.5
    assert published.true_peak_dbtp <= audio.CEILING_DBTP


# -- loudness ------------------------------------------------------------------------

@pytest.mark.parametrize("level", ["quiet", "loud"])
def test_loudness_and_true_peak_of_decoded_opus(speech: dict[str, np.ndarray],
                                                level: str) -> None:
    source = speech["en"] / np.max(np.abs(speech["en"]))
    source = source * (10 ** (-40 / 20) if level == "quiet" else 0.99)
    part = kiosk_encode(source)
    before = lufs_and_true_peak(decoded(part))
    published = audio.prepare_story_audio([part])
    lufs, peak = lufs_and_true_peak(decoded(published.ogg_bytes))
    kbps = len(published.ogg_bytes) * 8 / published.duration_s / 1000
    print(f"\n{level}: in {before[0]:.2f} LUFS / {before[1]:.2f} dBTP -> published"
          f" {lufs:.2f} LUFS / {peak:.2f} dBTP (decoded Opus, {kbps:.1f} kbit/s)")
    assert abs(lufs - audio.TARGET_LUFS) <= 0.5
    assert peak <= audio.CEILING_DBTP
    # What the pipeline reports is what a kiosk plays.
    assert (published.lufs, published.true_peak_dbtp) == pytest.approx((lufs, peak), abs=0.05)
    assert audio.measure(published.ogg_bytes) == pytest.approx((lufs, peak), abs=0.05)
    assert published.sample_rate == RATE


# -- trims and joining ---------------------------------------------------------------

def test_trim_keeps_exactly_that_span(parts: dict[str, bytes]) -> None:
    en, es = decoded(parts["en"]), decoded(parts["es"])
    start, end = 1.25, 3.75
    published = audio.prepare_story_audio([parts["en"], parts["es"]],
                                          trims={1: (start, end)}, pause_s=0.6)
    out = decoded(published.ogg_bytes)
    first = en.shape[0] / RATE
    expected = first + 0.6 + (end - start)
    assert published.duration_s == pytest.approx(expected, abs=0.02)
    assert out.shape[0] / RATE == pytest.approx(expected, abs=0.02)
    kept = out[round((first + 0.6) * RATE):]
    found = lag_of(kept[int(0.05 * RATE):-int(0.05 * RATE)], es) - 0.05
    print(f"\ntrim part 1 to {start}-{end} s: kept {kept.shape[0] / RATE:.3f} s starting at"
          f" {found:.3f} s of the part; story {published.duration_s:.3f} s"
          f" (expected {expected:.3f} s)")
    assert found == pytest.approx(start, abs=0.02)
    assert kept.shape[0] / RATE == pytest.approx(end - start, abs=0.02)
    # Part 0 was not trimmed: it is all there, at the start.
    assert lag_of(out[int(0.5 * RATE):int(2.5 * RATE)], en) == pytest.approx(0.5, abs=0.02)


def test_trim_of_the_first_part_and_bad_trims(parts: dict[str, bytes]) -> None:
    published = audio.prepare_story_audio([parts["en"]], trims={0: (0.5, 2.0)})
    assert published.duration_s == pytest.approx(1.5, abs=0.02)
    found = lag_of(decoded(published.ogg_bytes)[int(0.05 * RATE):-int(0.05 * RATE)],
                   decoded(parts["en"])) - 0.05
    assert found == pytest.approx(0.5, abs=0.02)
    for trims in ({1: (0.0, 1.0)}, {0: (2.0, 1.0)}, {0: (-1.0, 1.0)}, {0: (99.0, 100.0)},
                  {0: (float("nan"), 1.0)}):
        with pytest.raises(audio.BadTrimError):
            audio.prepare_story_audio([parts["en"]], trims=trims)


# -- bad input, and nothing on disk --------------------------------------------------

class NoWrites:
    """Fails the test if anything opens a file for writing while it is active."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.writes: list[str] = []
        real_open, real_os_open = builtins.open, os.open

        def guarded_open(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
            if any(flag in str(mode) for flag in "wax+"):
                self.writes.append(str(file))
            return real_open(file, mode, *args, **kwargs)

        def guarded_os_open(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                self.writes.append(str(path))
            return real_os_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", guarded_open)
        monkeypatch.setattr(io, "open", guarded_open)
        monkeypatch.setattr(os, "open", guarded_os_open)


def test_plaintext_never_touches_disk(parts: dict[str, bytes], monkeypatch: pytest.MonkeyPatch,
                                      tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    guard = NoWrites(monkeypatch)
    published = audio.prepare_story_audio([parts["en"], parts["es"]], disguise=True,
                                          trims={0: (0.0, 2.0), 1: (1.0, 3.0)})
    assert published.ogg_bytes[:4] == b"OggS"
    assert guard.writes == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated", "lost_tail_page", "garbage", "empty",
                                    "garbled_middle"])
def test_bad_part_is_refused_clearly(parts: dict[str, bytes], monkeypatch: pytest.MonkeyPatch,
                                     damage: str) -> None:
    good = parts["en"]
    bad = {
        "truncated": good[:len(good) // 2],
        "lost_tail_page": good[:good.rindex(b"OggS")],
        "garbage": os.urandom(5000),
        "empty": b"",
        "garbled_middle": good[:len(good) // 2] + os.urandom(64) + good[len(good) // 2 + 64:],
    }[damage]
    guard = NoWrites(monkeypatch)
    with pytest.raises(audio.BadPartError) as caught:
        audio.prepare_story_audio([parts["es"], bad])
    print(f"\n{damage}: {type(caught.value).__name__}: {caught.value}")
    assert caught.value.index == 1
    assert isinstance(caught.value, audio.PublishAudioError)
    assert guard.writes == []


def test_silence_and_no_parts_are_refused() -> None:
    with pytest.raises(audio.SilentStoryError):
        audio.prepare_story_audio([kiosk_encode(np.zeros(2 * RATE, dtype=np.float32))])
    with pytest.raises(audio.PublishAudioError):
        audio.prepare_story_audio([])
