"""Benchmark of the central service at scale (issue 14): the default store against
PostgreSQL + S3, one instance against three behind HAProxy, and one instance's death.

Run:  .venv/bin/python tests/bench/central_scale.py [--quick] [--json PATH] [--seed N]

Three configurations, each started fresh, one after the other in one run, on one
private PostgreSQL 15 cluster (tests/harness/postgres.py, fsync on; a new database for
each) and a moto S3 server per configuration (tests/harness/s3.py ``start_moto`` in a
child process, so that its in-memory objects go away with it and its Python does not
share this process's GIL):

1. **default**: SQLite + files in one data directory, one ``central serve``;
2. **pg+s3**: one ``central serve`` with PostgreSQL + S3 (central.conf in its data dir);
3. **3 x pg+s3**: three instances on one shared data dir, the same database and bucket,
   behind HAProxy (tests/harness/haproxy.py, the shipped deploy/central/haproxy.cfg:
   round robin, no stickiness).

Measured, side by side:

A. **Many kiosks at once** on each: tests/bench/sync.py's ``measure_many`` (50 kiosks x
   20 submissions of 5 MB, ``--quick``: 5 x 3; the kiosks' own Pusher, 4 MiB chunks):
   throughput, latency per submission (p50, p95), as ratios to the default.
B. **The cost of a chunk**: one upload of the same bytes PATCHed as fixed 1 MiB and as
   8 MiB chunks (with the kiosk's SHA-256 checksum header), straight to config 1's and
   config 2's service, rounds interleaved: time per PATCH (median), pg+s3 over default.
   1 MiB chunks sit below S3's 5 MiB minimum part: they go to the tail in PostgreSQL
   until 8 MiB make a part; 8 MiB chunks are one part each.
C. **One instance's death** (config 3, after A): kiosks upload through HAProxy; once
   they are well under way, kill -9 one instance at a random moment. From the kill:
   until every upload in flight has made progress again (its offset moved past where
   it was, or it was finished, or the kiosk began that part again in a new upload that
   moved: read from PostgreSQL every 50 ms), and until every submission in flight is
   acknowledged. The same two figures from an instant without a kill, just before, are
   the control: an upload's next chunk takes time even when nothing dies. Also:
   HAProxy's health-check detection (the kill until it logs the server DOWN), the
   answers refused after the kill, and uploads the kill left at offset = length but
   unfinished. The instance is started again between rounds (full size: 3 rounds).
   Offsets are checked never to go backwards.

The machine is shared (2 cores, other work may run) and moto is an in-memory Python S3
on it: figures are of this run, not of a production S3; the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.bench.sync import FULL as SYNC_FULL  # noqa: E402
from tests.bench.sync import measure_many  # noqa: E402
from tests.harness.central import CentralService, new_submission_id, tus_headers  # noqa: E402
from tests.harness.postgres import PostgresCluster  # noqa: E402

MIB = 1024 * 1024
MB = 1_000_000
CHUNK_SIZES = (1 * MIB, 8 * MIB)
#: Bytes of an S3 object moto keeps in memory (beyond: in a temporary file).
MOTO_BUFFER = 1 * MIB
#: Seconds between two looks at the offsets in PostgreSQL during an instance's death.
POLL_S = 0.05


@dataclass(frozen=True)
class Scale:
    name: str
    kiosks: int
    submissions: int
    #: Bytes of one upload in part B (a multiple of every chunk size) and its rounds.
    chunk_total_mib: int
    chunk_rounds: int
    #: Part C: kiosks x submissions per round, rounds (one kill each).
    death_kiosks: int
    death_submissions: int
    kills: int


FULL = Scale("full", kiosks=50, submissions=20, chunk_total_mib=32, chunk_rounds=3,
             death_kiosks=20, death_submissions=6, kills=3)
QUICK = Scale("quick", kiosks=5, submissions=3, chunk_total_mib=16, chunk_rounds=1,
              death_kiosks=6, death_submissions=3, kills=1)


# -- the stores: one PostgreSQL cluster, a moto server per configuration ------------------

_MOTO_CHILD = textwrap.dedent(
    """
    import json, sys, uuid
    from tests.harness.s3 import start_moto

    endpoint = start_moto()
    bucket = "bench-" + uuid.uuid4().hex[:20]
    endpoint.admin_client().create_bucket(Bucket=bucket)
    print(json.dumps({"CENTRAL_S3_ENDPOINT": endpoint.endpoint_url,
                      "CENTRAL_S3_BUCKET": bucket,
                      "AWS_ACCESS_KEY_ID": endpoint.access_key_id,
                      "AWS_SECRET_ACCESS_KEY": endpoint.secret_access_key,
                      "AWS_DEFAULT_REGION": endpoint.region}), flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    endpoint.server.stop()
    """
)


class MotoProcess:
    """moto's server (tests/harness/s3.py ``start_moto``) in a child process, with one
    fresh bucket: ``conf`` holds its central.conf lines."""

    def __init__(self, log_path: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"]
                                         if env.get("PYTHONPATH") else "")
        # moto keeps an object in memory up to this size, in a temporary file beyond
        # (its own setting; default 5 MiB - 1 KiB): 1 MiB, so that the full size's
        # 2 x 5 GB (each upload's object and its part's copy) do not fill this shared
        # machine's memory. The files stay in the page cache while memory allows.
        env["MOTO_S3_DEFAULT_KEY_BUFFER_SIZE"] = str(MOTO_BUFFER)
        # stderr: werkzeug's line per request, kept out of the table.
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", _MOTO_CHILD],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, text=True, cwd=REPO, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"moto did not start (exit {self.proc.returncode})")
        self.conf: dict[str, str] = json.loads(line)

    def peak_rss_mib(self) -> float:
        """VmHWM of the moto process: the objects it holds in memory, at most."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def write_conf(data_dir: Path, database_url: str, s3: dict[str, str]) -> None:
    """The data directory's central.conf, as an administrator would write it (and as
    tests/harness/central.py does under --central-store=postgres+s3)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lines = {"CENTRAL_DATABASE_URL": database_url, **s3}
    (data_dir / "central.conf").write_text(
        "".join(f"{key}={value}\n" for key, value in lines.items()), encoding="utf-8")


# -- A. many kiosks at once -------------------------------------------------------------------

def sync_size(kiosks: int, submissions: int) -> Any:
    """tests/bench/sync.py's Size for ``measure_many`` (5 MB submissions)."""
    return replace(SYNC_FULL, kiosks=kiosks, submissions=submissions)


def summary(many: dict[str, Any]) -> dict[str, Any]:
    """measure_many's figures without the per-kiosk lists."""
    return {k: v for k, v in many.items() if k != "kiosk_results"}


# -- B. the cost of a chunk --------------------------------------------------------------------

def patch_times(client: httpx.Client, token: str, data: bytes, chunk: int) -> list[float]:
    """One upload of ``data`` in fixed ``chunk``-byte PATCHes; seconds of each PATCH."""
    import hashlib

    from sync.wire import checksum_header, encode_metadata

    reply = client.post("/api/v1/uploads/", headers=tus_headers(
        token, **{"Upload-Length": str(len(data)), "Upload-Metadata": encode_metadata(
            {"submission_id": new_submission_id(), "part": "q1-1.age"})}))
    assert reply.status_code == 201, (reply.status_code, reply.text)
    location = reply.headers["location"]
    times = []
    for offset in range(0, len(data), chunk):
        body = data[offset:offset + chunk]
        headers = tus_headers(token, **{
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            # As the kiosk sends it: the service checks it before accepting the bytes.
            "Upload-Checksum": checksum_header("sha256", hashlib.sha256(body).digest())})
        start = time.perf_counter()
        reply = client.patch(location, content=body, headers=headers)
        times.append(time.perf_counter() - start)
        assert reply.status_code == 204, (reply.status_code, reply.text)
        assert int(reply.headers["upload-offset"]) == offset + len(body)
    return times


def measure_chunks(services: dict[str, CentralService], scale: Scale) -> dict[str, Any]:
    """Rounds interleaved between the services (their order alternating), so that a
    change in the machine's load falls on both alike."""
    data = os.urandom(scale.chunk_total_mib * MIB)
    clients = {}
    for name, service in services.items():
        _device, token, _key = service.enrol_device("bench-chunks")
        clients[name] = (httpx.Client(base_url=service.url, timeout=300), token)
    times: dict[str, dict[int, list[float]]] = {n: {c: [] for c in CHUNK_SIZES}
                                                for n in services}
    try:
        names = list(services)
        for round_ in range(scale.chunk_rounds):
            for chunk in CHUNK_SIZES:
                for name in (names if round_ % 2 == 0 else names[::-1]):
                    client, token = clients[name]
                    times[name][chunk] += patch_times(client, token, data, chunk)
    finally:
        for client, _token in clients.values():
            client.close()
    out: dict[str, Any] = {"upload_mib": scale.chunk_total_mib, "rounds": scale.chunk_rounds}
    for chunk in CHUNK_SIZES:
        row: dict[str, Any] = {}
        for name in services:
            ts = sorted(times[name][chunk])
            row[name] = {"patches": len(ts), "median_s": statistics.median(ts),
                         "mean_s": statistics.fmean(ts), "max_s": ts[-1],
                         "mib_s": len(ts) * chunk / MIB / sum(ts), "seconds": ts}
        base, other = row["default"], row["pg+s3"]
        row["ratio_median"] = other["median_s"] / base["median_s"]
        row["ratio_mean"] = other["mean_s"] / base["mean_s"]
        out[f"{chunk // MIB}mib"] = row
    return out


# -- C. one instance's death ----------------------------------------------------------------

class LogWatch:
    """Notes when a line holding ``needle`` first appears in a growing log file (read
    every 20 ms): HAProxy logs a server's state changes ("... is DOWN") on its stdout,
    the file tests/harness/haproxy.py sends it to. No timestamps in its raw lines, so
    the time is when this thread saw the line (at most 20 ms late)."""

    def __init__(self, path: Path, needle: str, timeout: float = 120.0) -> None:
        self.path = path
        self.needle = needle
        self.timeout = timeout
        self.start = path.stat().st_size if path.exists() else 0
        self.seen_at: float | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with open(self.path, "rb") as fh:
                fh.seek(self.start)
                if self.needle.encode() in fh.read():
                    self.seen_at = time.time()
                    return
            time.sleep(0.02)

    def wait(self) -> float | None:
        self._thread.join()
        return self.seen_at


@dataclass(frozen=True)
class _Row:
    offset: int
    length: int
    finished: bool
    #: (device, submission, part): a new upload of the same part replaces this one.
    key: tuple[str, str, str]
    created_at: float


class OffsetWatch:
    """Looks at this round's uploads in PostgreSQL (every POLL_S while waiting): whether
    each one in flight at an instant made progress again, and that no offset ever goes
    backwards.

    In flight: not finished (``finished_at`` NULL), the offset possibly at the length
    already (the last chunk recorded, its SHA-256 not yet). Progress: the offset moved
    past where it was, or the upload was finished, or (the kiosk gave it up and began
    the part again) a newer upload of the same part moved or finished."""

    def __init__(self, database_url: str, since: float) -> None:
        import psycopg

        self.conn = psycopg.connect(database_url, autocommit=True)
        self.since = since
        self.last: dict[str, int] = {}
        self.backwards = 0

    def look(self) -> dict[str, _Row]:
        """This round's uploads, each offset checked against the last look (below the
        last one seen counts as going backwards)."""
        rows = self.conn.execute(
            'SELECT id, "offset", length, finished_at IS NOT NULL, device_id,'
            ' submission_id, part, created_at FROM uploads WHERE created_at >= %s',
            (self.since,)).fetchall()
        now = {r[0]: _Row(int(r[1]), int(r[2]), bool(r[3]), (r[4], r[5], r[6]), float(r[7]))
               for r in rows}
        for upload_id, row in now.items():
            if row.offset < self.last.get(upload_id, 0):
                self.backwards += 1
            self.last[upload_id] = row.offset
        return now

    def in_flight(self) -> dict[str, _Row]:
        return {u: row for u, row in self.look().items() if not row.finished}

    def until_moved(self, snapshot: dict[str, _Row], at: float,
                    timeout: float = 300.0) -> dict[str, Any]:
        """Seconds from ``at`` until each upload in ``snapshot`` made progress."""
        moved: dict[str, float] = {}
        replaced = 0
        deadline = time.monotonic() + timeout
        while len(moved) < len(snapshot) and time.monotonic() < deadline:
            now = self.look()
            seen = time.time()
            for upload_id, then in snapshot.items():
                if upload_id in moved:
                    continue
                row = now.get(upload_id)  # None: deleted (a tus DELETE)
                if row is not None and (row.offset > then.offset or row.finished):
                    moved[upload_id] = seen - at
                elif any(other.key == then.key and other.created_at > then.created_at
                         and (other.offset > 0 or other.finished)
                         for other in now.values()):
                    moved[upload_id] = seen - at
                    replaced += 1
            time.sleep(POLL_S)
        waits = sorted(moved.values())
        return {"uploads": len(snapshot), "moved": len(moved), "by_a_new_upload": replaced,
                "all_moved_s": waits[-1] if len(moved) == len(snapshot) and waits else None,
                "median_s": statistics.median(waits) if waits else None}

    def close(self) -> None:
        self.conn.close()


def _route(path: str) -> str:
    """A request path without the upload's id."""
    return "/api/v1/uploads/ID" if path.startswith("/api/v1/uploads/") else path


def acked_after(kiosks: list[dict[str, Any]], at: float) -> dict[str, Any]:
    """Of the submissions in flight at ``at`` (started, not yet acknowledged): how
    many, and the seconds from ``at`` until the last of them was acknowledged."""
    started: dict[str, float] = {}
    acked: dict[str, float] = {}
    for k in kiosks:
        started.update(k["started_at"])
        acked.update(k["acked_at"])
    flying = [sid for sid, t in started.items() if t <= at and acked.get(sid, at + 1) > at]
    waits = [acked[sid] - at for sid in flying if sid in acked]
    return {"submissions": len(flying), "acknowledged": len(waits),
            "all_acked_s": max(waits) if waits and len(waits) == len(flying) else None}


def death_round(instances: list[CentralService], haproxy: Any, database_url: str,
                scale: Scale, scratch: Path, rng: random.Random) -> dict[str, Any]:
    """Kiosks through HAProxy; a control instant, then kill -9 of one instance."""
    victim = rng.randrange(len(instances))
    server = f"central{victim + 1}"  # tests/harness/haproxy.py's server names
    since = time.time()
    watch = OffsetWatch(database_url, since)
    expected = scale.death_kiosks * scale.death_submissions
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["many"] = measure_many(
                instances[0], sync_size(scale.death_kiosks, scale.death_submissions),
                scratch, url=haproxy.url, pids=[s.pid for s in instances if s.pid],
                details=True)
        except BaseException as exc:  # noqa: BLE001  (reported below, with the round)
            box["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    try:
        # Well under way: a quarter acknowledged (counted in PostgreSQL), plus a random
        # moment, so the kill falls anywhere in a chunk.
        deadline = time.monotonic() + 600
        while worker.is_alive() and time.monotonic() < deadline:
            done = watch.conn.execute(
                "SELECT count(DISTINCT r.submission_id) FROM receipts r JOIN uploads u"
                " ON u.submission_id = r.submission_id WHERE u.created_at >= %s",
                (since,)).fetchone()
            if done is not None and done[0] >= max(1, expected // 4):
                break
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 1.0))
        control_at = time.time()
        control = watch.until_moved(watch.in_flight(), control_at)
        down = LogWatch(haproxy.log_path, f"{server} is DOWN")
        logged_before = len(haproxy.requests())
        snapshot = watch.in_flight()
        for _ in range(100):  # a moment with an upload in flight, if there is one soon
            if snapshot:
                break
            time.sleep(POLL_S)
            snapshot = watch.in_flight()
        killed_at = time.time()
        instances[victim].kill()
        after_kill = watch.until_moved(snapshot, killed_at)
        down_at = down.wait()
    finally:
        worker.join()
        watch.close()
    if "error" in box:
        raise RuntimeError(f"kiosks failed during the death round: {box['error']!r}")
    many = box["many"]
    kiosks = many.pop("kiosk_results")
    # Answers other than 2xx after the kill, as HAProxy logged them. A request cut on
    # the dead instance is often missing here (the kiosk sees the connection close,
    # HAProxy logs no line): the kiosks' failed passes count those.
    refused = Counter(f"{method} {_route(path)} {status}"
                      for _who, method, path, status in haproxy.requests()[logged_before:]
                      if not 200 <= status < 300)
    # An upload whose last chunk the dead instance stored and recorded as its offset
    # but did not finish (finish_upload: SHA-256, finished_at) stays at offset = length
    # unfinished: the kiosk's HEAD says "all there", the index is refused (422
    # parts_not_uploaded) and the kiosk sends the part again in a new upload.
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute('SELECT count(*) FROM uploads WHERE created_at >= %s AND'
                           ' "offset" = length AND finished_at IS NULL', (since,)).fetchone()
    stuck = int(row[0]) if row is not None else 0
    up = LogWatch(haproxy.log_path, f"{server} is UP")
    restarted_at = time.time()
    instances[victim].restart()
    up_at = up.wait()
    return {
        "victim": server, "killed_at": killed_at, "control_at": control_at,
        "control_moved": control, "kill_moved": after_kill,
        "control_acked": acked_after(kiosks, control_at),
        "kill_acked": acked_after(kiosks, killed_at),
        "haproxy_down_s": None if down_at is None else down_at - killed_at,
        "haproxy_up_after_restart_s": None if up_at is None else up_at - restarted_at,
        "refused_after_kill": dict(refused), "uploads_complete_unfinished": stuck,
        "offsets_backwards": watch.backwards, "many": many,
    }


# -- the run ----------------------------------------------------------------------------------

def run_configs(scale: Scale, scratch: Path, rng: random.Random,
                results: dict[str, Any]) -> None:
    from tests.harness.haproxy import HAProxy, start_instances

    began = time.perf_counter()
    stages: dict[str, float] = {}
    results["stage_seconds"] = stages

    def stage(name: str) -> None:
        stages[name] = time.perf_counter() - began
        print(f"  {name} ({stages[name]:.0f} s)", flush=True)

    cluster = PostgresCluster()
    cluster.start()
    results["postgres_startup_s"] = cluster.startup_seconds
    stage("PostgreSQL started")
    size = sync_size(scale.kiosks, scale.submissions)
    many: dict[str, Any] = {}
    running: list[Any] = []
    try:
        # 1. the default: SQLite + files.
        default = CentralService(scratch / "default")
        running.append(default)
        many["default"] = summary(measure_many(default, size, scratch / "many-default"))
        stage("1. default: many kiosks done")
        # 2. one instance on PostgreSQL + S3.
        moto = MotoProcess(scratch / "moto-pg-s3.log")
        running.append(moto)
        write_conf(scratch / "pg-s3", cluster.new_database(), moto.conf)
        single = CentralService(scratch / "pg-s3")
        running.append(single)
        many["pg+s3"] = summary(measure_many(single, size, scratch / "many-pg-s3"))
        stage("2. pg+s3: many kiosks done")
        results["chunks"] = measure_chunks({"default": default, "pg+s3": single}, scale)
        stage("B. chunk cost done")
        results["moto_peak_rss_mib"] = {"pg+s3": moto.peak_rss_mib()}
        for thing in (single, moto, default):
            thing.stop()
        running.clear()
        # The full size leaves 5 GB of files behind in the default's data dir.
        shutil.rmtree(scratch / "default", ignore_errors=True)
        # 3. three instances on one PostgreSQL + S3, behind HAProxy.
        moto = MotoProcess(scratch / "moto-scale.log")
        running.append(moto)
        database_url = cluster.new_database()
        write_conf(scratch / "scale", database_url, moto.conf)
        instances = start_instances(scratch / "scale", count=3)
        running.extend(instances)
        haproxy = HAProxy([f"127.0.0.1:{s.port}" for s in instances],
                          workdir=scratch / "haproxy")
        haproxy.start()
        running.append(haproxy)
        many["3 x pg+s3"] = summary(measure_many(
            instances[0], size, scratch / "many-scale", url=haproxy.url,
            pids=[s.pid for s in instances if s.pid]))
        patches = haproxy.per_server("PATCH", "/api/v1/uploads/")
        many["3 x pg+s3"]["patches_per_instance"] = dict(sorted(patches.items()))
        stage("3. 3 x pg+s3 behind HAProxy: many kiosks done")
        rounds = []
        for n in range(scale.kills):
            rounds.append(death_round(instances, haproxy, database_url, scale,
                                      scratch / f"death-{n}", rng))
            stage(f"C. instance death, round {n + 1} done")
        results["death"] = rounds
        results["moto_peak_rss_mib"]["3 x pg+s3"] = moto.peak_rss_mib()
    finally:
        for thing in reversed(running):
            thing.stop()
        cluster.destroy()
    base = many["default"]
    for figures in many.values():
        figures["throughput_ratio"] = figures["throughput_mb_s"] / base["throughput_mb_s"]
        figures["p95_ratio"] = figures["latency_p95_s"] / base["latency_p95_s"]
    results["many"] = many


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--quick", action="store_true",
                        help="a smaller run (a smoke test): 5 kiosks x 3 submissions")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None,
                        help="work in this (new) directory and keep it: the services',"
                             " HAProxy's and moto's logs, to look at afterwards")
    args = parser.parse_args()
    scale = QUICK if args.quick else FULL
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    rng = random.Random(seed)
    began = time.perf_counter()
    results: dict[str, Any] = {"size": scale.name, "seed": seed, "cpus": os.cpu_count(),
                               "loadavg_before": os.getloadavg()}
    print(f"central scale benchmark ({scale.name} size), seed {seed}", flush=True)
    if args.keep is not None:
        args.keep.mkdir(parents=True)
        run_configs(scale, args.keep, rng, results)
    else:
        with tempfile.TemporaryDirectory(prefix="central-scale-", dir="/var/tmp") as tmp:
            run_configs(scale, Path(tmp), rng, results)
    results["loadavg_after"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - began
    many, rounds = results["many"], results["death"]
    results["verdicts"] = {
        "every submission acknowledged, once in the queue, one receipt": all(
            m["acknowledged"] == m["expected"] == m["in_queue_once"]
            and m["receipts_per_submission_max"] == 1 and not m["rejected"]
            for m in [*many.values(), *(r["many"] for r in rounds)]),
        "instance death: every upload in flight moved again": all(
            r["kill_moved"]["all_moved_s"] is not None for r in rounds),
        "offsets never went backwards": all(r["offsets_backwards"] == 0 for r in rounds),
    }
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0 if all(results["verdicts"].values()) else 1


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(r: dict[str, Any]) -> str:
    many, chunks, rounds = r["many"], r["chunks"], r["death"]
    names = list(many)
    first = many[names[0]]
    col = "".join(f"{n:>16}" for n in names)
    lines = [
        f"central at scale, {r['size']} size (seed {r['seed']}), {r['cpus']} CPUs,"
        f" load {r['loadavg_before'][0]:.1f} -> {r['loadavg_after'][0]:.1f},"
        f" {r['seconds']:.0f} s",
        f"A. {first['kiosks']} kiosks x {first['submissions_each']} submissions of"
        f" {first['submission_bytes'] / MB:.1f} MB at once {'':8}{col}",
        f"   {'acknowledged / expected':48}"
        + "".join(f"{str(m['acknowledged']) + ' / ' + str(m['expected']):>16}"
                  for m in many.values()),
        f"   {'listed once in the queue':48}"
        + "".join(f"{m['in_queue_once']:>16}" for m in many.values()),
        f"   {'throughput, MB/s':48}"
        + "".join(f"{m['throughput_mb_s']:>16.1f}" for m in many.values()),
        f"   {'  ratio to the default':48}"
        + "".join(f"{m['throughput_ratio']:>15.2f}x" for m in many.values()),
        f"   {'latency per submission p50, s':48}"
        + "".join(f"{m['latency_p50_s']:>16.1f}" for m in many.values()),
        f"   {'latency per submission p95, s':48}"
        + "".join(f"{m['latency_p95_s']:>16.1f}" for m in many.values()),
        f"   {'  ratio to the default':48}"
        + "".join(f"{m['p95_ratio']:>15.2f}x" for m in many.values()),
        f"   {'failed passes (retried)':48}"
        + "".join(f"{sum(m['pass_errors'].values()):>16}" for m in many.values()),
        f"   {'service RSS peak, MiB (largest instance)':48}"
        + "".join(f"{m['service_rss_peak_mib']:>16.0f}" for m in many.values()),
    ]
    spread = many[names[-1]].get("patches_per_instance")
    if spread:
        lines.append(f"   PATCHes per instance behind HAProxy: {spread}")
    lines.append(f"B. cost of a chunk, one {chunks['upload_mib']} MiB upload per chunk size"
                 f" and round, {chunks['rounds']} round(s), per PATCH (median / mean, ms)")
    lines.append(f"   {'':48}{'default':>16}{'pg+s3':>16}{'ratio':>12}")
    for chunk in CHUNK_SIZES:
        row = chunks[f"{chunk // MIB}mib"]
        cells = "".join(f"{row[n]['median_s'] * 1e3:>8.0f} /{row[n]['mean_s'] * 1e3:>6.0f}"
                        for n in ("default", "pg+s3"))
        label = f"{chunk // MIB} MiB chunks ({row['default']['patches']} PATCHes each)"
        lines.append(f"   {label:48}{cells}{row['ratio_median']:>7.2f}x /{row['ratio_mean']:.2f}x")
    lines.append(f"C. kill -9 of one of 3 instances while {rounds[0]['many']['kiosks']} kiosks"
                 f" x {rounds[0]['many']['submissions_each']} submissions upload through"
                 f" HAProxy, {len(rounds)} round(s); seconds from the kill (control: from"
                 f" an instant with no kill)")
    for n, d in enumerate(rounds, start=1):
        km, cm, ka, ca = d["kill_moved"], d["control_moved"], d["kill_acked"], d["control_acked"]
        lines += [
            f"   round {n}, {d['victim']} killed",
            f"     {'every upload in flight made progress again':46}"
            f" {_s(km['all_moved_s']):>6} s ({km['moved']}/{km['uploads']} uploads,"
            f" {km['by_a_new_upload']} by a new upload;"
            f" control {_s(cm['all_moved_s'])} s, {cm['uploads']} uploads)",
            f"     {'every submission in flight acknowledged':46}"
            f" {_s(ka['all_acked_s']):>6} s ({ka['acknowledged']}/{ka['submissions']};"
            f" control {_s(ca['all_acked_s'])} s)",
            f"     {'HAProxy marks it DOWN (health checks)':46}"
            f" {_s(d['haproxy_down_s']):>6} s (UP again"
            f" {_s(d['haproxy_up_after_restart_s'])} s after its restart)",
            f"     {'non-2xx answers after the kill (HAProxy log)':46}"
            f" {sum(d['refused_after_kill'].values()):>6}   {d['refused_after_kill'] or ''}",
            f"     {'uploads left at offset = length, unfinished':46}"
            f" {d['uploads_complete_unfinished']:>6}   (their part sent again)",
            f"     {'all acknowledged once / failed passes':46}"
            f" {d['many']['acknowledged']} / {d['many']['expected']},"
            f" {sum(d['many']['pass_errors'].values())} {d['many']['pass_errors'] or ''}",
        ]
    moto = r.get("moto_peak_rss_mib", {})
    lines += [
        "notes: S3 here is moto, an in-memory Python S3 server on this same 2-core machine"
        f" (peak RSS {', '.join(f'{k} {v:.0f} MiB' for k, v in moto.items())};",
        f"  objects over {MOTO_BUFFER // MIB} MiB in its temporary files): not a production"
        " S3's speed. PostgreSQL 15 is a private cluster on the same disk, fsync on;",
        "  HAProxy, the kiosks (4 processes) and the services share the 2 cores too.",
        "verdicts: " + ", ".join(f"{k}: {'ok' if v else 'MISSED'}"
                                 for k, v in r["verdicts"].items()),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
