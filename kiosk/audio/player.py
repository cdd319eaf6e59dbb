"""The player: Opus decoded by soundfile, out through a sounddevice OutputStream.

It plays a defender's own sealed part for review (decrypted in RAM with the
session's file key, chunk by authenticated chunk) or a published story file. Nothing
is ever written to disk: the decoder reads from the sealed reader, and decoded audio
sits in a one-second queue in RAM.

A feeder thread decodes ahead, applies seeks and reports the position; the audio
callback only copies queued samples out, under a lock that is never held across a
decode or a read.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
import soundfile as sf

from .. import logs
from .devices import AudioDeviceError
from .streams import Stream, StreamError, StreamFactory

log = logging.getLogger("kiosk.audio.player")

BLOCK_FRAMES = 960
#: How much decoded audio the feeder keeps ahead of the speakers.
AHEAD_S = 1.0
#: How often the position callback fires while playing.
POSITION_INTERVAL_S = 0.05


class PlaybackSource(Protocol):
    """Something the player can open as a readable, seekable Ogg/Opus file object."""

    def open(self) -> BinaryIO: ...


@dataclass(frozen=True)
class SealedPart:
    """A part sealed in this session, opened with the file key the session holds."""

    path: Path
    #: The session's own key buffer: once the session drops (zeroes) it, this source
    #: can no longer be opened.
    file_key: bytearray

    def open(self) -> BinaryIO:
        from sync.envelope import open_sealed

        if not any(self.file_key):
            raise PermissionError("this part's file key has been dropped")
        return open_sealed(self.path, file_key=bytes(self.file_key))  # type: ignore[return-value]


@dataclass(frozen=True)
class StoryFile:
    """A published story: a plain Ogg/Opus file (it is public)."""

    path: Path

    def open(self) -> BinaryIO:
        return open(self.path, "rb")


class PlayerState(StrEnum):
    EMPTY = "empty"
    READY = "ready"
    PLAYING = "playing"
    PAUSED = "paused"
    ENDED = "ended"
    CLOSED = "closed"


class PlaybackError(Exception):
    """The recording cannot be played; the message is for the person at the kiosk."""


class Player:
    def __init__(self, streams: StreamFactory, *,
                 on_position: Callable[[float], None] | None = None,
                 on_end: Callable[[bool], None] | None = None,
                 position_interval_s: float = POSITION_INTERVAL_S) -> None:
        """``on_end(completed)``: True at the end of the recording, False if the speakers
        failed. Both callbacks run on the player's feeder thread."""
        self.streams = streams
        self.on_position = on_position
        self.on_end = on_end
        self.position_interval_s = position_interval_s
        self.state = PlayerState.EMPTY
        #: Why playback failed, in words for the person; None while all is well.
        self.error: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._head_pos = 0
        self._buffered = 0
        self._eof = False
        self._position = 0  # frames handed to the speakers, from the file's start
        self._paused = True
        self._drained = False  # the callback ran out of audio at the end of the file
        self._seek_to: int | None = None
        self._closing = False
        self._file: BinaryIO | None = None
        self._sndfile: sf.SoundFile | None = None
        self._stream: Stream | None = None
        self._stream_running = False
        self._thread: threading.Thread | None = None
        self.samplerate = 48_000
        self.channels = 1
        self.frames = 0

    # -- loading --------------------------------------------------------------------
    def load(self, source: PlaybackSource) -> float:
        """Open ``source`` and the speakers; returns the duration in seconds."""
        if self.state is not PlayerState.EMPTY:
            raise RuntimeError("a player plays one recording; make a new one")
        try:
            self._file = source.open()
            self._sndfile = sf.SoundFile(self._file)
        except Exception as exc:
            self._release_file()
            logs.event(log, "playback_open_failed", error=type(exc).__name__)
            raise PlaybackError("This recording cannot be played.") from None
        self.samplerate = self._sndfile.samplerate
        self.channels = self._sndfile.channels
        self.frames = self._sndfile.frames
        try:
            self._stream = self.streams.output_stream(
                samplerate=self.samplerate, channels=self.channels, dtype="int16",
                blocksize=BLOCK_FRAMES, callback=self._callback,
                finished_callback=self._finished)
        except AudioDeviceError:
            self._release_file()
            raise
        except Exception as exc:
            self._release_file()
            logs.event(log, "playback_stream_failed", error=type(exc).__name__)
            raise StreamError("The speakers could not be opened: check the headphones, or"
                              " ask staff for help.") from None
        self.state = PlayerState.READY
        self._thread = threading.Thread(target=self._feed, name="player-feed", daemon=True)
        self._thread.start()
        return self.duration_s

    @property
    def duration_s(self) -> float:
        return self.frames / self.samplerate

    @property
    def position_s(self) -> float:
        return self._position / self.samplerate

    # -- controls ---------------------------------------------------------------------
    def play(self) -> None:
        if self.state in (PlayerState.EMPTY, PlayerState.CLOSED):
            raise RuntimeError("nothing loaded")
        with self._lock:
            if self.state is PlayerState.ENDED:
                self._request_seek(0)
            self._paused = False
            self.state = PlayerState.PLAYING
            self._wake.notify_all()
        self._start_stream()

    def pause(self) -> None:
        with self._lock:
            if self.state is PlayerState.PLAYING:
                self._paused = True
                self.state = PlayerState.PAUSED

    def seek(self, seconds: float) -> None:
        """Jump to ``seconds`` (clamped to the recording); keeps playing or paused."""
        if self.state in (PlayerState.EMPTY, PlayerState.CLOSED):
            raise RuntimeError("nothing loaded")
        target = int(round(min(max(seconds, 0.0), self.duration_s) * self.samplerate))
        with self._lock:
            self._request_seek(target)
            if self.state is PlayerState.ENDED:
                self.state = PlayerState.PAUSED
            self._wake.notify_all()

    def stop(self) -> None:
        """Stop and let go of everything: the stream, the decoder, the sealed reader."""
        if self.state is PlayerState.CLOSED:
            return
        with self._lock:
            self._closing = True
            self._paused = True
            self._wake.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._close_stream()
        self._release_file()
        with self._lock:
            self._chunks.clear()
            self._buffered = 0
        self.state = PlayerState.CLOSED

    close = stop

    def _request_seek(self, target: int) -> None:
        # Called with the lock held. The queued audio belongs to the old position.
        self._seek_to = target
        self._chunks.clear()
        self._head_pos = 0
        self._buffered = 0
        self._eof = False
        self._drained = False
        self._position = target

    # -- the audio callback --------------------------------------------------------------
    def _callback(self, outdata: np.ndarray, frames: int, _time: Any, _status: Any) -> None:
        filled = 0
        with self._lock:
            if not self._paused:
                while filled < frames and self._chunks:
                    head = self._chunks[0]
                    take = min(frames - filled, len(head) - self._head_pos)
                    outdata[filled:filled + take] = head[self._head_pos:self._head_pos + take]
                    filled += take
                    self._head_pos += take
                    if self._head_pos == len(head):
                        self._chunks.popleft()
                        self._head_pos = 0
                self._buffered -= filled
                self._position += filled
                if filled < frames and self._eof and not self._chunks and not self._drained:
                    self._drained = True
                    self._wake.notify_all()
                elif filled:
                    self._wake.notify_all()
        if filled < frames:
            outdata[filled:] = 0

    def _finished(self) -> None:
        with self._lock:
            if self._stream_running and not self._closing:
                # The stream stopped on its own: the speakers went away.
                self.error = ("The sound stopped: check the headphones, or ask staff for"
                              " help.")
                self._drained = True
                self._wake.notify_all()

    # -- the feeder thread ----------------------------------------------------------------
    def _feed(self) -> None:
        ahead = int(AHEAD_S * self.samplerate)
        read_frames = BLOCK_FRAMES * 5
        last_reported: float | None = None
        try:
            while True:
                with self._lock:
                    if self._closing:
                        return
                    seek_to, self._seek_to = self._seek_to, None
                    want = (not self._eof and self._buffered < ahead) or seek_to is not None
                    if not want:
                        self._wake.wait(timeout=self.position_interval_s)
                    drained = self._drained and self.state is PlayerState.PLAYING
                if seek_to is not None:
                    assert self._sndfile is not None
                    self._sndfile.seek(seek_to)
                if want:
                    self._read_ahead(read_frames)
                if drained:
                    self._end()
                    continue
                if self.state is PlayerState.PLAYING and self.on_position is not None:
                    now = self.position_s
                    if now != last_reported:
                        last_reported = now
                        self.on_position(now)
        except Exception as exc:
            logs.event(log, "playback_failed", error=type(exc).__name__)
            self.error = "This recording cannot be played."
            self._end()

    def _read_ahead(self, read_frames: int) -> None:
        assert self._sndfile is not None
        block = self._sndfile.read(read_frames, dtype="int16", always_2d=True)
        with self._lock:
            if self._seek_to is not None:
                return  # a seek arrived while decoding: this block is from before it
            if len(block):
                self._chunks.append(block)
                self._buffered += len(block)
            if len(block) < read_frames:
                self._eof = True

    def _end(self) -> None:
        completed = self.error is None
        # Let the last samples play out of PortAudio's buffers before reporting.
        self._stop_stream()
        with self._lock:
            self._paused = True
            self._drained = False
            if self.state is not PlayerState.CLOSED:
                self.state = PlayerState.ENDED
        logs.event(log, "playback_ended", completed=completed,
                   seconds=round(self.position_s, 2))
        if self.on_position is not None:
            self.on_position(self.position_s)
        if self.on_end is not None:
            try:
                self.on_end(completed)
            except Exception as exc:
                logs.event(log, "playback_on_end_failed", error=type(exc).__name__)

    # -- resources --------------------------------------------------------------------
    def _start_stream(self) -> None:
        if self._stream is None or self._stream_running:
            return
        try:
            self._stream.start()
            self._stream_running = True
        except Exception as exc:
            logs.event(log, "playback_start_failed", error=type(exc).__name__)
            self.error = "The sound could not start: check the headphones, or ask staff."
            raise StreamError(self.error) from None

    def _stop_stream(self) -> None:
        if self._stream is not None and self._stream_running:
            self._stream_running = False
            try:
                self._stream.stop()
            except Exception as exc:
                logs.event(log, "playback_stop_failed", error=type(exc).__name__)

    def _close_stream(self) -> None:
        self._stop_stream()
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception as exc:
                logs.event(log, "playback_close_failed", error=type(exc).__name__)

    def _release_file(self) -> None:
        sndfile, self._sndfile = self._sndfile, None
        if sndfile is not None:
            try:
                sndfile.close()
            except Exception:
                pass
        file, self._file = self._file, None
        if file is not None:
            file.close()  # the sealed reader wipes its chunk key here
