"""Three ``central serve`` instances behind HAProxy (issue 14, "Done when: Several
instances"), on PostgreSQL plus S3: the instances share one data directory, one
database and one bucket, and HAProxy runs the shipped deploy/central/haproxy.cfg (round
robin, no stickiness), so consecutive chunks of one upload land on different instances.

1. Several kiosks upload in parallel: every submission is acknowledged exactly once and
   downloads byte-identical; the PATCHes of most uploads were spread over instances.
2. kill -9 of one instance at random moments (seeded), repeated, then started again
   while the kiosks sync: they resume on the others; nothing lost, duplicated or
   acknowledged twice, and no upload's offset ever goes backwards (read all along).
3. Two clients send the same chunk of one upload to two instances at once (slow bodies
   that overlap): one is refused (423 locked, or 409 if it came second) and the stored
   bytes are exactly the other's.
4. PostgreSQL restarted in the middle of uploads: requests fail cleanly (503 or a
   connection error, never a 500) and the kiosks' next passes succeed.
5. Exact interleavings, made in-process between real requests: an instance starting
   while another takes a chunk or creates an upload; an instance dying between storing
   an upload's last bytes and marking it finished. Each was a gap these tests found.

Submissions are made as tests/test_sync_faults.py makes them (its Kiosk, Ledger and
checks, imported), with 64 KiB chunks that never grow. Runs only under
``--central-store=postgres+s3``. The sample takes about 70 s; ``SCALE_SOAK=1`` repeats
5 to 10 times more (``SCALE_SEED=N`` replays a run's random moments).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.client
import json
import os
import random
import secrets
import select
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from kiosk.vault.store import ACKNOWLEDGED, PURGED
from sync.central.core import Central
from sync.central.reconcile import reconcile
from sync.central.storage.base import AuditEvent, Upload
from sync.envelope import X25519Identity
from sync.signing import SigningKey
from sync.wire import checksum_header
from tests.harness.central import (
    CentralService,
    index_body,
    new_submission_id,
    signed_index,
    tus_headers,
    tus_upload,
)
from tests.harness.faultproxy import FaultProxy
from tests.harness.haproxy import HAProxy, start_instances
from tests.harness.postgres import PostgresCluster
from tests.test_sync_faults import CHUNK, Kiosk, Ledger, check_downloads, check_kiosk

SEED = int(os.environ.get("SCALE_SEED") or secrets.randbits(32))
SOAK = os.environ.get("SCALE_SOAK") == "1"
UPLOADS = "/api/v1/uploads/"


def rounds(sample: int, soak: int) -> int:
    return soak if SOAK else sample


def rng_for(test: str) -> random.Random:
    print(f"\n[{test}] seed {SEED} (replay: SCALE_SEED={SEED})")
    return random.Random(f"{SEED}:{test}")


@pytest.fixture(autouse=True)
def _postgres_and_s3_only(request: pytest.FixtureRequest) -> None:
    store = request.config.getoption("--central-store")
    if store != "postgres+s3":
        pytest.skip(f"several instances share one PostgreSQL and one bucket: run with"
                    f" --central-store=postgres+s3 (this run: {store})")


# -- the fleet -----------------------------------------------------------------------------

@dataclass
class Fleet:
    instances: list[CentralService]
    haproxy: HAProxy
    vetter: str
    #: Where kiosks reach the service: HAProxy, or a throttled link in front of it.
    front: str = ""
    link: FaultProxy | None = None
    kiosks: list[Kiosk] = field(default_factory=list)
    ledgers: list[Ledger] = field(default_factory=list)
    #: What each kiosk pass said (SyncResult.error), over the test.
    passes: Counter[str] = field(default_factory=Counter)

    def sql(self, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        # Any instance's helper will do: they share one central.conf, one database.
        return self.instances[0].sql(query, params)

    def add_kiosk(self, root: Path, team: X25519Identity) -> Kiosk:
        """A kiosk enrolled through HAProxy, its chunks fixed at 64 KiB (they never
        grow), so that a submission spans many PATCHes."""
        kiosk = Kiosk(root, self.front, self.instances[0].enrol_code(), team)
        kiosk.cfg = dataclasses.replace(
            kiosk.cfg, sync=dataclasses.replace(kiosk.cfg.sync, chunk_bytes=CHUNK,
                                                max_chunk_bytes=CHUNK))
        self.kiosks.append(kiosk)
        self.ledgers.append(Ledger())
        return kiosk

    def add_submissions(self, per_kiosk: int, rng: random.Random) -> int:
        for kiosk, ledger in zip(self.kiosks, self.ledgers, strict=True):
            ledger.made += kiosk.add_submissions(per_kiosk, rng)
        return per_kiosk * len(self.kiosks)


@pytest.fixture
def team() -> X25519Identity:
    return X25519Identity.generate()


@pytest.fixture
def fleet_factory(tmp_path: Path, team: X25519Identity) -> Iterator[Callable[..., Fleet]]:
    made: list[Fleet] = []

    def make(kiosks: int = 3, link_bps: float | None = None, count: int = 3) -> Fleet:
        """``link_bps``: the kiosks reach HAProxy through one throttled link (a venue's
        uplink), so that a request lasts long enough for a kill to cut it."""
        instances = start_instances(tmp_path / "central", count)
        proxy = HAProxy([f"127.0.0.1:{s.port}" for s in instances],
                        workdir=tmp_path / "haproxy")
        fleet = Fleet(instances, proxy, "", front=proxy.url)
        made.append(fleet)
        proxy.start()
        if link_bps is not None:
            fleet.link = FaultProxy("127.0.0.1", proxy.port)
            fleet.link.start()
            fleet.link.set_rate(up_bps=link_bps, down_bps=link_bps)
            fleet.front = fleet.link.url
        fleet.vetter = instances[0].vetter_token("vetter")
        for n in range(kiosks):
            fleet.add_kiosk(tmp_path / f"kiosk{n}", team)
        return fleet

    yield make
    for fleet in made:
        for kiosk in fleet.kiosks:
            kiosk.close()
        if fleet.link is not None:
            fleet.link.stop()
        fleet.haproxy.stop()
        for service in fleet.instances:
            service.stop()


def sync_all(fleet: Fleet, *, passes: int = 40) -> None:
    """Every kiosk syncs until nothing is pending, all at once, one thread each."""
    failures: list[BaseException] = []

    def run(kiosk: Kiosk) -> None:
        try:
            results = kiosk.sync_until_done(passes=passes)
            fleet.passes.update(str(r.error) for r in results)
        except BaseException as exc:  # re-raised in the test's thread below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in fleet.kiosks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not any(t.is_alive() for t in threads), "a kiosk's sync did not end"
    if failures:
        raise failures[0]


# -- the checks ----------------------------------------------------------------------------

def check_fleet(fleet: Fleet) -> int:
    """Final state: each kiosk's submissions acknowledged with a receipt that never
    changed (check_kiosk), each in the queue exactly once, stored and received once on
    the service, and every part downloads (through HAProxy, so from any instance)
    byte-identical to the kiosk's sealed file. check_queue in test_sync_faults.py does
    the same for one kiosk per service; here the queue holds several kiosks'."""
    owner = {sid: (kiosk, ledger) for kiosk, ledger in zip(fleet.kiosks, fleet.ledgers,
                                                            strict=True)
             for sid in ledger.made}
    for kiosk, ledger in zip(fleet.kiosks, fleet.ledgers, strict=True):
        states = check_kiosk(kiosk, ledger)
        assert set(states) <= {ACKNOWLEDGED, PURGED}, f"not all acknowledged: {states}"
    auth = {"Authorization": f"Bearer {fleet.vetter}"}
    with httpx.Client(base_url=fleet.haproxy.url, headers=auth, timeout=30) as client:
        reply = client.get("/api/v1/queue")
        assert reply.status_code == 200, reply.text
        queue = reply.json()["submissions"]
        ids = [entry["id"] for entry in queue]
        assert not [s for s, n in Counter(ids).items() if n > 1], "duplicated in the queue"
        assert sorted(ids) == sorted(owner), "the queue is not exactly what was made"
        for entry in queue:
            sid = entry["id"]
            kiosk, ledger = owner[sid]
            if sid in ledger.downloaded:
                continue
            check_downloads(client, kiosk, ledger, entry)
            ledger.downloaded.add(sid)
    # Acknowledged once on the service too: one receipt row, one "received" audit entry.
    receipts = Counter(str(r[0]) for r in fleet.sql("SELECT submission_id FROM receipts"))
    received = Counter(str(r[0]) for r in fleet.sql(
        "SELECT subject FROM audit WHERE action = ?", ("submission_received",)))
    assert receipts == Counter(list(owner)) == received, (receipts, received)
    return len(owner)


class OffsetWatch:
    """``uploads."offset"`` of every upload, read again and again: never backwards."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.seen: dict[str, int] = {}
        self.reads = 0

    def read(self) -> dict[str, tuple[int, int]]:
        """Check now; return {upload id: (offset, length)}."""
        rows = self.fleet.sql('SELECT id, "offset", length FROM uploads')
        now = {str(i): (int(o), int(n)) for i, o, n in rows}  # type: ignore[call-overload]
        for upload_id, (offset, _) in now.items():
            before = self.seen.get(upload_id, 0)
            assert offset >= before, f"upload {upload_id}: offset {before} -> {offset}"
            self.seen[upload_id] = offset
        self.reads += 1
        return now


def check_spread(fleet: Fleet) -> str:
    """Chunks of one upload landed on several instances: HAProxy's log names the
    server of each PATCH, and each instance's own log has PATCH lines."""
    per_upload: dict[str, set[str]] = defaultdict(set)
    patches = fleet.haproxy.requests("PATCH", UPLOADS)
    for server, _, path, _ in patches:
        per_upload[path].add(server)
    per_server = Counter(server for server, *_ in patches)
    spread = sum(1 for servers in per_upload.values() if len(servers) > 1)
    served = [s.log_text().count('"PATCH /api/v1/uploads/') for s in fleet.instances]
    line = (f"{len(patches)} PATCHes of {len(per_upload)} uploads; per server"
            f" {dict(sorted(per_server.items()))}; per instance log {served};"
            f" {spread} uploads on several instances")
    print(line)
    assert {f"central{n}" for n in (1, 2, 3)} <= set(per_server), line
    assert all(served), line
    # Uploads of one chunk cannot spread; nearly all of the others must.
    multi = [u for u, servers in per_upload.items()
             if sum(1 for _, _, p, _ in patches if p == u) >= 3]
    # Round robin over three kiosks' interleaved requests puts two consecutive chunks on
    # one instance about a third of the time: most, not all, uploads span instances.
    assert sum(1 for u in multi if len(per_upload[u]) > 1) >= 0.5 * len(multi), line
    return line


def no_server_errors(fleet: Fleet, *,
                     allowed: frozenset[str] = frozenset()) -> Counter[int]:
    """Statuses HAProxy logged. A 500 or an instance's "internal error" line fails; so
    does a traceback in an instance's log, unless its exception is in ``allowed``."""
    statuses = Counter(status for *_, status in fleet.haproxy.requests())
    assert 500 not in statuses, (statuses, [
        [line for line in s.log_text().splitlines() if " ERROR " in line or "Error" in line]
        [-20:] for s in fleet.instances])
    for service in fleet.instances:
        text = service.log_text()
        assert "internal error" not in text, text[-3000:]
        raised = traceback_errors(text)
        assert set(raised) <= allowed, (raised, text[-3000:])
    return statuses


def traceback_errors(text: str) -> Counter[str]:
    """The exception type ending each traceback in a log."""
    found: Counter[str] = Counter()
    inside = False
    for line in text.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            inside = True
        elif inside and line and not line[0].isspace():
            found[line.split(":", 1)[0]] += 1
            inside = False
    return found


# -- 1. parallel kiosks ----------------------------------------------------------------------

def test_parallel_kiosks_through_haproxy(fleet_factory: Callable[..., Fleet]) -> None:
    rng = rng_for("parallel")
    fleet = fleet_factory(kiosks=3)
    made = fleet.add_submissions(rounds(2, 10), rng)
    watch = OffsetWatch(fleet)
    sync_all(fleet)
    watch.read()
    assert check_fleet(fleet) == made
    line = check_spread(fleet)
    statuses = no_server_errors(fleet)
    print(f"[parallel] {made} submissions from 3 kiosks, acknowledged once and"
          f" byte-identical; {line}; statuses {dict(statuses)}")


# -- 2. kill -9 of one instance ---------------------------------------------------------------

def test_kill_one_instance_at_random_moments(fleet_factory: Callable[..., Fleet]) -> None:
    """Each round: the kiosks sync; one instance is killed at a random moment; the
    kiosks go on with the other two for a random while; the instance starts again
    while they sync (its start-up reconciliation runs over uploads the others are
    taking); the kiosks finish. Offsets are read all along: never backwards."""
    rng = rng_for("kill")
    # An 8 Mbit/s uplink shared by the kiosks: a 64 KiB PATCH lasts 60-200 ms, so a
    # kill at a random moment often cuts one.
    fleet = fleet_factory(kiosks=3, link_bps=8_000_000)
    watch = OffsetWatch(fleet)
    total = rounds(4, 40)
    made = mid = moved_on = half_done = restarted_mid = 0
    for _ in range(total):
        made += fleet.add_submissions(2, rng)
        failures: list[BaseException] = []
        syncing = threading.Thread(target=_catching(lambda: sync_all(fleet, passes=80),
                                                    failures), daemon=True)
        syncing.start()
        time.sleep(rng.uniform(0.1, 1.0))
        victim = fleet.instances[rng.randrange(len(fleet.instances))]
        at_kill = watch.read()
        victim.kill()
        mid += syncing.is_alive()
        deadline = time.monotonic() + rng.uniform(0.3, 1.0)
        while syncing.is_alive() and time.monotonic() < deadline:
            watch.read()  # the kiosks go on with the other two
            syncing.join(0.1)
        before = watch.read()
        # Uploads the dead instance was taking (or had just taken) went on elsewhere.
        moved_on += sum(1 for u, (offset, _) in before.items()
                        if u in at_kill and offset > at_kill[u][0])
        half_done += sum(1 for offset, length in before.values() if 0 < offset < length)
        restarted_mid += syncing.is_alive()
        victim.restart(kill=True)  # start-up reconciliation while the others serve
        while syncing.is_alive():
            watch.read()
            syncing.join(0.2)
        assert not failures, failures
        watch.read()
    assert check_fleet(fleet) == made
    line = check_spread(fleet)
    statuses = no_server_errors(fleet)
    cut = [s for s, _, _, status in fleet.haproxy.requests("PATCH", UPLOADS)
           if status in (-1, 502, 503)]
    unfinished = fleet.sql('SELECT COUNT(*) FROM uploads WHERE "offset" = length'
                           " AND finished_at IS NULL")[0][0]
    print(f"[kill] seed {SEED}: {total} kills, {mid} while the kiosks synced, {len(cut)}"
          f" PATCHes cut, {moved_on} uploads the kiosks moved on with while an instance"
          f" was dead, {restarted_mid} restarts while they synced ({half_done} uploads"
          f" half done then); {made} submissions acknowledged once and byte-identical;"
          f" offsets read {watch.reads} times, never backwards; {line}; statuses"
          f" {dict(statuses)}; kiosk passes said {dict(fleet.passes)}; {unfinished}"
          f" uploads whole but not yet finished (POST /submissions finishes them)")
    assert mid >= total // 2 and moved_on >= 1 and restarted_mid >= 1


def _catching(run: Callable[[], None], failures: list[BaseException]) -> Callable[[], None]:
    def wrapped() -> None:
        try:
            run()
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)

    return wrapped


# -- 3. the same chunk to two instances at once ----------------------------------------------

def _slow_patch(port: int, path: str, token: str, offset: int, body: bytes,
                barrier: threading.Barrier, *, pieces: int = 8,
                pause: float = 0.1) -> tuple[int, str, float]:
    """One PATCH straight to an instance, its body sent in ``pieces`` with pauses (so it
    holds the upload for about ``pieces * pause`` seconds); (status, error code, seconds
    from the barrier to the answer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.connect()
        barrier.wait(10)
        began = time.monotonic()
        conn.putrequest("PATCH", path, skip_accept_encoding=True)
        digest = hashlib.sha256(body).digest()
        headers = tus_headers(token, **{
            "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset),
            "Upload-Checksum": checksum_header("sha256", digest),
            "Content-Length": str(len(body))})
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        step = -(-len(body) // pieces)
        try:
            for start in range(0, len(body), step):
                conn.send(body[start:start + step])
                # An answer before the body's end is a refusal: stop sending, read it.
                assert conn.sock is not None
                if select.select([conn.sock], [], [], pause)[0]:
                    break
        except OSError:
            pass  # refused before the body ended: the answer is waiting to be read
        reply = conn.getresponse()
        text = reply.read()
        code = ""
        if reply.status >= 400:
            code = str(json.loads(text).get("error", ""))
        return reply.status, code, time.monotonic() - began
    finally:
        conn.close()


def test_same_chunk_to_two_instances_at_once(fleet_factory: Callable[..., Fleet]) -> None:
    rng = rng_for("same-chunk")
    fleet = fleet_factory(kiosks=0)
    a, b, c = fleet.instances
    device_id, token, key = a.enrol_device()
    total = rounds(3, 30)
    sid = new_submission_id()
    reply = httpx.post(f"{a.url}{UPLOADS}", timeout=30, headers=tus_headers(token, **{
        "Upload-Length": str(total * CHUNK),
        "Upload-Metadata": "submission_id " + base64.b64encode(sid.encode()).decode()
                           + ",part " + base64.b64encode(b"a1.age").decode()}))
    assert reply.status_code == 201, reply.text
    path = reply.headers["location"]
    stored = b""
    outcomes: Counter[str] = Counter()
    for n in range(total):
        # Two different bodies for the same range, each with its own right checksum:
        # interleaving would store a mix, which the final SHA-256 would catch.
        bodies = [rng.randbytes(CHUNK), rng.randbytes(CHUNK)]
        first, second = rng.sample([a, b, c], 2)
        barrier = threading.Barrier(2)
        answers: list[tuple[int, str, float] | None] = [None, None]

        def send(i: int, service: CentralService, offset: int = n * CHUNK,
                 barrier: threading.Barrier = barrier,
                 answers: list[tuple[int, str, float] | None] = answers,
                 bodies: list[bytes] = bodies) -> None:
            answers[i] = _slow_patch(service.port, path, token, offset, bodies[i], barrier)

        threads = [threading.Thread(target=send, args=(i, s))
                   for i, s in enumerate((first, second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert answers[0] is not None and answers[1] is not None, answers
        statuses = sorted(answer[0] for answer in answers)
        assert statuses in ([204, 409], [204, 423]), answers
        winner = next(i for i, answer in enumerate(answers) if answer and answer[0] == 204)
        loser = answers[1 - winner]
        assert loser is not None
        assert loser[1] == {423: "locked", 409: "offset_mismatch"}[loser[0]], answers
        outcomes[loser[1]] += 1
        if loser[0] == 423:  # refused while the other body was still arriving
            outcomes["refused mid-body"] += loser[2] < answers[winner][2]  # type: ignore[index]
        stored += bodies[winner]
        # A third instance sees the new offset: it lives in PostgreSQL.
        head = httpx.head(f"{fleet.instances[rng.randrange(3)].url}{path}", timeout=30,
                          headers=tus_headers(token))
        assert int(head.headers["upload-offset"]) == len(stored)
    # The stored bytes are exactly the winners': the service checks the SHA-256 the
    # index names against what it stored, then the vetter downloads them.
    manifest = rng.randbytes(300)
    posted = _hand_in(fleet.haproxy.url, token, key, device_id, sid, stored, manifest)
    assert posted.status_code == 201, posted.text
    got = httpx.get(f"{fleet.haproxy.url}/api/v1/submissions/{sid}/parts/a1.age",
                    timeout=30, headers={"Authorization": f"Bearer {fleet.vetter}"})
    assert got.status_code == 200 and got.content == stored
    print(f"[same chunk] seed {SEED}: {total} races, the second answered {dict(outcomes)};"
          f" stored bytes are exactly the winners'")
    assert outcomes["locked"] >= 1 and outcomes["refused mid-body"] >= 1, outcomes


# -- 4. PostgreSQL restarted mid-upload ------------------------------------------------------

def test_postgres_restart_mid_upload(fleet_factory: Callable[..., Fleet],
                                     postgres_cluster: PostgresCluster) -> None:
    rng = rng_for("postgres-restart")
    # A 16 Mbit/s uplink: a pass lasts a second or two, so the restart lands in one.
    fleet = fleet_factory(kiosks=3, link_bps=16_000_000)
    watch = OffsetWatch(fleet)
    total = rounds(2, 20)
    made = mid = 0
    first_pass: Counter[str] = Counter()
    for _ in range(total):
        made += fleet.add_submissions(2, rng)
        results: list[str] = []

        def one_pass(kiosk: Kiosk, results: list[str] = results) -> None:
            results.append(str(kiosk.sync().error))

        threads = [threading.Thread(target=one_pass, args=(k,), daemon=True)
                   for k in fleet.kiosks]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.1, 1.0))
        watch.read()
        mid += any(t.is_alive() for t in threads)
        postgres_cluster.restart()  # fast shutdown (sessions ended), then start
        for thread in threads:
            thread.join(120)
        first_pass.update(results)
        watch.read()
        # Each instance is still up, and the kiosks' next passes go through.
        assert all(s.running() for s in fleet.instances)
        sync_all(fleet)
        watch.read()
    assert check_fleet(fleet) == made
    # Each was answered 503 (HAProxy's log, checked above) by api/errors.py's storage
    # handler, which (unlike the catch-all) logs one line and no traceback.
    statuses = no_server_errors(fleet)
    raised = sum((traceback_errors(s.log_text()) for s in fleet.instances), Counter())
    print(f"[postgres restart] seed {SEED}: {total} restarts, {mid} mid-pass; first passes"
          f" said {dict(first_pass)}; statuses {dict(statuses)}; {made} submissions"
          f" acknowledged once and byte-identical; offsets never backwards; tracebacks"
          f" logged for 503s: {dict(raised)}")
    felt = sum(n for error, n in first_pass.items() if error != "None")
    assert mid >= 1 and felt >= 1, first_pass


# -- 5. what an instance's death or start does to the others' uploads ------------------------
#
# Deterministic: the interleaving is made in-process, with sync/central's own objects
# on the shared data directory (what `central serve` opens), between real requests to
# real instances. Each failed before the fix its docstring names.

def _create_upload(service: CentralService, token: str, submission_id: str, part: str,
                   length: int) -> str:
    metadata = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}"
                        for k, v in (("submission_id", submission_id), ("part", part)))
    reply = httpx.post(f"{service.url}{UPLOADS}", timeout=30, headers=tus_headers(
        token, **{"Upload-Length": str(length), "Upload-Metadata": metadata}))
    assert reply.status_code == 201, reply.text
    return str(reply.headers["location"])


def _hand_in(url: str, token: str, key: SigningKey, device_id: str, sid: str, part: bytes,
             manifest: bytes) -> httpx.Response:
    """Upload the manifest, then post the index naming ``a1.age`` (already uploaded)
    and it, as a kiosk ends a submission; the service's answer."""
    with httpx.Client(base_url=url, timeout=30) as client:
        tus_upload(client, token, sid, "manifest.json.age", manifest)
        signed = signed_index(key, device_id, sid, {"a1.age": part,
                                                    "manifest.json.age": manifest})
        return client.post("/api/v1/submissions", json=index_body(signed),
                           headers={"Authorization": f"Bearer {token}"})


def _patch(service: CentralService, token: str, path: str, offset: int,
           body: bytes) -> httpx.Response:
    return httpx.patch(f"{service.url}{path}", content=body, timeout=30, headers=tus_headers(
        token, **{"Content-Type": "application/offset+octet-stream",
                  "Upload-Offset": str(offset),
                  "Upload-Checksum": checksum_header("sha256",
                                                     hashlib.sha256(body).digest())}))


def test_an_upload_made_whole_by_a_dying_instance_is_finished_by_another(
        fleet_factory: Callable[..., Fleet]) -> None:
    """An instance killed after a PATCH's last bytes are recorded (offset = length) but
    before it hashed them and marked the upload finished: HEAD tells the kiosk the part
    is whole, so its POST must find it (api/submissions.py finishes such uploads, under
    their lock) instead of answering 422 and having the whole part sent again. Seen in
    test_kill_one_instance_at_random_moments."""
    fleet = fleet_factory(kiosks=0, count=2)
    a, b = fleet.instances
    device_id, token, key = a.enrol_device()
    sid = new_submission_id()
    data, manifest = os.urandom(2 * CHUNK), os.urandom(300)
    path = _create_upload(a, token, sid, "a1.age", len(data))
    upload_id = path.rsplit("/", 1)[1]
    assert _patch(a, token, path, 0, data[:CHUNK]).status_code == 204
    # Instance a takes the last chunk: the bytes and the offset are recorded (one
    # transaction on S3), then it dies before marking the upload finished.
    dying = Central(a.data_dir)
    try:
        append = dying.blobs.open_append(upload_id, CHUNK)
        append.write(data[CHUNK:])
        dying.meta.set_upload_offset(upload_id, append.commit())
    finally:
        dying.close()
    a.kill()
    head = httpx.head(f"{b.url}{path}", timeout=30, headers=tus_headers(token))
    assert head.headers["upload-offset"] == str(len(data))  # whole, says the service
    posted = _hand_in(b.url, token, key, device_id, sid, data, manifest)
    assert posted.status_code == 201, posted.text


def test_start_up_reconcile_while_another_instance_takes_a_chunk(
        fleet_factory: Callable[..., Fleet]) -> None:
    """An instance starting reads the uploads, then looks at each: another instance
    records a chunk in between. The blob is then longer than the offset first read;
    reconcile must not "truncate" it (on S3 that failed the start-up; on files it would
    cut acknowledged bytes). It failed so in test_kill_one_instance_at_random_moments
    before reconcile re-read each upload under its lock (ab8664c)."""
    fleet = fleet_factory(kiosks=0, count=2)
    a, b = fleet.instances
    device_id, token, key = a.enrol_device()
    sid = new_submission_id()
    data, manifest = os.urandom(3 * CHUNK), os.urandom(300)
    path = _create_upload(b, token, sid, "a1.age", len(data))
    assert _patch(b, token, path, 0, data[:CHUNK]).status_code == 204
    starting = Central(a.data_dir)  # what `central serve` opens, then reconciles
    try:
        stale = starting.meta.list_uploads()  # reconcile's first read...
        assert _patch(b, token, path, CHUNK, data[CHUNK:2 * CHUNK]).status_code == 204
        starting.meta.list_uploads = lambda: stale  # type: ignore[method-assign]
        reconcile(starting)  # ...and the rest of it, after b's chunk
    finally:
        starting.close()
    assert _patch(a, token, path, 2 * CHUNK, data[2 * CHUNK:]).status_code == 204
    posted = _hand_in(b.url, token, key, device_id, sid, data, manifest)
    assert posted.status_code == 201, posted.text


def test_start_up_reconcile_while_another_instance_creates_an_upload(
        fleet_factory: Callable[..., Fleet]) -> None:
    """An instance starts while another is between tus_create's two steps (the blob
    made, the row not yet): reconcile must not take the blob for a crash's orphan and
    delete it (the row would then name no blob: 500 on the first PATCH). tus_create
    holds the new upload's lock across both steps (ab8664c); done here as it does."""
    fleet = fleet_factory(kiosks=0, count=2)
    a, b = fleet.instances
    device_id, token, _ = a.enrol_device()
    upload_id, body = secrets.token_hex(16), os.urandom(CHUNK)
    creating, starting = Central(b.data_dir), Central(a.data_dir)
    try:
        assert creating.meta.try_lock_upload(upload_id)
        try:
            creating.blobs.create_upload(upload_id)  # tus_create on b: the blob first...
            counts = reconcile(starting)  # ...a starts meanwhile...
            now = time.time()
            creating.meta.create_upload(  # ...then b's row
                Upload(upload_id, device_id, new_submission_id(), "a1.age", len(body), 0,
                       now, now + 3600, None, None),
                audit=AuditEvent(device_id, "upload_created", upload_id))
        finally:
            creating.meta.unlock_upload(upload_id)
    finally:
        creating.close()
        starting.close()
    assert counts["uploads_busy"] == 1 and not counts["upload_files_removed"], counts
    reply = _patch(b, token, f"{UPLOADS}{upload_id}", 0, body)
    assert reply.status_code == 204, reply.text
