"""Loudness (ITU-R BS.1770 through pyloudnorm), true peak, and a true-peak limiter.

Published stories play one after another on the exhibit's speakers, so they are brought
to one integrated loudness (-16 LUFS, the usual target for spoken word on small
speakers and headphones) with a true-peak ceiling (-1 dBTP) that leaves the Opus
encoder and the kiosk's DAC room: a lossy codec reconstructs peaks a little higher than
it was given, so the pipeline limits below the ceiling and checks the *decoded* result.

True peak follows BS.1770-4 annex 2 in spirit: the signal is oversampled four times
(``scipy.signal.resample_poly``, a windowed-sinc FIR) and the largest absolute sample
of the oversampled signal is the true peak. The work is done in blocks, so a ten-minute
story never needs its 4x copy (115 M samples) in memory at once.

The limiter is a look-ahead gain envelope, computed without a per-sample Python loop:
the gain each sample needs (ceiling / its local true peak, at most 1) is spread by a
minimum filter over +-``hold`` and then smoothed with two moving averages whose total
reach is no more than ``hold``. Every smoothed value is then an average of minima over
windows that each contain the sample itself, so it is never above the gain that sample
needed: the ceiling holds, and the gain moves over tens of milliseconds instead of
jumping, which a voice does not hear as distortion.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyloudnorm
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import resample_poly

#: Where a published story lands (EBU R 128 S1 / AES TD1004 for speech on small devices).
TARGET_LUFS = -16.0
#: The true-peak ceiling of the published (decoded) audio.
CEILING_DBTP = -1.0
#: Oversampling factor for the true peak (BS.1770-4: at least 4x at 48 kHz).
OVERSAMPLE = 4
#: Samples per block of the true-peak measurement, and the context each block borrows
#: from its neighbours so the FIR sees the same signal as it would unblocked.
_CHUNK = 1 << 18
_PAD = 64
#: The limiter's reach either side of a peak: how early it starts to turn the gain down,
#: and how long it holds it there.
HOLD_S = 0.020


class SilentAudioError(ValueError):
    """The audio has no loudness to normalise: all silence, or shorter than 400 ms."""


def db_to_gain(db: float) -> float:
    return 10.0 ** (db / 20.0)


def gain_to_db(gain: float) -> float:
    return 20.0 * math.log10(gain) if gain > 0 else -math.inf


def integrated_lufs(samples: np.ndarray, rate: int) -> float:
    """Integrated (gated) loudness of mono ``samples`` in LUFS; -inf for silence."""
    if samples.shape[0] <= int(0.4 * rate):
        raise SilentAudioError("the audio is shorter than one 400 ms loudness block")
    # pyloudnorm copies its input itself; spare it a second copy when already float64.
    return float(pyloudnorm.Meter(rate).integrated_loudness(
        samples.astype(np.float64, copy=False)))


def _block_peaks(samples: np.ndarray, block: int) -> np.ndarray:
    """The true peak of each ``block`` samples (the last block may be short)."""
    n = samples.shape[0]
    blocks = -(-n // block)
    out = np.empty(blocks, dtype=np.float64)
    step = (_CHUNK // block) * block
    for start in range(0, n, step):
        stop = min(n, start + step)
        lo, hi = max(0, start - _PAD), min(n, stop + _PAD)
        up = np.abs(resample_poly(samples[lo:hi], OVERSAMPLE, 1))
        up = up[(start - lo) * OVERSAMPLE:(stop - lo) * OVERSAMPLE]
        whole = (stop - start) // block
        first = start // block
        if whole:
            out[first:first + whole] = (up[:whole * block * OVERSAMPLE]
                                        .reshape(whole, -1).max(axis=1))
        if whole * block < stop - start:
            out[first + whole] = up[whole * block * OVERSAMPLE:].max()
    return out


def limiter_block(rate: int) -> int:
    """The limiter's block: 1 ms."""
    return max(1, rate // 1000)


def true_peak_dbtp(samples: np.ndarray) -> float:
    """True peak of mono ``samples`` in dBTP (dB relative to full scale, oversampled)."""
    if samples.shape[0] == 0:
        return -math.inf
    return gain_to_db(float(_block_peaks(samples, _CHUNK).max()))


def _limiter_gains(peaks: np.ndarray, ceiling: float | np.ndarray,
                   hold: int) -> np.ndarray:
    """Per-block gains that keep blocks with these true peaks under ``ceiling``."""
    need = np.minimum(1.0, ceiling / np.maximum(peaks, 1e-12))
    if need.min() >= 1.0:
        return need
    gain = minimum_filter1d(need, size=2 * hold + 1, mode="nearest")
    # Two boxes of ``reach`` blocks either side reach ``hold - 1`` blocks at most.
    reach = (hold - 1) // 2
    for _ in range(2):
        gain = uniform_filter1d(gain, size=2 * reach + 1, mode="nearest")
    # Rounding in the filters may leave a hair above the need; never let it through.
    return np.minimum(gain, need)


def _apply_gains(samples: np.ndarray, gains: np.ndarray, block: int,
                 scale: float = 1.0) -> np.ndarray:
    centres = (np.arange(gains.shape[0]) + 0.5) * block
    per_sample = np.interp(np.arange(samples.shape[0]), centres, gains * scale)
    return (samples * per_sample).astype(samples.dtype, copy=False)


def _hold_blocks(rate: int) -> int:
    return max(2, round(HOLD_S * rate / limiter_block(rate)))


def limit(samples: np.ndarray, rate: int, ceiling_dbtp: float) -> np.ndarray:
    """``samples`` with a smooth look-ahead gain so that their true peak <= the ceiling.

    The gain is worked out on 1 ms blocks (each block's true peak) and interpolated
    linearly between block centres. The smoothing reaches one block less far than the
    minimum filter, so the values at a block and at both neighbours are all at most that
    block's need, and so is any straight line between them.
    """
    block = limiter_block(rate)
    peaks = _block_peaks(samples, block)
    gains = _limiter_gains(peaks, db_to_gain(ceiling_dbtp), _hold_blocks(rate))
    if gains.min() >= 1.0:
        return samples
    return _apply_gains(samples, gains, block)


def _k_weighted_block_energy(samples: np.ndarray, rate: int, block: int) -> np.ndarray:
    """Energy of the K-weighted signal (BS.1770's pre-filter, pyloudnorm's) per block."""
    weighted = samples.astype(np.float64)
    for stage in pyloudnorm.Meter(rate)._filters.values():
        weighted = stage.apply_filter(weighted)
    count = -(-weighted.shape[0] // block)
    padded = np.zeros(count * block)
    padded[:weighted.shape[0]] = np.square(weighted)
    return padded.reshape(count, block).sum(axis=1)


def _gated_loudness(energy: np.ndarray, per_block: int, block_len: int) -> float:
    """BS.1770 gated loudness from per-block energies (400 ms windows, 75 % overlap)."""
    window, hop = 4 * per_block, per_block
    if energy.shape[0] < window:
        return -math.inf
    sums = np.concatenate([[0.0], np.cumsum(energy)])
    starts = np.arange(0, energy.shape[0] - window + 1, hop)
    z = (sums[starts + window] - sums[starts]) / (window * block_len)
    with np.errstate(divide="ignore"):
        levels = -0.691 + 10 * np.log10(z)
    gated = z[levels >= -70.0]
    if gated.shape[0] == 0:
        return -math.inf
    relative = -0.691 + 10 * np.log10(gated.mean()) - 10.0
    kept = z[(levels > relative) & (levels >= -70.0)]
    return float(-0.691 + 10 * np.log10(kept.mean())) if kept.shape[0] else -math.inf


def block_true_peaks_db(samples: np.ndarray, rate: int) -> np.ndarray:
    """The true peak (dBTP) of each of the limiter's 1 ms blocks of ``samples``."""
    with np.errstate(divide="ignore"):
        return 20 * np.log10(_block_peaks(samples, limiter_block(rate)))


def normalise(samples: np.ndarray, rate: int, *, target_lufs: float = TARGET_LUFS,
              ceiling_dbtp: float, ceiling_offsets_db: np.ndarray | None = None,
              rounds: int = 3, tolerance_lu: float = 0.05) -> np.ndarray:
    """``samples`` brought to ``target_lufs`` with true peak <= ``ceiling_dbtp``.

    Plain gain moves the loudness dB for dB, but what the limiter then takes back grows
    with the gain (speech with a high crest factor may lose 8 dB of peaks), so the gain
    is searched for. Each try is cheap: a gain scales the true peaks and the K-weighted
    energy with it, so both are worked out once per 1 ms block, and a try is the
    limiter's block gains and BS.1770's gating over those blocks. The result is then
    measured in full with pyloudnorm, and the small difference (the limiter's gain
    moves inside a block) corrected in a round or two. ``ceiling_offsets_db`` (<= 0, one
    per 1 ms block) lowers the ceiling locally, where an encoder overshot it.
    """
    if samples.shape[0] <= int(0.4 * rate):
        raise SilentAudioError("the audio is shorter than one 400 ms loudness block")
    block = limiter_block(rate)
    hold = _hold_blocks(rate)
    per_100ms = round(0.1 * rate / block)
    # The two passes over the whole story run side by side (scipy releases the GIL).
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="loudness") as pool:
        peaks_job = pool.submit(_block_peaks, samples, block)
        energy = _k_weighted_block_energy(samples, rate, block)
        peaks = peaks_job.result()
    source = _gated_loudness(energy, per_100ms, block)
    if not math.isfinite(source):
        raise SilentAudioError("the audio is silent: there is no loudness to normalise")
    ceiling: float | np.ndarray = db_to_gain(ceiling_dbtp)
    if ceiling_offsets_db is not None:
        ceiling = ceiling * np.power(10.0, np.minimum(ceiling_offsets_db, 0.0) / 20.0)

    def estimate(gain_db: float) -> tuple[float, np.ndarray]:
        gain = db_to_gain(gain_db)
        gains = _limiter_gains(peaks * gain, ceiling, hold)
        level = _gated_loudness(energy * np.square(gains * gain), per_100ms, block)
        return level, gains

    def solve(target: float) -> tuple[float, np.ndarray]:
        # Loudness rises with the gain, ever more slowly: bracket, then regula falsi.
        low = target - source
        level, gains = estimate(low)
        if abs(level - target) <= tolerance_lu / 4:
            return low, gains
        low_level, high, high_level = level, None, None
        step = target - level
        for _ in range(40):
            if high is None:
                guess = low + max(step, 0.5)
            else:
                guess = low + (high - low) * (target - low_level) / (high_level - low_level)
            level, gains = estimate(guess)
            if abs(level - target) <= tolerance_lu / 4:
                return guess, gains
            if level < target:
                low, low_level = guess, level
                step = 2 * step
            else:
                high, high_level = guess, level
        return guess, gains

    aim = target_lufs
    out = samples
    for _ in range(rounds):
        gain_db, gains = solve(aim)
        out = _apply_gains(samples, gains, block, db_to_gain(gain_db))
        error = target_lufs - integrated_lufs(out, rate)
        if abs(error) <= tolerance_lu:
            break
        aim += error
    return out
