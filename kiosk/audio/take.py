"""One take: its blocks, its encoder and envelope writer, its end and its result.

A :class:`Take` is made by :meth:`kiosk.audio.recorder.Recorder.start`. PortAudio's
callback hands it blocks (:meth:`Take._accept`: copy, queue, meter); its own writer
thread encodes them to Ogg/Opus into the envelope writer and, whatever ends the take,
seals what was captured and publishes a :class:`TakeResult` that says why it ended,
in words for the person.
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf

from .. import logs
from ..vault.ballast import Ballast
from .meters import MeterReading, TakeMeters
from .opus import compression_level_for
from .sealed_sink import SealedSink

log = logging.getLogger("kiosk.audio.take")

SAMPLE_RATE = 48_000
CHANNELS = 1
#: 20 ms blocks: 50 meter readings a second, and Opus's own frame size.
BLOCK_FRAMES = 960
#: How long a new stream may take to deliver its first block before it counts as dead.
FIRST_BLOCK_TIMEOUT_S = 5.0

#: Sentinels on a take's queue, besides the blocks themselves.
_WAKE = object()  # stop or abort was requested
_MAX = object()  # the callback reached the time limit
_LOST = object()  # the stream finished without being asked to


class EndReason(StrEnum):
    STOPPED = "stopped"
    MAX_LENGTH = "max_length"
    DEVICE_LOST = "device_lost"
    DISK_FULL = "disk_full"
    #: The envelope writer failed for another reason than a full disk.
    WRITE_FAILED = "write_failed"
    ABORTED = "aborted"


#: What the person is told, by reason; the screens translate by reason code.
MESSAGES: dict[EndReason, str] = {
    EndReason.MAX_LENGTH: "You reached the time limit for this answer. Everything you said"
                          " has been kept.",
    EndReason.DEVICE_LOST: "The microphone stopped working. What you said up to that moment"
                           " has been kept. Please ask staff for help.",
    EndReason.DISK_FULL: "The kiosk ran out of storage space. What you said up to that moment"
                         " has been kept. Please ask staff for help.",
    EndReason.WRITE_FAILED: "The kiosk had a problem saving this answer. What you said up to"
                            " that moment has been kept. Please ask staff for help.",
}
SILENT_MESSAGE = ("We could not hear you. Please speak close to the microphone and record"
                  " this answer again.")
NOT_KEPT_MESSAGE = "This answer could not be saved. Please ask staff for help."
NO_AUDIO_MESSAGE = ("The microphone stopped working before anything was recorded. Please ask"
                    " staff for help.")


class StorageFullError(Exception):
    """No room to start a take; the message is for the person at the kiosk."""


class RecordingError(Exception):
    """The take could not be started; the message is for the person at the kiosk."""


class SealedFileLike(Protocol):
    @property
    def path(self) -> Path: ...

    @property
    def size(self) -> int: ...

    @property
    def sha256(self) -> str: ...


class EnvelopeWriterLike(Protocol):
    @property
    def file_key(self) -> bytearray: ...

    @property
    def bytes_accepted(self) -> int: ...

    @property
    def renamed(self) -> bool: ...

    @property
    def sealed_file(self) -> SealedFileLike | None: ...

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def close(self) -> SealedFileLike: ...

    def abort(self) -> None: ...

    def drop_key(self) -> None: ...


class WriterFactory(Protocol):
    def __call__(self, path: Path, recipients: Iterable[Any], *,
                 allow_mixed: bool = False) -> EnvelopeWriterLike: ...


def envelope_writer(path: Path, recipients: Iterable[Any], *,
                    allow_mixed: bool = False) -> EnvelopeWriterLike:
    from sync.envelope import EnvelopeWriter

    return EnvelopeWriter(path, recipients, allow_mixed=allow_mixed)


@dataclass(frozen=True)
class TakeSettings:
    """What a take needs from the recorder that makes it, handed over at its start."""

    max_answer_s: float = 300.0
    silence_threshold_dbfs: float = -50.0
    #: Once blocks flow, a gap this long means the microphone went away.
    stall_timeout_s: float = 2.0
    #: Target Opus bitrate; None leaves libsndfile's default (about 61 kbit/s).
    opus_bitrate_kbps: float | None = None
    clock: Callable[[], float] = time.monotonic
    ballast: Ballast | None = None
    writer_factory: WriterFactory = envelope_writer


def _no_space(exc: BaseException | None) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def storage_full_error() -> StorageFullError:
    return StorageFullError("The kiosk's storage is full, so it cannot record now. Please"
                            " ask staff for help.")


@dataclass(frozen=True)
class TakeResult:
    reason: EndReason
    #: The sealed part, or None when nothing could be kept.
    sealed: SealedFileLike | None
    frames: int
    samplerate: int
    overflows: int
    #: Bytes of Ogg/Opus inside the envelope.
    opus_bytes: int
    silent: bool
    max_rms_dbfs: float
    max_peak_dbfs: float
    #: From start() to the first block of the take.
    first_block_latency_s: float | None
    #: From the end of the take (stop asked, or the limit or fault noticed) to sealed:
    #: the last blocks, the encoder's last pages, final chunk, fsync, rename, dir fsync.
    seal_latency_s: float | None

    @property
    def duration_s(self) -> float:
        return self.frames / self.samplerate

    @property
    def kept(self) -> bool:
        return self.sealed is not None

    @property
    def message(self) -> str | None:
        """What the person is told about this take, or None when all went as asked."""
        if self.reason is EndReason.ABORTED:
            return None
        if self.sealed is None:
            return NO_AUDIO_MESSAGE if self.reason is EndReason.DEVICE_LOST else NOT_KEPT_MESSAGE
        said = [MESSAGES[self.reason]] if self.reason in MESSAGES else []
        if self.silent:
            said.append(SILENT_MESSAGE)
        return " ".join(said) or None


class Take:
    """One recording in progress, then its result. Made by :meth:`Recorder.start`.

    The boundary with the recorder is this: the recorder owns the microphone stream and
    hands the take its blocks (:meth:`feed`) or the news that the stream died
    (:meth:`device_lost`); the take owns its encoder, envelope writer and writer thread,
    and tells the recorder once, through ``on_release``, that it takes no more blocks.
    """

    def __init__(self, path: Path, settings: TakeSettings, *,
                 on_end: Callable[[TakeResult], None] | None,
                 on_release: Callable[[Take, bool], None],
                 started_at: float) -> None:
        self.path = path
        self._settings = settings
        self._on_end = on_end
        self._on_release = on_release
        self._clock = settings.clock
        self._started_at = started_at
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        max_frames = max(1, int(round(settings.max_answer_s * SAMPLE_RATE)))
        self._meters = TakeMeters(samplerate=SAMPLE_RATE, max_frames=max_frames)
        self._writer: EnvelopeWriterLike | None = None
        self._sink: SealedSink | None = None
        self._sndfile: sf.SoundFile | None = None
        self._thread: threading.Thread | None = None
        self._closing = False  # the callback gives this take no more blocks
        self._stop_requested = False
        self._abort_requested = False
        self._end_noticed_at: float | None = None
        self._first_block_at: float | None = None
        self._encoded_frames = 0
        self._done = threading.Event()
        self._result: TakeResult | None = None

    # -- opening -------------------------------------------------------------------------
    def begin(self, recipients: list[Any], *, allow_mixed: bool = False) -> None:
        """Open the envelope writer and the encoder, then start the writer thread.

        Raises :class:`StorageFullError` or :class:`RecordingError` (with a message for
        the person), leaving no file behind.
        """
        self._open_writer(recipients, allow_mixed)
        self._thread = threading.Thread(target=self._run, name="take-writer", daemon=True)
        self._thread.start()

    def _open_writer(self, recipients: list[Any], allow_mixed: bool) -> None:
        settings = self._settings
        try:
            self._writer = settings.writer_factory(self.path, recipients,
                                                   allow_mixed=allow_mixed)
        except OSError as exc:
            if _no_space(exc):
                logs.event(log, "take_refused", reason="disk_full")
                raise storage_full_error() from None
            logs.event(log, "take_refused", reason="write_error", errno=exc.errno)
            raise RecordingError("The kiosk could not start recording. Please ask staff for"
                                 " help.") from None
        except Exception as exc:
            # A bad recipient set (mixed post-quantum and classic keys, say) or any other
            # fault of the writer: the person is told, staff find the kind in the log.
            logs.event(log, "take_refused", reason="writer_failed", error=type(exc).__name__)
            raise RecordingError("The kiosk could not start recording. Please ask staff for"
                                 " help.") from None
        try:
            self._sink = SealedSink(self._writer)
            kwargs: dict[str, Any] = {}
            if settings.opus_bitrate_kbps is not None:
                kwargs["compression_level"] = compression_level_for(settings.opus_bitrate_kbps)
            self._sndfile = sf.SoundFile(self._sink, mode="w", samplerate=SAMPLE_RATE,
                                         channels=CHANNELS, format="OGG", subtype="OPUS",
                                         **kwargs)
        except Exception as exc:
            self._drop_encoder()
            self._writer.abort()
            self._writer = None
            logs.event(log, "take_refused", reason="encoder_failed", error=type(exc).__name__)
            raise RecordingError("The kiosk could not start recording. Please ask staff for"
                                 " help.") from None

    @property
    def accepting(self) -> bool:
        """Whether the take still takes blocks (False once it was asked to end)."""
        return not self._closing

    # -- called from PortAudio's thread: copy, queue, meter --------------------------------
    def feed(self, indata: np.ndarray, frames: int, overflow: bool, now: float) -> None:
        if self._closing:
            return
        try:
            if self._first_block_at is None:
                self._first_block_at = now
            if overflow:
                self._meters.count_overflow()
            room = self._meters.max_frames - self._meters.frames
            # Copy: PortAudio reuses indata's memory for the next block.
            block = indata[:min(frames, room), 0].copy()
            self._queue.put(block)
            self._meters.update(block)
            if self._meters.frames >= self._meters.max_frames:
                self._closing = True
                self._queue.put(_MAX)
        except Exception:  # never let an exception reach PortAudio
            self._closing = True
            self._queue.put(_LOST)

    def device_lost(self) -> None:
        if not self._closing:
            self._closing = True
            self._queue.put(_LOST)

    # -- what the screen uses --------------------------------------------------------------
    def meters(self) -> MeterReading:
        return self._meters.latest

    @property
    def file_key(self) -> bytearray:
        """A copy of the part's file key, which the caller (the session's custody) owns
        and zeroes; the take's own copy is zeroed when the take is over."""
        if self._writer is None:
            raise ValueError("the take is over: its file key is held by the session")
        return self._writer.file_key

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def result(self) -> TakeResult | None:
        return self._result

    def request_stop(self) -> None:
        """End the take now and seal it; returns at once (the end arrives via on_end)."""
        if not self._stop_requested:
            self._end_noticed_at = self._clock()
            self._stop_requested = True
            self._closing = True  # the audio ends at this very block
            self._queue.put(_WAKE)

    def stop(self, timeout: float | None = 10.0) -> TakeResult:
        """End the take and wait until it is sealed."""
        self.request_stop()
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> TakeResult:
        if not self._done.wait(timeout):
            raise TimeoutError("the take did not finish in time")
        assert self._result is not None
        return self._result

    def abort(self, timeout: float | None = 10.0) -> None:
        """Discard the take: stop it and delete its file, sealed or not."""
        self._abort_requested = True
        self.request_stop()
        result = self.wait(timeout)
        if result.sealed is not None:
            Path(result.sealed.path).unlink(missing_ok=True)

    # -- the writer thread -----------------------------------------------------------------
    def _run(self) -> None:
        reason = EndReason.STOPPED
        try:
            reason = self._record()
        except Exception as exc:  # a bug must not cost the audio: seal what we have
            logs.event(log, "take_writer_error", error=type(exc).__name__)
            reason = EndReason.DEVICE_LOST
        try:
            self._finish(reason)
        except Exception as exc:
            # Whoever waits on this take must hear that it ended, whatever went wrong.
            logs.event(log, "take_finish_error", error=type(exc).__name__)
            if not self._done.is_set():
                self._give_up()

    def _record(self) -> EndReason:
        while True:
            # A stream just armed may take seconds to deliver (see the module doc);
            # once blocks flow, a gap means the microphone went away.
            stall = self._settings.stall_timeout_s
            timeout = (stall if self._first_block_at is not None
                       else max(stall, FIRST_BLOCK_TIMEOUT_S))
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                logs.event(log, "take_stalled", part=self.path.name)
                return EndReason.DEVICE_LOST
            if item is _WAKE:
                return EndReason.ABORTED if self._abort_requested else EndReason.STOPPED
            if item is _MAX:
                return EndReason.MAX_LENGTH
            if item is _LOST:
                return EndReason.DEVICE_LOST
            if self._encode(item):
                return self._write_failure()

    def _write_failure(self) -> EndReason:
        assert self._sink is not None
        return EndReason.DISK_FULL if _no_space(self._sink.error) else EndReason.WRITE_FAILED

    def _encode(self, block: np.ndarray) -> bool:
        """Encode one block; True once the envelope writer has failed (a full disk...)."""
        assert self._sndfile is not None and self._sink is not None
        self._sndfile.write(block)
        self._encoded_frames += len(block)
        return self._sink.error is not None

    def _finish(self, reason: EndReason) -> None:
        if self._end_noticed_at is None:
            self._end_noticed_at = self._clock()
        self._closing = True
        if self._abort_requested:
            reason = EndReason.ABORTED
        self._on_release(self, reason is EndReason.DEVICE_LOST)
        sealed = None
        if reason is EndReason.ABORTED:
            self._drop_encoder()
            if self._writer is not None:
                self._writer.abort()
        else:
            # Every block the callback queued before the end is the person's: keep it.
            # After ENOSPC the encoder goes on writing into the sink's RAM buffer.
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, np.ndarray):
                    self._encode(item)
            if self._encoded_frames == 0 and reason is EndReason.DEVICE_LOST:
                self._drop_encoder()  # nothing was heard: there is nothing to keep
                if self._writer is not None:
                    self._writer.abort()
            else:
                sealed, failure = self._seal()
                if failure is not None:
                    reason = failure
        self._publish(reason, sealed)

    def _seal(self) -> tuple[SealedFileLike | None, EndReason | None]:
        """Flush the encoder, free space if need be, and seal.

        Returns the sealed part (None if nothing could be kept) and, when the writer
        failed on the way, why: DISK_FULL or WRITE_FAILED.
        """
        assert self._sink is not None and self._writer is not None
        writer = self._writer
        try:
            if self._sndfile is not None:
                self._sndfile.close()  # the encoder's last Ogg pages, into the sink
        except Exception as exc:
            logs.event(log, "take_encoder_close_failed", error=type(exc).__name__)
        failure = self._write_failure() if self._sink.error is not None else None
        released = False
        if failure is EndReason.DISK_FULL:
            released = self._release_ballast()
        for _attempt in range(3):
            try:
                self._sink.flush_held()
                sealed = writer.close()
                self._drop_encoder()
                return sealed, failure
            except OSError as exc:
                if writer.renamed:
                    # The part is complete and in place; only the directory's fsync
                    # failed. It is kept (deleting it would lose the answer for sure).
                    logs.event(log, "take_dir_fsync_failed", errno=exc.errno)
                    failure = failure or EndReason.WRITE_FAILED
                    continue
                if not _no_space(exc):
                    logs.event(log, "take_seal_failed", errno=exc.errno)
                    failure = failure or EndReason.WRITE_FAILED
                    break
                failure = EndReason.DISK_FULL
                if released or not self._release_ballast():
                    logs.event(log, "take_seal_failed", reason="disk_full")
                    break
                released = True
            except Exception as exc:
                logs.event(log, "take_seal_failed", error=type(exc).__name__)
                failure = failure or EndReason.WRITE_FAILED
                break
        self._drop_encoder()
        if writer.renamed:
            return writer.sealed_file, failure
        writer.abort()
        return None, failure

    def _release_ballast(self) -> bool:
        ballast = self._settings.ballast
        freed = ballast is not None and ballast.release()
        logs.event(log, "ballast_released", freed=freed)
        return freed

    def _drop_encoder(self) -> None:
        sndfile, self._sndfile = self._sndfile, None
        if sndfile is not None and not sndfile.closed:
            try:
                sndfile.close()
            except Exception:
                pass
        if self._sink is not None:
            self._sink.detach_writer()

    def _give_up(self) -> None:
        """A bug while finishing: report the take as not kept, so nobody waits forever."""
        writer, self._writer = self._writer, None
        for step in ("abort", "drop_key"):
            try:
                getattr(writer, step)()
            except Exception:
                pass
        result = TakeResult(
            reason=EndReason.WRITE_FAILED, sealed=None, frames=self._encoded_frames,
            samplerate=SAMPLE_RATE, overflows=self._meters.overflows, opus_bytes=0,
            silent=False, max_rms_dbfs=self._meters.max_rms_dbfs,
            max_peak_dbfs=self._meters.max_peak_dbfs, first_block_latency_s=None,
            seal_latency_s=None)
        self._result = result
        if self._on_end is not None:
            try:
                self._on_end(result)
            except Exception as exc:
                logs.event(log, "take_on_end_failed", error=type(exc).__name__)
        self._done.set()

    def _publish(self, reason: EndReason, sealed: SealedFileLike | None) -> None:
        assert self._sink is not None
        meters = self._meters
        sealed_at = self._clock()
        first = (self._first_block_at - self._started_at
                 if self._first_block_at is not None else None)
        result = TakeResult(
            reason=reason, sealed=sealed, frames=self._encoded_frames,
            samplerate=SAMPLE_RATE, overflows=meters.overflows,
            opus_bytes=self._sink.bytes_written,
            silent=meters.max_rms_dbfs < self._settings.silence_threshold_dbfs,
            max_rms_dbfs=meters.max_rms_dbfs, max_peak_dbfs=meters.max_peak_dbfs,
            first_block_latency_s=first,
            seal_latency_s=(sealed_at - self._end_noticed_at
                            if sealed is not None and self._end_noticed_at is not None
                            else None))
        self._sink.close()
        self._result = result
        logs.event(log, "take_ended", part=self.path.name, reason=reason.value,
                   kept=result.kept, seconds=round(result.duration_s, 2),
                   overflows=result.overflows, silent=result.silent)
        # on_end first: whoever waits on stop() then finds the part already recorded.
        if self._on_end is not None:
            try:
                self._on_end(result)
            except Exception as exc:
                logs.event(log, "take_on_end_failed", error=type(exc).__name__)
        # The writer's key is zeroed and the writer goes. Not before on_end: the
        # session's custody may still be taking its copy of the key from a take that
        # ended the moment it started.
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.drop_key()
        self._done.set()
