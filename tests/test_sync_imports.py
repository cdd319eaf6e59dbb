"""`sync` never imports `kiosk` or Kivy: the service and vetting tool need no GUI stack."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import sync


def test_every_sync_module_imports_without_kivy_or_kiosk() -> None:
    # Alembic's env.py and revision scripts run only inside Alembic (`central migrate`).
    alembic_only = ("sync.central.migrations.env", "sync.central.migrations.versions")
    modules = [m.name for m in pkgutil.walk_packages(sync.__path__, "sync.")
               if not m.name.endswith("__main__") and not m.name.startswith(alembic_only)]
    assert "sync.central.app" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('kivy', 'kiosk'))\n"
        "print(','.join(bad))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
