"""The stream factory: the one seam between the recorder/player and PortAudio.

The recorder and the player never build a sounddevice stream themselves; they ask a
factory. The real one, :class:`SoundDeviceStreams`, opens the configured devices
through PortAudio. Tests pass their own factory that calls the callback with blocks of
their choosing, reports overflows, stops delivering (an unplugged microphone) or fails
(a stream error), all without hardware.

Callbacks follow sounddevice's signatures::

    input:  callback(indata: ndarray[frames, channels], frames, time, status) -> None
    output: callback(outdata: ndarray[frames, channels], frames, time, status) -> None
    finished_callback() -> None   # the stream stopped, whoever stopped it
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from .devices import AudioDeviceError, load_sounddevice, resolve

Callback = Callable[[np.ndarray, int, Any, Any], None]
Finished = Callable[[], None]


class Stream(Protocol):
    """What the recorder and player use of a sounddevice stream."""

    @property
    def active(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


class StreamFactory(Protocol):
    def input_stream(self, *, samplerate: int, channels: int, dtype: str, blocksize: int,
                     callback: Callback, finished_callback: Finished) -> Stream:
        """Open (not start) a capture stream; raise AudioDeviceError if there is none."""
        ...

    def output_stream(self, *, samplerate: int, channels: int, dtype: str, blocksize: int,
                      callback: Callback, finished_callback: Finished) -> Stream:
        """Open (not start) a playback stream; raise AudioDeviceError if there is none."""
        ...


class StreamError(AudioDeviceError):
    """A stream failed to start or stop; the message is for the person at the kiosk."""


class SoundDeviceStreams:
    """The real factory: PortAudio through sounddevice, on the configured devices.

    ``latency`` is sounddevice's: "high" gives PortAudio the larger buffers that keep a
    busy two-core kiosk free of input overflows, at a cost in start-up delay that the
    benchmark measures.
    """

    def __init__(self, *, input_device: str | int | None = None,
                 output_device: str | int | None = None,
                 latency: str | float = "high") -> None:
        self.input_device = input_device
        self.output_device = output_device
        self.latency = latency

    def input_stream(self, *, samplerate: int, channels: int, dtype: str, blocksize: int,
                     callback: Callback, finished_callback: Finished) -> Stream:
        sd = load_sounddevice()
        index = resolve(sd, self.input_device, "input")
        try:
            return sd.InputStream(device=index, samplerate=samplerate, channels=channels,
                                  dtype=dtype, blocksize=blocksize, latency=self.latency,
                                  callback=callback, finished_callback=finished_callback)
        except sd.PortAudioError:
            raise StreamError("The microphone could not be opened: check its cable, or"
                              " ask staff for help.") from None

    def output_stream(self, *, samplerate: int, channels: int, dtype: str, blocksize: int,
                      callback: Callback, finished_callback: Finished) -> Stream:
        sd = load_sounddevice()
        index = resolve(sd, self.output_device, "output")
        try:
            return sd.OutputStream(device=index, samplerate=samplerate, channels=channels,
                                   dtype=dtype, blocksize=blocksize, latency=self.latency,
                                   callback=callback, finished_callback=finished_callback)
        except sd.PortAudioError:
            raise StreamError("The speakers could not be opened: check the headphones, or"
                              " ask staff for help.") from None
