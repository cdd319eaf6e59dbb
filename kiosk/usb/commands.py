"""``kiosk export DIR`` and ``kiosk import DIR``: what they print and their exit codes.

Exit codes: 0 done; 1 done in part (damaged submissions left out, receipts or a catalog
refused); 2 nothing could be done (not enrolled, no stick, busy, the stick failed).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import KioskConfig
from ..vault.store import Store
from .drive import find_usb_folder
from .progress import TerminalBar


def _folder(given: Path | None, command: str) -> Path | None:
    folder = given if given is not None else find_usb_folder()
    if folder is None:
        print(f"kiosk {command}: no USB stick found under /media or /run/media; name the"
              f" folder: kiosk {command} DIR", file=sys.stderr)
    return folder


def export_command(cfg: KioskConfig, given: Path | None) -> int:
    from .export import export_bundle

    folder = _folder(given, "export")
    if folder is None:
        return 2
    store = Store.in_data_dir(cfg.data_dir)
    bar = TerminalBar(sys.stdout, "export")
    try:
        result = export_bundle(cfg, store, folder, progress=bar)
    finally:
        bar.end()
        store.close()
    if result.error == "nothing_pending":
        print(f"kiosk export: {result.detail}")
        return 0
    if result.error is not None:
        print(f"kiosk export: {result.detail} ({result.error})", file=sys.stderr)
        return 2
    print(f"exported {result.exported} submissions ({result.total_bytes} bytes, still"
          f" sealed) to {result.bundle}")
    print("they stay on this kiosk until the service's receipts come back (kiosk import)")
    if result.damaged:
        print(f"kiosk export: {len(result.damaged)} submission(s) left out: a sealed file"
              " differs from what was recorded; see `kiosk status`", file=sys.stderr)
        return 1
    return 0


def import_command(cfg: KioskConfig, given: Path | None) -> int:
    from .import_ import import_bundle

    folder = _folder(given, "import")
    if folder is None:
        return 2
    store = Store.in_data_dir(cfg.data_dir)
    bar = TerminalBar(sys.stdout, "import")
    try:
        result = import_bundle(cfg, store, folder, progress=bar)
    finally:
        bar.end()
        store.close()
    if result.error == "no_bundle":
        print(f"kiosk import: nothing to import in {folder} (no idefendrights folder)",
              file=sys.stderr)
        return 2
    if result.error == "busy":
        print("kiosk import: a sync is running: try again in a moment", file=sys.stderr)
        return 2
    problems = 0
    if result.receipts_error is not None:
        print(f"receipts: not looked at ({result.receipts_error}): this kiosk must be"
              " enrolled to check the service's receipts")
    else:
        print(f"receipts: acknowledged {result.acknowledged}, already acknowledged"
              f" {result.already}, refused {result.refused}, refused by the service"
              f" {result.refused_by_service}, waiting for the service {result.waiting}")
        if result.refused:
            problems += 1
            print(f"kiosk import: {result.refused} receipt(s) did not verify against the"
                  " pinned service key: refused; those submissions stay pending",
                  file=sys.stderr)
        if result.refused_by_service:
            problems += 1
            print(f"kiosk import: the service refused {result.refused_by_service}"
                  " submission(s) (see result.json in the bundle); they stay pending",
                  file=sys.stderr)
    if result.catalog == "installed":
        print(f"catalog: version {result.catalog_version} installed")
    elif result.catalog == "unchanged":
        print(f"catalog: version {result.catalog_version} already installed")
    elif result.catalog == "none":
        print("catalog: none on the stick")
    elif result.catalog == "not_pinned":
        print("catalog: not taken (no publisher_key in the config)")
    else:
        problems += 1
        print(f"kiosk import: the catalog on the stick was refused ({result.catalog_error});"
              " the current stories are kept", file=sys.stderr)
    return 1 if problems else 0
