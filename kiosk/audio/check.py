"""`kiosk check-audio`: the staff's microphone and speaker check.

It records a few seconds from the configured input and reports peak, RMS and input
overflows, then plays a 1 kHz tone on the configured output so staff can hear it.
The recording stays in memory and is dropped: nothing is written to disk.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import levels
from .devices import AudioDeviceError, load_sounddevice, resolve

SAMPLE_RATE = 48_000
TONE_HZ = 1000.0
#: -12 dBFS: clearly audible, well clear of clipping on any amplifier.
TONE_AMPLITUDE = 0.25


@dataclass(frozen=True)
class CheckResult:
    input_device: str
    output_device: str
    seconds: float
    peak_dbfs: float
    rms_dbfs: float
    input_overflows: int
    tone_hz: float
    tone_seconds: float


def tone(seconds: float, *, rate: int = SAMPLE_RATE, hz: float = TONE_HZ) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = TONE_AMPLITUDE * np.sin(2 * np.pi * hz * t)
    # 10 ms fades so the tone starts and ends without a click.
    ramp = min(len(wave) // 2, int(0.01 * rate))
    if ramp:
        envelope = np.linspace(0.0, 1.0, ramp)
        wave[:ramp] *= envelope
        wave[-ramp:] *= envelope[::-1]
    return wave.astype(np.float32)


def run_check(input_device: str | int | None, output_device: str | int | None, *,
              record_seconds: float = 3.0, tone_seconds: float = 1.0) -> CheckResult:
    sd = load_sounddevice()
    in_index = resolve(sd, input_device, "input")
    out_index = resolve(sd, output_device, "output")
    frames = int(record_seconds * SAMPLE_RATE)
    captured = np.zeros(frames, dtype=np.int16)
    filled = 0
    overflows = 0

    def on_block(indata: np.ndarray, count: int, _time: object, status: object) -> None:
        nonlocal filled, overflows
        if status and getattr(status, "input_overflow", False):
            overflows += 1
        take = min(count, frames - filled)
        captured[filled:filled + take] = indata[:take, 0]
        filled += take
        if filled >= frames:
            raise sd.CallbackStop

    try:
        with sd.InputStream(device=in_index, samplerate=SAMPLE_RATE, channels=1,
                            dtype="int16", callback=on_block) as stream:
            # Wait for the callback to fill the buffer (with a margin for start-up).
            deadline = record_seconds + 2.0
            waited = 0.0
            while stream.active and waited < deadline:
                sd.sleep(50)
                waited += 0.05
        sd.play(tone(tone_seconds), SAMPLE_RATE, device=out_index, blocking=True)
    except sd.PortAudioError:
        raise AudioDeviceError("The audio device stopped working during the check:"
                               " check its cable and try again.") from None
    if filled < frames:
        raise AudioDeviceError("The microphone delivered no sound during the check:"
                               " check its cable and try again.")
    in_name = sd.query_devices(in_index)["name"]
    out_name = sd.query_devices(out_index)["name"]
    return CheckResult(
        input_device=in_name, output_device=out_name, seconds=record_seconds,
        peak_dbfs=round(levels.peak_dbfs(captured), 2),
        rms_dbfs=round(levels.rms_dbfs(captured), 2),
        input_overflows=overflows, tone_hz=TONE_HZ, tone_seconds=tone_seconds)


def as_dict(result: CheckResult) -> dict[str, object]:
    return asdict(result)
