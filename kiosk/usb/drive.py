"""Where the USB stick is: ``$KIOSK_USB_DIR`` if set, else the first removable drive
mounted under ``/media`` or ``/run/media`` (what desktop automounters and ``udisksctl
mount`` use), read from ``/proc/self/mounts``.

Kept apart from the config file on purpose: a stick's mount point changes from one stick
to the next, and tests (or a kiosk with a fixed mount) name the folder by the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ENV_VAR = "KIOSK_USB_DIR"
MOUNT_ROOTS = ("/media/", "/run/media/")
MOUNTS = Path("/proc/self/mounts")


def _unescape(field: str) -> str:
    # /proc/mounts writes a space in a mount point as \040 (and tab, newline, \ alike).
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounted_drives(mounts: Path = MOUNTS) -> list[Path]:
    """Mount points under /media or /run/media, in mount order."""
    try:
        lines = mounts.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2:
            point = _unescape(fields[1])
            if point.startswith(MOUNT_ROOTS):
                found.append(Path(point))
    return found


def find_usb_folder(env: Mapping[str, str] | None = None,
                    mounts: Path = MOUNTS) -> Path | None:
    """The folder to export to / import from; None when no stick is found."""
    env = os.environ if env is None else env
    named = env.get(ENV_VAR)
    if named:
        return Path(named)
    for point in mounted_drives(mounts):
        if point.is_dir() and os.access(point, os.W_OK):
            return point
    return None
