"""The central API in-process (TestClient): every bad input is refused, and nothing stays.

Each refusal is checked twice: the status and error code the spec names, and a snapshot
of the data directory (rows and files) that must not have changed.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sync.central.app import create_app
from sync.central.core import Settings, hash_secret, init, make_enrol_code, normalise_code
from sync.central.storage.base import StorageUnavailable
from sync.signing import SigningKey
from sync.wire import (
    PartEntry,
    SignedDocument,
    SubmissionIndex,
    checksum_header,
    encode_metadata,
)
from tests.harness.central import (
    configure_store,
    index_body,
    new_submission_id,
    open_store,
    signed_index,
    store_sql,
    stored_blobs,
    stored_part,
    stored_state,
    stored_upload,
    tus_headers,
    tus_upload,
)

LIMIT = 64 * 1024


@dataclass
class Kiosk:
    device_id: str
    token: str
    key: SigningKey


class Env:
    def __init__(self, data: Path, client: TestClient) -> None:
        self.data = data
        self.client = client

    def code(self, *, expires_in: float = 3600.0) -> str:
        code = make_enrol_code()
        meta = open_store(self.data)
        try:
            now = time.time()
            normalised = normalise_code(code)
            assert normalised is not None
            meta.add_enrol_code(hash_secret(normalised), None, now, now + expires_in)
        finally:
            meta.close()
        return code

    def enrol(self) -> Kiosk:
        key = SigningKey.generate()
        reply = self.client.post("/api/v1/devices/enrol",
                                 json={"code": self.code(), "public_key": str(key.verify_key)})
        assert reply.status_code == 201, reply.text
        body = reply.json()
        return Kiosk(body["device_id"], body["token"], key)

    def vetter(self) -> str:
        token = "idrvet_" + hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:40]
        meta = open_store(self.data)
        try:
            meta.add_vetter(f"vet-{time.time_ns() % 10**12:012d}", "v", hash_secret(token),
                            time.time())
        finally:
            meta.close()
        return token

    def snapshot(self) -> dict[str, Any]:
        """Everything a refused request could have left behind, on either store."""
        return stored_state(self.data, ("devices", "enrol_codes", "uploads", "submissions",
                                         "submission_parts", "receipts"))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    data = tmp_path / "central"
    configure_store(data)
    init(data)
    app = create_app(data, Settings(max_upload_bytes=LIMIT))
    with TestClient(app) as client:
        yield Env(data, client)


def test_the_service_runs_on_the_store_the_run_asked_for(env: Env, central_store: str) -> None:
    """The same tests run on either store (tests/conftest.py --central-store): this one
    fails if a fixture quietly fell back to the default."""
    svc = env.client.app.state.central  # type: ignore[attr-defined]
    expected = {"sqlite": ("SqliteMetaStore", "FileBlobStore"),
                "postgres": ("PostgresMetaStore", "FileBlobStore"),
                "postgres+s3": ("PostgresMetaStore", "S3BlobStore")}[central_store]
    assert (type(svc.meta).__name__, type(svc.blobs).__name__) == expected
    assert (env.data / "central.sqlite").exists() == (central_store == "sqlite")


def test_reconciliation_leaves_an_upload_another_instance_is_creating(env: Env) -> None:
    """Start-up reconciliation runs while other instances serve (the scale-out shape): a
    blob whose row is not there yet belongs to a tus create in flight, which holds the
    upload's lock; only once nobody holds it is the blob an orphan of a crash."""
    from sync.central.reconcile import reconcile

    svc = env.client.app.state.central  # type: ignore[attr-defined]
    upload_id = secrets.token_hex(16)
    assert svc.meta.try_lock_upload(upload_id)  # as tus_create does, before the blob
    try:
        svc.blobs.create_upload(upload_id)
        counts = reconcile(svc)
        assert counts["uploads_busy"] == 1 and counts["upload_files_removed"] == 0
        assert svc.blobs.upload_size(upload_id) == 0
    finally:
        svc.meta.unlock_upload(upload_id)
    counts = reconcile(svc)  # the create never finished: its blob goes
    assert counts["upload_files_removed"] == 1
    assert svc.blobs.upload_size(upload_id) is None


def refused(env: Env, method: str, url: str, status: int, error: str | None = None,
            **kwargs: Any) -> Any:
    before = env.snapshot()
    reply = env.client.request(method, url, **kwargs)
    assert reply.status_code == status, reply.text
    if error is not None and method != "HEAD":
        assert reply.json()["error"] == error, reply.text
    if method != "HEAD" and status != 204:
        assert set(reply.json()) >= {"error", "detail"}
    assert env.snapshot() == before, "a refused request changed the stored state"
    return reply


def create(env: Env, kiosk: Kiosk, sid: str, part: str, length: int) -> str:
    reply = env.client.post("/api/v1/uploads/", headers=tus_headers(kiosk.token, **{
        "Upload-Length": str(length),
        "Upload-Metadata": encode_metadata({"submission_id": sid, "part": part})}))
    assert reply.status_code == 201, reply.text
    return str(reply.headers["location"])


def patch_headers(kiosk: Kiosk, offset: int, body: bytes | None = None,
                  digest: bytes | None = None) -> dict[str, str]:
    extra = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)}
    if digest is not None or body is not None:
        extra["Upload-Checksum"] = checksum_header(
            "sha256", digest if digest is not None else hashlib.sha256(body or b"").digest())
    return tus_headers(kiosk.token, **extra)


# -- enrolment -------------------------------------------------------------------------------

def test_enrolment_code_works_once_in_any_case_and_without_dashes(env: Env) -> None:
    code = env.code()
    key = SigningKey.generate()
    reply = env.client.post("/api/v1/devices/enrol", json={
        "code": code.replace("-", "").lower(), "public_key": str(key.verify_key)})
    assert reply.status_code == 201
    body = reply.json()
    assert body["device_id"].startswith("dev-") and body["token"].startswith("idrdev_")
    assert body["service_key"].startswith("idrverify1")
    refused(env, "POST", "/api/v1/devices/enrol", 403, "enrol_code_refused",
            json={"code": code, "public_key": str(SigningKey.generate().verify_key)})
    # Only the token's hash is stored.
    stored = store_sql(env.data, "SELECT token_hash FROM devices")
    assert stored == [(hashlib.sha256(body["token"].encode()).hexdigest(),)]


def test_wrong_and_expired_codes_and_bad_keys_are_refused(env: Env) -> None:
    key = str(SigningKey.generate().verify_key)
    refused(env, "POST", "/api/v1/devices/enrol", 403, "enrol_code_refused",
            json={"code": make_enrol_code(), "public_key": key})
    refused(env, "POST", "/api/v1/devices/enrol", 403, "enrol_code_refused",
            json={"code": "not a code", "public_key": key})
    expired = env.code(expires_in=-1)
    refused(env, "POST", "/api/v1/devices/enrol", 403, "enrol_code_refused",
            json={"code": expired, "public_key": key})
    good = env.code()
    refused(env, "POST", "/api/v1/devices/enrol", 400, "bad_key",
            json={"code": good, "public_key": "idrverify1qqqq"})
    refused(env, "POST", "/api/v1/devices/enrol", 400, "bad_request",
            json={"code": good})
    refused(env, "POST", "/api/v1/devices/enrol", 400, "bad_request", content=b"{not json",
            headers={"Content-Type": "application/json"})
    # The refusals above did not use the code up.
    assert env.client.post("/api/v1/devices/enrol",
                           json={"code": good, "public_key": key}).status_code == 201


def test_a_code_raced_by_many_requests_enrols_one_device(env: Env) -> None:
    code = env.code()
    results: list[int] = []

    def go() -> None:
        reply = env.client.post("/api/v1/devices/enrol", json={
            "code": code, "public_key": str(SigningKey.generate().verify_key)})
        results.append(reply.status_code)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [201] + [403] * 5


# -- tokens -----------------------------------------------------------------------------------

def test_missing_unknown_and_revoked_tokens(env: Env) -> None:
    kiosk = env.enrol()
    beat = {"queue_depth": 0, "free_disk_bytes": None, "app_version": "0.1.0",
            "last_error": None}
    reply = refused(env, "POST", "/api/v1/devices/heartbeat", 401, "unauthorized", json=beat)
    assert reply.headers["www-authenticate"] == "Bearer"
    refused(env, "POST", "/api/v1/devices/heartbeat", 401, "unauthorized", json=beat,
            headers={"Authorization": "Bearer idrdev_nope"})
    vetter = env.vetter()
    refused(env, "POST", "/api/v1/devices/heartbeat", 401, "unauthorized", json=beat,
            headers={"Authorization": f"Bearer {vetter}"})
    refused(env, "GET", "/api/v1/queue", 401, "unauthorized",
            headers={"Authorization": f"Bearer {kiosk.token}"})
    meta = open_store(env.data)
    assert meta.revoke_device(kiosk.device_id, time.time())
    meta.close()
    sid = new_submission_id()
    refused(env, "POST", "/api/v1/devices/heartbeat", 401, "revoked", json=beat,
            headers={"Authorization": f"Bearer {kiosk.token}"})
    refused(env, "POST", "/api/v1/uploads/", 401, "revoked", headers=tus_headers(
        kiosk.token, **{"Upload-Length": "10",
                        "Upload-Metadata": encode_metadata({"submission_id": sid,
                                                            "part": "a.age"})}))


def test_heartbeat_is_stored_and_refuses_extra_or_free_text_fields(env: Env) -> None:
    kiosk = env.enrol()
    auth = {"Authorization": f"Bearer {kiosk.token}"}
    good = {"queue_depth": 3, "free_disk_bytes": 12345, "app_version": "0.1.0+dev",
            "last_error": "network"}
    for bad in ({**good, "visitor": "Jane"}, {**good, "last_error": "Jane Doe called"},
                {**good, "queue_depth": -1}, {**good, "app_version": "x" * 40},
                {**good, "queue_depth": "3"}):
        refused(env, "POST", "/api/v1/devices/heartbeat", 400, "bad_request", json=bad,
                headers=auth)
    assert env.client.post("/api/v1/devices/heartbeat", json=good,
                           headers=auth).status_code == 204
    [row] = store_sql(env.data, "SELECT queue_depth, free_disk_bytes, app_version,"
                                " last_error FROM devices")
    assert tuple(row) == (3, 12345, "0.1.0+dev", "network")


# -- tus --------------------------------------------------------------------------------------

def test_tus_options_and_version(env: Env) -> None:
    reply = env.client.options("/api/v1/uploads/")
    assert reply.status_code == 204
    assert reply.headers["tus-resumable"] == "1.0.0"
    assert reply.headers["tus-version"] == "1.0.0"
    assert reply.headers["tus-extension"] == "creation,checksum,termination,expiration"
    assert reply.headers["tus-max-size"] == str(LIMIT)
    assert reply.headers["tus-checksum-algorithm"] == "crc32,sha1,sha256"
    kiosk = env.enrol()
    reply = refused(env, "POST", "/api/v1/uploads/", 412, "tus_version",
                    headers={"Authorization": f"Bearer {kiosk.token}", "Upload-Length": "5"})
    assert reply.headers["tus-version"] == "1.0.0"
    assert reply.headers["tus-resumable"] == "1.0.0"


def test_tus_create_refuses_bad_length_metadata_and_oversize(env: Env) -> None:
    kiosk = env.enrol()
    sid = new_submission_id()
    meta = encode_metadata({"submission_id": sid, "part": "a.age"})

    def post(status: int, error: str, **headers: str) -> None:
        refused(env, "POST", "/api/v1/uploads/", status, error,
                headers=tus_headers(kiosk.token, **headers))

    post(413, "too_large", **{"Upload-Length": str(LIMIT + 1), "Upload-Metadata": meta})
    for length in ("0", "-1", "abc", "", "1e3"):
        post(400, "bad_length", **{"Upload-Length": length, "Upload-Metadata": meta})
    post(400, "bad_length", **{"Upload-Metadata": meta})
    for bad in ({"submission_id": "../../etc", "part": "a.age"},
                {"submission_id": "%2e%2e%2f", "part": "a.age"},
                {"submission_id": sid, "part": "../a.age"},
                {"submission_id": sid, "part": "%2e%2e%2fa.age"},
                {"submission_id": sid, "part": ".age"},
                {"submission_id": "0190b7d0-7e54-4c6e-8d1a-2f7f1d0e9a11", "part": "a.age"},
                {"part": "a.age"}, {"submission_id": sid}):
        post(400, "bad_metadata", **{"Upload-Length": "10",
                                     "Upload-Metadata": encode_metadata(bad)})
    post(400, "bad_metadata", **{"Upload-Length": "10", "Upload-Metadata": "submission_id !!"})


def test_patch_refusals_leave_the_upload_as_it_was(env: Env) -> None:
    kiosk = env.enrol()
    other = env.enrol()
    sid = new_submission_id()
    url = create(env, kiosk, sid, "a.age", 100)
    first = b"x" * 40
    assert env.client.patch(url, content=first, headers=patch_headers(kiosk, 0, first)
                            ).status_code == 204
    body = b"y" * 10
    # Wrong checksum: 460, nothing kept.
    reply = refused(env, "PATCH", url, 460, "checksum_mismatch", content=body,
                    headers=patch_headers(kiosk, 40, digest=hashlib.sha256(b"z").digest()))
    assert reply.headers["upload-offset"] == "40"
    # The same with a CRC-32 (what the kiosk sends): one bit off is refused.
    crc = zlib.crc32(body) ^ 1
    reply = refused(env, "PATCH", url, 460, "checksum_mismatch", content=body, headers={
        **patch_headers(kiosk, 40), "Upload-Checksum": checksum_header(
            "crc32", crc.to_bytes(4, "big"))})
    assert reply.headers["upload-offset"] == "40"
    # Offset mismatch: 409 with the current offset.
    reply = refused(env, "PATCH", url, 409, "offset_mismatch", content=body,
                    headers=patch_headers(kiosk, 30, body))
    assert reply.headers["upload-offset"] == "40"
    # Past Upload-Length (with and without a declared length): 413.
    big = b"q" * 61
    refused(env, "PATCH", url, 413, "too_large", content=big,
            headers=patch_headers(kiosk, 40, big))
    refused(env, "PATCH", url, 413, "too_large", content=iter([b"q" * 30, b"q" * 31]),
            headers=patch_headers(kiosk, 40))
    # Another device's upload: 403, for HEAD, PATCH and DELETE.
    refused(env, "PATCH", url, 403, "forbidden", content=body,
            headers=patch_headers(other, 40, body))
    refused(env, "HEAD", url, 403, headers=tus_headers(other.token))
    refused(env, "DELETE", url, 403, "forbidden", headers=tus_headers(other.token))
    # Wrong content type, bad offset header, unknown algorithm, missing checksum digest.
    refused(env, "PATCH", url, 415, "bad_content_type", content=body,
            headers={**patch_headers(kiosk, 40, body), "Content-Type": "text/plain"})
    refused(env, "PATCH", url, 400, "bad_offset", content=body,
            headers={**patch_headers(kiosk, 40, body), "Upload-Offset": "-4"})
    refused(env, "PATCH", url, 400, "bad_checksum", content=body,
            headers={**patch_headers(kiosk, 40), "Upload-Checksum": "md5 AAAA"})
    refused(env, "PATCH", url, 400, "bad_checksum", content=body,
            headers={**patch_headers(kiosk, 40), "Upload-Checksum": "sha256"})
    # Path-like and unknown ids: 404.
    for bad in ("../uploads", "%2e%2e%2f", "..%2F..%2Fcentral.sqlite", "0" * 32,
                "A" * 32, "0" * 31):
        # "../x" is folded by the client into another path: 405 there, never a file.
        expected = {404, 405} if bad.startswith("../") else {404}
        status = env.client.patch(f"/api/v1/uploads/{bad}", content=body,
                                  headers=patch_headers(kiosk, 40, body)).status_code
        assert status in expected, bad
        assert env.client.head(f"/api/v1/uploads/{bad}",
                               headers=tus_headers(kiosk.token)).status_code in expected
    head = env.client.head(url, headers=tus_headers(kiosk.token))
    assert head.status_code == 200
    assert head.headers["upload-offset"] == "40" and head.headers["upload-length"] == "100"
    assert head.headers["cache-control"] == "no-store"
    assert head.headers["tus-resumable"] == "1.0.0"
    upload_id = url.rsplit("/", 1)[1]
    assert stored_upload(env.data, upload_id) == first
    # crc32 and sha1 checksums are accepted too.
    assert env.client.patch(url, content=body[:5], headers={
        **patch_headers(kiosk, 40), "Upload-Checksum": checksum_header(
            "crc32", zlib.crc32(body[:5]).to_bytes(4, "big"))}).status_code == 204
    body = body[5:]
    assert env.client.head(url, headers=tus_headers(kiosk.token)).headers[
        "upload-offset"] == "45"
    assert env.client.patch(url, content=body, headers={
        **patch_headers(kiosk, 45), "Upload-Checksum": checksum_header(
            "sha1", hashlib.sha1(body).digest())}).status_code == 204
    assert stored_upload(env.data, upload_id) == first + b"y" * 10
    # Termination.
    assert env.client.delete(url, headers=tus_headers(kiosk.token)).status_code == 204
    assert stored_upload(env.data, upload_id) is None
    assert env.client.head(url, headers=tus_headers(kiosk.token)).status_code == 404


def test_an_expired_upload_answers_410(tmp_path: Path) -> None:
    data = tmp_path / "central"
    configure_store(data)
    init(data)
    with TestClient(create_app(data, Settings(upload_expiry=0.5))) as client:
        env = Env(data, client)
        kiosk = env.enrol()
        url = create(env, kiosk, new_submission_id(), "a.age", 10)
        time.sleep(0.6)
        assert client.head(url, headers=tus_headers(kiosk.token)).status_code == 410
        reply = client.patch(url, content=b"0123456789",
                             headers=patch_headers(kiosk, 0, b"0123456789"))
        assert reply.status_code == 410 and reply.json()["error"] == "expired"


# -- submissions ---------------------------------------------------------------------------------

def upload_parts(env: Env, kiosk: Kiosk, sid: str, parts: dict[str, bytes]) -> None:
    for name, data in parts.items():
        tus_upload(env.client, kiosk.token, sid, name, data, chunk=1000)


def test_a_whole_upload_its_instance_died_before_finishing_is_finished_on_post(
        env: Env) -> None:
    """The instance that recorded an upload's last bytes died before hashing them and
    marking it finished (tests/test_central_scale_out.py makes that happen for real): the
    kiosk's HEAD says "whole", so its POST must find the part, not answer 422."""
    kiosk = env.enrol()
    sid = new_submission_id()
    parts = {"a1.age": os.urandom(2500), "manifest.json.age": b"M" * 300}
    upload_parts(env, kiosk, sid, parts)
    store_sql(env.data, "UPDATE uploads SET finished_at = NULL, sha256 = NULL"
                        " WHERE part = 'a1.age'")
    signed = signed_index(kiosk.key, kiosk.device_id, sid, parts)
    auth = {"Authorization": f"Bearer {kiosk.token}"}
    reply = env.client.post("/api/v1/submissions", json=index_body(signed), headers=auth)
    assert reply.status_code == 201, reply.text
    assert store_sql(env.data, "SELECT sha256 FROM uploads WHERE part = 'a1.age'") == [
        (hashlib.sha256(parts["a1.age"]).hexdigest(),)]
    # Whole but with other bytes than the index names: still refused, nothing stored.
    sid = new_submission_id()
    upload_parts(env, kiosk, sid, {"a1.age": b"x" * 2500})
    store_sql(env.data, "UPDATE uploads SET finished_at = NULL, sha256 = NULL"
                        " WHERE submission_id = ?", (sid,))
    wrong = signed_index(kiosk.key, kiosk.device_id, sid, {"a1.age": b"y" * 2500})
    reply = env.client.post("/api/v1/submissions", json=index_body(wrong), headers=auth)
    assert reply.status_code == 422 and reply.json()["parts"] == ["a1.age"]


def test_submission_refusals_store_nothing(env: Env) -> None:
    kiosk = env.enrol()
    other = env.enrol()
    sid = new_submission_id()
    parts = {"a1.age": b"A" * 2500, "manifest.json.age": b"M" * 300}
    upload_parts(env, kiosk, sid, parts)
    auth = {"Authorization": f"Bearer {kiosk.token}"}
    good = signed_index(kiosk.key, kiosk.device_id, sid, parts)

    def post(status: int, error: str, body: Any = None, content: bytes | None = None,
             headers: dict[str, str] | None = None) -> Any:
        kwargs: dict[str, Any] = {"headers": auth if headers is None else headers}
        if content is not None:
            kwargs["content"] = content
        else:
            kwargs["json"] = body
        return refused(env, "POST", "/api/v1/submissions", status, error, **kwargs)

    # Malformed bodies and indexes.
    post(400, "bad_index", content=b"{nope")
    post(400, "bad_index", body=[1, 2])
    post(400, "bad_index", body={"index": good.data.decode()})
    post(400, "bad_index", body={"index": 5, "signature": good.signature})
    post(400, "bad_index", body={"index": "{}", "signature": good.signature})
    post(400, "bad_index", body={"index": good.data.decode() + " ", "signature": good.signature})
    # Not canonical (spaces): refused even with a valid-looking signature.
    spaced = good.data.decode().replace(",", ", ")
    post(400, "bad_index", body={"index": spaced, "signature": good.signature})
    # Signature by another key, and a garbled one.
    forged = signed_index(SigningKey.generate(), kiosk.device_id, sid, parts)
    post(400, "bad_signature", body=index_body(forged))
    post(400, "bad_signature", body={"index": good.data.decode(), "signature": "idrsig1xyz"})
    # An index naming another device, sent with this device's token.
    theirs = signed_index(kiosk.key, other.device_id, sid, parts)
    post(403, "forbidden", body=index_body(theirs))
    # The other device cannot claim this device's uploads with its own signed index.
    stolen = signed_index(other.key, other.device_id, sid, parts)
    reply = post(422, "parts_not_uploaded", body=index_body(stolen),
                 headers={"Authorization": f"Bearer {other.token}"})
    assert reply.json()["parts"] == ["a1.age", "manifest.json.age"]
    # A part whose hash or size differs from what was uploaded.
    altered = signed_index(kiosk.key, kiosk.device_id, sid,
                           {**parts, "a1.age": b"B" * 2500})
    reply = post(422, "parts_not_uploaded", body=index_body(altered))
    assert reply.json()["parts"] == ["a1.age"]
    extra = signed_index(kiosk.key, kiosk.device_id, sid, {**parts, "a2.age": b"C"})
    assert post(422, "parts_not_uploaded", body=index_body(extra)).json()["parts"] == ["a2.age"]
    post(401, "unauthorized", body=index_body(good), headers={})
    # Finally the good one is accepted...
    reply = env.client.post("/api/v1/submissions", json=index_body(good), headers=auth)
    assert reply.status_code == 201, reply.text
    # ...and a replayed index with an altered hash under the same id is a conflict.
    upload_parts(env, kiosk, sid, {"a1.age": b"B" * 2500})
    post(409, "index_conflict", body=index_body(altered))


def test_same_index_twice_gives_the_byte_identical_receipt(env: Env) -> None:
    kiosk = env.enrol()
    sid = new_submission_id()
    parts = {"a1.age": b"1" * 5000}
    upload_parts(env, kiosk, sid, parts)
    signed = signed_index(kiosk.key, kiosk.device_id, sid, parts)
    auth = {"Authorization": f"Bearer {kiosk.token}"}
    first = env.client.post("/api/v1/submissions", json=index_body(signed), headers=auth)
    assert first.status_code == 201
    time.sleep(1.1)  # a re-made receipt would carry a later received_at
    again = env.client.post("/api/v1/submissions", json=index_body(signed), headers=auth)
    assert again.status_code == 200
    assert again.json() == first.json()
    stored = stored_part(env.data, sid, hashlib.sha256(parts["a1.age"]).hexdigest())
    assert stored == parts["a1.age"]


def test_a_store_that_cannot_be_reached_answers_503_and_keeps_nothing(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # The object store down (S3 unreachable after its retries) while the service stores
    # the parts: not a damaged upload (422 would make the kiosk send it all again) but
    # "come back later", and nothing recorded.
    kiosk = env.enrol()
    sid = new_submission_id()
    parts = {"a1.age": b"1" * 5000}
    upload_parts(env, kiosk, sid, parts)
    signed = signed_index(kiosk.key, kiosk.device_id, sid, parts)
    auth = {"Authorization": f"Bearer {kiosk.token}"}
    blobs = env.client.app.state.central.blobs  # type: ignore[attr-defined]

    def down(*_args: object) -> None:
        raise StorageUnavailable("object store unreachable (test)")

    monkeypatch.setattr(blobs, "put_part_from_upload", down)
    before = env.snapshot()
    # As a client sees it: the exception handler's answer, not the exception.
    answering = TestClient(env.client.app, raise_server_exceptions=False)
    reply = answering.post("/api/v1/submissions", json=index_body(signed), headers=auth)
    assert reply.status_code == 503 and reply.json()["error"] == "storage_unavailable"
    assert reply.headers["retry-after"] == "30"
    assert env.snapshot() == before
    monkeypatch.undo()
    assert env.client.post("/api/v1/submissions", json=index_body(signed),
                           headers=auth).status_code == 201


def test_concurrent_posts_of_one_index_make_one_submission(env: Env) -> None:
    kiosk = env.enrol()
    sid = new_submission_id()
    parts = {"a1.age": b"1" * 60_000, "a2.age": b"2" * 30_000}
    upload_parts(env, kiosk, sid, parts)
    signed = signed_index(kiosk.key, kiosk.device_id, sid, parts)
    auth = {"Authorization": f"Bearer {kiosk.token}"}
    barrier = threading.Barrier(4)
    replies: list[Any] = []

    def go() -> None:
        barrier.wait()
        replies.append(env.client.post("/api/v1/submissions", json=index_body(signed),
                                       headers=auth))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in replies)
    # One made the receipt (201) or several raced to the insert and the losers answered
    # with the winner's stored receipt (200): never two receipts.
    assert statuses.count(201) == 1 and set(statuses) <= {200, 201}, statuses
    assert len({r.text for r in replies}) == 1
    assert store_sql(env.data, "SELECT COUNT(*) FROM submissions") == [(1,)]
    assert store_sql(env.data, "SELECT COUNT(*) FROM receipts") == [(1,)]


def test_vetter_routes_refuse_path_like_and_unknown_ids(env: Env) -> None:
    vetter = {"Authorization": f"Bearer {env.vetter()}"}
    sid = new_submission_id()
    for path in (f"/api/v1/submissions/{sid}/parts/a.age",
                 f"/api/v1/submissions/{sid}/parts/..%2f..%2fcentral.sqlite",
                 f"/api/v1/submissions/{sid}/parts/%2e%2e%2fservice.key",
                 "/api/v1/submissions/..%2f..%2f/parts/a.age",
                 "/api/v1/submissions/%2e%2e/parts/service.key",
                 f"/api/v1/submissions/{sid}/parts/.age"):
        reply = env.client.get(path, headers=vetter)
        assert reply.status_code == 404, path
        assert reply.json()["error"] == "not_found"
    assert env.client.get("/api/v1/queue", headers=vetter).json() == {"submissions": []}


def test_range_requests(env: Env) -> None:
    kiosk = env.enrol()
    sid = new_submission_id()
    data = bytes(range(256)) * 40
    upload_parts(env, kiosk, sid, {"a1.age": data})
    signed = signed_index(kiosk.key, kiosk.device_id, sid, {"a1.age": data})
    assert env.client.post("/api/v1/submissions", json=index_body(signed), headers={
        "Authorization": f"Bearer {kiosk.token}"}).status_code == 201
    vetter = {"Authorization": f"Bearer {env.vetter()}"}
    url = f"/api/v1/submissions/{sid}/parts/a1.age"
    full = env.client.get(url, headers=vetter)
    assert full.status_code == 200 and full.content == data
    assert full.headers["accept-ranges"] == "bytes"
    for header, piece in (("bytes=0-0", data[:1]), ("bytes=100-199", data[100:200]),
                          ("bytes=10000-", data[10000:]), ("bytes=-5", data[-5:]),
                          ("bytes=10230-99999", data[10230:])):
        reply = env.client.get(url, headers={**vetter, "Range": header})
        assert reply.status_code == 206, header
        assert reply.content == piece, header
    for header in ("bytes=10240-", "bytes=99999-100000", "bytes=-0", "bytes=5-4"):
        reply = env.client.get(url, headers={**vetter, "Range": header})
        assert reply.status_code == 416, header
        assert reply.headers["content-range"] == f"bytes */{len(data)}"
    # Several ranges: the whole part (allowed by RFC 9110).
    assert env.client.get(url, headers={**vetter, "Range": "bytes=0-1,4-5"}).content == data


def test_index_with_parts_of_another_submission_is_refused(env: Env) -> None:
    kiosk = env.enrol()
    sid, other_sid = new_submission_id(), new_submission_id()
    parts = {"a1.age": b"Z" * 100}
    upload_parts(env, kiosk, other_sid, parts)
    signed = signed_index(kiosk.key, kiosk.device_id, sid, parts)
    reply = refused(env, "POST", "/api/v1/submissions", 422, "parts_not_uploaded",
                    json=index_body(signed), headers={"Authorization": f"Bearer {kiosk.token}"})
    assert reply.json()["parts"] == ["a1.age"]


def test_wire_index_helpers_round_trip() -> None:
    # Guards the test helpers themselves: what they sign is what wire.py parses.
    key = SigningKey.generate()
    sid = new_submission_id()
    signed = signed_index(key, "dev-0123456789abcdef", sid, {"b.age": b"b", "a.age": b"a"})
    index = SubmissionIndex.verify(SignedDocument(signed.data, signed.signature),
                                   key.verify_key)
    assert [p.name for p in index.parts] == ["a.age", "b.age"]
    assert index.parts[0] == PartEntry("a.age", 1, hashlib.sha256(b"a").hexdigest())


def test_bench_sink_only_when_enabled(tmp_path: Path) -> None:
    data = tmp_path / "central"
    configure_store(data)
    init(data)
    for enabled, status in ((False, 404), (True, 204)):
        with TestClient(create_app(data, Settings(bench_sink=enabled))) as client:
            kiosk = Env(data, client).enrol()
            reply = client.put("/api/v1/_bench/sink", content=b"x" * 100_000,
                               headers={"Authorization": f"Bearer {kiosk.token}"})
            assert reply.status_code == status
            assert "/api/v1/_bench/sink" not in client.get("/openapi.json").text
    assert stored_blobs(data) == {}  # the sink's blob went, and nothing was spooled


def test_a_full_database_answers_507_not_500() -> None:
    """SQLite's "database or disk is full" (SQLITE_FULL) is the service's storage being
    full: 507 storage_full, as a full disk under an upload is, so a kiosk reads it as
    "retry later" and staff see why."""

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from sync.central.api import errors

    db = sqlite3.connect(":memory:")
    db.execute("create table t (x blob)")
    db.execute("pragma max_page_count = 2")  # a real SQLITE_FULL, no disk needed
    with pytest.raises(sqlite3.OperationalError) as caught:
        db.execute("insert into t values (zeroblob(100000))")
    assert errors.disk_full(caught.value)
    assert not errors.disk_full(sqlite3.OperationalError("no such table: t"))

    app = FastAPI()
    errors.install(app)

    @app.get("/full")
    def full() -> None:
        raise caught.value

    @app.get("/broken")
    def broken() -> None:
        raise RuntimeError("a bug")

    client = TestClient(app, raise_server_exceptions=False)
    reply = client.get("/full")
    assert reply.status_code == 507 and reply.json()["error"] == "storage_full"
    assert client.get("/broken").status_code == 500
