"""A fresh Debian bookworm tree for the install test: made once with debootstrap, then
used through an overlay so each test run starts from the same untouched tree.

debootstrap (minbase, plus the kiosk's packages so that install.sh finds them installed
and needs no network) takes about a minute; the finished tree is kept under
``CACHE_DIR``, named by a hash of the package list, mirror and suite, so a changed
``deploy/kiosk/packages.txt`` makes a new one. Overlayfs gives each run a private
writable copy in a second; where it cannot be mounted, the tree is copied instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

CACHE_DIR = Path("/var/cache/idefendrights-test")
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def debian_mirror(sources: Path = Path("/etc/apt/sources.list.d")) -> str:
    """The Debian mirror this machine's apt uses (the one it can reach), else the default."""
    for path in sorted(sources.glob("*.sources")) + sorted(sources.glob("*.list")):
        for line in path.read_text(errors="replace").splitlines():
            match = re.search(r"(https?://\S+/debian)/?(\s|$)", line)
            if match and not line.lstrip().startswith("#"):
                return match.group(1)
    return DEFAULT_MIRROR


def cached_tree(packages: list[str], *, mirror: str | None = None) -> Path:
    """The cached debootstrap tree with ``packages``; built (once) when missing."""
    mirror = mirror or debian_mirror()
    key = hashlib.sha256("\n".join([SUITE, mirror, *sorted(packages)]).encode()).hexdigest()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tree = CACHE_DIR / f"{SUITE}-{key[:16]}"
    with (CACHE_DIR / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once build it once
        if not (tree / ".complete").exists():
            partial = tree.with_name(tree.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            done = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
                 SUITE, str(partial), mirror],
                capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                shutil.rmtree(partial, ignore_errors=True)
                raise RuntimeError(f"debootstrap failed ({done.returncode}):"
                                   f" {done.stdout[-2000:]}{done.stderr[-2000:]}")
            shutil.rmtree(tree, ignore_errors=True)
            partial.rename(tree)
            (tree / ".complete").touch()
    return tree


@contextlib.contextmanager
def fresh_root(tree: Path, work: Path) -> Iterator[Path]:
    """A writable copy of ``tree`` with /proc and /dev mounted; all unmounted after."""
    upper, scratch, root = work / "upper", work / "overlay-work", work / "root"
    for folder in (upper, scratch, root):
        folder.mkdir(parents=True)
    mounted: list[Path] = []
    try:
        overlay = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={tree},upperdir={upper},workdir={scratch}", str(root)],
            capture_output=True, text=True)
        if overlay.returncode == 0:
            mounted.append(root)
        else:  # no overlayfs here: a full copy (slower, same result)
            subprocess.run(["cp", "-a", f"{tree}/.", str(root)], check=True)
        subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
        mounted.append(root / "proc")
        subprocess.run(["mount", "--bind", "/dev", str(root / "dev")], check=True)
        mounted.append(root / "dev")
        yield root
    finally:
        for point in reversed(mounted):
            if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True)
