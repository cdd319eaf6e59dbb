"""``central serve`` as a real process on loopback: the whole path a kiosk and a vetter take,
the per-upload lock, stalled bodies, kill -9 and restart, tuspy, and a full disk."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sync.signing import VerifyKey
from sync.wire import Receipt, SignedDocument, encode_metadata
from tests.harness.central import (
    CentralService,
    index_body,
    new_submission_id,
    signed_index,
    stored_upload,
    tus_headers,
    tus_upload,
)


@pytest.fixture
def central(tmp_path: Path) -> Iterator[CentralService]:
    # The same as tests.harness.central's fixture (conftest may import that one too).
    with CentralService(tmp_path / "central") as service:
        yield service


def patch(client: httpx.Client, url: str, token: str, offset: int, body: object,
          **extra: str) -> httpx.Response:
    return client.patch(url, content=body, headers=tus_headers(token, **{
        "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset),
        **extra}))


def create(client: httpx.Client, token: str, sid: str, part: str, length: int) -> str:
    reply = client.post("/api/v1/uploads/", headers=tus_headers(token, **{
        "Upload-Length": str(length),
        "Upload-Metadata": encode_metadata({"submission_id": sid, "part": part})}))
    assert reply.status_code == 201, reply.text
    return str(reply.headers["location"])


def test_kiosk_to_vetter_over_loopback(central: CentralService) -> None:
    device_id, token, key = central.enrol_device(name="Front desk kiosk")
    code = central.enrol_code(name="Another kiosk")
    sid = new_submission_id()
    parts = {"a1.age": os.urandom(700_000) , "manifest.json.age": os.urandom(3_000)}
    with httpx.Client(base_url=central.url, timeout=30) as client:
        for name, data in parts.items():
            tus_upload(client, token, sid, name, data, chunk=128 * 1024)
        signed = signed_index(key, device_id, sid, parts)
        reply = client.post("/api/v1/submissions", json=index_body(signed),
                            headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 201, reply.text
        receipt = Receipt.verify(
            SignedDocument(reply.json()["receipt"].encode(), reply.json()["signature"]),
            VerifyKey.parse(central.service_key), expect_index=signed)
        assert receipt.submission_id == sid and receipt.device_id == device_id
        vetter = {"Authorization": f"Bearer {central.vetter_token('Alice Example')}"}
        queue = client.get("/api/v1/queue", headers=vetter).json()["submissions"]
        assert [(q["id"], q["state"]) for q in queue] == [(sid, "received")]
        assert {p["name"]: p["size"] for p in queue[0]["parts"]} == {
            n: len(d) for n, d in parts.items()}
        for name, data in parts.items():
            url = f"/api/v1/submissions/{sid}/parts/{name}"
            full = client.get(url, headers=vetter)
            assert full.status_code == 200 and full.content == data
            piece = client.get(url, headers={**vetter, "Range": "bytes=1000-2999"})
            assert piece.status_code == 206 and piece.content == data[1000:3000]
    audit = central.cli("audit", "verify")
    assert audit.startswith("audit chain intact:")
    log = central.log_text()
    for secret in (token, code, "Front desk", "Another kiosk", "Alice"):
        assert secret not in log


def test_one_patch_at_a_time_per_upload(tmp_path: Path) -> None:
    with CentralService(tmp_path / "c", serve_args=["--body-idle-timeout", "1"]) as svc:
        device_id, token, _ = svc.enrol_device()
        with httpx.Client(base_url=svc.url, timeout=30) as client:
            url = create(client, token, new_submission_id(), "a.age", 4000)
            release = threading.Event()
            sent = threading.Event()
            results: dict[str, httpx.Response] = {}

            def slow_body() -> Iterator[bytes]:
                yield b"A" * 1000
                sent.set()
                release.wait(10)
                yield b"A" * 1000

            def first() -> None:
                with httpx.Client(base_url=svc.url, timeout=30) as own:
                    results["first"] = patch(own, url, token, 0, slow_body())

            worker = threading.Thread(target=first)
            worker.start()
            assert sent.wait(10)
            time.sleep(0.3)  # the server has the headers and holds the lock
            second = patch(client, url, token, 0, b"B" * 1000)
            assert second.status_code == 423 and second.json()["error"] == "locked"
            release.set()
            worker.join(15)
            assert results["first"].status_code == 204
            assert results["first"].headers["upload-offset"] == "2000"
            stored = stored_upload(svc.data_dir, url.rsplit("/", 1)[1])
            assert stored == b"A" * 2000  # never interleaved with the B bytes

            # A stalled body does not hold the lock forever (idle timeout 1 s); the
            # bytes that arrived are kept, as tus says for a body without a checksum.
            stall = threading.Event()

            def stalled_body() -> Iterator[bytes]:
                yield b"C" * 500
                stall.wait(6)
                yield b"C" * 10

            def third() -> None:
                with httpx.Client(base_url=svc.url, timeout=30) as own:
                    try:
                        results["third"] = patch(own, url, token, 2000, stalled_body())
                    except httpx.HTTPError:
                        pass

            stalled = threading.Thread(target=third)
            started = time.monotonic()
            stalled.start()
            while True:
                head = client.head(url, headers=tus_headers(token))
                if head.headers["upload-offset"] == "2500":
                    break
                assert time.monotonic() - started < 5, "the stalled PATCH kept the upload"
                time.sleep(0.1)
            ok = patch(client, url, token, 2500, b"D" * 1500)
            assert ok.status_code == 204 and ok.headers["upload-offset"] == "4000"
            stall.set()
            stalled.join(15)


def test_kill_9_and_restart_resume_from_the_durable_offset(central: CentralService) -> None:
    device_id, token, key = central.enrol_device()
    sid = new_submission_id()
    data = os.urandom(300_000)
    with httpx.Client(base_url=central.url, timeout=30) as client:
        url = create(client, token, sid, "a.age", len(data))
        assert patch(client, url, token, 0, data[:100_000]).status_code == 204
    central.restart(kill=True)
    with httpx.Client(base_url=central.url, timeout=30) as client:
        head = client.head(url, headers=tus_headers(token))
        assert head.headers["upload-offset"] == "100000"
        assert patch(client, url, token, 100_000, data[100_000:]).status_code == 204
        signed = signed_index(key, device_id, sid, {"a.age": data})
        first = client.post("/api/v1/submissions", json=index_body(signed),
                            headers={"Authorization": f"Bearer {token}"})
        assert first.status_code == 201
    central.restart()
    with httpx.Client(base_url=central.url, timeout=30) as client:
        again = client.post("/api/v1/submissions", json=index_body(signed),
                            headers={"Authorization": f"Bearer {token}"})
        assert again.status_code == 200 and again.text == first.text
    assert "reconcile:" in central.log_text()


def test_tuspy_uploads_byte_identical(central: CentralService, tmp_path: Path) -> None:
    from tusclient import client as tus_client

    device_id, token, key = central.enrol_device()
    sid = new_submission_id()
    data = os.urandom(1_234_567)
    source = tmp_path / "a1.age"
    source.write_bytes(data)
    tus = tus_client.TusClient(f"{central.url}/api/v1/uploads/",
                               headers={"Authorization": f"Bearer {token}"})
    uploader = tus.uploader(str(source), chunk_size=300_000, upload_checksum=True,
                            metadata={"submission_id": sid, "part": "a1.age",
                                      "filename": "a1.age"})
    uploader.upload()
    signed = signed_index(key, device_id, sid, {"a1.age": data})
    with httpx.Client(base_url=central.url, timeout=30) as client:
        reply = client.post("/api/v1/submissions", json=index_body(signed),
                            headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 201, reply.text
        vetter = {"Authorization": f"Bearer {central.vetter_token('v')}"}
        got = client.get(f"/api/v1/submissions/{sid}/parts/a1.age", headers=vetter)
        assert got.status_code == 200
        assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_answers_507_and_keeps_nothing(small_disk: Path) -> None:
    # The data dir is the tmpfs itself; the serve log goes beside it, on the normal disk.
    # On S3 the disk an upload can fill is the spool's (CENTRAL_SPOOL_DIR): there too.
    spool = small_disk / "spool"
    spool.mkdir()
    with CentralService(small_disk, env={"CENTRAL_SPOOL_DIR": str(spool)}) as svc:
        _, token, _ = svc.enrol_device()
        with httpx.Client(base_url=svc.url, timeout=30) as client:
            url = create(client, token, new_submission_id(), "a.age", 3_000_000)
            first = os.urandom(500_000)
            assert patch(client, url, token, 0, first).status_code == 204
            stat = os.statvfs(small_disk)
            free = stat.f_bavail * stat.f_frsize
            filler = small_disk / "filler"
            # Room for half the chunk: it runs out of space part way through writing.
            with filler.open("wb") as out:
                out.write(b"\0" * max(0, free - 500_000))
            chunk = os.urandom(1_000_000)
            full = patch(client, url, token, 500_000, chunk)
            assert full.status_code == 507, full.text
            assert full.json()["error"] == "storage_full"
            head = client.head(url, headers=tus_headers(token))
            assert head.headers["upload-offset"] == "500000"
            upload_id = url.rsplit("/", 1)[1]
            assert stored_upload(small_disk, upload_id) == first
            spooled = [p for sub in ("tmp", "spool") for p in (small_disk / sub).rglob("*")
                       if p.is_file()]
            assert spooled == []
            filler.unlink()
            again = patch(client, url, token, 500_000, chunk)
            assert again.status_code == 204 and again.headers["upload-offset"] == "1500000"
            assert stored_upload(small_disk, upload_id) == first + chunk


def test_instances_share_a_read_only_data_directory(tmp_path: Path) -> None:
    """On PostgreSQL + S3 the data directory holds only the key and central.conf: a
    second instance runs on a read-only mount of the first one's, and a kiosk's
    chunks and a vetter's reads go to either."""
    if conf_value_of_new_store() is None:
        pytest.skip("on the default store the data directory holds the blobs: one writer")
    first = CentralService(tmp_path / "central")
    shared = tmp_path / "read-only"
    shared.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(first.data_dir), str(shared)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        first.stop()
        pytest.skip(f"cannot bind-mount here (needs root): {mounted.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(shared)], check=True)
        with pytest.raises(OSError):
            (shared / "probe").write_bytes(b"")  # really read-only
        with first, CentralService(shared) as second:  # `central init` again, then serve
            device_id, token, key = first.enrol_device()
            sid = new_submission_id()
            data = os.urandom(700_000)
            with httpx.Client(base_url=first.url, timeout=30) as client:
                url = create(client, token, sid, "a.age", len(data))
                for number, start in enumerate(range(0, len(data), 100_000)):
                    base = (first, second)[number % 2].url  # every other chunk
                    reply = patch(client, base + url, token, start,
                                  data[start:start + 100_000])
                    assert reply.status_code == 204, reply.text
                signed = signed_index(key, device_id, sid, {"a.age": data})
                reply = client.post(f"{second.url}/api/v1/submissions",
                                    json=index_body(signed),
                                    headers={"Authorization": f"Bearer {token}"})
                assert reply.status_code == 201, reply.text
                vetter = {"Authorization": f"Bearer {first.vetter_token()}"}
                got = client.get(f"{second.url}/api/v1/submissions/{sid}/parts/a.age",
                                 headers=vetter)
                assert got.status_code == 200 and got.content == data
                # A vetter's story audio is spooled too: on the instance's own disk.
                audio = b"OggS" + os.urandom(50_000)
                reply = client.put(f"{second.url}/api/v1/stories/story-1.ogg", content=audio,
                                   headers={**vetter, "Content-Type": "audio/ogg",
                                            "X-Content-SHA256":
                                                hashlib.sha256(audio).hexdigest()})
                assert reply.status_code == 201, reply.text
            # The data directory holds the key and the settings, and nothing else.
            names = sorted(p.name for p in first.data_dir.iterdir())
            assert names == ["central.conf", "service.key"], names
    finally:
        subprocess.run(["umount", "-l", str(shared)], check=False)


def conf_value_of_new_store() -> str | None:
    """The S3 bucket a new service would get under this run's --central-store."""
    from tests.harness import central as harness

    return None if harness.S3_FACTORY is None else "s3"
