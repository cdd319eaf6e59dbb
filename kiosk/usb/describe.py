"""What staff read on the staff screen after a USB export or import (no Kivy): msgids,
translated by the caller's gettext, and the progress line for :class:`UsbProgress`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..i18n import N_
from ..status import human_bytes
from ..sync_worker import ENROL_COMMAND, ERROR_TEXTS, REJECTED
from .progress import UsbProgress

NO_STICK = N_("No USB stick found: plug one in and try again.")
EXPORTING = N_("Writing to the USB stick…")
IMPORTING = N_("Reading the USB stick…")
#: {done}/{total}: submissions; {sent}/{size}: bytes, as "1.2 MB".
EXPORT_PROGRESS = N_("Writing: {done} of {total} submissions, {sent} of {size}.")
IMPORT_PROGRESS = N_("Reading: {done} of {total}.")
EXPORTED = N_("Exported {count} submissions to the USB stick. They stay on this kiosk"
              " until the receipts come back.")
NOTHING_TO_EXPORT = N_("Nothing to export: every submission has reached the service.")
EXPORT_FAILED = N_("The USB stick could not be written: nothing was marked exported."
                   " Try again.")
READ_FAILED = N_("The USB stick could not be read: nothing was changed. Try again.")
DAMAGED = N_("Left out, damaged: {count}.")
NOTHING_TO_IMPORT = N_("Nothing to import on this USB stick.")
RECEIPTS = N_("Receipts: {acknowledged} acknowledged, {already} already acknowledged.")
RECEIPTS_REFUSED = N_("{refused} receipts did not verify and were refused: those"
                      " submissions stay to send.")
WAITING = N_("Waiting for the service: {waiting}.")
RECEIPTS_NOT_ENROLLED = N_("Receipts not read: this kiosk is not enrolled.")
CATALOG_INSTALLED = N_("Stories: version {version} installed.")
CATALOG_UNCHANGED = N_("Stories: already up to date.")
CATALOG_REFUSED = N_("Stories refused ({code}): the current stories are kept.")


def describe_export(result: Any, gettext: Callable[[str], str]) -> str:
    error = result.error
    if error is None:
        text = gettext(EXPORTED).format(count=result.exported)
        if result.damaged:
            text += " " + gettext(DAMAGED).format(count=len(result.damaged))
        return text
    if error == "nothing_pending":
        return gettext(NOTHING_TO_EXPORT)
    if error in ("not_enrolled", "busy", "device_broken"):
        return gettext(ERROR_TEXTS[error]).format(command=ENROL_COMMAND)
    return gettext(EXPORT_FAILED)


def describe_import(result: Any, gettext: Callable[[str], str]) -> str:
    if result.error == "no_bundle":
        return gettext(NOTHING_TO_IMPORT)
    if result.error == "busy":
        return gettext(ERROR_TEXTS[result.error])
    sentences = []
    if result.receipts_error is not None:
        sentences.append(gettext(RECEIPTS_NOT_ENROLLED))
    else:
        sentences.append(gettext(RECEIPTS).format(acknowledged=result.acknowledged,
                                                  already=result.already))
        if result.refused:
            sentences.append(gettext(RECEIPTS_REFUSED).format(refused=result.refused))
        if result.refused_by_service:
            sentences.append(gettext(REJECTED).format(rejected=result.refused_by_service))
        if result.waiting:
            sentences.append(gettext(WAITING).format(waiting=result.waiting))
    if result.catalog == "installed":
        sentences.append(gettext(CATALOG_INSTALLED).format(version=result.catalog_version))
    elif result.catalog == "unchanged":
        sentences.append(gettext(CATALOG_UNCHANGED))
    elif result.catalog == "refused":
        sentences.append(gettext(CATALOG_REFUSED).format(code=result.catalog_error))
    return " ".join(sentences)


def describe_progress(report: UsbProgress, gettext: Callable[[str], str]) -> str:
    if report.phase == "export":
        return gettext(EXPORT_PROGRESS).format(done=report.done, total=report.total,
                                               sent=human_bytes(report.done_bytes),
                                               size=human_bytes(report.total_bytes))
    return gettext(IMPORT_PROGRESS).format(done=report.done, total=report.total)
