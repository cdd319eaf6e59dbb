"""Sync under faults (issue 11, "Done when: Faults"): every submission ends acknowledged
exactly once and byte-identical, none is duplicated or lost, and no local copy is purged
without a verified receipt, whatever breaks in the middle of an upload.

The faults, each repeated with random cut points from one seeded generator (the seed
is printed; ``SYNC_FAULT_SEED=N`` replays a run):

1. the loopback proxy (tests/harness/faultproxy.py) resets, stalls, truncates, or
   answers 500/503 at a random byte of the client->server stream;
2. ``kiosk sync --once`` (a subprocess) is killed with SIGKILL at a random byte, then
   run again until nothing is pending;
3. the service is killed with SIGKILL at a random byte and started again;
4. the service is restarted (SIGTERM, start) in the middle of a pass;
5. the service's data directory is a small tmpfs that is nearly full; then space is
   freed and the sync completes.

The kiosk talks to the service through the proxy in every test (it enrolled through
it), so that the proxy's byte counts place each cut. Cut points are drawn over the
bytes a clean pass of the same submissions would send. Each test prints, and asserts,
how many runs it made and how many cut points landed in the middle of a pass.

Submissions are made as the kiosk makes them, without the GUI: session custody records
one short answer with the fake audio streams, a second, bulkier sealed part (random
bytes sealed with the envelope writer) is added so that each submission spans several
64 KiB tus chunks, then the manifest is sealed and the submission committed (which
enters it in the outbox).

The default run is a sample that takes a couple of minutes; ``SYNC_SOAK=1`` runs
hundreds of runs (``SYNC_SOAK_FACTOR`` scales it further).
"""

from __future__ import annotations

import hashlib
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiosk import config as config_mod
from kiosk.audio.recorder import Recorder
from kiosk.sync_runner import SyncResult, sync_once
from kiosk.vault.custody import SessionCustody
from kiosk.vault.outbox import receipt_holds, submission_files
from kiosk.vault.store import ACKNOWLEDGED, PENDING_STATES, PURGED, PartRecord, Store
from sync.envelope import EnvelopeWriter, X25519Identity, open_bytes
from sync.signing import VerifyKey
from sync.wire import Receipt
from tests.audio_fakes import FakeStreams, tone
from tests.audio_fakes import record as record_take
from tests.harness import central as central_harness
from tests.harness.central import CentralService, blob_files_only
from tests.harness.faultproxy import Fault, FaultProxy

REPO = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("SYNC_FAULT_SEED") or secrets.randbits(32))
SOAK = os.environ.get("SYNC_SOAK") == "1"
SOAK_FACTOR = float(os.environ.get("SYNC_SOAK_FACTOR", "1"))
CHUNK = 64 * 1024
#: Short client timeouts, so that a stall past them costs seconds, not minutes.
READ_TIMEOUT_S = 1.5


def runs(sample: int, soak: int, *, store_bound: bool = True) -> int:
    """How many fault runs: the sample, or the soak's count under SYNC_SOAK=1. Faults that
    do not reach the service's store (the proxy's, the kiosk's own death) run half the
    sample when CI runs this file again on PostgreSQL + S3 (--central-store): the default
    run has already taken the whole sample of them."""
    if SOAK:
        return max(1, int(soak * SOAK_FACTOR))
    if not store_bound and central_harness.DATABASE_FACTORY is not None:
        return max(1, sample // 2)
    return sample


def rng_for(test: str) -> random.Random:
    print(f"\n[{test}] seed {SEED} (replay: SYNC_FAULT_SEED={SEED})")
    return random.Random(f"{SEED}:{test}")


# -- the kiosk ----------------------------------------------------------------------------

class Kiosk:
    """A kiosk data directory, enrolled with ``kiosk enrol`` through ``server_url``."""

    def __init__(self, root: Path, server_url: str, code: str, team: X25519Identity) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.team = team
        root.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "kiosk.toml"
        self.config_path.write_text(
            f'data_dir = "{self.data_dir}"\n'
            f'server_url = "{server_url}"\n'
            f'recipients = ["{team.recipient()}"]\n'
            "[sync]\n"
            f"chunk_bytes = {CHUNK}\n"
            "connect_timeout_s = 2\n"
            f"read_timeout_s = {READ_TIMEOUT_S}\n"
            "attempt_deadline_s = 20\n"
            "retention_days = 7\n", encoding="utf-8")
        done = self.cli("enrol", "--server", server_url, "--code", code)
        assert done.returncode == 0, done.stderr
        self.cfg = config_mod.load(self.config_path)
        self.store = Store.in_data_dir(self.data_dir)
        self.service_key = VerifyKey.parse(_device_json(self.data_dir)["service_key"])

    def close(self) -> None:
        self.store.close()

    def cli_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "kiosk", "--config", str(self.config_path), *args]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cli_argv(*args), capture_output=True, text=True,
                              timeout=timeout, cwd=REPO, env=_env())

    def add_submissions(self, count: int, rng: random.Random) -> list[str]:
        """``count`` sealed, submitted submissions (several 64 KiB chunks each)."""
        made = []
        for _ in range(count):
            session = SessionCustody(data_dir=self.data_dir, store=self.store,
                                     recipients=[self.team.recipient()])
            _, take = record_take(session, Recorder(FakeStreams([tone(0.3)])), "q1")
            while take.meters().elapsed_s < 0.3:
                time.sleep(0.005)
            take.stop()
            _wait(lambda take=take: take.done, 10)
            bulk = rng.randint(2 * CHUNK, 5 * CHUNK) + rng.randint(0, CHUNK - 1)
            self._add_bulk_part(session, "q2-9", rng.randbytes(bulk))
            session.submit({"display_name": "Anonymous", "language": "en"})
            made.append(session.submission_id)
        return made

    def _add_bulk_part(self, session: SessionCustody, name: str, data: bytes) -> None:
        writer = EnvelopeWriter(session.directory / f"{name}.age", [self.team.recipient()])
        writer.write(data)
        sealed = writer.close()
        self.store.add_part(PartRecord(
            submission_id=session.submission_id, name=name, prompt_id="q2",
            duration_s=1.0, sample_rate=48_000, frames=48_000, overflows=0,
            size=sealed.size, sha256=sealed.sha256, opus_bytes=len(data),
            end_reason="stopped", silent=False, created_at=time.time()))

    def pending_bytes(self) -> int:
        return sum(f.size for row in self.store.outbox_rows(PENDING_STATES)
                   for f in submission_files(self.data_dir, self.store, row.submission_id))

    def sync(self, **kwargs: object) -> SyncResult:
        return sync_once(self.cfg, self.store, **kwargs)  # type: ignore[arg-type]

    def sync_until_done(self, *, passes: int = 12) -> list[SyncResult]:
        """Passes until nothing is pending (what the worker would do, minus the waits)."""
        results = []
        for _ in range(passes):
            result = self.sync()
            results.append(result)
            if result.pending == 0 and result.error is None:
                return results
            time.sleep(0.05)
        raise AssertionError(f"still pending after {passes} passes: "
                             f"{[(r.error, r.pending) for r in results]}; "
                             f"outbox {self.store.outbox_counts()}")


def _device_json(data_dir: Path) -> dict[str, str]:
    import json

    return json.loads((data_dir / "device.json").read_text(encoding="utf-8"))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    env.pop("KIOSK_CONFIG", None)
    return env


def _wait(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.005)


# -- the checks ---------------------------------------------------------------------------

@dataclass
class Ledger:
    """What the test knows: every submission made, and each receipt once seen."""

    made: list[str] = field(default_factory=list)
    receipts: dict[str, str] = field(default_factory=dict)
    downloaded: set[str] = field(default_factory=set)
    verified: set[tuple[str, str]] = field(default_factory=set)


def check_kiosk(kiosk: Kiosk, ledger: Ledger) -> Counter[str]:
    """At any moment: nothing purged without a verified receipt, nothing unacknowledged
    missing or changed on disk, a receipt never changes once given."""
    rows = {row.submission_id: row for row in kiosk.store.outbox_rows()}
    assert set(ledger.made) <= set(rows), "a submission left the outbox"
    states: Counter[str] = Counter()
    for sid in ledger.made:
        row = rows[sid]
        states[row.state] += 1
        if row.state in (ACKNOWLEDGED, PURGED):
            assert row.receipt and row.receipt_signature, f"{sid} {row.state} without receipt"
            if (sid, row.state) not in ledger.verified:  # once per state keeps a soak linear
                assert receipt_holds(kiosk.store, row, kiosk.service_key), \
                    f"{sid} {row.state} with a receipt that does not verify"
                ledger.verified.add((sid, row.state))
            first = ledger.receipts.setdefault(sid, row.receipt)
            assert first == row.receipt, f"{sid}: its receipt changed"
        if row.state == PURGED:
            continue
        for file in submission_files(kiosk.data_dir, kiosk.store, sid):
            assert file.path.is_file(), f"{sid}: {file.name} gone while {row.state}"
            if row.state == ACKNOWLEDGED:  # hashed when downloaded (keeps a soak linear)
                assert file.path.stat().st_size == file.size
                continue
            data = file.path.read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (file.size, file.sha256), \
                f"{sid}: {file.name} changed on disk"
    return states


def check_downloads(client: httpx.Client, kiosk: Kiosk, ledger: Ledger,
                    entry: dict[str, Any]) -> dict[str, bytes]:
    """One queue entry against the kiosk: its parts are the kiosk's sealed files and the
    receipt's, and each downloads (through the vetter's ``client``) byte-identical.
    The downloaded bytes, by part name."""
    sid = entry["id"]
    files = {f.name: f for f in submission_files(kiosk.data_dir, kiosk.store, sid)}
    receipt = Receipt.parse(ledger.receipts[sid].encode("utf-8"))
    listed = {(p["name"], p["size"], p["sha256"]) for p in entry["parts"]}
    assert listed == {(f.name, f.size, f.sha256) for f in files.values()}
    assert listed == {(p.name, p.size, p.sha256) for p in receipt.parts}
    downloaded = {}
    for name, file in files.items():
        got = client.get(f"/api/v1/submissions/{sid}/parts/{name}")
        assert got.status_code == 200, (sid, name, got.status_code)
        assert got.content == file.path.read_bytes(), f"{sid}/{name} differs"
        downloaded[name] = got.content
    return downloaded


def check_queue(kiosk: Kiosk, central: CentralService, vetter: str, ledger: Ledger, *,
                final: bool) -> None:
    """The vetting queue: each submission at most once; when ``final``, every one made is
    there exactly once, acknowledged on the kiosk, and downloads byte-identical."""
    auth = {"Authorization": f"Bearer {vetter}"}
    with httpx.Client(base_url=central.url, headers=auth, timeout=30) as client:
        reply = client.get("/api/v1/queue")
        assert reply.status_code == 200, reply.text
        queue = reply.json()["submissions"]
        ids = [entry["id"] for entry in queue]
        duplicated = [sid for sid, n in Counter(ids).items() if n > 1]
        assert not duplicated, f"duplicated in the queue: {duplicated}"
        assert set(ids) <= set(ledger.made), "the queue holds a submission nobody made"
        if not final:
            return
        assert sorted(ids) == sorted(ledger.made), "a submission is missing from the queue"
        states = check_kiosk(kiosk, ledger)
        assert set(states) <= {ACKNOWLEDGED, PURGED}, f"not all acknowledged: {states}"
        for entry in queue:
            sid = entry["id"]
            if sid in ledger.downloaded:  # listed, compared and downloaded already
                continue
            got = check_downloads(client, kiosk, ledger, entry)
            # The team opens the manifest the vetter got.
            assert sid.encode() in open_bytes(got["manifest.json.age"], [kiosk.team])
            ledger.downloaded.add(sid)


@dataclass
class Tally:
    """Runs and cut points, reported by each test."""

    name: str
    runs: int = 0
    cuts: int = 0
    #: Cuts that landed after the pass had finished (nothing to break).
    missed: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    #: What the pass that met the fault said (its SyncResult.error).
    errors: Counter[str] = field(default_factory=Counter)
    submissions: int = 0

    def report(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items()))
        errors = ", ".join(f"{k} {n}" for k, n in sorted(self.errors.items()))
        line = (f"[{self.name}] seed {SEED}: {self.runs} runs, {self.cuts} cut points"
                f" mid-pass, {self.missed} after the pass ended; {self.submissions}"
                f" submissions, all acknowledged once and byte-identical ({kinds});"
                f" the faulted passes said: {errors}")
        print(line)
        return line


# -- fixtures -----------------------------------------------------------------------------

@pytest.fixture
def team() -> X25519Identity:
    return X25519Identity.generate()


@dataclass
class Rig:
    central: CentralService
    proxy: FaultProxy
    kiosk: Kiosk
    vetter: str
    ledger: Ledger


@pytest.fixture
def rig_factory(tmp_path: Path, team: X25519Identity) -> Iterator[Callable[..., Rig]]:
    made: list[tuple[CentralService, FaultProxy, Kiosk]] = []

    def make(data_dir: Path | None = None) -> Rig:
        central = CentralService(data_dir or tmp_path / "central")
        proxy = FaultProxy("127.0.0.1", central.port)
        proxy.start()
        try:
            kiosk = Kiosk(tmp_path / "kiosk", proxy.url, central.enrol_code(), team)
        except BaseException:
            proxy.stop()
            central.stop()
            raise
        made.append((central, proxy, kiosk))
        return Rig(central, proxy, kiosk, central.vetter_token("vetter"), Ledger())

    yield make
    for central, proxy, kiosk in made:
        kiosk.close()
        proxy.stop()
        central.stop()


def clean_pass_bytes(kiosk: Kiosk) -> int:
    """Roughly what a clean pass of the pending submissions sends: the bodies, plus
    request heads (a heartbeat, per file a create, per chunk a PATCH, per submission an
    index)."""
    files = [f for row in kiosk.store.outbox_rows(PENDING_STATES)
             for f in submission_files(kiosk.data_dir, kiosk.store, row.submission_id)]
    chunks = sum(-(-f.size // CHUNK) for f in files)
    return sum(f.size for f in files) + 450 * (1 + len(files) + chunks) + 1200 * len(files)


def watch_and_cut(proxy: FaultProxy, cut: int, done: threading.Event,
                  action: Callable[[], None]) -> threading.Thread:
    """Run ``action`` once the proxy has forwarded ``cut`` client->server bytes."""

    def watch() -> None:
        while proxy.bytes_up < cut:
            if done.is_set():
                return
            time.sleep(0.001)
        if not done.is_set():
            action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


# -- 1. the proxy breaks the connection ------------------------------------------------------

PROXY_FAULTS = ("reset", "stall_short", "stall_long", "truncate", "http_500", "http_503")


def _proxy_fault(kind: str, rng: random.Random, cut: int) -> Fault:
    if kind == "stall_short":  # shorter than the client's read timeout: the pass goes on
        return Fault("stall", after=cut, seconds=rng.uniform(0.1, READ_TIMEOUT_S * 0.5))
    if kind == "stall_long":  # past it: the client gives up, the socket stays open
        return Fault("stall", after=cut, seconds=READ_TIMEOUT_S + 1.0)
    if kind.startswith("http_"):
        status = int(kind[5:])
        return Fault("http_error", after=cut, status=status, count=rng.randint(1, 3),
                     retry_after=1 if status == 503 else None)
    return Fault(kind, after=cut)  # type: ignore[arg-type]


def test_proxy_faults_mid_upload(rig_factory: Callable[..., Rig]) -> None:
    rng = rng_for("proxy")
    rig = rig_factory()
    tally = Tally("proxy faults")
    total = runs(len(PROXY_FAULTS) * 4, len(PROXY_FAULTS) * 40, store_bound=False)
    for i in range(total):
        kind = PROXY_FAULTS[i % len(PROXY_FAULTS)]
        rig.ledger.made += rig.kiosk.add_submissions(2, rng)
        tally.submissions += 2
        cut = rng.randint(0, clean_pass_bytes(rig.kiosk))
        rig.proxy.reset_counts()
        rig.proxy.arm(_proxy_fault(kind, rng, cut))
        first = rig.kiosk.sync()
        tally.errors[str(first.error)] += 1
        fired = bool(rig.proxy.fired)
        rig.proxy.disarm()
        rig.proxy.release()
        tally.runs += 1
        tally.kinds[kind] += 1
        if fired:
            tally.cuts += 1
        else:
            tally.missed += 1
        check_kiosk(rig.kiosk, rig.ledger)
        check_queue(rig.kiosk, rig.central, rig.vetter, rig.ledger, final=False)
        if fired and kind in ("reset", "truncate", "stall_long", "http_500", "http_503"):
            assert first.error is not None or first.pending == 0, first
        rig.kiosk.sync_until_done()
        check_queue(rig.kiosk, rig.central, rig.vetter, rig.ledger, final=True)
    _check_purge(rig)
    tally.report()
    assert tally.runs == total and tally.submissions == 2 * total
    # The cut is drawn over the bytes of a clean pass, so nearly all land in one.
    assert tally.cuts >= total * 0.8, tally.report()


# -- 2. kill -9 of `kiosk sync --once` ---------------------------------------------------------

def test_kill_kiosk_sync_at_random_moments(rig_factory: Callable[..., Rig]) -> None:
    rng = rng_for("kill-kiosk")
    rig = rig_factory()
    # A 16 Mbit/s link: a pass of ~1 MB lasts long enough for a cut to land in it.
    rig.proxy.set_rate(up_bps=16_000_000, down_bps=16_000_000)
    tally = Tally("kill -9 kiosk sync")
    total = runs(10, 150, store_bound=False)
    for _ in range(total):
        rig.ledger.made += rig.kiosk.add_submissions(2, rng)
        tally.submissions += 2
        cut = rng.randint(0, clean_pass_bytes(rig.kiosk))
        rig.proxy.reset_counts()
        proc = subprocess.Popen(rig.kiosk.cli_argv("sync", "--once"), cwd=REPO, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        done = threading.Event()
        killed = threading.Event()

        def kill(proc: subprocess.Popen[bytes] = proc, killed: threading.Event = killed) -> None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed.set()

        watcher = watch_and_cut(rig.proxy, cut, done, kill)
        proc.wait(120)
        done.set()
        watcher.join(5)
        tally.runs += 1
        if killed.is_set():
            assert proc.returncode == -signal.SIGKILL
            tally.cuts += 1
            tally.kinds["killed"] += 1
        else:
            tally.missed += 1
            tally.kinds["finished first"] += 1
        check_kiosk(rig.kiosk, rig.ledger)
        check_queue(rig.kiosk, rig.central, rig.vetter, rig.ledger, final=False)
        for _ in range(6):  # then `kiosk sync --once` again, to completion
            again = rig.kiosk.cli("sync", "--once")
            if again.returncode == 0:
                break
        assert again.returncode == 0, again.stderr[-2000:]
        check_queue(rig.kiosk, rig.central, rig.vetter, rig.ledger, final=True)
    tally.report()
    assert tally.runs == total
    assert tally.cuts >= total // 2, tally.report()


# -- 3. kill -9 of the service, and 4. a restart of the service ------------------------------

def _service_fault_runs(rig: Rig, rng: random.Random, tally: Tally, total: int,
                        fault: Callable[[CentralService], None]) -> None:
    for _ in range(total):
        rig.ledger.made += rig.kiosk.add_submissions(2, rng)
        tally.submissions += 2
        cut = rng.randint(0, clean_pass_bytes(rig.kiosk))
        rig.proxy.reset_counts()
        done = threading.Event()
        hit = threading.Event()

        def act(hit: threading.Event = hit) -> None:
            hit.set()
            fault(rig.central)

        watcher = watch_and_cut(rig.proxy, cut, done, act)
        tally.errors[str(rig.kiosk.sync().error)] += 1
        done.set()
        watcher.join(60)
        tally.runs += 1
        if hit.is_set():
            tally.cuts += 1
        else:
            tally.missed += 1
        if not rig.central.running():
            rig.central.restart(kill=True)
        check_kiosk(rig.kiosk, rig.ledger)
        check_queue(rig.kiosk, rig.central, rig.vetter, rig.ledger, final=False)
        rig.kiosk.sync_until_done()
        check_queue(rig.kiosk, rig.central, rig.vetter, rig.ledger, final=True)


def test_kill_service_at_random_moments(rig_factory: Callable[..., Rig]) -> None:
    rng = rng_for("kill-service")
    rig = rig_factory()
    rig.proxy.set_rate(up_bps=16_000_000, down_bps=16_000_000)
    tally = Tally("kill -9 service")
    total = runs(8, 120)

    def kill(central: CentralService) -> None:
        central.kill()
        tally.kinds["killed"] += 1

    _service_fault_runs(rig, rng, tally, total, kill)
    tally.report()
    assert tally.runs == total and tally.cuts >= total // 2, tally.report()


def test_service_restart_mid_run(rig_factory: Callable[..., Rig]) -> None:
    rng = rng_for("restart-service")
    rig = rig_factory()
    rig.proxy.set_rate(up_bps=16_000_000, down_bps=16_000_000)
    tally = Tally("service restart")
    total = runs(5, 60)

    def restart(central: CentralService) -> None:
        central.restart()  # SIGTERM, then start on the same port
        tally.kinds["restarted"] += 1

    _service_fault_runs(rig, rng, tally, total, restart)
    tally.report()
    assert tally.runs == total and tally.cuts >= 1, tally.report()


# -- 5. a full disk on the service ------------------------------------------------------------

def _mount_tmpfs(where: Path, size_mib: int) -> str | None:
    """Mount a tmpfs at ``where``; None if done, else why not (the test skips)."""
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return "no mount command"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700",
                           "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        return f"cannot mount a tmpfs (needs root): {done.stderr.strip()}"
    return None


def _fill(path: Path, leave: int) -> None:
    """Fill the file system of ``path``'s folder until about ``leave`` bytes are free."""
    free = shutil.disk_usage(path.parent).free
    with open(path, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
        f.flush()
        os.fsync(f.fileno())


def test_full_disk_on_the_service(rig_factory: Callable[..., Rig], tmp_path: Path) -> None:
    blob_files_only("uploads fill the data directory's disk; on S3 only a chunk's spool"
                    " is on disk: test_central_loopback.py fills that disk under a PATCH")
    rng = rng_for("full-disk")
    disk = tmp_path / "central"
    total = runs(4, 40)
    # Room for what every run leaves acknowledged (~0.7 MB each), and the service.
    why = _mount_tmpfs(disk, 16 + 2 * total)
    if why is not None:
        pytest.skip(why)
    _UNMOUNT.append(disk)  # after the service (a fixture's) has stopped
    tally = Tally("full disk")
    rig = rig_factory(disk)
    # Inside the data directory (the mount point is the data directory, so that
    # the service's log stays off the small disk); named so nobody mistakes it.
    ballast = disk / "zz-test-ballast.bin"
    for _ in range(total):
        rig.ledger.made += rig.kiosk.add_submissions(2, rng)
        tally.submissions += 2
        need = rig.kiosk.pending_bytes()
        acked = rig.kiosk.store.outbox_counts().get(ACKNOWLEDGED, 0)
        # From nothing free to about half of what the pass needs.
        _fill(ballast, rng.randint(0, need // 2))
        first = rig.kiosk.sync()
        tally.errors[str(first.error)] += 1
        tally.runs += 1
        if first.error is not None:
            tally.cuts += 1
        else:
            tally.missed += 1
        check_kiosk(rig.kiosk, rig.ledger)
        assert rig.central.running(), "the service died of a full disk"
        full = rig.kiosk.store.outbox_counts()
        tally.kinds["acknowledged while full"] += full.get(ACKNOWLEDGED, 0) - acked
        ballast.unlink()  # space freed: the sync completes
        # The queue is read after: a vetter's read is audited, so it needs space too.
        check_queue(rig.kiosk, rig.central, rig.vetter, rig.ledger, final=False)
        rig.kiosk.sync_until_done()
        check_queue(rig.kiosk, rig.central, rig.vetter, rig.ledger, final=True)
    tally.report()
    assert tally.runs == total and tally.cuts == total, tally.report()


#: tmpfs mounts to undo once the test's fixtures (the service on them) have stopped.
_UNMOUNT: list[Path] = []


@pytest.fixture(autouse=True)
def _unmount_after() -> Iterator[None]:
    """Autouse, so set up first and torn down last: after rig_factory's teardown."""
    yield
    while _UNMOUNT:
        path = _UNMOUNT.pop()
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# -- purge ---------------------------------------------------------------------------------

def _check_purge(rig: Rig) -> None:
    """Past the retention, every acknowledged submission is purged, receipt in hand."""
    later = time.time() + 8 * 86_400
    result = rig.kiosk.sync(now=lambda: later)
    assert result.error is None, result
    states = check_kiosk(rig.kiosk, rig.ledger)
    assert states == Counter({PURGED: len(rig.ledger.made)}), states
    for sid in rig.ledger.made:
        assert not (rig.kiosk.data_dir / "outbox" / sid).exists()
