"""Live meters of a take: peak and RMS in dBFS, elapsed time, time left, overflows.

The audio callback calls :meth:`TakeMeters.update` once per block (20 ms, so 50
readings a second) during a take, and :func:`block_levels` between takes (the live
level the screen shows before "record"). Each call publishes an immutable
:class:`MeterReading`; the screen reads the latest one whenever it redraws. Replacing
one reference is atomic in CPython, so neither side ever waits on the other, and the
callback does a few hundred multiply-adds per block, nothing more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .levels import FLOOR_DBFS, dbfs

_FULL_SCALE = 32768.0


@dataclass(frozen=True)
class MeterReading:
    peak_dbfs: float
    rms_dbfs: float
    elapsed_s: float
    remaining_s: float
    overflows: int
    #: Loudest block RMS so far: the silence check compares this with its threshold.
    max_rms_dbfs: float


def block_levels(block: np.ndarray) -> tuple[float, float]:
    """Peak and RMS of one block of int16 samples, in dBFS."""
    if not len(block):
        return FLOOR_DBFS, FLOOR_DBFS
    x = block.astype(np.float32)
    peak = dbfs(float(np.max(np.abs(x))) / _FULL_SCALE)
    rms = dbfs(math.sqrt(float(np.dot(x, x)) / len(x)) / _FULL_SCALE)
    return peak, rms


class TakeMeters:
    def __init__(self, *, samplerate: int, max_frames: int) -> None:
        self.samplerate = samplerate
        self.max_frames = max_frames
        self.frames = 0
        self.overflows = 0
        self.max_rms_dbfs = FLOOR_DBFS
        self.max_peak_dbfs = FLOOR_DBFS
        self.latest = MeterReading(FLOOR_DBFS, FLOOR_DBFS, 0.0, max_frames / samplerate, 0,
                                   FLOOR_DBFS)

    def count_overflow(self) -> None:
        self.overflows += 1

    def update(self, block: np.ndarray) -> MeterReading:
        """Account for one block of int16 samples (already trimmed to the take's end)."""
        self.frames += len(block)
        peak, rms = block_levels(block)
        self.max_rms_dbfs = max(self.max_rms_dbfs, rms)
        self.max_peak_dbfs = max(self.max_peak_dbfs, peak)
        elapsed = self.frames / self.samplerate
        self.latest = MeterReading(
            peak_dbfs=peak, rms_dbfs=rms, elapsed_s=elapsed,
            remaining_s=max(0.0, (self.max_frames - self.frames) / self.samplerate),
            overflows=self.overflows, max_rms_dbfs=self.max_rms_dbfs)
        return self.latest
