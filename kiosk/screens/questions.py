"""The questions: record an answer by voice, listen to it, record it again, or skip.

While recording: the level meter, the elapsed time against the limit, and a clear stop
button. The microphone was armed when the session entered this screen (a fresh stream
takes about 1.8 s to deliver its first block), so "record" starts at once.
"""

from __future__ import annotations

from typing import Any

from kivy.app import App
from kivy.clock import Clock

from ..audio.levels import FLOOR_DBFS
from ..prompts import load_prompts
from . import load_kv
from .widgets import SessionScreen

load_kv("questions")

#: Meter and clock redraws a second while the screen shows. Above 30 on purpose: Kivy
#: re-arms an interval from when it fired, so 1/30 s gives about 27 a second.
METER_HZ = 40


def _clock_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class QuestionsScreen(SessionScreen):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._prompts = {p.id: p for p in load_prompts()}
        self._meter_event: Any = None

    def on_enter(self, *_args: Any) -> None:
        self._meter_event = Clock.schedule_interval(self._update_meter, 1 / METER_HZ)

    def on_leave(self, *_args: Any) -> None:
        if self._meter_event is not None:
            self._meter_event.cancel()
            self._meter_event = None

    def _update_meter(self, _dt: float) -> None:
        reading = self.session.meters()
        machine = self.machine
        self.ids.meter.level = reading.rms_dbfs if reading is not None else FLOOR_DBFS
        if machine.recording:
            limit = App.get_running_app().cfg.recording.max_answer_s
            self.ids.clock.source_text = (f"{_clock_text(reading.elapsed_s)}"
                                          f" / {_clock_text(limit)}")
        elif machine.playing:
            position, duration = self.session.position()
            self.ids.clock.source_text = f"{_clock_text(position)} / {_clock_text(duration)}"

    def record_or_stop(self) -> None:
        if self.machine.recording:
            self.fire("stop")
        else:
            self.fire("record")
        self.refresh()

    def listen(self) -> None:
        self.fire("stop_playback" if self.machine.playing else "play")
        self.refresh()

    def refresh(self) -> None:
        tr = App.get_running_app().tr
        machine = self.machine
        if not machine.prompt_ids:
            return
        index, total = machine.question, len(machine.prompt_ids)
        prompt = self._prompts.get(machine.prompt_id)
        ids = self.ids
        ids.counter.source_text = tr._("Question {number} of {total}").format(
            number=index + 1, total=total)
        ids.question.source_text = tr._(prompt.text) if prompt else machine.prompt_id
        ids.hint.source_text = tr._(prompt.hint) if prompt and prompt.hint else ""
        answer = machine.answers.get(machine.prompt_id)
        recording, playing = machine.recording, machine.playing
        stopping = getattr(machine, "stopping", False)
        ids.record_button.source_text = (tr._("Stop") if recording
                                         else tr._("Record my answer"))
        ids.record_button.disabled = stopping or playing or (answer is not None
                                                              and not recording)
        ids.record_button.opacity = 0.35 if ids.record_button.disabled else 1
        ids.listen_button.source_text = tr._("Stop listening") if playing else tr._("Listen")
        for button, shown in ((ids.listen_button, answer is not None and not recording),
                              (ids.rerecord_button, answer is not None and not recording
                               and not playing),
                              (ids.skip_button, not recording and not playing)):
            button.disabled = not shown
            button.opacity = 1 if shown else 0.35
        for button in (ids.back_button, ids.cancel_button, ids.next_button):
            button.disabled = recording or stopping
        ids.next_button.source_text = (tr._("Review my answers") if index == total - 1
                                       else tr._("Next question"))
        if recording:
            ids.status.source_text = tr._("Recording… speak when you are ready.")
        elif stopping:
            ids.status.source_text = tr._("Saving your answer…")
        elif answer is not None:
            ids.status.source_text = tr._("Your answer is saved. You can listen to it.")
        elif machine.prompt_id in machine.skipped:
            ids.status.source_text = tr._("You skipped this question.")
        else:
            ids.status.source_text = tr._("Press the button and speak.")
        if not recording and not playing:
            ids.clock.source_text = ""
