"""Staff mode: the kiosk's state at a glance (the same facts as `kiosk status`), the
microphone check, wiping unsent submissions (two confirmations), sync (once the sync
issue lands) and, where the config allows it, exit to the desktop."""

from __future__ import annotations

import threading
from typing import Any

from kivy.app import App
from kivy.clock import Clock

from ..staff.facts import gather
from ..staff.wipe import wipe_unsent
from ..textlayout_kivy import RtlLabel
from . import load_kv
from .overlays import Overlay
from .widgets import SessionScreen

load_kv("staff")


class StaffScreen(SessionScreen):
    def on_pre_enter(self, *_args: Any) -> None:
        self.ids.result.source_text = ""
        allowed = App.get_running_app().cfg.staff.allow_exit
        self.ids.exit_button.disabled = not allowed
        self.ids.exit_button.opacity = 1 if allowed else 0
        self.refresh()

    def fact_values(self) -> dict[str, str]:
        """The facts shown, label to value (English labels), for tests."""
        app = App.get_running_app()
        facts = gather(app.cfg, store=app.store, library=app.library)
        return {label: str(value) for label, value in facts.lines()}

    def refresh(self) -> None:
        app = App.get_running_app()
        tr = app.tr
        facts = gather(app.cfg, store=app.store, library=app.library)
        grid = self.ids.facts
        grid.clear_widgets()
        for label, value in facts.lines():
            cells = [(tr._(label), True), (str(value), False)]
            # The label first for the reader: on the right in a right-to-left language.
            for text, bold in (cells[::-1] if tr.is_rtl else cells):
                grid.add_widget(RtlLabel(source_text=text, language=tr.language, bold=bold,
                                         font_size="20sp", size_hint_y=None, height=34,
                                         valign="middle"))

    # -- microphone check ----------------------------------------------------------------
    def check_microphone(self) -> None:
        app = App.get_running_app()
        app.staff_activity()
        tr = app.tr
        self.ids.result.source_text = tr._("Checking the microphone: please speak…")
        # The recorder holds no stream while staff mode is open; the check opens its own.
        threading.Thread(target=self._check, daemon=True).start()

    def _check(self) -> None:
        from ..audio.check import run_check
        from ..audio.devices import AudioDeviceError

        app = App.get_running_app()
        audio = app.cfg.audio
        try:
            result = run_check(audio.input_device, audio.output_device, record_seconds=3.0)
        except AudioDeviceError as exc:
            message = str(exc)
        else:
            heard = result.rms_dbfs > app.cfg.recording.silence_threshold_dbfs
            verdict = (app.tr._("The microphone hears sound.") if heard
                       else app.tr._("The microphone heard nothing."))
            message = (f"{verdict} peak {result.peak_dbfs:.1f} dBFS, RMS"
                       f" {result.rms_dbfs:.1f} dBFS, overflows {result.input_overflows}")
        Clock.schedule_once(lambda _dt: self._show_result(message), 0)

    def _show_result(self, message: str) -> None:
        self.ids.result.source_text = message
        self.refresh()

    # -- wipe, after two confirmations ----------------------------------------------------------
    def ask_wipe(self) -> None:
        app = App.get_running_app()
        app.staff_activity()
        tr = app.tr
        first = Overlay()
        first.set_text(tr._("Wipe unsent submissions?"),
                       tr._("The recordings that have not reached the vetting team will be"
                            " deleted from this kiosk. They cannot be recovered."))
        first.add_button("keep", tr._("No, keep them"), lambda: first.dismiss(animation=False))
        first.add_button("wipe_first", tr._("Yes, continue"),
                         lambda: (first.dismiss(animation=False), self._ask_again()), primary=True)
        first.open(animation=False)

    def _ask_again(self) -> None:
        tr = App.get_running_app().tr
        second = Overlay()
        second.set_text(tr._("Are you sure?"),
                        tr._("This is the last step: the unsent recordings will be gone."))
        second.add_button("keep", tr._("No, keep them"), lambda: second.dismiss(animation=False))
        second.add_button("wipe_confirm", tr._("Wipe them now"),
                          lambda: (second.dismiss(animation=False), self._wipe()), primary=True)
        second.open(animation=False)

    def _wipe(self) -> None:
        app = App.get_running_app()
        report = wipe_unsent(app.cfg.data_dir, app.store)
        self.ids.result.source_text = app.tr._("Wiped: {count} submissions.").format(
            count=report.submissions)
        self.refresh()
