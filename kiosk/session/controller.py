"""The session controller: carries out what the state machine decides, with real parts.

The machine (``machine.py``) only decides; this module does. It feeds the machine the
person's touches (from the screens), the clock's ticks, and the news that arrives on
other threads (a take sealed, a playback ended, the manifest sealed), and performs
each output: arm the microphone, start a take under the session's key custody, play
a part back, discard, seal. No Kivy here: the screens hand it a :class:`SessionUI` and
a ``call_on_main`` that runs a function on the UI thread, so tests drive it with fake
streams and no window.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from sync.withdrawal import withdrawal_key

from .. import logs
from ..audio.devices import AudioDeviceError
from ..audio.meters import MeterReading
from ..audio.player import Player
from ..audio.recorder import Recorder, RecordingError, StorageFullError, Take, TakeResult
from ..audio.streams import StreamError
from ..vault.custody import SessionCustody
from ..vault.store import Store
from . import machine as m
from .receipt import hash_code, new_code

log = logging.getLogger("kiosk.session")


class SessionUI(Protocol):
    """What the screens do for the controller (always called on the UI thread)."""

    def show(self, state: m.State) -> None: ...

    def show_overlay(self, overlay: m.Overlay, seconds: float | None) -> None: ...

    def hide_overlay(self) -> None: ...

    def tell(self, message_id: str) -> None: ...

    def refresh(self) -> None:
        """Something the current screen shows changed (a take ended, a playback ended)."""


class SessionController:
    def __init__(self, *, machine: m.SessionMachine, recorder: Recorder, store: Store,
                 data_dir: Path, recipients: Sequence[str], allow_mixed: bool,
                 words: Sequence[str], ui: SessionUI,
                 call_on_main: Callable[[Callable[[], None]], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.machine = machine
        self.recorder = recorder
        self.store = store
        self.data_dir = data_dir
        self.recipients = list(recipients)
        #: The catalog version ``recipients`` came from (0: the config). The app sets
        #: both between sessions only (kiosk/stories/session.py); a session keeps the
        #: recipients it started with.
        self.recipients_version = 0
        self.allow_mixed = allow_mixed
        self.words = list(words)
        self.ui = ui
        self.call_on_main = call_on_main
        self.clock = clock
        self.custody: SessionCustody | None = None
        self.take: Take | None = None
        self.player: Player | None = None
        #: The sealed manifest of the last submission (for the walkthrough and tests).
        self.last_manifest: Path | None = None
        self.last_submission: str | None = None
        #: Steps of sealing done, for the submitting screen's progress bar (0 to 3).
        self.seal_progress = 0
        #: Added to every manifest (the walkthrough marks its submissions as such).
        self.manifest_extra: dict[str, Any] = {}

    # -- events from the screens and the clock ---------------------------------------------
    def fire(self, event: str, *args: Any, **kwargs: Any) -> bool:
        """Send ``event`` to the machine and carry out its outputs; False if it did not
        apply (a double tap, a touch during a transition)."""
        before = self.machine.state
        try:
            outputs = getattr(self.machine, event)(*args, now=self.clock(), **kwargs)
        except m.InvalidEvent:
            logs.event(log, "session_event_ignored", event=event,
                       state=self.machine.state.value)
            return False
        self.perform(outputs)
        if self.machine.state is before:
            # What the screen shows changed without a change of screen (the next
            # question, a take started, a consent chosen); a new screen refreshes itself.
            self.ui.refresh()
        return True

    def tick(self) -> None:
        self.perform(self.machine.tick(now=self.clock()))

    def meters(self) -> MeterReading:
        """The level to show: the running take's, or the live microphone's."""
        take = self.take
        if take is not None and not take.done:
            return take.meters()
        return self.recorder.live_meters()

    def position(self) -> tuple[float, float]:
        """The review player's position and duration in seconds, or (0, 0)."""
        player = self.player
        if player is None:
            return 0.0, 0.0
        return player.position_s, player.duration_s

    # -- outputs ----------------------------------------------------------------------------
    def perform(self, outputs: Sequence[Any]) -> None:
        for output in outputs:
            handler = getattr(self, f"_do_{type(output).__name__}")
            handler(output)

    def _do_Show(self, out: m.Show) -> None:
        logs.event(log, "session_screen", state=out.state.value)
        self.ui.show(out.state)

    def _do_ShowOverlay(self, out: m.ShowOverlay) -> None:
        self.ui.show_overlay(out.overlay, out.seconds)

    def _do_HideOverlay(self, out: m.HideOverlay) -> None:
        self.ui.hide_overlay()

    def _do_Tell(self, out: m.Tell) -> None:
        logs.event(log, "session_told", message=out.message_id)
        self.ui.tell(out.message_id)

    def _do_ArmMicrophone(self, out: m.ArmMicrophone) -> None:
        try:
            self.recorder.open()
        except (AudioDeviceError, StreamError):
            # The screen still opens; "record" will say what is wrong again.
            self.ui.tell("no_microphone")

    def _do_DisarmMicrophone(self, out: m.DisarmMicrophone) -> None:
        self.recorder.close()

    def _session(self) -> SessionCustody:
        if self.custody is None or self.custody.closed:
            self.custody = SessionCustody(data_dir=self.data_dir, store=self.store,
                                          recipients=self.recipients,
                                          allow_mixed=self.allow_mixed,
                                          recipients_version=self.recipients_version)
        return self.custody

    def _do_StartTake(self, out: m.StartTake) -> None:
        prompt_id = out.prompt_id
        try:
            custody = self._session()
            _name, take = custody.record(
                self.recorder, prompt_id,
                on_end=lambda name, result: self.call_on_main(
                    lambda: self._take_ended(custody, prompt_id, name, result)))
        except (AudioDeviceError, StreamError):
            self.fire("record_failed", "no_microphone")
            return
        except StorageFullError:
            self.fire("record_failed", "storage_full")
            return
        except (RecordingError, ValueError) as exc:
            # ValueError: no recipients to seal to (a kiosk not yet set up).
            logs.event(log, "take_not_started", error=type(exc).__name__)
            self.fire("record_failed", "cannot_record")
            return
        self.take = take

    def _take_ended(self, custody: SessionCustody, prompt_id: str, name: str,
                    result: TakeResult) -> None:
        if self.take is not None and self.take.done:
            self.take = None
        if custody is not self.custody:
            return  # a take of a session discarded meanwhile: its part went with it
        reason = result.reason.value
        if not result.kept and result.reason.value != "aborted":
            # Nothing was kept: the sentence is "nothing recorded" or "not saved", not the
            # "what you said has been kept" of the kept-take reasons.
            self.ui.tell("no_audio" if reason == "device_lost" else "not_kept")
            reason = "stopped"
        outputs = self.machine.take_ended(prompt_id, name if result.kept else None,
                                          kept=result.kept, reason=reason,
                                          silent=result.silent, now=self.clock())
        self.perform(outputs)
        self.ui.refresh()

    def _do_StopTake(self, out: m.StopTake) -> None:
        if self.take is not None:
            self.take.request_stop()

    def _do_DropPart(self, out: m.DropPart) -> None:
        if self.custody is not None and not self.custody.closed:
            self.custody.drop_part(out.part)

    def _do_PlayPart(self, out: m.PlayPart) -> None:
        self._stop_player()
        player = Player(self.recorder.streams,
                        on_end=lambda completed: self.call_on_main(self._playback_ended))
        try:
            assert self.custody is not None
            self.custody.play_back(out.part, player)
            player.play()
        except Exception as exc:
            logs.event(log, "review_failed", error=type(exc).__name__)
            player.stop()
            self.perform(self.machine.playback_ended(now=self.clock()))
            self.ui.tell("playback_failed")
            return
        self.player = player

    def _playback_ended(self) -> None:
        self.perform(self.machine.playback_ended(now=self.clock()))
        self.ui.refresh()

    def _do_StopPlayback(self, out: m.StopPlayback) -> None:
        self._stop_player()

    def _stop_player(self) -> None:
        player, self.player = self.player, None
        if player is not None:
            player.stop()

    def _do_Discard(self, out: m.Discard) -> None:
        self._stop_player()
        custody, self.custody = self.custody, None
        self.take = None
        if custody is not None and not custody.closed:
            custody.discard()

    def _do_Seal(self, out: m.Seal) -> None:
        # Sealing and the receipt's slow hash take a moment: off the UI thread, so that
        # the submitting screen's progress moves.
        custody = self.custody
        self.seal_progress = 0
        threading.Thread(target=self._seal,
                         args=(custody, {**out.manifest, **self.manifest_extra}),
                         name="session-seal", daemon=True).start()

    def _seal(self, custody: SessionCustody | None, manifest: dict[str, Any]) -> None:
        try:
            if custody is None:
                raise RuntimeError("nothing was recorded in this session")
            code = new_code(self.words)
            self.seal_progress = 1
            receipt_hash = hash_code(code)
            # The same code's deterministic key, for the service (POST /withdraw).
            key = withdrawal_key(code)
            self.seal_progress = 2
            path = custody.submit(manifest, receipt_hash=receipt_hash, withdrawal_key=key)
            self.seal_progress = 3
        except Exception as exc:
            logs.event(log, "submit_failed", error=type(exc).__name__)
            self.call_on_main(lambda: self.perform(
                self.machine.submit_failed("submit_failed", now=self.clock())))
            return
        finally:
            manifest.clear()
        self.last_manifest = path
        self.last_submission = custody.submission_id

        def done() -> None:
            self.custody = None
            self.perform(self.machine.submitted(code, now=self.clock()))

        self.call_on_main(done)
