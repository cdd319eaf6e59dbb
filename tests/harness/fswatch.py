"""A recursive inotify watch that records every file written under some folders.

"No plaintext on disk" cannot be proved by looking at what is left at the end: a file
written in clear and deleted a moment later leaves nothing behind. :class:`FsWatch`
watches folders for the whole run instead. inotify reports what *any* process does,
so a kiosk running as a subprocess is covered as well as the test's own threads.

For every regular file created, written or moved in (``IN_CREATE``, ``IN_MODIFY``,
``IN_CLOSE_WRITE``, ``IN_MOVED_TO``) it keeps the path, the events and the file's
contents as read at each of those events (consecutive growth of an append-only file
is kept as its longest version). A file deleted later is still checked on what was
read while it existed; contents are read when the watch thread gets to an event, so
a file written and deleted in the same instant is reported by its name, perhaps with
nothing read. Directories made during the run are watched as they appear,
then listed, so that a file created in a new folder before its watch was in place is
found all the same. What inotify cannot show is a file created *and* removed inside a
brand-new folder in the moment before the watch on that folder is added; a leak that
lives as long as a take does is found.

Reading a file the test process itself has open through SQLite drops that process's
POSIX locks on it (closing any descriptor of a file does): harmless with the single
connection a kiosk has, and nothing at all when the kiosk is another process.

:func:`kiosk_data_violations` holds the kiosk's rule for its data directory (and for
a private temporary directory, where nothing may be written at all).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from inotify_simple import INotify, flags

AGE_MAGIC = b"age-encryption.org/v1\n"

#: The events watched on every folder.
MASK = (flags.CREATE | flags.MODIFY | flags.CLOSE_WRITE | flags.MOVED_TO | flags.MOVED_FROM
        | flags.DELETE | flags.ONLYDIR | flags.DONT_FOLLOW)
#: The events after which a file's contents are read.
_READ_ON = flags.CREATE | flags.MODIFY | flags.CLOSE_WRITE | flags.MOVED_TO
_NAMES = {
    flags.CREATE: "create", flags.MODIFY: "modify", flags.CLOSE_WRITE: "close_write",
    flags.MOVED_TO: "moved_to", flags.MOVED_FROM: "moved_from", flags.DELETE: "delete",
}


@dataclass
class WrittenFile:
    path: Path
    #: Event names in the order seen; "found" for a file met by listing a new folder,
    #: "at_end" for one still present when the watch stopped.
    events: list[str] = field(default_factory=list)
    #: Distinct contents read while the file was written (a version that the next one
    #: merely extends is replaced by it).
    contents: list[bytes] = field(default_factory=list)
    #: Deleted or moved away at some point.
    gone: bool = False
    #: Not a regular file (a symlink, a FIFO...).
    special: bool = False

    def keep(self, data: bytes) -> None:
        if self.contents and data.startswith(self.contents[-1]):
            self.contents[-1] = data
        elif data not in self.contents:
            self.contents.append(data)


class FsWatch:
    """``with FsWatch(dir, ...) as watch:`` ... then ``watch.files``.

    The folders must exist, and are best empty: when the watch stops, every file still
    under them is read once more, and one that no event reported (which should not
    happen) is recorded as "at_end", whenever it was made.
    """

    def __init__(self, *roots: Path | str) -> None:
        if not roots:
            raise ValueError("nothing to watch")
        self.roots = [Path(r) for r in roots]
        self.files: dict[Path, WrittenFile] = {}
        #: Folders created during the run.
        self.directories: list[Path] = []
        #: The kernel's event queue overflowed: events were lost, so the run proves nothing.
        self.overflowed = False
        self._inotify: INotify | None = None
        self._wds: dict[int, Path] = {}
        self._lock = threading.Lock()
        self._gate = threading.Lock()  # held by the thread while it reads and handles
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- starting and stopping -----------------------------------------------------------
    def start(self) -> FsWatch:
        for root in self.roots:
            if not root.is_dir():
                raise FileNotFoundError(f"{root} is not a folder to watch")
        self._inotify = INotify()
        for root in self.roots:
            self._add_tree(root, new=False)
        self._thread = threading.Thread(target=self._run, name="fswatch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> FsWatch:
        """Read every event queued so far, then what is still on disk, and stop."""
        if self._thread is None:
            return self
        self._stop.set()
        self._thread.join(30)
        if self._thread.is_alive():
            raise RuntimeError("the watch thread did not stop")
        self._thread = None
        assert self._inotify is not None
        self._inotify.close()
        self._inotify = None
        # What is left: read once more, and catch anything the events missed.
        for root in self.roots:
            for dirpath, dirnames, filenames in os.walk(root):
                links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
                for name in filenames + links:
                    self._seen(Path(dirpath) / name, "at_end")
        if self._error is not None:
            raise RuntimeError("the watch thread failed") from self._error
        return self

    def __enter__(self) -> FsWatch:
        return self.start()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the watch thread back (the kernel queues the events meanwhile): for
        tests of the race between a new folder and the watch on it."""
        with self._gate:
            yield

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the watch thread ------------------------------------------------------------------
    def _run(self) -> None:
        assert self._inotify is not None
        try:
            while True:
                stopping = self._stop.is_set()
                with self._gate:
                    # Events are queued when the syscall happens, so once stop() is asked
                    # a read that comes back empty has seen everything written before it.
                    events = self._inotify.read(timeout=0 if stopping else 50)
                    for event in events:
                        self._handle(event)
                if stopping and not events:
                    return
        except BaseException as exc:  # reported by stop()
            self._error = exc

    def _handle(self, event) -> None:  # type: ignore[no-untyped-def]
        mask = event.mask
        if mask & flags.Q_OVERFLOW:
            self.overflowed = True
            return
        if mask & flags.IGNORED:
            self._wds.pop(event.wd, None)
            return
        folder = self._wds.get(event.wd)
        if folder is None or not event.name:
            return
        path = folder / event.name
        if mask & flags.ISDIR:
            if mask & (flags.CREATE | flags.MOVED_TO):
                self.directories.append(path)
                self._add_tree(path, new=True)
            return
        names = [name for flag, name in _NAMES.items() if mask & flag]
        self._seen(path, *names, read=bool(mask & _READ_ON))
        if mask & (flags.DELETE | flags.MOVED_FROM):
            self._record(path).gone = True

    def _add_tree(self, folder: Path, *, new: bool) -> None:
        """Watch ``folder`` and the folders in it; for a new one, record its files."""
        assert self._inotify is not None
        try:
            wd = self._inotify.add_watch(folder, MASK)
        except (FileNotFoundError, NotADirectoryError):
            return  # gone again already
        self._wds[wd] = folder
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return
        for entry in entries:
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                if new:
                    self.directories.append(path)
                self._add_tree(path, new=new)
            elif new:
                # Made before the watch on its folder was in place: the race closed.
                self._seen(path, "found")

    # -- recording -------------------------------------------------------------------------
    def _record(self, path: Path) -> WrittenFile:
        with self._lock:
            record = self.files.get(path)
            if record is None:
                record = self.files[path] = WrittenFile(path)
            return record

    def _seen(self, path: Path, *events: str, read: bool = True) -> None:
        record = self._record(path)
        for event in events:
            if not record.events or record.events[-1] != event:
                record.events.append(event)
        if read:
            data = _read(path)
            if data is _SPECIAL:
                record.special = True
            elif isinstance(data, bytes):
                record.keep(data)

    # -- questions ---------------------------------------------------------------------------
    def contents(self) -> Iterable[tuple[Path, bytes]]:
        """Every version of every file read during the run."""
        for path, record in self.files.items():
            for data in record.contents:
                yield path, data

    def violations(self, rule: Callable[[Path], str | None]) -> list[str]:
        """``rule(path)`` says why a file may not be written, or None; plus lost events."""
        found = []
        if self.overflowed:
            found.append("inotify's queue overflowed: some writes were not seen")
        for path, record in sorted(self.files.items()):
            reason = rule(path)
            if reason is None and record.special:
                reason = "not a regular file"
            if reason is not None:
                found.append(f"{path}: {reason} ({', '.join(record.events)})")
        return found


_SPECIAL = object()


def _read(path: Path) -> bytes | object | None:
    """The file's bytes; None if it is gone; _SPECIAL if it is not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return _SPECIAL  # a symlink (ELOOP), a socket...
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return _SPECIAL
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


@contextlib.contextmanager
def private_tempdir(folder: Path) -> Iterator[Path]:
    """Point ``tempfile`` and ``$TMPDIR`` (so child processes too) at ``folder``."""
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env


# -- the kiosk's rule ---------------------------------------------------------------------

STORE_FILES = {"kiosk.db", "kiosk.db-wal", "kiosk.db-shm", "kiosk.db-journal"}
BALLAST = ".ballast"


def kiosk_data_rule(data_dir: Path) -> Callable[[Path], str | None]:
    """What the kiosk may write in its data directory while a defender records,
    reviews and submits: ciphertext parts in ``outbox/<submission>/``, the store, its
    logs, the ballast and the published stories. Nothing anywhere else."""

    def rule(path: Path) -> str | None:
        try:
            rel = path.relative_to(data_dir)
        except ValueError:
            return "written outside the data directory, where nothing may be"
        parts = rel.parts
        if len(parts) == 3 and parts[0] == "outbox" and (
                parts[2].endswith(".age") or parts[2].endswith(".age.part")):
            return None
        if len(parts) == 1 and parts[0] in STORE_FILES | {BALLAST}:
            return None
        if len(parts) == 2 and parts[0] == "logs" and ".log" in parts[1]:
            return None
        if parts[0] == "stories" and _story_file(parts[1:]):
            # Published stories and the catalog's state: public material, never a
            # defender's (the scans for their words and audio still cover these files).
            return None
        return "not a ciphertext part, the store, a log or the ballast"

    return rule


STORY_FILES = {"catalog.json", "catalog.json.sig", "last_error.json"}


def _story_file(parts: tuple[str, ...]) -> bool:
    """The story library's own files: the catalog, its signature, its last error, the
    stories' Ogg audio, and their temporary and staging copies while installing."""
    if not parts:
        return False
    if parts[0].startswith((".staging-", ".commit")):
        return True
    name = parts[-1]
    if len(parts) == 1 and name.startswith(".") and name.endswith(".tmp"):
        name = name[1:].rsplit(".", 2)[0]  # .last_error.json.x1y2.tmp -> last_error.json
    return len(parts) == 1 and (name in STORY_FILES or name.endswith(".ogg"))


def is_ciphertext_name(path: Path) -> bool:
    return path.name.endswith(".age") or path.name.endswith(".age.part")


def header_violations(watch: FsWatch) -> list[str]:
    """Every version read of every ``.age``/``.age.part`` file must be an age v1 file
    (a version shorter than the magic line must be a beginning of it)."""
    found = []
    for path, data in watch.contents():
        if is_ciphertext_name(path):
            if len(data) >= len(AGE_MAGIC):
                ok = data.startswith(AGE_MAGIC)
            else:
                ok = AGE_MAGIC.startswith(data)
            if not ok:
                found.append(f"{path}: does not start with {AGE_MAGIC!r}: {data[:32]!r}")
    return found


def kiosk_data_violations(watch: FsWatch, data_dir: Path) -> list[str]:
    """The rule for the data directory, everything outside it forbidden, and headers."""
    return watch.violations(kiosk_data_rule(data_dir)) + header_violations(watch)
