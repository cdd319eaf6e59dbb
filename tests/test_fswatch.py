"""The inotify watch behind the "no plaintext on disk" proof, and that it catches a leak.

The leak planted here is the one a review found the old end-of-run scan could not see:
an envelope writer that also writes each part's plaintext to ``<part>.plain-tmp``
beside it and deletes that file when the part is sealed. Nothing of it is left at the
end; the watch, which sees every write as it happens, must report it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiosk.audio.recorder import Recorder
from kiosk.vault.custody import SessionCustody
from kiosk.vault.store import Store
from sync.envelope import X25519Identity
from sync.envelope.writer import EnvelopeWriter
from tests.audio_fakes import RATE, FakeStreams, tone
from tests.audio_fakes import record as record_answer
from tests.harness.fswatch import (
    AGE_MAGIC,
    FsWatch,
    header_violations,
    kiosk_data_rule,
    kiosk_data_violations,
    private_tempdir,
)

# -- the watch itself ---------------------------------------------------------------------


def wait_until(ready: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "the watch did not get there in time"
        time.sleep(0.01)


def read_by_now(watch: FsWatch, path: Path, data: bytes) -> bool:
    record = watch.files.get(path)
    return record is not None and bool(record.contents) and record.contents[-1] == data


def test_a_file_in_a_folder_made_after_the_watch_started_is_seen(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with FsWatch(root) as watch:
        (root / "later").mkdir()
        (root / "later" / "file.bin").write_bytes(b"written in a new folder")
    record = watch.files[root / "later" / "file.bin"]
    assert record.contents == [b"written in a new folder"]
    assert "close_write" in record.events or "found" in record.events
    assert root / "later" in watch.directories


def test_files_in_nested_folders_made_before_their_watch_are_found(tmp_path: Path) -> None:
    # Folders and files made while the watch thread is held back, as when another
    # process is faster than the watch: the only way to see these files is to list
    # each new folder once its watch is in place. They are gone again by the end, so
    # the last look at what is left cannot be what finds them.
    root = tmp_path / "root"
    root.mkdir()
    with FsWatch(root) as watch:
        with watch.paused():
            for i in range(10):
                deep = root / f"a{i}" / "b" / "c"
                os.makedirs(deep / "d")
                (deep / "x.txt").write_bytes(b"deep %d" % i)
                (deep / "d" / "y.txt").write_bytes(b"deeper %d" % i)
        last = root / "a9" / "b" / "c" / "d" / "y.txt"
        wait_until(lambda: read_by_now(watch, last, b"deeper 9"))
        for i in range(10):
            shutil.rmtree(root / f"a{i}")
    for i in range(10):
        deep = root / f"a{i}" / "b" / "c"
        for path, data in ((deep / "x.txt", b"deep %d" % i),
                           (deep / "d" / "y.txt", b"deeper %d" % i)):
            record = watch.files[path]
            assert record.events[0] == "found" and record.gone, record.events
            assert record.contents == [data]
        assert deep / "d" in watch.directories


def test_a_file_written_then_deleted_is_kept_with_what_it_held(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with FsWatch(root) as watch:
        path = root / "secret.tmp"
        path.write_bytes(b"plaintext that lives one second")
        wait_until(lambda: read_by_now(watch, path, b"plaintext that lives one second"))
        path.unlink()
    record = watch.files[path]
    assert record.gone and not path.exists()
    assert record.contents == [b"plaintext that lives one second"]
    assert record.events[:2] == ["create", "modify"] and "delete" in record.events


def test_growing_file_is_kept_whole_and_a_rewrite_as_a_second_version(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with FsWatch(root) as watch:
        path = root / "log"
        with open(path, "ab", buffering=0) as f:
            for i in range(5):
                f.write(b"line %d\n" % i)
                time.sleep(0.02)
        lines = b"".join(b"line %d\n" % i for i in range(5))
        wait_until(lambda: read_by_now(watch, path, lines))
        path.write_bytes(b"rewritten")
    versions = watch.files[path].contents
    assert versions[0] == lines and versions[-1] == b"rewritten"


def test_another_process_writing_is_seen_and_moves_are_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    script = ("import os, pathlib, sys; d = pathlib.Path(sys.argv[1]);"
              " (d / 'f.part').write_bytes(b'from a child'); os.rename(d / 'f.part', d / 'f')")
    with FsWatch(root) as watch:
        subprocess.run([sys.executable, "-c", script, str(root)], check=True, timeout=30)
    part, final = watch.files[root / "f.part"], watch.files[root / "f"]
    assert part.gone and part.events[0] == "create" and "moved_from" in part.events
    assert final.events[0] == "moved_to"
    assert final.contents == [b"from a child"]


def test_a_symlink_is_reported_as_not_a_regular_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with FsWatch(root) as watch:
        (root / "link").symlink_to(tmp_path)
    (problem,) = watch.violations(lambda path: None)
    assert problem.startswith(f"{root / 'link'}: not a regular file (create")


def test_the_private_tempdir_catches_tempfile_and_children(tmp_path: Path) -> None:
    private = tmp_path / "tmp"
    private.mkdir()
    with private_tempdir(private), FsWatch(private) as watch:
        with tempfile.NamedTemporaryFile(delete=True) as f:
            f.write(b"x")
            f.flush()
        subprocess.run(["sh", "-c", 'echo y > "$TMPDIR/child"'], check=True, timeout=30)
    assert os.environ.get("TMPDIR") != str(private)
    names = {p.name for p in watch.files}
    assert "child" in names and any(n.startswith("tmp") for n in names), names


# -- the kiosk's rule ---------------------------------------------------------------------


def test_the_rule_allows_only_parts_the_store_logs_and_the_ballast(tmp_path: Path) -> None:
    rule = kiosk_data_rule(tmp_path)
    allowed = ["outbox/0193/q1-1.age", "outbox/0193/q1-1.age.part",
               "outbox/0193/manifest.json.age", "kiosk.db", "kiosk.db-wal", "kiosk.db-shm",
               "kiosk.db-journal", "logs/kiosk.log", "logs/kiosk.log.1", ".ballast"]
    refused = ["outbox/0193/q1-1.age.plain-tmp", "outbox/0193/manifest.json",
               "outbox/q1-1.age", "outbox/0193/x/q1-1.age", "q1-1.age", "kiosk.db.bak",
               "logs/dump.txt", "stories/x.opus", "tmp123.wav"]
    assert [p for p in allowed if rule(tmp_path / p) is not None] == []
    assert [p for p in refused if rule(tmp_path / p) is None] == []
    assert rule(tmp_path.parent / "elsewhere") is not None


def test_every_version_of_a_ciphertext_file_must_be_age(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with FsWatch(root) as watch:
        (root / "good.age.part").write_bytes(AGE_MAGIC + b"-> X25519 ...")
        (root / "empty.age.part").write_bytes(b"")
        (root / "bad.age").write_bytes(b"OggS\x00\x02 plaintext")
    (problem,) = header_violations(watch)
    assert problem.startswith(f"{root / 'bad.age'}: does not start with")


# -- a take under the watch, with and without a planted plaintext leak ----------------------


@dataclass
class WatchedTake:
    data_dir: Path
    watch: FsWatch
    violations: list[str]


def plant_plaintext_beside_each_part(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The leak: the envelope writer also keeps ``<part>.plain-tmp``, deleted at sealing."""
    planted: list[Path] = []
    write, close, abort = EnvelopeWriter.write, EnvelopeWriter.close, EnvelopeWriter.abort

    def plain(writer: EnvelopeWriter) -> Path:
        return writer.path.with_name(writer.path.name + ".plain-tmp")

    def leaky_write(self: EnvelopeWriter, data: bytes | bytearray | memoryview) -> None:
        if plain(self) not in planted:
            planted.append(plain(self))
        with open(plain(self), "ab") as f:
            f.write(data)
        write(self, data)

    def tidy_close(self: EnvelopeWriter):  # type: ignore[no-untyped-def]
        sealed = close(self)
        plain(self).unlink(missing_ok=True)
        return sealed

    def tidy_abort(self: EnvelopeWriter) -> None:
        abort(self)
        plain(self).unlink(missing_ok=True)

    monkeypatch.setattr(EnvelopeWriter, "write", leaky_write)
    monkeypatch.setattr(EnvelopeWriter, "close", tidy_close)
    monkeypatch.setattr(EnvelopeWriter, "abort", tidy_abort)
    return planted


def watched_take(tmp_path: Path) -> WatchedTake:
    """Record one take through the session's custody and submit it, under the watch."""
    data_dir, private = tmp_path / "data", tmp_path / "tmp"
    data_dir.mkdir()
    private.mkdir()
    team = X25519Identity.generate()
    with private_tempdir(private), FsWatch(data_dir, private) as watch:
        store = Store.in_data_dir(data_dir)
        try:
            session = SessionCustody(data_dir=data_dir, store=store,
                                     recipients=[str(team.recipient())])
            recorder = Recorder(FakeStreams([tone(1.0)]))
            try:
                _name, take = record_answer(session, recorder, "q1")
                deadline = time.monotonic() + 10
                while take.meters().elapsed_s * RATE < RATE and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert take.stop().kept
            finally:
                recorder.close()
            session.submit({"display_name": "Anonymous", "language": "en"})
        finally:
            store.close()
    return WatchedTake(data_dir, watch, kiosk_data_violations(watch, data_dir))


def test_a_take_as_the_kiosk_makes_it_writes_nothing_it_may_not(tmp_path: Path) -> None:
    run = watched_take(tmp_path)
    assert run.violations == []
    # The watch saw the take being written, not only what was left at the end.
    seen = {p.relative_to(run.data_dir).as_posix().split("/", 2)[-1]
            for p in run.watch.files}
    assert {"q1-1.age.part", "q1-1.age", "manifest.json.age.part", "manifest.json.age",
            "kiosk.db"} <= seen, seen
    part = next(r for p, r in run.watch.files.items() if p.name == "q1-1.age.part")
    assert part.gone and part.contents and part.contents[-1].startswith(AGE_MAGIC)


def test_a_plaintext_file_written_beside_each_part_and_deleted_is_caught(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    planted = plant_plaintext_beside_each_part(monkeypatch)
    run = watched_take(tmp_path)
    assert planted and not any(p.exists() for p in planted)  # nothing left at the end
    assert {p.name for p in planted} == {"q1-1.age.plain-tmp", "manifest.json.age.plain-tmp"}
    for path in planted:
        assert any(v.startswith(f"{path}: not a ciphertext part") for v in run.violations), (
            path, run.violations)
    # What it held was read while it existed: the Opus stream and the manifest, in clear.
    part_plain = run.watch.files[planted[0]].contents
    assert part_plain and part_plain[0].startswith(b"OggS")
    manifest_plain = b"".join(run.watch.files[planted[1]].contents)
    assert json.loads(manifest_plain)["display_name"] == "Anonymous"
