"""The publish audio pipeline: recorded answers in, one public Ogg/Opus story out.

``prepare_story_audio`` takes the plaintext Ogg/Opus of each recorded answer (as the
kiosk recorded it, decrypted into memory by the vet tool) and makes the public audio:

1. decode each part in memory (soundfile on ``BytesIO``), after checking that it is a
   whole Ogg stream (a truncated or garbled part is refused with :class:`BadPartError`
   naming the part, before anything is made);
2. keep each part's trim (start and end seconds; exact to the sample), with a 10 ms
   fade at each edge so a cut in the middle of a word does not click;
3. join the parts with a short pause;
4. optionally disguise the voice (:mod:`sync.vet.disguise`: WORLD, F0 and formants);
5. bring it to -16 LUFS integrated with a true-peak limit (:mod:`sync.vet.loudness`);
6. encode Ogg/Opus, 48 kHz mono, in memory; then decode that result and measure it,
   since Opus reconstructs peaks a little above what it was given: if the decoded
   audio is over -1 dBTP (or off the loudness), the limiter's ceiling (or the gain) is
   corrected and the story encoded again. What is returned is what a kiosk will play,
   and its figures are measured on the decoded audio.

Plaintext never touches the disk: no temporary files, and nothing is written anywhere;
the caller gets bytes. Nothing here logs (the audio is personal data until published).

The public bitrate is 40 kbit/s: the top of Opus's recommended range for fullband
speech (28-40), above the kiosk's ~32 kbit/s recording, so the second encoding adds
little loss; a 10-minute story is about 3 MB for the kiosks to fetch.
"""

from __future__ import annotations

import io
import math
import struct
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from math import gcd

import numpy as np
import soundfile as sf
from scipy.ndimage import maximum_filter1d
from scipy.signal import resample_poly

from . import disguise as _disguise
from . import loudness

#: The public audio's format (libsndfile's Opus takes 8, 12, 16, 24 or 48 kHz).
SAMPLE_RATE = 48_000
PUBLIC_KBPS = 40.0
#: Loudness target and true-peak ceiling of the decoded result.
TARGET_LUFS = loudness.TARGET_LUFS
CEILING_DBTP = loudness.CEILING_DBTP
#: How far under the ceiling the limiter aims before encoding, for Opus's overshoot
#: (measured on espeak-ng speech at 40 kbit/s: 0.4-1.9 dB, most after heavy limiting).
OPUS_HEADROOM_DB = 2.0
#: Opus at 40 kbit/s decodes speech 0.0-0.6 LU quieter than it was given (it keeps
#: less of the highs, which K-weighting counts more): aim at the middle of that, so one
#: encoding lands within LUFS_TOLERANCE.
OPUS_LOUDNESS_LOSS_LU = 0.3
#: How close to the target the decoded loudness should come (another encoding is tried
#: past it), and must (the contract's limit).
LUFS_TOLERANCE = 0.45
LUFS_LIMIT = 0.5
#: Where the decoded audio went over the ceiling, the limiter's ceiling is lowered
#: this far either side (ms): an Opus frame is 20 ms.
_OVERSHOOT_REACH_MS = 20
#: Encode-measure-correct rounds before giving up.
ENCODE_ROUNDS = 4
#: Default pause between parts, and the fade at every part's edges.
PAUSE_S = 0.6
EDGE_FADE_S = 0.010
#: The default voice-disguise amount, in semitones of F0 (positive raises).
DEFAULT_DISGUISE_SEMITONES = _disguise.DEFAULT_SEMITONES

#: libsndfile's Opus bitrate range for one channel (compression_level 0.0 and 1.0); the
#: same mapping as kiosk/audio/opus.py (sync/ does not import the kiosk).
_OPUS_MAX_KBPS = 256.0
_OPUS_MIN_KBPS = 6.0


class PublishAudioError(Exception):
    """The story's audio could not be prepared; the message says why (no audio in it)."""


class BadPartError(PublishAudioError):
    """A part is not a whole, decodable Ogg/Opus stream (truncated, garbled, empty)."""

    def __init__(self, index: int, why: str) -> None:
        super().__init__(f"part {index}: {why}")
        self.index = index


class BadTrimError(PublishAudioError, ValueError):
    """A trim names no part, or a span that is empty or outside the part."""


class SilentStoryError(PublishAudioError):
    """Nothing audible is left (all silence, or shorter than 400 ms): nothing to publish."""


@dataclass(frozen=True)
class PreparedAudio:
    ogg_bytes: bytes
    duration_s: float
    #: Measured on the decoded Opus, as a kiosk will play it.
    lufs: float
    true_peak_dbtp: float
    sample_rate: int


# -- Ogg/Opus in memory -------------------------------------------------------------

_OGG_HEADER = struct.Struct("<4sBBqIIIB")  # capture, version, flags, granule, serial, ...
_CRC_AT = 22
_EOS = 0x04
_REVERSED_BITS = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def _ogg_crc(page: bytes) -> int:
    """Ogg's page CRC (CRC-32, polynomial 0x04C11DB7, MSB first, no init, no final xor).

    zlib's CRC-32 is the same polynomial bit-reflected, with init and final xor of all
    ones; reflecting the bytes and the result, and cancelling the init by CRC linearity
    (the CRC of as many zero bytes), gives Ogg's CRC at C speed.
    """
    reflected = zlib.crc32(page.translate(_REVERSED_BITS)) ^ zlib.crc32(bytes(len(page)))
    return int(f"{reflected:032b}"[::-1], 2)


def check_ogg(data: bytes, index: int = 0) -> None:
    """Walk the Ogg pages of ``data``: whole pages end to end, the last one flagged EOS.

    libsndfile decodes a cut-off stream without complaint (it just ends early) and skips
    pages that fail their CRC, so this is what tells a damaged part from a short answer.
    The kiosk closes every take's stream properly, so a part without its end-of-stream
    page lost its tail somewhere.
    """
    if not data:
        raise BadPartError(index, "empty")
    offset, flags, pages = 0, 0, 0
    while offset < len(data):
        if len(data) - offset < _OGG_HEADER.size:
            raise BadPartError(index, "truncated (a partial Ogg page header at the end)")
        capture, version, flags, _granule, _serial, _seq, crc, segments = \
            _OGG_HEADER.unpack_from(data, offset)
        if capture != b"OggS" or version != 0:
            raise BadPartError(index, "not an Ogg stream" if pages == 0 else
                               f"garbled Ogg data at byte {offset}")
        table = offset + _OGG_HEADER.size
        if table + segments > len(data):
            raise BadPartError(index, "truncated (a partial Ogg page at the end)")
        end = table + segments + sum(data[table:table + segments])
        if end > len(data):
            raise BadPartError(index, "truncated (a partial Ogg page at the end)")
        # libsndfile would skip a damaged page in silence, leaving a hole in the answer.
        page = bytearray(data[offset:end])
        page[_CRC_AT:_CRC_AT + 4] = bytes(4)
        if _ogg_crc(bytes(page)) != crc:
            raise BadPartError(index, f"damaged Ogg page at byte {offset} (CRC mismatch)")
        offset, pages = end, pages + 1
    if not flags & _EOS:
        raise BadPartError(index, "truncated (no end-of-stream page)")


def _to_mono(samples: np.ndarray) -> np.ndarray:
    return samples.mean(axis=1) if samples.ndim == 2 else samples


def _resample(samples: np.ndarray, rate: int, to: int) -> np.ndarray:
    if rate == to:
        return samples
    g = gcd(rate, to)
    return resample_poly(samples, to // g, rate // g).astype(np.float32)


def decode_part(data: bytes, index: int = 0) -> np.ndarray:
    """One part's plaintext Ogg/Opus as mono float32 at :data:`SAMPLE_RATE`."""
    check_ogg(data, index)
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise BadPartError(index, f"not decodable audio ({type(exc).__name__})") from None
    samples = _to_mono(np.asarray(samples, dtype=np.float32))
    if samples.shape[0] == 0:
        raise BadPartError(index, "no audio in the stream")
    return _resample(samples, int(rate), SAMPLE_RATE)


def compression_level_for(kbps: float) -> float:
    """The ``compression_level`` that asks libsndfile's Opus encoder for ``kbps`` (mono)."""
    if not _OPUS_MIN_KBPS <= kbps <= _OPUS_MAX_KBPS:
        raise ValueError(f"Opus bitrate must be between {_OPUS_MIN_KBPS:g} and"
                         f" {_OPUS_MAX_KBPS:g} kbit/s, got {kbps:g}")
    return (_OPUS_MAX_KBPS - kbps) / (_OPUS_MAX_KBPS - _OPUS_MIN_KBPS)


def encode_opus(samples: np.ndarray, *, kbps: float = PUBLIC_KBPS) -> bytes:
    """Mono float samples at :data:`SAMPLE_RATE` as Ogg/Opus bytes, in memory."""
    out = io.BytesIO()
    with sf.SoundFile(out, mode="w", samplerate=SAMPLE_RATE, channels=1, format="OGG",
                      subtype="OPUS", compression_level=compression_level_for(kbps)) as f:
        f.write(np.asarray(samples, dtype=np.float32))
    return out.getvalue()


def decode(ogg_bytes: bytes) -> tuple[np.ndarray, int]:
    """Ogg/Opus bytes as (mono float32 samples, sample rate)."""
    samples, rate = sf.read(io.BytesIO(ogg_bytes), dtype="float32", always_2d=False)
    return _to_mono(np.asarray(samples, dtype=np.float32)), int(rate)


def _lufs_or_silent(samples: np.ndarray, rate: int) -> float:
    try:
        return loudness.integrated_lufs(samples, rate)
    except loudness.SilentAudioError:
        return -math.inf


def measure_samples(samples: np.ndarray, rate: int) -> tuple[float, float]:
    """(integrated loudness in LUFS, true peak in dBTP) of mono samples."""
    # Side by side: both spend their time in scipy's C code, which releases the GIL.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="measure") as pool:
        peak = pool.submit(loudness.true_peak_dbtp, samples)
        return _lufs_or_silent(samples, rate), peak.result()


def measure(ogg_bytes: bytes) -> tuple[float, float]:
    """(integrated loudness in LUFS, true peak in dBTP) of Ogg/Opus audio as decoded."""
    return measure_samples(*decode(ogg_bytes))


# -- the pipeline --------------------------------------------------------------------

def _fade_edges(samples: np.ndarray) -> np.ndarray:
    n = min(int(EDGE_FADE_S * SAMPLE_RATE), samples.shape[0] // 2)
    if n == 0:
        return samples
    ramp = (np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2).astype(np.float32)
    out = samples.copy()
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out


def _trim(samples: np.ndarray, index: int, span: tuple[float, float]) -> np.ndarray:
    start, end = (float(v) for v in span)
    length = samples.shape[0] / SAMPLE_RATE
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        raise BadTrimError(f"trim of part {index}: {start:g}-{end:g} s is not a span")
    # A trim typed to the part's length as shown (rounded) may pass its end by a hair.
    if start >= length or end > length + 0.05:
        raise BadTrimError(f"trim of part {index}: {start:g}-{end:g} s is outside the"
                           f" part ({length:.2f} s)")
    return samples[round(start * SAMPLE_RATE):round(min(end, length) * SAMPLE_RATE)]


@contextmanager
def _timed(timings: dict[str, float] | None, stage: str) -> Iterator[None]:
    began = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - began


def assemble(parts: list[bytes], *, trims: dict[int, tuple[float, float]] | None = None,
             pause_s: float = PAUSE_S) -> np.ndarray:
    """The parts decoded, trimmed, faded at their edges and joined with pauses."""
    if not parts:
        raise PublishAudioError("no parts to publish")
    trims = dict(trims or {})
    unknown = sorted(i for i in trims if not 0 <= i < len(parts))
    if unknown:
        raise BadTrimError(f"trims name parts that do not exist: {unknown}"
                           f" (there are {len(parts)})")
    if not (math.isfinite(pause_s) and 0 <= pause_s <= 10):
        raise PublishAudioError(f"pause must be 0-10 s, got {pause_s!r}")
    # Every part is checked and decoded before any work, so a bad one fails fast.
    decoded = [decode_part(data, i) for i, data in enumerate(parts)]
    pieces: list[np.ndarray] = []
    gap = np.zeros(round(pause_s * SAMPLE_RATE), dtype=np.float32)
    for i, samples in enumerate(decoded):
        if i in trims:
            samples = _trim(samples, i, trims[i])
        if pieces:
            pieces.append(gap)
        pieces.append(_fade_edges(samples))
    return np.concatenate(pieces)


def prepare_story_audio(parts: list[bytes], *,
                        trims: dict[int, tuple[float, float]] | None = None,
                        disguise: bool = False,
                        disguise_amount: float = DEFAULT_DISGUISE_SEMITONES,
                        pause_s: float = PAUSE_S,
                        timings: dict[str, float] | None = None) -> PreparedAudio:
    """The public Ogg/Opus of a story made of ``parts`` (plaintext Ogg/Opus, in order).

    ``trims`` maps a part's index to the (start, end) seconds to keep of it.
    ``disguise_amount`` is the F0 shift in semitones (formants move by half of it).
    ``timings``, when given, receives seconds per stage (decode, disguise, normalise,
    encode, verify) and the number of ``encodings`` it took, for the benchmark.
    Raises :class:`PublishAudioError` (or a subclass).
    """
    with _timed(timings, "decode"):
        samples = assemble(parts, trims=trims, pause_s=pause_s)
    if disguise:
        if not math.isfinite(disguise_amount) or not 0 < abs(disguise_amount) <= 12:
            raise PublishAudioError("disguise amount must be 0-12 semitones either way,"
                                    f" not 0; got {disguise_amount!r}")
        with _timed(timings, "disguise"):
            samples = _disguise.disguise_voice(samples, SAMPLE_RATE, disguise_amount)

    target, ceiling = TARGET_LUFS + OPUS_LOUDNESS_LOSS_LU, CEILING_DBTP - OPUS_HEADROOM_DB
    offsets: np.ndarray | None = None
    best: PreparedAudio | None = None
    for encodings in range(1, ENCODE_ROUNDS + 1):
        if timings is not None:
            timings["encodings"] = encodings
        with _timed(timings, "normalise"):
            try:
                ready = loudness.normalise(samples, SAMPLE_RATE, target_lufs=target,
                                           ceiling_dbtp=ceiling, ceiling_offsets_db=offsets)
            except loudness.SilentAudioError as exc:
                raise SilentStoryError(f"nothing to publish: {exc}") from None
        with _timed(timings, "encode"):
            ogg = encode_opus(ready)
        with _timed(timings, "verify"):
            out, rate = decode(ogg)
            lufs, peak = measure_samples(out, rate)
        result = PreparedAudio(ogg_bytes=ogg, duration_s=out.shape[0] / rate, lufs=lufs,
                               true_peak_dbtp=peak, sample_rate=rate)
        within = peak <= CEILING_DBTP and abs(lufs - TARGET_LUFS) <= LUFS_LIMIT
        if within and (best is None or abs(lufs - TARGET_LUFS) < abs(best.lufs - TARGET_LUFS)):
            best = result
        if within and abs(lufs - TARGET_LUFS) <= LUFS_TOLERANCE:
            return result
        # Opus overshoots in a few places of a long story (0.4-2.5 dB seen), and only
        # there: the ceiling goes down by what was over and a margin around those
        # places (the encoder's frames are 20 ms), the aim by the loudness missed.
        if peak > CEILING_DBTP:
            over = loudness.block_true_peaks_db(out, rate) - (CEILING_DBTP - 0.1)
            if rate == SAMPLE_RATE and out.shape[0] == ready.shape[0]:  # same 1 ms blocks
                cut = np.where(over > 0, over + 0.3, 0.0)
                cut = maximum_filter1d(cut, size=2 * _OVERSHOOT_REACH_MS + 1, mode="nearest")
                offsets = -cut if offsets is None else offsets - cut
            else:
                ceiling -= peak - CEILING_DBTP + 0.3
        target += TARGET_LUFS - lufs
    if best is not None:
        return best
    raise PublishAudioError(f"could not meet {TARGET_LUFS:g} LUFS / {CEILING_DBTP:g} dBTP"
                            f" after {ENCODE_ROUNDS} encodings (last {lufs:.2f} LUFS,"
                            f" {peak:.2f} dBTP)")
