"""Signal levels in dBFS, as staff and the recorder's meters show them."""

from __future__ import annotations

import math

import numpy as np

#: The floor we report for digital silence instead of minus infinity.
FLOOR_DBFS = -120.0


def _to_float(samples: np.ndarray) -> np.ndarray:
    if samples.dtype == np.int16:
        return samples.astype(np.float64) / 32768.0
    return samples.astype(np.float64)


def dbfs(amplitude: float) -> float:
    return FLOOR_DBFS if amplitude <= 0 else max(FLOOR_DBFS, 20.0 * math.log10(amplitude))


def peak_dbfs(samples: np.ndarray) -> float:
    x = _to_float(samples)
    return dbfs(float(np.max(np.abs(x)))) if x.size else FLOOR_DBFS


def rms_dbfs(samples: np.ndarray) -> float:
    x = _to_float(samples)
    return dbfs(math.sqrt(float(np.mean(x * x)))) if x.size else FLOOR_DBFS
