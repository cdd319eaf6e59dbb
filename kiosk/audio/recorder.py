"""The recorder: microphone -> Ogg/Opus -> age envelope, with no plaintext on disk.

::

    PortAudio callback          take's writer thread                disk
    copy block -> queue  ---->  soundfile Ogg/Opus encoder
    update meters               -> SealedSink -> EnvelopeWriter ->  <part>.age.part
                                stop: final pages, final chunk,     -> <part>.age
                                      fsync, rename, fsync dir

The callback does nothing that can block: it copies the block, puts it on the take's
queue and updates the meters. Encoding, encrypting, writing and sealing happen on the
take's own writer thread, so a slow disk never costs an input overflow and the screen
never waits for the disk.

The microphone is *armed* (:meth:`Recorder.open`) when the recording screen opens and
stays open between takes: a take begins with the very next block after "record",
and the screen can show a live level before the first take. Opening a capture stream
is slow on some systems (PulseAudio's ALSA plugin takes 1-2 s to deliver the first
block of a new stream), and a defender must not lose their first words to that.
Between takes the blocks only feed the live level and are dropped.

Whatever ends a take (the person's "stop", the time limit, a microphone that stops
delivering, a stream error, a full disk), the audio captured until then is sealed and
kept, and the result says why the take ended in words for the person. Only an
explicit :meth:`Take.abort` (the session discarded) deletes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .. import logs
from ..vault.ballast import Ballast
from .devices import AudioDeviceError
from .levels import FLOOR_DBFS
from .meters import MeterReading, block_levels
from .opus import DEFAULT_KBPS
from .streams import SoundDeviceStreams, Stream, StreamError, StreamFactory
from .take import (
    BLOCK_FRAMES,
    CHANNELS,
    FIRST_BLOCK_TIMEOUT_S,
    MESSAGES,
    NO_AUDIO_MESSAGE,
    NOT_KEPT_MESSAGE,
    SAMPLE_RATE,
    SILENT_MESSAGE,
    EndReason,
    RecordingError,
    StorageFullError,
    Take,
    TakeResult,
    TakeSettings,
    WriterFactory,
    envelope_writer,
    storage_full_error,
)

__all__ = [
    "BLOCK_FRAMES", "CHANNELS", "MESSAGES", "NO_AUDIO_MESSAGE", "NOT_KEPT_MESSAGE",
    "SAMPLE_RATE", "SILENT_MESSAGE", "EndReason", "Recorder", "RecordingError",
    "StorageFullError", "Take", "TakeResult", "TakeSettings",
]

log = logging.getLogger("kiosk.audio.recorder")

#: An armed stream silent for this long is reopened before a take starts.
STALE_STREAM_S = 0.5


class Recorder:
    """Owns the microphone stream and makes takes; one take at a time.

    Use from one thread (the screen's); takes report their end on their own thread.
    """

    def __init__(self, streams: StreamFactory, *, max_answer_s: float = 300.0,
                 silence_threshold_dbfs: float = -50.0, ballast: Ballast | None = None,
                 clock: Callable[[], float] = time.monotonic, stall_timeout_s: float = 2.0,
                 writer_factory: WriterFactory = envelope_writer,
                 opus_bitrate_kbps: float | None = DEFAULT_KBPS) -> None:
        self.streams = streams
        self.max_answer_s = max_answer_s
        self.clock = clock
        #: What every take is handed at its start (the take never reaches back here).
        self.settings = TakeSettings(
            max_answer_s=max_answer_s, silence_threshold_dbfs=silence_threshold_dbfs,
            stall_timeout_s=stall_timeout_s, opus_bitrate_kbps=opus_bitrate_kbps,
            clock=clock, ballast=ballast, writer_factory=writer_factory)
        self._lock = threading.RLock()
        self._stream: Stream | None = None
        self._generation = 0  # which stream the callbacks belong to
        self._opened_at: float | None = None
        self._first_block_at: float | None = None
        self._last_block_at: float | None = None
        self._take: Take | None = None
        self._live = MeterReading(FLOOR_DBFS, FLOOR_DBFS, 0.0, max_answer_s, 0, FLOOR_DBFS)
        self._first_block = threading.Event()
        self._stream_dead = False

    @classmethod
    def from_config(cls, cfg: Any, *, streams: StreamFactory | None = None,
                    ballast: Ballast | None = None) -> Recorder:
        """A recorder with the kiosk config's devices, limit and silence threshold."""
        if streams is None:
            streams = SoundDeviceStreams(input_device=cfg.audio.input_device,
                                         output_device=cfg.audio.output_device)
        return cls(streams, max_answer_s=cfg.recording.max_answer_s,
                   silence_threshold_dbfs=cfg.recording.silence_threshold_dbfs,
                   opus_bitrate_kbps=cfg.recording.opus_bitrate_kbps,
                   ballast=ballast if ballast is not None else Ballast(cfg.data_dir))

    # -- the microphone stream ----------------------------------------------------------
    @property
    def armed(self) -> bool:
        return self._stream is not None

    def open(self) -> None:
        """Arm the microphone (the recording screen opened). Idempotent.

        Raises :class:`AudioDeviceError` when there is no microphone.
        """
        with self._lock:
            if self._stream is not None:
                return
            self._generation += 1
            generation = self._generation
            self._first_block.clear()
            self._first_block_at = self._last_block_at = None
            self._stream_dead = False

            def callback(indata: np.ndarray, frames: int, t: Any, status: Any) -> None:
                if generation == self._generation:
                    self._callback(indata, frames, status)

            def finished() -> None:
                if generation == self._generation:
                    self._finished()

            try:
                stream = self.streams.input_stream(
                    samplerate=SAMPLE_RATE, channels=CHANNELS, dtype="int16",
                    blocksize=BLOCK_FRAMES, callback=callback, finished_callback=finished)
            except AudioDeviceError:
                logs.event(log, "microphone_missing")
                raise
            except Exception as exc:
                logs.event(log, "microphone_open_failed", error=type(exc).__name__)
                raise StreamError("The microphone could not be opened: check its cable, or"
                                  " ask staff for help.") from None
            self._opened_at = self.clock()
            try:
                stream.start()
            except Exception as exc:
                self._generation += 1
                self._shut(stream)
                logs.event(log, "microphone_start_failed", error=type(exc).__name__)
                raise StreamError("The microphone could not be started: check its cable, or"
                                  " ask staff for help.") from None
            self._stream = stream
            logs.event(log, "microphone_armed")

    def close(self, timeout: float | None = 10.0) -> None:
        """Disarm: end any take (it is sealed and kept) and close the stream."""
        take = self._take
        if take is not None:
            take.stop(timeout)
        with self._lock:
            self._disarm()

    def warm_up(self, *, timeout_s: float = FIRST_BLOCK_TIMEOUT_S) -> float | None:
        """Arm the microphone and wait for its first block; returns the wait in seconds.

        None if nothing came in ``timeout_s``. The stream stays armed.
        """
        self.open()
        came = self._first_block.wait(timeout_s)
        if not came or self._first_block_at is None or self._opened_at is None:
            return None
        return self._first_block_at - self._opened_at

    def live_meters(self) -> MeterReading:
        """The level between takes, for "speak to check the microphone"."""
        return self._live

    def _disarm(self) -> None:
        # Called with the lock held. The generation bump silences the old callbacks.
        stream, self._stream = self._stream, None
        self._generation += 1
        if stream is not None:
            self._shut(stream)
            logs.event(log, "microphone_disarmed")

    @staticmethod
    def _shut(stream: Stream) -> None:
        # An unplugged device may fail to stop; it is closed either way.
        for step in (stream.stop, stream.close):
            try:
                step()
            except Exception as exc:
                logs.event(log, "stream_close_failed", error=type(exc).__name__)

    # -- PortAudio's thread: nothing here may block -------------------------------------
    def _callback(self, indata: np.ndarray, frames: int, status: Any) -> None:
        now = self.clock()
        if self._first_block_at is None:
            self._first_block_at = now
            self._first_block.set()
        self._last_block_at = now
        take = self._take
        overflow = bool(status) and bool(getattr(status, "input_overflow", False))
        if take is not None:
            take.feed(indata, frames, overflow, now)
        else:
            peak, rms = block_levels(indata[:frames, 0])
            self._live = MeterReading(peak, rms, 0.0, self.max_answer_s, 0, FLOOR_DBFS)

    def _finished(self) -> None:
        # The stream stopped without us stopping it: a stream error or a lost device.
        # Only flag it here (PortAudio's thread); the next start() opens a new one.
        self._stream_dead = True
        take = self._take
        if take is not None:
            take.device_lost()
        logs.event(log, "microphone_stream_finished", during_take=take is not None)

    # -- takes ----------------------------------------------------------------------------
    def start(self, path: Path, recipients: Iterable[Any], *,
              on_end: Callable[[TakeResult], None] | None = None,
              allow_mixed: bool = False) -> Take:
        """Start a take sealed to ``recipients`` at ``path``; it records from the next block.

        Raises :class:`AudioDeviceError` (no microphone), :class:`StorageFullError` or
        :class:`RecordingError`; in every case no file is left behind.
        """
        with self._lock:
            if self._take is not None and self._take.accepting:
                raise RuntimeError("a take is already recording")
            # A take that was asked to stop takes no more blocks: it may finish sealing
            # while the next one records.
            self._take = None
            started_at = self.clock()
            stale = (self._last_block_at is not None
                     and started_at - self._last_block_at > STALE_STREAM_S)
            if self._stream is not None and (self._stream_dead or stale):
                # The armed stream went quiet (unplugged between takes): try afresh, so
                # that a missing microphone is an error now rather than an empty take.
                logs.event(log, "microphone_stale")
                self._disarm()
            self.open()
            ballast = self.settings.ballast
            if ballast is not None and not ballast.ensure():
                logs.event(log, "take_refused", reason="disk_full")
                raise storage_full_error()
            take = Take(Path(path), self.settings, on_end=on_end,
                        on_release=self._release_take, started_at=started_at)
            take.begin(list(recipients), allow_mixed=allow_mixed)
            # From the next callback on, blocks go to the take.
            self._take = take
            logs.event(log, "take_started", part=take.path.name)
            return take

    def _release_take(self, take: Take, device_lost: bool) -> None:
        """A take's writer thread says it takes no more blocks."""
        with self._lock:
            if self._take is take:
                self._take = None
            if device_lost:
                self._disarm()
