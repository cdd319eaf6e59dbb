"""Benchmark of the sync (issue 11): goodput, a slow link, a cut, many kiosks, idle CPU.

Run:  .venv/bin/python tests/bench/sync.py [--quick] [--json PATH] [--seed N]

Against one real ``central serve`` on loopback (with ``CENTRAL_BENCH_SINK=1``), in one
run, side by side:

1. **Goodput over loopback**: a kiosk's pass (``kiosk.sync_runner.sync_once``) of one
   sealed submission, against a plain single ``PUT /api/v1/_bench/sink`` of the same
   file (the body written once into an upload blob and made durable: the same write
   path as a PATCH, without hashes or offsets), rounds interleaved, best of each. The
   upload's goodput is the file's bytes over the time from the first tus create to
   the last PATCH's answer (the kiosk reading and hashing the file in between is in
   it): target >= 0.9x. The whole pass (heartbeat, catalog check, the signed index,
   the receipt verified, the store's durable state moves) is shown beside it.
2. **A 1 Mbit/s link**: the same pass through tests/harness/faultproxy.py throttled to
   1 Mbit/s each way; goodput (file bytes / pass time) as a fraction of the link.
   Target >= 0.9.
3. **Bytes sent again after a cut**: the proxy resets the connection at a random byte
   of the upload, then a second pass completes; what went on the wire beyond a clean
   pass (the proxy's byte counts; and the PATCH bodies the client counted) against the
   file size, in units of the chunk the cut hit (chunks grow on a fast link). Target
   <= one chunk.
4. **Many kiosks at once**: 50 simulated kiosks (``--quick``: 10) each upload 20
   submissions (``--quick``: 5) of 5 MB at once. Each kiosk is sync/client's
   ``Pusher`` (the same HTTP sequence as a kiosk pass: create, PATCH chunks, signed
   index, verified receipt) over an in-memory outbox, one thread per kiosk spread over
   a few processes; each enrolled with its own code. All must be acknowledged (and the
   vetting queue must list each once); throughput and per-submission latency (upload
   start -> verified receipt: p50, p95, max). Meanwhile the service's RSS is sampled
   from /proc/<pid>/status (VmRSS, peak).
5. **The kiosk worker idle**: the app's ``SyncWorker`` (kiosk/sync_worker.py) in a
   subprocess, enrolled, nothing to send, for 20 s: CPU time over wall time, at the
   default interval and at a 2 s interval. Target <= 1 % of a core.

The machine is shared (2 cores, other work may run): figures are of this run; the
table says which size ran.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kiosk.config import KioskConfig, SyncConfig  # noqa: E402
from kiosk.device import enrol_device  # noqa: E402
from kiosk.ids import new_submission_id  # noqa: E402
from kiosk.sync_runner import SyncResult, sync_once  # noqa: E402
from kiosk.vault.layout import MANIFEST_FILE, OUTBOX, make_dir_durably  # noqa: E402
from kiosk.vault.store import PartRecord, Store  # noqa: E402
from sync.envelope import EnvelopeWriter, X25519Identity  # noqa: E402
from tests.harness.central import CentralService  # noqa: E402
from tests.harness.faultproxy import Fault, FaultProxy  # noqa: E402

MIB = 1024 * 1024
MB = 1_000_000
LINK_BPS = 1_000_000
DEFAULT_CHUNK = SyncConfig().chunk_bytes


@dataclass(frozen=True)
class Size:
    name: str
    goodput_mib: int
    goodput_rounds: int
    link_mib: float
    cut_mib: int
    cuts: int
    kiosks: int
    submissions: int
    submission_bytes: int = 5 * MB
    idle_s: float = 20.0


FULL = Size("full", goodput_mib=64, goodput_rounds=5, link_mib=2.0, cut_mib=24, cuts=3,
            kiosks=50, submissions=20)
QUICK = Size("quick", goodput_mib=16, goodput_rounds=4, link_mib=1.0, cut_mib=12, cuts=2,
             kiosks=10, submissions=5)


# -- a kiosk of the real code (store, outbox, sync_once) ---------------------------------

class BenchKiosk:
    def __init__(self, root: Path, server_url: str, code: str, team: X25519Identity,
                 *, chunk_bytes: int = DEFAULT_CHUNK) -> None:
        self.data_dir = root / "data"
        self.team = team
        self.cfg = KioskConfig(data_dir=self.data_dir, server_url=server_url,
                               recipients=(str(team.recipient()),),
                               sync=replace(SyncConfig(), chunk_bytes=chunk_bytes))
        self.store = Store.in_data_dir(self.data_dir)
        enrol_device(self.data_dir, server_url=server_url, code=code)

    def seal(self, size: int, rng: random.Random) -> tuple[str, int]:
        """A sealed, submitted submission with one part of about ``size`` bytes."""
        sid = new_submission_id()
        now = time.time()
        self.store.open_submission(sid, now=now)
        folder = self.data_dir / OUTBOX / sid
        make_dir_durably(folder)
        writer = EnvelopeWriter(folder / "q1-1.age", [self.team.recipient()])
        left = size
        while left > 0:
            block = rng.randbytes(min(MIB, left))
            writer.write(block)
            left -= len(block)
        part = writer.close()
        self.store.add_part(PartRecord(
            submission_id=sid, name="q1-1", prompt_id="q1", duration_s=1.0,
            sample_rate=48_000, frames=48_000, overflows=0, size=part.size,
            sha256=part.sha256, opus_bytes=size, end_reason="stopped", silent=False,
            created_at=now))
        writer = EnvelopeWriter(folder / MANIFEST_FILE, [self.team.recipient()])
        writer.write(json.dumps({"submission_id": sid}).encode())
        manifest = writer.close()
        self.store.mark_submitted(sid, manifest_size=manifest.size,
                                  manifest_sha256=manifest.sha256, now=now)
        return sid, part.size + manifest.size

    def sync(self, transport: httpx.BaseTransport | None = None) -> SyncResult:
        return sync_once(self.cfg, self.store, transport=transport)

    def device(self) -> dict[str, Any]:
        return json.loads((self.data_dir / "device.json").read_text(encoding="utf-8"))


def _read_through(path: Path) -> None:
    with open(path, "rb") as fh:  # into the page cache, as for the sync's own reads
        while fh.read(8 * MIB):
            pass


def _part_path(kiosk: BenchKiosk, sid: str) -> Path:
    return kiosk.data_dir / OUTBOX / sid / "q1-1.age"


# -- 1. goodput over loopback against a plain PUT ------------------------------------------

class TimingTransport(httpx.HTTPTransport):
    """httpx's own transport, noting when each request started and its answer ended."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, str, float, float]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        response = super().handle_request(request)
        response.read()
        self.log.append((request.method, request.url.path, start, time.perf_counter()))
        return response

    def window(self, path_start: str) -> float:
        """Seconds from the start of the first request under ``path_start`` to the end
        of the last one: what happened between them (reading and hashing the file on
        the kiosk) is in it."""
        times = [(start, end) for _m, path, start, end in self.log
                 if path.startswith(path_start)]
        return max(end for _s, end in times) - min(start for start, _e in times)

    def span(self, method: str, path_start: str) -> float:
        """Seconds spent in the requests of this kind (their sum)."""
        return sum(end - start for m, path, start, end in self.log
                   if m == method and path.startswith(path_start))


def measure_goodput(central: CentralService, kiosk: BenchKiosk, size: Size,
                    rng: random.Random) -> dict[str, Any]:
    token = kiosk.device()["token"]
    sync_s: list[float] = []
    put_s: list[float] = []
    #: Per round: seconds in tus requests (create, PATCH), in POST /submissions, and
    #: outside any request (the file's SHA-256 checked before upload, chunk checksums,
    #: the store's fsynced state moves, the receipt checked).
    tus_s: list[float] = []
    upload_s: list[float] = []
    index_s: list[float] = []
    local_s: list[float] = []
    file_bytes = 0
    with httpx.Client(base_url=central.url, timeout=120,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        for _ in range(size.goodput_rounds):
            sid, file_bytes = kiosk.seal(size.goodput_mib * MIB, rng)
            part = _part_path(kiosk, sid)
            _read_through(part)
            timing = TimingTransport()
            start = time.perf_counter()
            result = kiosk.sync(transport=timing)
            sync_s.append(time.perf_counter() - start)
            assert result.error is None and result.acknowledged == 1, result
            tus_s.append(timing.span("POST", "/api/v1/uploads")
                         + timing.span("PATCH", "/api/v1/uploads"))
            upload_s.append(timing.window("/api/v1/uploads"))
            index_s.append(timing.span("POST", "/api/v1/submissions"))
            local_s.append(sync_s[-1] - sum(end - begin for *_, begin, end in timing.log))
            _read_through(part)
            start = time.perf_counter()
            with open(part, "rb") as body:
                reply = client.put("/api/v1/_bench/sink", content=body)
            put_s.append(time.perf_counter() - start)
            assert reply.status_code == 204, (reply.status_code, reply.text)
            put_bytes = part.stat().st_size
    sync_rate = file_bytes / min(sync_s)
    put_rate = put_bytes / min(put_s)
    tus_rate = file_bytes / min(tus_s)
    upload_rate = file_bytes / min(upload_s)
    return {"file_mib": file_bytes / MIB, "rounds": size.goodput_rounds,
            "chunk_bytes": kiosk.cfg.sync.chunk_bytes,
            "max_chunk_bytes": kiosk.cfg.sync.max_chunk_bytes, "sync_seconds": sync_s,
            "put_seconds": put_s, "tus_seconds": tus_s, "index_seconds": index_s,
            "local_seconds": local_s, "sync_mib_s": sync_rate / MIB,
            "put_mib_s": put_rate / MIB, "upload_seconds": upload_s,
            "upload_mib_s": upload_rate / MIB, "ratio": upload_rate / put_rate,
            "pass_ratio": sync_rate / put_rate,
            "tus_mib_s": tus_rate / MIB, "tus_ratio": tus_rate / put_rate}


# -- 2. a 1 Mbit/s link ----------------------------------------------------------------------

def measure_link(proxy: FaultProxy, kiosk: BenchKiosk, size: Size,
                 rng: random.Random) -> dict[str, Any]:
    proxy.set_rate(up_bps=LINK_BPS, down_bps=LINK_BPS)
    try:
        kiosk.sync()  # the heartbeat's connection is set up; nothing pending
        sid, file_bytes = kiosk.seal(int(size.link_mib * MIB), rng)
        _read_through(_part_path(kiosk, sid))
        proxy.reset_counts()
        start = time.perf_counter()
        result = kiosk.sync()
        elapsed = time.perf_counter() - start
        assert result.error is None and result.acknowledged == 1, result
        wire_up = proxy.bytes_up
    finally:
        proxy.set_rate(None, None)
    goodput_bps = file_bytes * 8 / elapsed
    return {"file_mib": file_bytes / MIB, "link_bps": LINK_BPS, "seconds": elapsed,
            "goodput_bps": goodput_bps, "fraction_of_link": goodput_bps / LINK_BPS,
            "wire_bytes_up": wire_up, "wire_bps_up": wire_up * 8 / elapsed,
            "chunk_bytes": kiosk.cfg.sync.chunk_bytes}


# -- 3. bytes sent again after a cut ------------------------------------------------------------

class PatchSizes(httpx.HTTPTransport):
    """httpx's own transport, noting each PATCH body's size before it is sent (the
    chunk in flight when a cut comes is the last one noted)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            self.sizes.append(int(request.headers["content-length"]))
        return super().handle_request(request)


def measure_cut(proxy: FaultProxy, kiosk: BenchKiosk, size: Size,
                rng: random.Random) -> dict[str, Any]:
    chunk = kiosk.cfg.sync.chunk_bytes
    kiosk.sync()
    # A clean pass of the same size first: what the requests cost besides the bodies.
    kiosk.seal(size.cut_mib * MIB, rng)
    proxy.reset_counts()
    clean = kiosk.sync()
    assert clean.error is None, clean
    clean_up = proxy.bytes_up
    runs = []
    for _ in range(size.cuts):
        _, file_bytes = kiosk.seal(size.cut_mib * MIB, rng)
        cut = rng.randint(int(file_bytes * 0.05), int(file_bytes * 0.95))
        proxy.reset_counts()
        proxy.arm(Fault("reset", after=cut))
        patches = PatchSizes()
        first = kiosk.sync(transport=patches)
        proxy.disarm()
        assert first.error is not None and proxy.fired, (first, cut)
        # Chunks grow on a fast link: the one the cut hit is the last one sent.
        in_flight = patches.sizes[-1]
        second = kiosk.sync()
        assert second.error is None and second.acknowledged == 1, second
        wire = proxy.bytes_up
        body = first.sent_bytes + second.sent_bytes
        resent = max(wire - clean_up, body - file_bytes)
        runs.append({"file_bytes": file_bytes, "cut_at": cut, "wire_bytes_up": wire,
                     "resent_wire_bytes": wire - clean_up,
                     "patch_body_bytes": body, "resent_body_bytes": body - file_bytes,
                     "chunk_in_flight": in_flight, "in_chunks": resent / in_flight,
                     "first_error": first.error})
    worst = max(max(r["resent_wire_bytes"], r["resent_body_bytes"]) for r in runs)
    return {"chunk_bytes": chunk, "clean_wire_bytes_up": clean_up, "runs": runs,
            "worst_resent_bytes": worst,
            "worst_in_chunks": max(r["in_chunks"] for r in runs)}


# -- 4. many kiosks at once ----------------------------------------------------------------------

@dataclass
class _Memory:
    """An in-memory outbox (sync.client.push.Outbox) that times each submission."""

    items: list[Any]
    urls: dict[tuple[str, str], str] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    acked: dict[str, float] = field(default_factory=dict)
    receipts: Counter[str] = field(default_factory=Counter)

    def pending(self) -> list[Any]:
        from sync.client.push import Pending

        return [Pending(i.submission_id, self.states.get(i.submission_id, "sealed"), i.files)
                for i in self.items
                if self.states.get(i.submission_id, "sealed") in ("sealed", "uploading",
                                                                  "finalizing")]

    def upload_url(self, submission_id: str, name: str) -> str | None:
        return self.urls.get((submission_id, name))

    def remember_upload_url(self, submission_id: str, name: str, url: str) -> None:
        self.urls[(submission_id, name)] = url

    def forget_upload_url(self, submission_id: str, name: str) -> None:
        self.urls.pop((submission_id, name), None)

    def start_uploading(self, submission_id: str) -> None:
        self.states[submission_id] = "uploading"
        self.started.setdefault(submission_id, time.time())

    def uploaded(self, submission_id: str, index_sha256: str) -> None:
        self.states[submission_id] = "finalizing"

    def acknowledge(self, submission_id: str, *, receipt: str, signature: str) -> None:
        self.states[submission_id] = "acknowledged"
        self.acked[submission_id] = time.time()
        self.receipts[submission_id] += 1

    def reupload(self, submission_id: str, names: tuple[str, ...]) -> None:
        self.states[submission_id] = "uploading"
        for name in names:
            self.urls.pop((submission_id, name), None)

    def reject(self, submission_id: str, error: str) -> None:
        self.states[submission_id] = "rejected:" + error

    def attempt_failed(self, submission_id: str, error: str) -> None:
        pass


def _kiosk_worker(job: dict[str, Any]) -> dict[str, Any]:
    """One process: its share of the kiosks, one thread each, all starting at ``go``."""
    from sync.client.http import Timeouts, make_client
    from sync.client.push import Pending, Pusher
    from sync.client.tus import LocalFile
    from sync.signing import VerifyKey, parse_signing_key_file

    folder = Path(job["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / "part.age"
    manifest = folder / "manifest.json.age"
    part.write_bytes(os.urandom(job["submission_bytes"]))
    manifest.write_bytes(os.urandom(1500))
    files = tuple(LocalFile(name, path, path.stat().st_size,
                            hashlib.sha256(path.read_bytes()).hexdigest())
                  for name, path in (("q1-1.age", part), ("manifest.json.age", manifest)))
    timeouts = Timeouts(read_s=120.0, write_s=120.0, attempt_deadline_s=600.0)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def kiosk(device: dict[str, str]) -> None:
        items = [Pending(new_submission_id(), "sealed", files)
                 for _ in range(job["submissions"])]
        outbox = _Memory(items)
        errors: Counter[str] = Counter()
        passes = 0
        wait = max(0.0, job["go"] - time.time())
        time.sleep(wait)
        with make_client(device["url"], token=device["token"], timeouts=timeouts) as client:
            while outbox.pending() and passes < 60:
                passes += 1
                pushed = Pusher(client, device_id=device["device_id"],
                                signing_key=parse_signing_key_file(device["key"]),
                                service_key=VerifyKey.parse(device["service_key"]),
                                chunk_bytes=job["chunk_bytes"], timeouts=timeouts).run(outbox)
                if pushed.error is not None:
                    errors[pushed.error] += 1
                    time.sleep(min(5.0, pushed.retry_after or 0.5))
        with lock:
            results.append({
                "device_id": device["device_id"], "passes": passes,
                "errors": dict(errors), "ids": [i.submission_id for i in items],
                "acknowledged": len(outbox.acked),
                "receipts_max": max(outbox.receipts.values(), default=0),
                "latencies": [outbox.acked[s] - outbox.started[s] for s in outbox.acked],
                # Wall-clock times per submission, for central_scale.py's instance death.
                "started_at": dict(outbox.started), "acked_at": dict(outbox.acked),
                "first_start": min(outbox.started.values(), default=None),
                "last_ack": max(outbox.acked.values(), default=None),
                "rejected": sorted(v for v in outbox.states.values()
                                   if v.startswith("rejected"))})

    threads = [threading.Thread(target=kiosk, args=(d,)) for d in job["devices"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"kiosks": results, "file_bytes": sum(f.size for f in files)}


class RssSampler:
    """Samples a process's VmRSS every ``period`` seconds (kB in /proc/<pid>/status)."""

    def __init__(self, pid: int, period: float = 0.2) -> None:
        self.pid = pid
        self.period = period
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _field(self, name: str) -> int | None:
        try:
            with open(f"/proc/{self.pid}/status") as fh:
                for line in fh:
                    if line.startswith(name + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._field("VmRSS")
            if value is not None:
                self.samples.append(value)
            self._stop.wait(self.period)

    def __enter__(self) -> RssSampler:
        self.before = self._field("VmRSS")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.hwm = self._field("VmHWM")


def measure_many(central: CentralService, size: Size, scratch: Path, *,
                 url: str | None = None, pids: list[int] | None = None,
                 details: bool = False) -> dict[str, Any]:
    """Many kiosks at once against ``central`` (its CLI makes the enrolment codes), or
    against ``url`` (a load balancer in front of several instances: tests/bench/
    central_scale.py) with the RSS of each process in ``pids`` sampled. ``details``:
    each kiosk's results too (``kiosk_results``: submission ids, start and ack times)."""
    from sync.client.enrol import enrol
    from sync.signing import SigningKey, format_signing_key_file

    base = url or central.url

    def one(i: int) -> dict[str, str]:
        key = SigningKey.generate()
        answer = enrol(base, code=central.enrol_code(f"bench-{i}"),
                       public_key=key.verify_key)
        return {"device_id": answer.device_id, "token": answer.token,
                "service_key": str(answer.service_key), "url": base,
                "key": format_signing_key_file(key)}

    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        devices = list(pool.map(one, range(size.kiosks)))
    enrol_s = time.perf_counter() - start
    processes = min(4, size.kiosks)
    go = time.time() + 3.0 + 0.2 * processes  # every process ready before the start
    jobs = [{"folder": str(scratch / f"proc-{p}"), "devices": devices[p::processes],
             "submissions": size.submissions, "submission_bytes": size.submission_bytes,
             "chunk_bytes": DEFAULT_CHUNK, "go": go} for p in range(processes)]
    if pids is None:
        assert central.pid is not None
        pids = [central.pid]
    with contextlib.ExitStack() as stack:
        samplers = [stack.enter_context(RssSampler(pid)) for pid in pids]
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            outputs = pool.map(_kiosk_worker, jobs)
    kiosks = [k for out in outputs for k in out["kiosks"]]
    file_bytes = outputs[0]["file_bytes"]
    acknowledged = sum(k["acknowledged"] for k in kiosks)
    expected = size.kiosks * size.submissions
    latencies = sorted(x for k in kiosks for x in k["latencies"])
    first = min(k["first_start"] for k in kiosks if k["first_start"] is not None)
    last = max(k["last_ack"] for k in kiosks if k["last_ack"] is not None)
    wall = last - first
    errors: Counter[str] = Counter()
    for k in kiosks:
        errors.update(k["errors"])
    # The vetting queue lists each of them exactly once.
    vetter = central.vetter_token("bench-vetter")
    reply = httpx.get(f"{base}/api/v1/queue", timeout=120,
                      headers={"Authorization": f"Bearer {vetter}"})
    assert reply.status_code == 200, reply.text
    queued = Counter(entry["id"] for entry in reply.json()["submissions"])
    ours = [sid for k in kiosks for sid in k["ids"]]
    in_queue_once = sum(1 for sid in ours if queued[sid] == 1)
    figures: dict[str, Any] = {
        "kiosks": size.kiosks, "submissions_each": size.submissions,
        "submission_bytes": file_bytes, "processes": processes,
        "enrol_seconds": enrol_s, "expected": expected, "acknowledged": acknowledged,
        "in_queue_once": in_queue_once,
        "receipts_per_submission_max": max(k["receipts_max"] for k in kiosks),
        "rejected": sum(len(k["rejected"]) for k in kiosks),
        "wall_seconds": wall, "throughput_mb_s": acknowledged * file_bytes / MB / wall,
        "submissions_per_s": acknowledged / wall,
        "latency_p50_s": statistics.median(latencies),
        "latency_p95_s": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        "latency_max_s": latencies[-1],
        "passes_max": max(k["passes"] for k in kiosks), "pass_errors": dict(errors),
        # With several processes: the largest of each (one instance's figures).
        "service_rss_before_mib": max(rss.before or 0 for rss in samplers) / MIB,
        "service_rss_peak_mib": max(max(rss.samples, default=0) for rss in samplers) / MIB,
        "service_vmhwm_mib": max(rss.hwm or 0 for rss in samplers) / MIB,
        "rss_samples": sum(len(rss.samples) for rss in samplers),
    }
    if details:
        figures["kiosk_results"] = kiosks
    return figures


# -- 5. the worker idle --------------------------------------------------------------------------

_IDLE_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from kiosk.config import KioskConfig, SyncConfig
    from kiosk.sync_worker import SyncWorker
    from kiosk.vault.store import Store

    data_dir, interval, seconds = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    sync = SyncConfig() if interval == "default" else SyncConfig(interval_s=float(interval))
    cfg = KioskConfig(data_dir=data_dir, sync=sync)
    store = Store.in_data_dir(data_dir)
    worker = SyncWorker(cfg, store)
    worker.start()
    time.sleep(1.0)  # imports and the first pass's set-up are not "idle"
    cpu0, wall0, passes0 = time.process_time(), time.monotonic(), worker.passes
    time.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    passes = worker.passes - passes0
    result = worker.last_result
    worker.stop()
    print(json.dumps({"cpu_s": cpu, "wall_s": wall, "passes": passes,
                      "interval_s": worker.interval_s,
                      "last_error": getattr(result, "error", None)}))
    """
)


def measure_idle(kiosks: dict[str, BenchKiosk], seconds: float) -> dict[str, Any]:
    """Both workers at once, each on its own enrolled kiosk (one pass per data dir)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    children = {}
    for interval, kiosk in kiosks.items():
        kiosk.store.close()  # the child opens the same store
        children[interval] = subprocess.Popen(
            [sys.executable, "-c", _IDLE_CHILD, str(kiosk.data_dir), interval, str(seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    out: dict[str, Any] = {}
    for interval, child in children.items():
        stdout, stderr = child.communicate(timeout=seconds + 120)
        if child.returncode != 0:
            raise RuntimeError(f"idle worker ({interval}) failed: {stderr[-2000:]}")
        figures = json.loads(stdout.strip().splitlines()[-1])
        figures["cpu_percent_of_core"] = 100 * figures["cpu_s"] / figures["wall_s"]
        out[interval] = figures
    return out


# -- the run ----------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--quick", action="store_true",
                        help="a smaller run: 10 kiosks x 5 submissions, smaller files")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    rng = random.Random(seed)
    began = time.perf_counter()
    results: dict[str, Any] = {"size": size.name, "seed": seed, "cpus": os.cpu_count(),
                               "loadavg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="sync-bench-", dir="/var/tmp") as tmp:
        scratch = Path(tmp)
        team = X25519Identity.generate()
        central = CentralService(scratch / "central", env={"CENTRAL_BENCH_SINK": "1"})
        try:
            with FaultProxy("127.0.0.1", central.port) as proxy:
                direct = BenchKiosk(scratch / "direct", central.url, central.enrol_code(),
                                    team)
                slow = BenchKiosk(scratch / "proxied", proxy.url, central.enrol_code(), team)
                print(f"sync benchmark ({size.name} size), seed {seed}", flush=True)
                results["goodput"] = measure_goodput(central, direct, size, rng)
                print("  1. goodput done", flush=True)
                results["link"] = measure_link(proxy, slow, size, rng)
                print("  2. 1 Mbit/s link done", flush=True)
                results["cut"] = measure_cut(proxy, slow, size, rng)
                print("  3. cut done", flush=True)
                slow.store.close()
            results["many"] = measure_many(central, size, scratch / "many")
            print("  4. many kiosks done", flush=True)
            spare = BenchKiosk(scratch / "idle", central.url, central.enrol_code(), team)
            results["idle"] = measure_idle({"default": direct, "2": spare}, size.idle_s)
            print("  5. idle worker done", flush=True)
        finally:
            central.stop()
    results["loadavg_after"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - began
    verdicts = {
        "goodput >= 0.9x plain PUT": results["goodput"]["ratio"] >= 0.9,
        "1 Mbit/s link: goodput >= 0.9 of link": results["link"]["fraction_of_link"] >= 0.9,
        "resent after a cut <= 1 chunk": results["cut"]["worst_in_chunks"] <= 1.0,
        "many kiosks: all acknowledged, once in the queue":
            results["many"]["acknowledged"] == results["many"]["expected"]
            == results["many"]["in_queue_once"],
        "idle worker <= 1 % of a core":
            results["idle"]["default"]["cpu_percent_of_core"] <= 1.0,
    }
    results["verdicts"] = verdicts
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0 if all(verdicts.values()) else 1


def table(r: dict[str, Any]) -> str:
    g, link, cut, many, idle = r["goodput"], r["link"], r["cut"], r["many"], r["idle"]
    lines = [
        f"sync benchmark, {r['size']} size (seed {r['seed']}), {r['cpus']} CPUs,"
        f" load {r['loadavg_before'][0]:.1f} -> {r['loadavg_after'][0]:.1f},"
        f" {r['seconds']:.0f} s",
        f"{'measure':46} {'value':>14}  target",
        f"1. loopback, {g['file_mib']:.0f} MiB, chunks from {g['chunk_bytes'] // MIB} to"
        f" {g['max_chunk_bytes'] // MIB} MiB, best of {g['rounds']}",
        f"   {'upload (first create .. last PATCH answered)':43}"
        f" {g['upload_mib_s']:10.1f} MiB/s",
        f"   {'plain single PUT (_bench/sink)':43} {g['put_mib_s']:10.1f} MiB/s",
        f"   {'ratio, upload goodput':43} {g['ratio']:11.2f} x   >= 0.9",
        f"   {'kiosk pass (sync_once), whole':43} {g['sync_mib_s']:10.1f} MiB/s"
        f"  ({g['pass_ratio']:.2f} x)",
        f"   {'tus requests only (create + PATCHes)':43} {g['tus_mib_s']:10.1f} MiB/s"
        f"  ({g['tus_ratio']:.2f} x)",
        f"   {'pass time: tus / POST index / outside requests':43}"
        f" {min(g['tus_seconds']):5.2f} / {min(g['index_seconds']):.2f} /"
        f" {min(g['local_seconds']):.2f} s (best of each)",
        f"2. 1 Mbit/s link (proxy), {link['file_mib']:.1f} MiB",
        f"   {'goodput':43} {link['goodput_bps'] / 1e3:9.0f} kbit/s",
        f"   {'fraction of the link':43} {link['fraction_of_link']:13.3f}   >= 0.9",
        f"3. cut (reset) at a random byte, {len(cut['runs'])} runs, chunks from"
        f" {cut['chunk_bytes'] // MIB} MiB",
    ]
    for run in cut["runs"]:
        lines.append(f"   {'cut at ' + str(run['cut_at']) + ': resent on the wire':43}"
                     f" {run['resent_wire_bytes']:10d} B  (PATCH bodies:"
                     f" {run['resent_body_bytes']} B; chunk in flight"
                     f" {run['chunk_in_flight'] // MIB} MiB)")
    lines += [
        f"   {'worst, in chunks in flight':43} {cut['worst_in_chunks']:13.3f}   <= 1",
        f"4. {many['kiosks']} kiosks x {many['submissions_each']} submissions of"
        f" {many['submission_bytes'] / MB:.1f} MB at once ({many['processes']} processes)",
        f"   {'acknowledged / expected':43} {many['acknowledged']:6d} / {many['expected']:<6d}"
        f"  all",
        f"   {'listed once in the queue':43} {many['in_queue_once']:13d}",
        f"   {'throughput':43} {many['throughput_mb_s']:10.1f} MB/s"
        f"  ({many['submissions_per_s']:.1f} submissions/s, {many['wall_seconds']:.0f} s)",
        f"   {'latency per submission p50 / p95 / max':43}"
        f" {many['latency_p50_s']:5.1f} / {many['latency_p95_s']:.1f} /"
        f" {many['latency_max_s']:.1f} s",
        f"   {'failed passes (retried)':43} {sum(many['pass_errors'].values()):13d}"
        f"   {many['pass_errors'] or ''}",
        f"   {'service RSS before / peak (VmHWM)':43} {many['service_rss_before_mib']:5.0f} /"
        f" {many['service_rss_peak_mib']:.0f} ({many['service_vmhwm_mib']:.0f}) MiB",
        f"5. kiosk SyncWorker idle, nothing to send, {idle['default']['wall_s']:.0f} s",
        f"   {'CPU, default interval (' + str(idle['default']['interval_s']) + ' s)':43}"
        f" {idle['default']['cpu_percent_of_core']:11.2f} %   <= 1 %"
        f"  ({idle['default']['passes']} passes)",
        f"   {'CPU, interval 2 s':43} {idle['2']['cpu_percent_of_core']:11.2f} %"
        f"   ({idle['2']['passes']} passes)",
        "verdicts: " + ", ".join(f"{k}: {'ok' if v else 'MISSED'}"
                                 for k, v in r["verdicts"].items()),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
