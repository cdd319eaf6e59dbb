"""The sync pass against an in-memory central service (httpx.MockTransport): resume,
409, 460, 401, 422, conflicts, bad receipts, Retry-After, damaged files, stop, purge."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kiosk.device import read_sync_state
from kiosk.sync_runner import SyncProgress, sync_once
from kiosk.vault.layout import OUTBOX
from kiosk.vault.store import Store
from sync.client import tus
from tests.sync_fakes import API, FakeCentral, enrolled, kiosk_config, make_submission

CHUNK = 1000
T0 = 1_800_000_000.0
DAY = 86_400.0


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    s = Store.in_data_dir(data_dir)
    yield s
    s.close()


@pytest.fixture
def central(data_dir: Path) -> FakeCentral:
    c = FakeCentral()
    enrolled(data_dir, c)
    return c


def run(data_dir: Path, store: Store, central: FakeCentral, *, now: float = T0, **kw):
    cfg = kiosk_config(data_dir, chunk_bytes=CHUNK, **kw.pop("sync", {}))
    return sync_once(cfg, store, transport=central.transport(), now=lambda: now, **kw)


def state(store: Store, sid: str) -> str:
    row = store.outbox_row(sid)
    assert row is not None
    return row.state


def files_of(data_dir: Path, sid: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (data_dir / OUTBOX / sid).iterdir()}


def nth(method: str, path_part: str, n: set[int], response: object):
    """A fault answering the n-th (1-based) matching request with ``response``
    (a Response, an exception to raise, or a callable(request, central))."""
    seen = [0]

    def fault(request: httpx.Request, central: FakeCentral):
        if request.method != method or path_part not in request.url.path:
            return None
        seen[0] += 1
        if seen[0] not in n:
            return None
        if isinstance(response, Exception):
            raise response
        if callable(response):
            return response(request, central)
        return response
    return fault


def test_a_pass_uploads_everything_byte_for_byte_and_keeps_the_receipt(
        data_dir, store, central) -> None:
    first = make_submission(data_dir, store, (2500, 10))
    second = make_submission(data_dir, store, (999,))
    result = run(data_dir, store, central)
    assert (result.acknowledged, result.pending, result.rejected, result.error) == (2, 0, 0, None)
    assert result.sent_bytes == 2500 + 10 + 500 + 999 + 500
    for sid in (first, second):
        assert state(store, sid) == "acknowledged"
        for name, data in files_of(data_dir, sid).items():
            assert central.blob(sid, name) == data
        row = store.outbox_row(sid)
        assert row.receipt.encode() == central.stored[sid][1].data
        assert row.receipt_signature == central.stored[sid][1].signature
        assert row.acknowledged_at == T0 and row.last_error is None
        assert row.index_sha256 == hashlib.sha256(central.stored[sid][0]).hexdigest()
    assert central.heartbeats[0]["queue_depth"] == 2
    assert set(central.heartbeats[0]) == {"queue_depth", "free_disk_bytes", "app_version",
                                          "last_error"}
    sync_state = read_sync_state(data_dir)
    assert sync_state.last_sync_at == T0 and sync_state.last_error is None
    assert not sync_state.revoked
    # Chunks of CHUNK bytes, each with its checksum (the fake refuses otherwise).
    assert len(central.requests("PATCH")) == 3 + 1 + 1 + 1 + 1
    # A second pass has nothing to send.
    central.log.clear()
    again = run(data_dir, store, central)
    assert (again.acknowledged, again.pending, again.sent_bytes, again.error) == (0, 0, 0, None)
    assert [m for m, _, _ in central.log] == ["POST"]  # the heartbeat only


def test_a_cut_resumes_from_the_service_offset_and_resends_at_most_one_chunk(
        data_dir, store, central) -> None:
    sid = make_submission(data_dir, store, (5500,))
    # The 4th PATCH dies on the wire: 3000 bytes are at the service.
    central.faults.append(nth("PATCH", "/uploads/", {4}, httpx.ReadError("cut")))
    first = run(data_dir, store, central)
    assert first.error == "network" and first.pending == 1 and first.acknowledged == 0
    assert state(store, sid) == "uploading"
    assert store.outbox_row(sid).last_error == "network" and store.outbox_row(sid).attempts == 1
    assert store.upload_url(sid, "q1-1.age") is not None
    central.log.clear()
    second = run(data_dir, store, central)
    assert second.acknowledged == 1 and second.error is None
    # HEAD first, then PATCH from 3000: nothing the service had is sent again.
    heads = central.requests("HEAD")
    assert heads and heads[0][2] == 200
    assert first.sent_bytes + second.sent_bytes - (5500 + 500) <= CHUNK
    assert central.blob(sid, "q1-1.age") == files_of(data_dir, sid)["q1-1.age"]


def test_a_reply_lost_after_the_service_kept_the_chunk_gets_409_then_resumes(
        data_dir, store, central) -> None:
    sid = make_submission(data_dir, store, (2500,))

    def kept_but_lost(request: httpx.Request, c: FakeCentral):
        c._route(request)  # the service keeps it...
        return httpx.Response(503)  # ...and the answer that says so is lost

    # Files go in name order: manifest.json.age (one PATCH), then q1-1.age.
    central.faults.append(nth("PATCH", "/uploads/", {3}, kept_but_lost))
    assert run(data_dir, store, central).error == "server_error"
    # Next pass: the HEAD would say 2000 (so no 409); make the kiosk believe an older
    # offset by answering that HEAD with a stale one: the PATCH gets 409.
    url = store.upload_url(sid, "q1-1.age")

    def stale(request: httpx.Request, c: FakeCentral):
        if request.method == "HEAD" and str(request.url) == url:
            c.faults.clear()
            return httpx.Response(200, headers={"Tus-Resumable": "1.0.0",
                                                "Upload-Offset": "1000",
                                                "Upload-Length": "2500"})
        return None

    central.faults[:] = [stale]
    central.log.clear()
    result = run(data_dir, store, central)
    assert result.acknowledged == 1, result
    statuses = [s for m, p, s in central.log if m in ("PATCH", "HEAD")]
    assert statuses == [200, 200, 409, 200, 204]  # HEADs, 409, HEAD, the last chunk
    assert central.blob(sid, "q1-1.age") == files_of(data_dir, sid)["q1-1.age"]


def test_a_checksum_mismatch_resends_the_chunk_then_gives_up(data_dir, store, central) -> None:
    sid = make_submission(data_dir, store, (1500,))
    bad = httpx.Response(460, json={"error": "checksum_mismatch", "detail": "x"})
    central.faults.append(nth("PATCH", "/uploads/", {1, 2}, bad))
    result = run(data_dir, store, central)
    assert result.acknowledged == 1 and result.error is None
    assert result.sent_bytes == 1500 + 500 + 2 * 500  # the manifest goes first
    # Always 460: a few resends, then the pass stops with the error (not rejected).
    other = make_submission(data_dir, store, (1500,))
    central.faults[:] = [nth("PATCH", "/uploads/", set(range(1, 100)), bad)]
    result = run(data_dir, store, central)
    assert result.error == "checksum_mismatch" and result.pending == 1
    assert state(store, other) == "uploading" and state(store, sid) == "acknowledged"
    assert len(central.requests("PATCH")) - 5 == 4  # the first try and three resends


def test_a_revoked_device_stops_and_keeps_its_queue(data_dir, store, central) -> None:
    sid = make_submission(data_dir, store)
    central.revoked.update(central.tokens.values())
    result = run(data_dir, store, central)
    assert result.revoked and result.error == "revoked" and result.pending == 1
    assert state(store, sid) == "sealed"
    assert (data_dir / OUTBOX / sid / "manifest.json.age").exists()
    doc = json.loads((data_dir / "sync-state.json").read_text())
    assert doc["revoked"] is True and doc["last_error"] == "revoked"
    # Later passes do not even try until the kiosk is enrolled again.
    central.log.clear()
    again = run(data_dir, store, central)
    assert again.revoked and central.log == []
    enrolled(data_dir, central)  # a new enrolment (--force) clears the mark
    assert run(data_dir, store, central).acknowledged == 1


def test_a_401_mid_upload_is_revoked_too(data_dir, store, central) -> None:
    sid = make_submission(data_dir, store, (2500,))
    central.faults.append(nth("PATCH", "/uploads/", {2}, httpx.Response(
        401, json={"error": "revoked", "detail": "x"})))
    result = run(data_dir, store, central)
    assert result.revoked and state(store, sid) == "uploading"
    assert read_sync_state(data_dir).revoked


def test_parts_not_uploaded_are_uploaded_again(data_dir, store, central) -> None:
    sid = make_submission(data_dir, store, (1500, 700))

    def lose_one(request: httpx.Request, c: FakeCentral):
        # The service lost one finished upload (say, it expired): it answers 422.
        for key, upload in list(c.uploads.items()):
            if upload.part == "q2-2.age":
                del c.uploads[key]
        return None

    central.faults.append(nth("POST", "/submissions", {1}, lose_one))
    result = run(data_dir, store, central)
    assert result.acknowledged == 1 and result.error is None
    statuses = [s for m, p, s in central.log if p == f"{API}/submissions"]
    assert statuses == [422, 201]
    assert result.sent_bytes == 1500 + 700 + 500 + 700
    assert central.blob(sid, "q2-2.age") == files_of(data_dir, sid)["q2-2.age"]


def test_an_index_conflict_is_rejected_for_staff_and_the_rest_goes_on(
        data_dir, store, central) -> None:
    bad = make_submission(data_dir, store)
    good = make_submission(data_dir, store)
    central.stored[bad] = (b"another index", None)  # type: ignore[assignment]
    result = run(data_dir, store, central)
    assert (result.rejected, result.acknowledged, result.pending) == (1, 1, 0)
    assert result.error is None
    assert state(store, bad) == "rejected" and store.outbox_row(bad).last_error == "index_conflict"
    assert state(store, good) == "acknowledged"
    assert (data_dir / OUTBOX / bad).is_dir()  # kept for staff


@pytest.mark.parametrize(("status", "code"), [(400, "bad_index"), (403, "forbidden")])
def test_permanent_refusals_of_the_index_are_rejected(data_dir, store, central, status,
                                                      code) -> None:
    sid = make_submission(data_dir, store)
    central.faults.append(nth("POST", "/submissions", {1}, httpx.Response(
        status, json={"error": code, "detail": "x"})))
    result = run(data_dir, store, central)
    assert result.rejected == 1 and state(store, sid) == "rejected"
    assert store.outbox_row(sid).last_error == code


def test_a_receipt_that_does_not_verify_is_not_an_acknowledgement(
        data_dir, store, central) -> None:
    sid = make_submission(data_dir, store)
    central.bad_receipts = True
    result = run(data_dir, store, central)
    assert result.acknowledged == 0 and result.error == "bad_receipt" and result.pending == 1
    row = store.outbox_row(sid)
    assert row.state == "finalizing" and row.receipt is None
    assert row.last_error == "bad_receipt"
    # Even long after: nothing is purged without a verified receipt.
    assert run(data_dir, store, central, now=T0 + 30 * DAY).purged == 0
    assert (data_dir / OUTBOX / sid).is_dir()
    central.bad_receipts = False  # the same index again gets the stored, good receipt
    central.log.clear()
    result = run(data_dir, store, central)
    assert result.acknowledged == 1 and state(store, sid) == "acknowledged"
    assert not central.requests("PATCH")  # nothing uploaded again


def test_a_receipt_for_another_index_is_refused(data_dir, store, central) -> None:
    sid = make_submission(data_dir, store)
    other = make_submission(data_dir, store)
    assert run(data_dir, store, central).acknowledged == 2
    # A service that answers one submission with the (validly signed) receipt of another.
    theirs = central.stored[other][1]
    store.db.execute("update outbox set state = 'finalizing', receipt = null,"
                     " acknowledged_at = null where submission_id = ?", [sid])
    central.faults.append(nth("POST", "/submissions", {1}, httpx.Response(
        200, json={"receipt": theirs.data.decode(), "signature": theirs.signature})))
    result = run(data_dir, store, central)
    assert result.error == "bad_receipt" and state(store, sid) == "finalizing"


@pytest.mark.parametrize(("status", "retry", "code", "expected"), [
    (503, "120", "server_error", 120.0),
    (429, "Wed, 21 Oct 2099 07:28:00 GMT", "rate_limited", None),
    (423, None, "locked", None),
    (507, "5", "storage_full", 5.0),
])
def test_a_busy_service_stops_the_pass_and_retry_after_is_honoured(
        data_dir, store, central, status, retry, code, expected) -> None:
    sid = make_submission(data_dir, store, (2500,))
    later = make_submission(data_dir, store)
    headers = {"Retry-After": retry} if retry else {}
    central.faults.append(nth("PATCH", "/uploads/", {2}, httpx.Response(
        status, headers=headers, json={"error": code, "detail": "x"})))
    result = run(data_dir, store, central)
    assert result.error == code and result.pending == 2 and result.acknowledged == 0
    if expected is not None:
        assert result.retry_after == expected
    elif retry:
        assert result.retry_after > 365 * DAY  # an HTTP date far ahead
    else:
        assert result.retry_after is None
    assert state(store, sid) == "uploading" and state(store, later) == "sealed"
    assert read_sync_state(data_dir).last_error == code


def test_an_unreachable_service_is_a_network_error(data_dir, store, central) -> None:
    make_submission(data_dir, store)
    central.faults.append(lambda r, c: (_ for _ in ()).throw(httpx.ConnectError("down")))
    result = run(data_dir, store, central)
    assert result.error == "network" and result.pending == 1 and result.sent_bytes == 0


def patch_sizes(central: FakeCentral) -> list[int]:
    """The body size of every PATCH the fake answered, in order (a fault that only
    watches)."""
    sizes: list[int] = []

    def watch(request: httpx.Request, _central: FakeCentral) -> None:
        if request.method == "PATCH":
            sizes.append(len(request.content))

    central.faults.append(watch)
    return sizes


def test_chunks_grow_on_a_fast_link_and_a_cut_costs_the_chunk_in_flight(
        data_dir, store, central) -> None:
    sid = make_submission(data_dir, store, (20_000,), manifest_size=500)
    sizes = patch_sizes(central)
    # The 4th PATCH of the part (the 5th overall: the manifest goes first) dies.
    central.faults.append(nth("PATCH", "/uploads/", {5}, httpx.ReadError("cut")))
    first = run(data_dir, store, central, sync={"max_chunk_bytes": 8 * CHUNK})
    assert first.error == "network"
    second = run(data_dir, store, central, sync={"max_chunk_bytes": 8 * CHUNK})
    assert second.acknowledged == 1
    # Doubling from CHUNK while each chunk is answered at once, capped at 8 chunks;
    # after the cut the pass starts again from CHUNK at the service's offset.
    assert sizes == [500, 1000, 2000, 4000, 8000, 1000, 2000, 4000, 6000], sizes
    resent = first.sent_bytes + second.sent_bytes - (20_000 + 500)
    assert resent == 8000  # the chunk in flight, no more
    assert central.blob(sid, "q1-1.age") == files_of(data_dir, sid)["q1-1.age"]


def test_a_slow_chunk_halves_the_next_but_never_below_chunk_bytes(
        data_dir, store, central, monkeypatch) -> None:
    monkeypatch.setattr(tus, "GROW_WITHIN_S", 0.03)
    monkeypatch.setattr(tus, "SHRINK_AFTER_S", 0.05)
    sizes = patch_sizes(central)
    slow = iter([False, False, False, True, True, True])

    def sometimes_slow(request: httpx.Request, _central: FakeCentral) -> None:
        if request.method == "PATCH" and next(slow, False):
            time.sleep(0.08)

    central.faults.append(sometimes_slow)
    sid = make_submission(data_dir, store, (16_000,), manifest_size=500)
    assert run(data_dir, store, central, sync={"max_chunk_bytes": 8 * CHUNK}).acknowledged == 1
    assert sizes == [500, 1000, 2000, 4000, 2000, 1000, 1000, 2000, 3000], sizes
    assert central.blob(sid, "q1-1.age") == files_of(data_dir, sid)["q1-1.age"]


def test_a_damaged_local_file_is_rejected_and_never_acknowledged(
        data_dir, store, central) -> None:
    damaged = make_submission(data_dir, store, (800,))  # fits in one chunk
    longer = make_submission(data_dir, store, (2500,))  # three chunks
    missing = make_submission(data_dir, store, (1500,))
    fine = make_submission(data_dir, store, (1500,))
    for sid in (damaged, longer):
        path = data_dir / OUTBOX / sid / "q1-1.age"
        data = bytearray(path.read_bytes())
        data[700] ^= 1
        path.write_bytes(bytes(data))
    (data_dir / OUTBOX / missing / "manifest.json.age").unlink()
    result = run(data_dir, store, central)
    # The missing file is found by the reconciliation that starts the pass; a damaged
    # one-chunk file by the check before its upload; a longer one when the service
    # refuses it against the index (checked then, instead of being sent again).
    assert (result.rejected, result.acknowledged) == (3, 1)
    assert state(store, damaged) == state(store, longer) == state(store, missing) \
        == "rejected"
    for sid in (damaged, longer):
        assert store.outbox_row(sid).last_error == "local_file_damaged"
    assert store.outbox_row(missing).last_error == "local_file_missing"
    assert state(store, fine) == "acknowledged"
    uploaded = {u.submission_id for u in central.uploads.values()}
    assert damaged not in uploaded and missing not in uploaded and fine in uploaded
    # The longer one went once (no second round), and the service never took it.
    started = [u for u in central.uploads.values()
               if u.submission_id == longer and u.part == "q1-1.age"]
    assert len(started) == 1 and len(started[0].data) == 2500
    assert longer not in central.stored and fine in central.stored


def test_a_stored_upload_the_service_forgot_is_created_anew(data_dir, store, central) -> None:
    sid = make_submission(data_dir, store, (2500,))
    central.faults.append(nth("PATCH", "/uploads/", {2}, httpx.Response(503)))
    run(data_dir, store, central)
    old = store.upload_url(sid, "q1-1.age")
    for upload in central.uploads.values():
        upload.gone = 410  # expired
    central.faults.clear()
    result = run(data_dir, store, central)
    assert result.acknowledged == 1
    assert store.upload_url(sid, "q1-1.age") != old


def test_the_stop_event_is_checked_between_chunks(data_dir, store, central) -> None:
    sid = make_submission(data_dir, store, (5000,))
    stop = threading.Event()
    seen: list[SyncProgress] = []

    def progress(p: SyncProgress) -> None:
        seen.append(p)
        if p.phase == "upload" and p.sent_bytes >= 2 * CHUNK:
            stop.set()

    result = run(data_dir, store, central, progress=progress, stop=stop)
    assert result.error == "stopped" and result.pending == 1
    assert result.sent_bytes == 500 + 2 * CHUNK  # the manifest, then two chunks
    assert state(store, sid) == "uploading"
    assert seen[0].phase == "heartbeat" and seen[-1].phase == "done"
    uploads = [p for p in seen if p.phase == "upload"]
    assert uploads[0].total_bytes == 5500 and uploads[0].total == 1
    assert [p.sent_bytes for p in uploads] == sorted(p.sent_bytes for p in uploads)


def test_progress_reaches_the_total(data_dir, store, central) -> None:
    make_submission(data_dir, store, (2500,))
    make_submission(data_dir, store, (10,))
    seen: list[SyncProgress] = []
    run(data_dir, store, central, progress=seen.append)
    last = [p for p in seen if p.phase == "upload"][-1]
    assert (last.sent_bytes, last.total_bytes, last.done, last.total) == (3510, 3510, 2, 2)


def test_a_trickling_service_hits_the_attempt_deadline(data_dir, store, central) -> None:
    make_submission(data_dir, store)

    def slow(request: httpx.Request, c: FakeCentral):
        time.sleep(0.3)
        return None

    central.faults.append(slow)
    started = time.monotonic()
    result = run(data_dir, store, central, sync={"attempt_deadline_s": 0.1})
    assert result.error == "deadline" and time.monotonic() - started < 2


def test_not_enrolled(tmp_path) -> None:
    data_dir = tmp_path / "fresh"
    store = Store.in_data_dir(data_dir)
    make_submission(data_dir, store)
    result = sync_once(kiosk_config(data_dir), store, transport=FakeCentral().transport())
    assert result.error == "not_enrolled" and result.pending == 1
    store.close()


def test_one_pass_at_a_time(data_dir, store, central) -> None:
    from kiosk.sync_runner import _pass_lock

    make_submission(data_dir, store)
    central.log.clear()
    with _pass_lock(data_dir) as locked:
        assert locked
        result = run(data_dir, store, central)
    assert result.error == "busy" and result.pending == 1 and central.log == []


# -- purge ----------------------------------------------------------------------------------

def test_purge_only_after_a_receipt_and_the_retention(data_dir, store, central) -> None:
    acked = make_submission(data_dir, store)
    pending = make_submission(data_dir, store)
    central.faults.append(nth("POST", "/uploads/", {3, 4}, httpx.Response(503)))
    result = run(data_dir, store, central, now=T0)
    assert state(store, acked) == "acknowledged", result
    assert state(store, pending) == "uploading"
    central.faults.clear()
    central.faults.append(lambda r, c: httpx.Response(503))  # the service is down for days
    assert run(data_dir, store, central, now=T0 + 7 * DAY - 1).purged == 0
    assert (data_dir / OUTBOX / acked).is_dir()
    result = run(data_dir, store, central, now=T0 + 7 * DAY)
    assert result.purged == 1 and result.error == "server_error"
    assert not (data_dir / OUTBOX / acked).exists()
    row = store.outbox_row(acked)
    assert row.state == "purged" and row.purged_at == T0 + 7 * DAY and row.receipt
    assert len(store.parts(acked)) == 1  # ids, sizes, hashes kept
    # Never an unacknowledged one, however old.
    assert run(data_dir, store, central, now=T0 + 365 * DAY).purged == 0
    assert (data_dir / OUTBOX / pending).is_dir() and state(store, pending) == "uploading"


def test_retention_is_configurable(data_dir, store, central) -> None:
    sid = make_submission(data_dir, store)
    result = run(data_dir, store, central, sync={"retention_days": 0})
    assert result.acknowledged == 1 and result.purged == 1
    assert state(store, sid) == "purged" and not (data_dir / OUTBOX / sid).exists()


def test_a_stored_receipt_that_no_longer_verifies_is_never_purged(
        data_dir, store, central) -> None:
    sid = make_submission(data_dir, store)
    run(data_dir, store, central)
    row = store.outbox_row(sid)
    tampered = row.receipt.replace('"received_at":"', '"received_at":"1')[:-0 or None]
    store.db.execute("update outbox set receipt = ? where submission_id = ?",
                     [tampered, sid])
    assert run(data_dir, store, central, now=T0 + 30 * DAY).purged == 0
    assert state(store, sid) == "acknowledged" and (data_dir / OUTBOX / sid).is_dir()


def test_a_wipe_during_a_pass_is_no_crash(data_dir, store, central) -> None:
    from kiosk.staff.wipe import wipe_unsent

    make_submission(data_dir, store, (5000,))

    def wipe_midway(request: httpx.Request, c: FakeCentral):
        if request.method == "PATCH" and c.patched_bytes >= 1000:
            wipe_unsent(data_dir, store)
        return None

    central.faults.append(wipe_midway)
    result = run(data_dir, store, central)
    assert result.error in ("outbox_changed", None) and result.acknowledged == 0
    assert store.outbox_rows() == []
