"""Staff mode: the kiosk's state at a glance (the same facts as `kiosk status`), the
microphone check, wiping unsent submissions (two confirmations), "Sync now" (one pass
of the app's sync worker, with its progress on screen), USB export and import (kiosk/usb/,
each with its progress bar) and, where the config allows it, exit to the desktop."""

from __future__ import annotations

import threading
from typing import Any

from kivy.app import App
from kivy.clock import Clock, mainthread

from ..staff.facts import gather
from ..staff.wipe import wipe_unsent
from ..sync_worker import SYNCING, describe_progress, describe_result
from ..textlayout_kivy import RtlLabel
from . import load_kv
from .overlays import Overlay
from .widgets import SessionScreen

load_kv("staff")


#: The progress bar's resolution (its ``max``).
PROGRESS_STEPS = 1000


class StaffScreen(SessionScreen):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: A "Sync now" pass is running.
        self.syncing = False
        #: The latest progress report from the worker thread; shown by the trigger, at
        #: most once a frame however often the uploader reports.
        self._latest: Any = None
        self._show_progress_trigger = Clock.create_trigger(self._show_progress, 0)
        #: The bar's values as shown during the last pass (tests read it).
        self.progress_seen: list[int] = []
        #: A USB export or import is running; its latest report; its bar's values.
        self.usb_busy = False
        self._usb_latest: Any = None
        self._usb_trigger = Clock.create_trigger(self._usb_show, 0)
        self.usb_progress_seen: list[int] = []

    def on_pre_enter(self, *_args: Any) -> None:
        self.ids.result.source_text = ""
        if not self.syncing:  # a pass still running keeps its bar and its line
            self.ids.sync_status.source_text = ""
            self.ids.sync_progress.opacity = 0
        if not self.usb_busy:
            self.ids.usb_status.source_text = ""
            self.ids.usb_progress.opacity = 0
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
                                         font_size="19sp", size_hint_y=None, height=32,
                                         valign="middle"))

    # -- sync now ------------------------------------------------------------------------
    def sync_now(self) -> None:
        """One pass on the sync worker's thread; its progress comes back through
        :meth:`_on_progress` (a Clock trigger) and its end through :meth:`_on_done`."""
        app = App.get_running_app()
        app.staff_activity()
        if self.syncing:
            return
        self.syncing = True
        self._latest = None
        self.progress_seen = []
        self.ids.sync_button.disabled = True
        bar = self.ids.sync_progress
        bar.max, bar.value, bar.opacity = PROGRESS_STEPS, 0, 1
        self.ids.sync_status.source_text = app.tr._(SYNCING)
        app.sync_worker.run_now(self._on_progress, self._on_done)

    def _on_progress(self, report: Any) -> None:
        # On the worker thread: keep the report, let the UI's next frame show it.
        self._latest = report
        self._show_progress_trigger()

    def _show_progress(self, _dt: float) -> None:
        report = self._latest
        if report is None or not self.syncing:
            return  # the pass has ended: its result line stays
        tr = App.get_running_app().tr
        fraction, text = describe_progress(report, tr._)
        self._set_bar(round(fraction * PROGRESS_STEPS))
        self.ids.sync_status.source_text = text

    def _set_bar(self, value: int) -> None:
        self.ids.sync_progress.value = value
        if not self.progress_seen or self.progress_seen[-1] != value:
            self.progress_seen.append(value)
            del self.progress_seen[:-200]

    @mainthread
    def _on_done(self, result: Any) -> None:
        app = App.get_running_app()
        self.syncing = False
        self._show_progress_trigger.cancel()
        if result.error is None:
            self._set_bar(PROGRESS_STEPS)
        self.ids.sync_status.source_text = describe_result(result, app.tr._)
        self.ids.sync_button.disabled = False
        self.refresh()

    def sync_state(self) -> dict[str, Any]:
        """The sync row as shown (for tests)."""
        bar = self.ids.sync_progress
        return {"syncing": self.syncing, "value": bar.value, "max": bar.max,
                "visible": bar.opacity > 0, "seen": list(self.progress_seen),
                "status": self.ids.sync_status.source_text,
                "button_disabled": self.ids.sync_button.disabled}

    # -- USB export and import (kiosk/usb/) ---------------------------------------------------
    def usb_export(self) -> None:
        self._usb_start("export")

    def usb_import(self) -> None:
        self._usb_start("import")

    def _usb_start(self, what: str) -> None:
        """Export or import on a thread of its own (the stick may be slow); progress
        comes back through a Clock trigger, the end through :meth:`_usb_done`."""
        from ..usb.describe import EXPORTING, IMPORTING, NO_STICK
        from ..usb.drive import find_usb_folder

        app = App.get_running_app()
        app.staff_activity()
        if self.usb_busy:
            return
        self.usb_progress_seen = []
        folder = find_usb_folder()
        if folder is None:
            self.ids.usb_status.source_text = app.tr._(NO_STICK)
            return
        self.usb_busy = True
        self._usb_latest = None
        for button in ("usb_export_button", "usb_import_button"):
            self.ids[button].disabled = True
        bar = self.ids.usb_progress
        bar.max, bar.value, bar.opacity = PROGRESS_STEPS, 0, 1
        starting = EXPORTING if what == "export" else IMPORTING
        self.ids.usb_status.source_text = app.tr._(starting)
        threading.Thread(target=self._usb_run, args=(what, folder), daemon=True,
                         name=f"usb-{what}").start()

    def _usb_run(self, what: str, folder: Any) -> None:
        from ..usb.export import export_bundle
        from ..usb.import_ import import_bundle

        app = App.get_running_app()
        try:
            if what == "export":
                result = export_bundle(app.cfg, app.store, folder, progress=self._usb_progress)
            else:
                result = import_bundle(app.cfg, app.store, folder, progress=self._usb_progress,
                                       library=app.library)
        except Exception as exc:  # a bug must not leave the buttons disabled
            result = exc
        self._usb_done(what, result)

    def _usb_progress(self, report: Any) -> None:
        self._usb_latest = report  # on the worker thread: shown at the next frame
        self._usb_trigger()

    def _usb_show(self, _dt: float) -> None:
        from ..usb.describe import describe_progress

        report = self._usb_latest
        if report is None or not self.usb_busy:
            return
        value = round(report.fraction * PROGRESS_STEPS)
        self.ids.usb_progress.value = value
        if not self.usb_progress_seen or self.usb_progress_seen[-1] != value:
            self.usb_progress_seen.append(value)
            del self.usb_progress_seen[:-200]
        self.ids.usb_status.source_text = describe_progress(report, App.get_running_app().tr._)

    @mainthread
    def _usb_done(self, what: str, result: Any) -> None:
        from ..usb.describe import EXPORT_FAILED, READ_FAILED, describe_export, describe_import

        app = App.get_running_app()
        self.usb_busy = False
        self._usb_trigger.cancel()
        tr = app.tr
        if isinstance(result, BaseException):
            failed = EXPORT_FAILED if what == "export" else READ_FAILED
            text = tr._(failed)
            ok = False
        elif what == "export":
            text, ok = describe_export(result, tr._), result.error is None
        else:
            text, ok = describe_import(result, tr._), result.error is None
        if ok:
            self.ids.usb_progress.value = PROGRESS_STEPS
            self.usb_progress_seen.append(PROGRESS_STEPS)
        self.ids.usb_status.source_text = text
        for button in ("usb_export_button", "usb_import_button"):
            self.ids[button].disabled = False
        if what == "import" and not isinstance(result, BaseException) \
                and result.catalog == "installed":
            app.library.load()  # the listen screens show the new stories
        self.refresh()

    def usb_state(self) -> dict[str, Any]:
        """The USB row as shown (for tests)."""
        bar = self.ids.usb_progress
        return {"busy": self.usb_busy, "value": bar.value, "max": bar.max,
                "visible": bar.opacity > 0, "seen": list(self.usb_progress_seen),
                "status": self.ids.usb_status.source_text,
                "buttons_disabled": self.ids.usb_export_button.disabled}

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
