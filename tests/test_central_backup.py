"""`central backup` while a real `central serve` takes uploads, then `central restore` into a
new folder and a second `central serve` on it: the same queue, part bytes, catalog and
story audio, an intact audit chain; a damaged or incomplete backup is refused."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync import catalog as catalog_format
from sync.central.backup import backup
from sync.signing import SigningKey
from sync.wire import encode_metadata
from tests.central_helpers import catalog_bytes, ogg, story
from tests.harness.central import (
    CENTRAL,
    REPO,
    CentralService,
    _env,
    conf_value,
    configure_store,
    index_body,
    new_submission_id,
    signed_index,
    tus_headers,
    tus_upload,
)


@dataclass
class World:
    """A running service with a vetter, a kiosk, submissions and a published catalog."""

    service: CentralService
    vetter: str
    device_id: str
    token: str
    key: SigningKey
    stories: dict[str, bytes] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.service.url, timeout=30)

    def submit(self, client: httpx.Client, size: int = 4000) -> str:
        sid = new_submission_id()
        parts = {"a1.age": secrets.token_bytes(size), "manifest.json.age": secrets.token_bytes(90)}
        for name, data in parts.items():
            tus_upload(client, self.token, sid, name, data, chunk=1500)
        reply = client.post("/api/v1/submissions", json=index_body(
            signed_index(self.key, self.device_id, sid, parts)),
            headers={"Authorization": f"Bearer {self.token}"})
        assert reply.status_code == 201, reply.text
        return sid


def _world(service: CentralService, submissions: int = 4) -> tuple[World, list[str]]:
    device_id, token, key = service.enrol_device("hall-a")
    world = World(service, service.vetter_token(), device_id, token, key)
    publisher = SigningKey.generate()
    service.cli("set-publisher-key", str(publisher.verify_key))
    vet = {"Authorization": f"Bearer {world.vetter}"}
    with world.client() as client:
        sids = [world.submit(client) for _ in range(submissions)]
        moved = client.post(f"/api/v1/submissions/{sids[0]}/state", headers=vet,
                            json={"state": "in_review", "reason": None, "story_id": None})
        assert moved.status_code == 200, moved.text
        for story_id in ("story-1", "story-2"):
            audio = ogg(6000, story_id.encode())
            world.stories[story_id] = audio
            assert client.put(f"/api/v1/stories/{story_id}.ogg", content=audio, headers={
                **vet, "Content-Type": "audio/ogg",
                "X-Content-SHA256": hashlib.sha256(audio).hexdigest()}).status_code == 201
        data = catalog_bytes(1, tuple(story(s, a) for s, a in world.stories.items()))
        assert client.put("/api/v1/catalog", headers=vet, json={
            "catalog": data.decode(), "signature": catalog_format.sign(data, publisher),
        }).status_code == 201
    return world, sids


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CENTRAL, *args], capture_output=True, text=True, timeout=120,
                          env=_env(), cwd=REPO)


def _served(world: World, url: str, sids: list[str] | None = None) -> dict[str, Any]:
    """Everything a vetter and a kiosk can read, with the SHA-256 of every part."""
    vet = {"Authorization": f"Bearer {world.vetter}"}
    dev = {"Authorization": f"Bearer {world.token}"}
    with httpx.Client(base_url=url, timeout=30) as client:
        queue = client.get("/api/v1/queue", headers=vet).json()["submissions"]
        if sids is not None:
            queue = [s for s in queue if s["id"] in sids]
        parts = {}
        for entry in queue:
            for part in entry["parts"]:
                reply = client.get(f"/api/v1/submissions/{entry['id']}/parts/{part['name']}",
                                   headers=vet)
                assert reply.status_code == 200, reply.text
                parts[f"{entry['id']}/{part['name']}"] = hashlib.sha256(reply.content).hexdigest()
        catalog = client.get("/api/v1/catalog", headers=dev)
        signature = client.get("/api/v1/catalog.sig", headers=dev)
        audio = {s: client.get(f"/api/v1/stories/{s}.ogg", headers=dev).content
                 for s in world.stories}
    return {"queue": queue, "parts": parts, "catalog": catalog.content,
            "etag": catalog.headers["etag"], "signature": signature.text, "audio": audio}


@contextlib.contextmanager
def submitting(world: World) -> Iterator[list[str]]:
    """A thread handing in submissions (20 kB parts) without pause, from before the block
    (two are in) to its end; yields the list of those it made, growing."""
    made: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def upload_forever() -> None:
        try:
            with world.client() as c:
                while not stop.is_set():
                    made.append(world.submit(c, size=20000))
        except BaseException as exc:  # reported below
            errors.append(exc)

    uploader = threading.Thread(target=upload_forever, daemon=True)
    uploader.start()
    while len(made) < 2:
        time.sleep(0.02)
    try:
        yield made
    finally:
        stop.set()
        uploader.join(30)
    assert not errors, errors


def backup_while(service: CentralService, made: list[str], target: Path) -> tuple[Path, str]:
    """``central backup`` while ``made`` grows; (the backup, its output). A submission
    must land during it; a loaded machine may starve the uploader for the length of
    one backup, so up to five are made (each whole, in its own folder)."""
    for attempt in range(5):
        folder = target.with_name(f"{target.name}-{attempt}")
        during = len(made)
        out = service.cli("backup", str(folder))
        if len(made) > during:
            return folder, out
    raise AssertionError("no submission landed during any of five backups")


def test_backup_while_uploading_then_restore_serves_the_same(central: CentralService,
                                                             tmp_path: Path) -> None:
    started = time.monotonic()
    world, before = _world(central)
    with world.client() as client:
        # An upload still growing, and a finished one whose index is not posted yet.
        growing_sid, growing = new_submission_id(), secrets.token_bytes(3000)
        created = client.post("/api/v1/uploads/", headers=tus_headers(world.token, **{
            "Upload-Length": "3000", "Upload-Metadata": encode_metadata(
                {"submission_id": growing_sid, "part": "a1.age"})}))
        location = created.headers["location"]
        assert client.patch(location, content=growing[:1000], headers=tus_headers(
            world.token, **{"Content-Type": "application/offset+octet-stream",
                            "Upload-Offset": "0"})).status_code == 204
        pending_sid, pending = new_submission_id(), secrets.token_bytes(2500)
        tus_upload(client, world.token, pending_sid, "a1.age", pending)

    with submitting(world) as made:
        cli_backup, out = backup_while(central, made, tmp_path / "backup-cli")
        # A second backup in-process, with a submission landing between the database
        # snapshot and the file copies: the one window where the order matters.
        hooked: list[str] = []
        with world.client() as c:
            hooked_backup = tmp_path / "backup-hooked"
            backup(central.data_dir, hooked_backup,
                   after_snapshot=lambda: hooked.append(world.submit(c)))
    assert out.strip().splitlines()[-1] == str(cli_backup)
    assert stat.S_IMODE(cli_backup.stat().st_mode) == 0o700
    assert stat.S_IMODE((cli_backup / "service.key").stat().st_mode) == 0o600
    manifest = json.loads((cli_backup / "manifest.json").read_text())
    # The growing one, and any the uploader thread had open at the snapshot.
    assert manifest["counts"]["uploads_restarted"] >= 1
    assert manifest["counts"]["story_audio"] == 2
    original = _served(world, central.url)
    assert len(original["queue"]) == len(before) + len(made) + 1

    for source, name in ((cli_backup, "restored-cli"), (hooked_backup, "restored-hooked")):
        target = tmp_path / name
        configure_store(target)  # restored into the store the test run uses
        done = _run("restore", "--data", str(target), str(source))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1] == central.service_key
        assert stat.S_IMODE(target.stat().st_mode) == 0o700
        assert stat.S_IMODE((target / "service.key").stat().st_mode) == 0o600
        verify = _run("audit", "verify", "--data", str(target))
        assert verify.returncode == 0 and verify.stdout.startswith("audit chain intact"), \
            verify.stdout

    with CentralService(tmp_path / "restored-hooked") as restored:
        served = _served(world, restored.url)
        ids = [s["id"] for s in served["queue"]]
        assert hooked[0] not in ids  # after the snapshot: not in this backup
        assert set(before) | set(made[:2]) <= set(ids)
        assert served == _served(world, central.url, ids)

    with CentralService(tmp_path / "restored-cli") as restored:
        assert restored.service_key == central.service_key
        served = _served(world, restored.url)
        ids = [s["id"] for s in served["queue"]]
        assert set(before) | set(made[:2]) <= set(ids)
        assert len(ids) < len(original["queue"])  # later uploads are not in the backup
        # Identical: queue entries (states, receipts' times, parts), part bytes, the
        # catalog byte for byte with its ETag and signature, and the story audio.
        assert served == _served(world, central.url, ids)
        assert served["queue"][0]["state"] == "in_review"
        for story_id, audio in world.stories.items():
            assert served["audio"][story_id] == audio
        for entry in served["queue"]:
            for part in entry["parts"]:
                assert served["parts"][f"{entry['id']}/{part['name']}"] == part["sha256"]
        dev = tus_headers(world.token)
        with httpx.Client(base_url=restored.url, timeout=30) as client:
            # The kiosk's token works; the growing upload starts again from 0; the
            # finished one's index is accepted (its body was in the backup).
            assert client.post("/api/v1/devices/heartbeat", headers=dev, json={
                "queue_depth": 1, "free_disk_bytes": None, "app_version": "1.0",
                "last_error": None}).status_code == 204
            head = client.head(location, headers=dev)
            assert head.status_code == 200 and head.headers["upload-offset"] == "0"
            patch = client.patch(location, content=growing, headers={
                **dev, "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": "0"})
            assert patch.status_code == 204, patch.text
            for sid, data in ((growing_sid, growing), (pending_sid, pending)):
                reply = client.post("/api/v1/submissions", json=index_body(signed_index(
                    world.key, world.device_id, sid, {"a1.age": data})),
                    headers={"Authorization": f"Bearer {world.token}"})
                assert reply.status_code == 201, reply.text
    print(f"backup test: {len(made)} uploads during, took {time.monotonic() - started:.1f}s")


def _nothing_restored(target: Path) -> None:
    """No data directory, or (on PostgreSQL) its central.conf alone and no table made."""
    url = conf_value(target, "CENTRAL_DATABASE_URL")
    if url is None:
        assert not target.exists()
        return
    import psycopg

    assert os.listdir(target) == ["central.conf"]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM information_schema.tables"
                            " WHERE table_schema = 'public'").fetchone() == (0,)


def _flip(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_manifest(root: Path, change: Any) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    change(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))


def _drop_part(root: Path) -> None:
    """Remove a part and its manifest line: a consistent manifest, a row without file."""
    part = next((root / "parts").rglob("*"))
    while part.is_dir():
        part = next(part.iterdir())
    relative = part.relative_to(root).as_posix()
    part.unlink()
    _edit_manifest(root, lambda m: m.update(
        files=[f for f in m["files"] if f["path"] != relative]))


def _first_part(root: Path) -> Path:
    return next(p for p in (root / "parts").rglob("*") if p.is_file())


def _edit_audit(root: Path) -> None:
    """Change an audit row and write the manifest to match: only the chain can tell."""
    db = root / "central.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("UPDATE audit SET subject = 'someone-else' WHERE seq = 2")
    conn.commit()
    conn.close()
    size, digest = db.stat().st_size, hashlib.sha256(db.read_bytes()).hexdigest()
    _edit_manifest(root, lambda m: [f.update(size=size, sha256=digest) for f in m["files"]
                                    if f["path"] == "central.sqlite"])


TAMPERS = {
    "a part's byte": (lambda r: _flip(_first_part(r)), "does not match the manifest"),
    "the service key": (lambda r: _flip(r / "service.key", 20), "does not match the manifest"),
    "the database": (lambda r: _flip(r / "central.sqlite", 200), "does not match the manifest"),
    "story audio": (lambda r: _flip(next((r / "public").rglob("*.ogg"))),
                    "does not match the manifest"),
    "a missing part": (lambda r: _first_part(r).unlink(), "the backup is incomplete"),
    "an extra file": (lambda r: (r / "parts" / "stray").write_bytes(b"x"),
                      "files its manifest does not list"),
    "no manifest": (lambda r: (r / "manifest.json").unlink(), "has no manifest.json"),
    "a path outside": (lambda r: _edit_manifest(r, lambda m: m["files"].append(
        {"path": "../evil", "size": 1, "sha256": "0" * 64})), "has a bad entry"),
    "a row without its file": (_drop_part, "rows of the database have no matching file"),
    "an audit row, manifest to match": (_edit_audit, "audit chain in the backup is broken"),
}


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_a_damaged_or_incomplete_backup_is_refused(tamper: str, tmp_path: Path,
                                                   good_backup: Path) -> None:
    change, message = TAMPERS[tamper]
    bad = tmp_path / "bad"
    shutil.copytree(good_backup, bad)
    change(bad)
    target = tmp_path / "restored"
    configure_store(target)
    done = _run("restore", "--data", str(target), str(bad))
    assert done.returncode == 2, done.stdout
    assert message in done.stderr, done.stderr
    _nothing_restored(target)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".restored")]


def test_restore_needs_an_empty_target_or_force(tmp_path: Path, good_backup: Path) -> None:
    target = tmp_path / "data"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    configure_store(target)
    done = _run("restore", "--data", str(target), str(good_backup))
    assert done.returncode == 2 and "--force" in done.stderr
    assert {p.name for p in target.iterdir()} - {"central.conf"} == {"keep.txt"}
    refused = _run("backup", "--data", str(target), str(target))
    assert refused.returncode == 2 and refused.stderr.strip()
    done = _run("restore", "--force", "--data", str(target), str(good_backup))
    assert done.returncode == 0, done.stderr
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("data.replaced-")]
    assert len(kept) == 1 and (kept[0] / "keep.txt").read_text() == "old"
    assert str(kept[0]) in done.stdout
    assert (target / "service.key").is_file() and not (target / "keep.txt").exists()
    assert _run("audit", "verify", "--data", str(target)).returncode == 0
    # The one just restored is a valid backup source again (and the backup is unchanged).
    again = _run("backup", "--data", str(target), str(tmp_path / "second"))
    assert again.returncode == 0, again.stderr
    assert os.listdir(good_backup) == os.listdir(tmp_path / "second")


@pytest.fixture(scope="module")
def good_backup(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("good")
    with CentralService(root / "central") as service:
        _world(service, submissions=2)
        service.cli("backup", str(root / "backup"))
    configure_store(root / "control")
    control = _run("restore", "--data", str(root / "control"), str(root / "backup"))
    assert control.returncode == 0, control.stderr  # untampered: accepted
    return root / "backup"
