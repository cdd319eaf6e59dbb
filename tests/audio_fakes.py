"""Stream factories for the recorder and player tests: blocks, overflows, faults, no hardware.

A :class:`FakeStreams` factory hands out a :class:`FakeInputStream` that plays a
*script* into the recorder's callback from its own thread, as PortAudio would:

* a numpy array: delivered in 960-frame blocks;
* ``OVERFLOW``: the next block arrives flagged ``input_overflow``;
* ``STALL``: the stream stops delivering but stays "active" (a pulled USB cable);
* ``FAIL``: the stream stops on its own and calls ``finished_callback`` (a stream error);
* ``("wait", event)``: pause until the test sets ``event``.

After the script the stream keeps delivering silence until stopped, unless the last
item was STALL or FAIL.

The recorder arms its stream before a take and gives the take only the blocks that
come after ``start()`` returns. So that a script lands in the take whole, a fake stream
delivers nothing until its factory's ``go`` event is set: use :func:`start` and
:func:`record`, which set it once the take is attached.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from kiosk.audio.devices import AudioDeviceError

RATE = 48_000
BLOCK = 960
OVERFLOW = "overflow"
STALL = "stall"
FAIL = "fail"


@dataclass
class Status:
    input_overflow: bool = False

    def __bool__(self) -> bool:
        return self.input_overflow


def tone(seconds: float, *, hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def quiet_noise(seconds: float, *, dbfs: float = -70.0, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rms = 32768 * 10 ** (dbfs / 20)
    return np.clip(rng.normal(0, rms, int(seconds * RATE)), -32768, 32767).astype(np.int16)


def loud_noise(seconds: float, *, seed: int = 2) -> np.ndarray:
    """White noise: the worst case for Opus, so it fills a disk fastest."""
    rng = np.random.default_rng(seed)
    return rng.integers(-12000, 12000, int(seconds * RATE)).astype(np.int16)


class FakeInputStream:
    def __init__(self, script: list[Any], *, callback: Any, finished_callback: Any,
                 go: threading.Event, realtime: float = 0.0, fail_on_start: bool = False,
                 fail_on_stop: bool = False) -> None:
        self.script = list(script)
        self.go = go
        self.callback = callback
        self.finished_callback = finished_callback
        self.realtime = realtime  # seconds slept per block (0: as fast as possible)
        self.fail_on_start = fail_on_start
        self.fail_on_stop = fail_on_stop
        self.active = False
        self.closed = False
        self.delivered = 0
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.fail_on_start:
            raise RuntimeError("PortAudio error -9986: internal error (fake)")
        self.active = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _deliver(self, block: np.ndarray, overflow: bool) -> None:
        data = block.reshape(-1, 1)
        self.callback(data, len(block), None, Status(overflow))
        self.delivered += len(block)
        if self.realtime:
            time.sleep(self.realtime)
        else:
            time.sleep(0.0002)  # let the writer thread breathe, as real time would

    def _run(self) -> None:
        overflow = False
        while not self.go.wait(0.01):
            if self._halt.is_set():
                return
        for item in self.script:
            if self._halt.is_set():
                return
            if isinstance(item, str) and item == OVERFLOW:
                overflow = True
            elif isinstance(item, str) and item == STALL:
                self._halt.wait()
                return
            elif isinstance(item, str) and item == FAIL:
                self.active = False
                self.finished_callback()
                return
            elif isinstance(item, tuple) and item[0] == "wait":
                while not item[1].wait(0.01):
                    if self._halt.is_set():
                        return
            else:
                for i in range(0, len(item), BLOCK):
                    if self._halt.is_set():
                        return
                    self._deliver(item[i:i + BLOCK], overflow)
                    overflow = False
        silence = np.zeros(BLOCK, dtype=np.int16)
        while not self._halt.is_set():
            self._deliver(silence, False)
            time.sleep(BLOCK / RATE)

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        was_active, self.active = self.active, False
        if self.fail_on_stop:
            raise RuntimeError("PortAudio error -9999: unanticipated host error (fake)")
        if was_active:
            self.finished_callback()

    def close(self) -> None:
        if self.active:
            self.stop()
        self.closed = True


class FakeOutputStream:
    """Pulls blocks from the player's callback in (scaled) real time and keeps them."""

    def __init__(self, *, samplerate: int, channels: int, callback: Any,
                 finished_callback: Any, speed: float = 20.0) -> None:
        self.samplerate = samplerate
        self.channels = channels
        self.callback = callback
        self.finished_callback = finished_callback
        self.speed = speed
        self.active = False
        self.closed = False
        self.played: list[np.ndarray] = []
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._halt.clear()
        self.active = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._halt.is_set():
            out = np.full((BLOCK, self.channels), 12345, dtype=np.int16)  # garbage
            self.callback(out, BLOCK, None, Status())
            self.played.append(out.copy())
            time.sleep(BLOCK / self.samplerate / self.speed)

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        if self.active:
            self.active = False
            self.finished_callback()

    def close(self) -> None:
        self.stop()
        self.closed = True

    def samples(self) -> np.ndarray:
        if not self.played:
            return np.zeros((0, self.channels), dtype=np.int16)
        return np.concatenate(self.played)


class FakeStreams:
    """The factory; ``script`` is used for every input stream it opens."""

    def __init__(self, script: list[Any] | None = None, *, missing: bool = False,
                 realtime: float = 0.0, fail_on_start: bool = False,
                 fail_on_stop: bool = False, speed: float = 20.0) -> None:
        self.script = script or []
        self.missing = missing
        self.realtime = realtime
        self.fail_on_start = fail_on_start
        self.fail_on_stop = fail_on_stop
        self.speed = speed
        self.inputs: list[FakeInputStream] = []
        #: Set once a take is attached: only then do the input streams deliver.
        self.go = threading.Event()
        self.outputs: list[FakeOutputStream] = []

    def input_stream(self, *, samplerate: int, channels: int, dtype: str, blocksize: int,
                     callback: Any, finished_callback: Any) -> FakeInputStream:
        assert (samplerate, channels, dtype) == (RATE, 1, "int16")
        if self.missing:
            raise AudioDeviceError("No microphone was found: connect one, or name it in the"
                                   " [audio] section of the config.")
        stream = FakeInputStream(self.script, callback=callback,
                                 finished_callback=finished_callback, go=self.go,
                                 realtime=self.realtime,
                                 fail_on_start=self.fail_on_start,
                                 fail_on_stop=self.fail_on_stop)
        self.inputs.append(stream)
        return stream

    def output_stream(self, *, samplerate: int, channels: int, dtype: str, blocksize: int,
                      callback: Any, finished_callback: Any) -> FakeOutputStream:
        if self.missing:
            raise AudioDeviceError("No speaker was found.")
        stream = FakeOutputStream(samplerate=samplerate, channels=channels, callback=callback,
                                  finished_callback=finished_callback, speed=self.speed)
        self.outputs.append(stream)
        return stream


def start(recorder: Any, path: Any, recipients: Any, **kwargs: Any) -> Any:
    """``recorder.start(...)``, then let the fake microphone deliver its script."""
    take = recorder.start(path, recipients, **kwargs)
    recorder.streams.go.set()
    return take


def record(session: Any, recorder: Any, prompt: str, **kwargs: Any) -> tuple[str, Any]:
    """``session.record(...)``, then let the fake microphone deliver its script."""
    name, take = session.record(recorder, prompt, **kwargs)
    recorder.streams.go.set()
    return name, take
