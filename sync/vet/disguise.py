"""Voice disguise: a WORLD-vocoder resynthesis with a shifted F0 and warped formants.

Why WORLD (pyworld) rather than the McAdams-coefficient method of the VoicePrivacy
Challenge's signal-processing baseline:

- McAdams moves the LPC pole angles (the formants) and keeps the LPC residual, so the
  fundamental frequency, the most recognisable part of a voice for a listener, stays
  where it was. The brief wants both moved. WORLD separates a voice into F0, a smooth
  spectral envelope (the formants) and aperiodicity, so each is moved on its own and
  the voice is synthesised again: F0 is multiplied by a ratio, the envelope is warped
  along the frequency axis by a smaller ratio, and the timing is untouched, so every
  word stays where it was and in the same rhythm (which keeps it intelligible, and
  keeps the editor's trims meaningful).
- pyworld is the maintained Python binding of WORLD (M. Morise), used throughout
  speech research; it needs only numpy, and its C++ releases the GIL, so chunks of a
  long story run on all cores from a thread pool.

The amount is in semitones of F0 (positive raises). Formants move by ``FORMANT_SHARE``
of that on the same log scale: +4 semitones of F0 (x1.26) moves the formants by x1.12,
enough to change the apparent vocal tract without the "chipmunk" a full shift makes.
Negative amounts lower the voice, the natural choice for a high voice.

What this protects against, and what not: it stops an exhibit visitor, or a neighbour,
from recognising a voice they know, and it defeats naive voice matching. It is a fixed,
deterministic transform, so someone who knows the amount can undo much of it, and the
words, accent and speaking rhythm still carry identity. For a defender at real risk the
safe choice is not to publish the voice at all (a transcript only).

The analysis runs at 24 kHz (speech lives below 12 kHz; this halves WORLD's work
against 48 kHz, the D4C aperiodicity step most of all) with 5 ms frames, in chunks of
about 20 s cut at the quietest moment near each boundary, so a long story runs in
parallel and in bounded memory (a 10-minute spectral envelope at once would be ~0.5 GB).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyworld
from scipy.signal import resample_poly

#: Default shift of F0, in semitones (x1.26), used by ``vet publish --disguise-voice``.
DEFAULT_SEMITONES = 4.0
#: The formants move by this fraction of the F0 shift (on a log-frequency scale).
FORMANT_SHARE = 0.5
#: WORLD's working rate and frame period.
WORK_RATE = 24_000
FRAME_PERIOD_MS = 5.0
#: F0 search range of the analysis: covers low men's to high children's voices.
F0_FLOOR = 60.0
F0_CEIL = 600.0
#: A chunk is about this long; its cut is moved to the quietest 10 ms within +-SEARCH_S.
CHUNK_S = 20.0
SEARCH_S = 2.0
#: Each chunk is analysed with this much of its neighbours, dropped after synthesis, so
#: the analysis windows at a cut see the real signal and not an edge.
CONTEXT_S = 0.3


def f0_ratio(semitones: float) -> float:
    return float(2.0 ** (semitones / 12.0))


def formant_ratio(semitones: float) -> float:
    return float(2.0 ** (FORMANT_SHARE * semitones / 12.0))


def warp_envelope(envelope: np.ndarray, ratio: float) -> np.ndarray:
    """Each frame's spectrum stretched along frequency by ``ratio`` (> 1 moves formants up).

    The value at bin k is read from bin k / ratio of the source frame, interpolated on
    the log of the envelope (formant peaks keep their shape); bins past the source's
    Nyquist take its last value.
    """
    bins = envelope.shape[1]
    source = np.arange(bins, dtype=np.float64) / ratio
    lower = np.minimum(np.floor(source).astype(np.intp), bins - 1)
    upper = np.minimum(lower + 1, bins - 1)
    frac = np.clip(source - lower, 0.0, 1.0)
    logenv = np.log(np.maximum(envelope, 1e-16))
    warped = logenv[:, lower] * (1.0 - frac) + logenv[:, upper] * frac
    return np.ascontiguousarray(np.exp(warped))


def _cuts(samples: np.ndarray, rate: int) -> list[int]:
    """Chunk boundaries: every ~CHUNK_S, moved to the quietest 10 ms frame nearby."""
    n = samples.shape[0]
    step, search, frame = int(CHUNK_S * rate), int(SEARCH_S * rate), rate // 100
    cuts = [0]
    while n - cuts[-1] > 2 * step:  # so the last chunk is never a sliver
        lo = cuts[-1] + step - search
        hi = min(n - frame, cuts[-1] + step + search)
        frames = (hi - lo) // frame
        energy = np.square(samples[lo:lo + frames * frame]).reshape(frames, frame).sum(axis=1)
        cuts.append(lo + int(np.argmin(energy)) * frame + frame // 2)
    cuts.append(n)
    return cuts


def _world_shift(chunk: np.ndarray, rate: int, f0_mult: float, env_mult: float) -> np.ndarray:
    x = np.ascontiguousarray(chunk, dtype=np.float64)
    f0, times = pyworld.dio(x, rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL,
                            frame_period=FRAME_PERIOD_MS)
    f0 = pyworld.stonemask(x, f0, times, rate)
    envelope = pyworld.cheaptrick(x, f0, times, rate)
    aperiodicity = pyworld.d4c(x, f0, times, rate)
    y = pyworld.synthesize(np.ascontiguousarray(f0 * f0_mult), warp_envelope(envelope, env_mult),
                           warp_envelope(aperiodicity, env_mult), rate, FRAME_PERIOD_MS)
    # WORLD's output is a frame's worth longer or shorter than its input; the timing is
    # the input's, so cut or pad to it.
    if y.shape[0] >= x.shape[0]:
        return y[:x.shape[0]]
    return np.concatenate([y, np.zeros(x.shape[0] - y.shape[0])])


def disguise_voice(samples: np.ndarray, rate: int, semitones: float = DEFAULT_SEMITONES, *,
                   workers: int | None = None) -> np.ndarray:
    """Mono ``samples`` at ``rate`` with F0 shifted by ``semitones`` and formants warped.

    The result has the same length, rate and timing as the input (float32).
    """
    if rate % WORK_RATE and WORK_RATE % rate:
        raise ValueError(f"disguise works on rates related to {WORK_RATE} Hz, not {rate}")
    work = samples.astype(np.float64)
    if rate != WORK_RATE:
        work = resample_poly(work, WORK_RATE, rate)
    f0_mult, env_mult = f0_ratio(semitones), formant_ratio(semitones)
    cuts = _cuts(work, WORK_RATE)
    context = int(CONTEXT_S * WORK_RATE)
    spans = [(max(0, a - context), a, b, min(work.shape[0], b + context))
             for a, b in zip(cuts, cuts[1:], strict=False)]

    n = work.shape[0]
    # Neighbouring chunks overlap by 2 * fade samples around each cut and cross-fade
    # there (raised cosine, summing to one), so no click is left where they meet.
    fade = min(int(0.005 * WORK_RATE), context)
    ramp = np.sin(0.5 * np.pi * (np.arange(2 * fade) + 0.5) / (2 * fade)) ** 2

    def one(span: tuple[int, int, int, int]) -> tuple[int, np.ndarray]:
        lo, a, b, hi = span
        start, stop = max(0, a - fade), min(n, b + fade)
        piece = _world_shift(work[lo:hi], WORK_RATE, f0_mult, env_mult)[start - lo:stop - lo]
        if a > 0:
            piece[:2 * fade] *= ramp
        if b < n:
            piece[-2 * fade:] *= ramp[::-1]
        return start, piece

    workers = workers or min(len(spans), os.cpu_count() or 1)
    if workers <= 1:
        pieces = [one(span) for span in spans]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="disguise") as pool:
            pieces = list(pool.map(one, spans))
    out = np.zeros(n, dtype=np.float64)
    for start, piece in pieces:
        out[start:start + piece.shape[0]] += piece
    if rate != WORK_RATE:
        out = resample_poly(out, rate, WORK_RATE)[:samples.shape[0]]
        if out.shape[0] < samples.shape[0]:
            out = np.concatenate([out, np.zeros(samples.shape[0] - out.shape[0])])
    return out.astype(np.float32)
