"""USB transfer (issue 13) with the real central service on loopback (fixture ``central``)
and the real commands: ``kiosk export``, ``central import``, ``kiosk import``,
``central export-catalog``.

Sealed submissions are made as the app makes them (SessionCustody, the fake microphone,
tests/test_sync_e2e.py's ``submit``). Each refusal is checked for its message and for
what it must not do: store nothing on the service, lose nothing on the kiosk, change
nothing in the installed stories."""

from __future__ import annotations

import errno
import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from kiosk.config import KioskConfig
from kiosk.device import enrol_device, load_signing_key
from kiosk.stories.library import StoryLibrary
from kiosk.sync_runner import sync_once
from kiosk.usb import export as usb_export
from kiosk.usb.export import export_bundle
from kiosk.usb.progress import UsbProgress
from kiosk.vault.layout import OUTBOX
from kiosk.vault.outbox import receipt_holds
from kiosk.vault.store import ACKNOWLEDGED, PENDING_STATES, SEALED, Store
from sync import bundle
from sync.envelope import X25519Identity
from sync.signing import SigningKey, parse_signing_key_file
from sync.wire import Receipt, SignedDocument, SubmissionIndex
from tests.catalog_fakes import PUBLISHER, CatalogRoutes, Edition, audio_for
from tests.harness.central import CentralService
from tests.test_sync_e2e import submit

REPO = Path(__file__).resolve().parent.parent


class Kiosk:
    """One enrolled kiosk: its config file, data dir and store (closed by the fixture)."""

    def __init__(self, tmp_path: Path, central: CentralService) -> None:
        self.data_dir = tmp_path / "kiosk"
        self.config = tmp_path / "kiosk.toml"
        self.config.write_text(f'data_dir = "{self.data_dir}"\n'
                               f'publisher_key = "{PUBLISHER.verify_key}"\n'
                               f'server_url = "{central.url}"\n[sync]\nchunk_bytes = 65536\n')
        self.cfg = KioskConfig(data_dir=self.data_dir, server_url=central.url,
                               publisher_key=str(PUBLISHER.verify_key))
        self.team = X25519Identity.generate()
        self.enrolment = enrol_device(self.data_dir, server_url=central.url,
                                      code=central.enrol_code())
        self.store = Store.in_data_dir(self.data_dir)

    def submit(self, name: str = "Amina Diallo", answers: int = 1) -> str:
        return submit(self.data_dir, self.team, answers, name)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kiosk", "--config", str(self.config),
                               *args], capture_output=True, text=True, timeout=120, cwd=REPO)

    def row(self, sid: str):  # noqa: ANN201
        return self.store.outbox_row(sid)

    def files(self, sid: str) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (self.data_dir / OUTBOX / sid).iterdir()}


@pytest.fixture
def kiosk(tmp_path: Path, central: CentralService):  # noqa: ANN201
    k = Kiosk(tmp_path, central)
    yield k
    k.store.close()


def central_run(central: CentralService, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sync.central", *args, "--data",
                           str(central.data_dir)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def queue(central: CentralService) -> list[dict]:
    token = central.vetter_token()
    with httpx.Client(base_url=central.url, timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        return client.get("/api/v1/queue").json()["submissions"]


def central_db(central: CentralService, sql: str) -> list[tuple]:
    return [tuple(row) for row in central.sql(sql)]


def the_bundle(stick: Path) -> bundle.Bundle:
    found = bundle.find_bundles(stick)
    assert len(found.bundles) == 1, found
    return found.bundles[0]


# -- the round trip ----------------------------------------------------------------------

def test_usb_round_trip_then_the_same_bundle_again(tmp_path: Path, central, kiosk) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    sids = [kiosk.submit("Amina Diallo", answers=2), kiosk.submit("Anonymous")]
    sealed = {sid: kiosk.files(sid) for sid in sids}

    done = kiosk.run("export", str(stick))
    assert done.returncode == 0, done.stderr
    assert "exported 2 submissions" in done.stdout
    found = the_bundle(stick)
    assert sorted(found.submissions) == sorted(sids)
    for sid in sids:
        # Still sealed, byte for byte, with the index the network path would send.
        for name, data in sealed[sid].items():
            assert found.part_path(sid, name).read_bytes() == data
        signed = bundle.read_signed(found.index_path(sid), "index", "index")
        index = SubmissionIndex.verify(signed, kiosk.enrolment.public_key)
        assert index.device_id == kiosk.enrolment.device_id
        assert sorted(p.name for p in index.parts) == sorted(sealed[sid])
        row = kiosk.row(sid)
        assert row.state in PENDING_STATES and row.exported_at is not None
    status = json.loads((found.path / bundle.STATUS_FILE).read_text())
    assert status["queue_depth"] == 2 and status["device_id"] == kiosk.enrolment.device_id
    text = "".join(p.read_text(errors="replace") for p in found.path.rglob("*.json"))
    assert "Amina" not in text  # nothing personal outside the sealed files

    done = central_run(central, "import", str(stick))
    assert done.returncode == 0, done.stderr
    assert "received 2, already stored 0 (same receipts), refused 0" in done.stdout
    receipts = {sid: found.receipt_path(sid).read_bytes() for sid in sids}
    # The device's status became its heartbeat (the fleet view shows it).
    assert central_db(central, "select queue_depth from devices") == [(2,)]

    done = kiosk.run("import", str(stick))
    assert done.returncode == 0, done.stderr
    assert "receipts: acknowledged 2, already acknowledged 0, refused 0" in done.stdout
    for sid in sids:
        row = kiosk.row(sid)
        assert row.state == ACKNOWLEDGED and row.acknowledged_at is not None
        assert receipt_holds(kiosk.store, row, kiosk.enrolment.service_key)
        assert (kiosk.data_dir / OUTBOX / sid).is_dir()  # kept until the retention

    # What a vetter downloads is exactly what the kiosk sealed.
    token = central.vetter_token()
    with httpx.Client(base_url=central.url, timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        listed = client.get("/api/v1/queue").json()["submissions"]
        assert sorted(s["id"] for s in listed) == sorted(sids)
        for entry in listed:
            for part in entry["parts"]:
                blob = client.get(f"/api/v1/submissions/{entry['id']}/parts/{part['name']}")
                assert blob.content == sealed[entry["id"]][part["name"]]

    # The same bundle again: no duplicate, the very same receipts.
    done = central_run(central, "import", str(stick))
    assert done.returncode == 0, done.stderr
    assert "received 0, already stored 2 (same receipts), refused 0" in done.stdout
    assert {sid: found.receipt_path(sid).read_bytes() for sid in sids} == receipts
    assert len(queue(central)) == 2
    assert central_db(central, "select count(*) from submissions") == [(2,)]
    done = kiosk.run("import", str(stick))
    assert "acknowledged 0, already acknowledged 2" in done.stdout
    # The audit chain holds the imports (ids and counts, no names) and still verifies.
    audit = " ".join(r[0] for r in central_db(central, "select subject from audit"
                                                       " where action = 'usb_import'"))
    assert audit.count("bundle=") == 2 and "Amina" not in audit
    assert "audit chain intact" in central.cli("audit", "verify")


def test_exported_then_synced_over_the_network_is_acknowledged_once(tmp_path: Path, central,
                                                                     kiosk) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    sid = kiosk.submit()
    assert export_bundle(kiosk.cfg, kiosk.store, stick).exported == 1
    # The network comes back before the stick reaches the centre.
    result = sync_once(kiosk.cfg, kiosk.store)
    assert result.acknowledged == 1 and result.error is None
    first = kiosk.row(sid)
    assert first.state == ACKNOWLEDGED
    done = central_run(central, "import", str(stick))
    assert done.returncode == 0, done.stderr
    assert "received 0, already stored 1" in done.stdout  # no duplicate
    # The receipt written to the stick is the one the kiosk got over the network.
    written = bundle.read_signed(the_bundle(stick).receipt_path(sid), "receipt", "receipt")
    assert written.data.decode() == first.receipt and written.signature == first.receipt_signature
    done = kiosk.run("import", str(stick))
    assert done.returncode == 0, done.stderr
    assert "acknowledged 0, already acknowledged 1" in done.stdout
    assert kiosk.row(sid) == first  # acknowledged once: nothing moved
    assert central_db(central, "select count(*) from audit where action ="
                               " 'submission_received'") == [(1,)]


# -- refusals --------------------------------------------------------------------------------

def test_a_tampered_part_is_refused_and_nothing_is_stored(tmp_path: Path, central,
                                                          kiosk) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    flipped, cut = kiosk.submit(), kiosk.submit("Anonymous")
    before = {sid: kiosk.files(sid) for sid in (flipped, cut)}
    assert export_bundle(kiosk.cfg, kiosk.store, stick).exported == 2
    found = the_bundle(stick)
    part = found.part_path(flipped, "manifest.json.age")
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit
    part.write_bytes(bytes(data))
    short = next(p for p in found.path.glob(f"submissions/{cut}/*.age")
                 if p.name != "manifest.json.age")
    short.write_bytes(short.read_bytes()[:-10])

    done = central_run(central, "import", str(stick))
    assert done.returncode == 1
    assert "received 0, already stored 0 (same receipts), refused 2" in done.stdout
    assert (f"submission {flipped}: manifest.json.age on the stick differs from its index"
            " (size or SHA-256): refused, nothing stored") in done.stderr
    assert f"submission {cut}: {short.name} on the stick differs" in done.stderr
    # Nothing stored: no submission, no part, no upload left behind.
    assert queue(central) == []
    assert central_db(central, "select count(*) from submissions") == [(0,)]
    assert central_db(central, "select count(*) from uploads") == [(0,)]
    assert not any((central.data_dir / "parts").rglob("*.age"))
    assert not any(p.is_file() for p in (central.data_dir / "parts").rglob("*"))
    assert not (found.path / bundle.RECEIPTS).exists() or \
        not any((found.path / bundle.RECEIPTS).iterdir())
    result = json.loads((found.path / bundle.RESULT_FILE).read_text())
    assert result["refused"] == {flipped: "part_mismatch", cut: "part_mismatch"}
    # Nothing lost on the kiosk; its import says the service refused them.
    done = kiosk.run("import", str(stick))
    assert done.returncode == 1 and "the service refused 2 submission(s)" in done.stderr
    for sid in (flipped, cut):
        assert kiosk.row(sid).state == SEALED and kiosk.files(sid) == before[sid]

    # An index the device did not sign, and a revoked device: refused, nothing stored.
    forged = SubmissionIndex.parse(bundle.read_signed(found.index_path(flipped), "index",
                                                      "i").data).sign(SigningKey.generate())
    found.index_path(flipped).write_bytes(bundle.signed_json("index", forged))
    done = central_run(central, "import", str(stick))
    assert "does not verify under this device's key" in done.stderr
    central.cli("revoke", kiosk.enrolment.device_id)
    done = central_run(central, "import", str(stick))
    assert done.returncode == 1
    assert f"device {kiosk.enrolment.device_id} is revoked: its bundle is refused" in done.stderr
    assert central_db(central, "select count(*) from submissions") == [(0,)]


def test_another_index_under_a_stored_id_is_refused(tmp_path: Path, central, kiosk) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    sid = kiosk.submit()
    export_bundle(kiosk.cfg, kiosk.store, stick)
    assert central_run(central, "import", str(stick)).returncode == 0
    found = the_bundle(stick)
    stored = bundle.read_signed(found.index_path(sid), "index", "i")
    index = SubmissionIndex.parse(stored.data)
    other = SubmissionIndex.build(submission_id=sid, device_id=index.device_id,
                                  recipients_version=index.recipients_version + 1,
                                  parts=list(index.parts), withdrawal_key=index.withdrawal_key)
    found.index_path(sid).write_bytes(bundle.signed_json(
        "index", other.sign(load_signing_key(kiosk.data_dir))))
    receipt = found.receipt_path(sid).read_bytes()
    done = central_run(central, "import", str(stick))
    assert done.returncode == 1
    assert "another index is already stored under this submission id" in done.stderr
    assert found.receipt_path(sid).read_bytes() == receipt  # the stored one stands
    assert central_db(central, "select count(*) from submissions") == [(1,)]


def test_a_tampered_receipt_is_refused_and_the_submission_stays_pending(
        tmp_path: Path, central, kiosk) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    sid = kiosk.submit()
    export_bundle(kiosk.cfg, kiosk.store, stick)
    assert central_run(central, "import", str(stick)).returncode == 0
    path = the_bundle(stick).receipt_path(sid)
    genuine = path.read_bytes()
    signed = bundle.read_signed(path, "receipt", "r")
    receipt = Receipt.parse(signed.data)
    service_key = parse_signing_key_file((central.data_dir / "service.key").read_text())
    later = Receipt(receipt.submission_id, receipt.device_id, receipt.index_sha256,
                    "2030-01-01T00:00:00Z", receipt.parts)
    forgeries = {
        # The text changed under the service's signature.
        "edited": SignedDocument(later.to_bytes(), signed.signature),
        # Well formed and signed, by a key that is not the one pinned at enrolment.
        "other key": later.sign(SigningKey.generate()),
        # Signed by the service itself, but for another index than the kiosk holds.
        "other index": Receipt(receipt.submission_id, receipt.device_id, "0" * 64,
                               receipt.received_at, receipt.parts).sign(service_key),
    }
    for what, forged in forgeries.items():
        path.write_bytes(bundle.signed_json("receipt", forged))
        done = kiosk.run("import", str(stick))
        assert done.returncode == 1, what
        assert "receipts: acknowledged 0, already acknowledged 0, refused 1" in done.stdout
        assert "did not verify against the pinned service key" in done.stderr
        row = kiosk.row(sid)
        assert row.state == SEALED and row.receipt is None, what
    path.write_bytes(b"not json")
    assert "refused 1" in kiosk.run("import", str(stick)).stdout
    path.write_bytes(genuine)
    done = kiosk.run("import", str(stick))
    assert done.returncode == 0 and "acknowledged 1" in done.stdout
    assert kiosk.row(sid).state == ACKNOWLEDGED


# -- the catalog ---------------------------------------------------------------------------

def publish(central: CentralService, edition: Edition) -> None:
    with httpx.Client(base_url=central.url, timeout=30, headers={
            "Authorization": f"Bearer {central.vetter_token('team')}"}) as client:
        for story_id, audio in edition.audio.items():
            reply = client.put(f"/api/v1/stories/{story_id}.ogg", content=audio, headers={
                "Content-Type": "audio/ogg",
                "X-Content-SHA256": hashlib.sha256(audio).hexdigest()})
            assert reply.status_code in (200, 201), reply.text
        reply = client.put("/api/v1/catalog", json={
            "catalog": edition.data.decode("utf-8"), "signature": edition.signature})
        assert reply.status_code in (200, 201), reply.text


def test_a_catalog_by_usb_and_a_tampered_one_refused(tmp_path: Path, central, kiosk) -> None:
    central.cli("set-publisher-key", str(PUBLISHER.verify_key))
    stick = tmp_path / "stick"
    stick.mkdir()
    routes = CatalogRoutes()
    v1 = routes.publish(1, {"amina-1": audio_for("amina-1", 6000),
                            "jose-2": audio_for("jose-2", 4000)}, serve=False)
    publish(central, v1)
    done = central_run(central, "export-catalog", str(stick))
    assert done.returncode == 0, done.stderr
    assert "catalog version 1 written" in done.stdout
    done = kiosk.run("import", str(stick))
    assert done.returncode == 0, done.stderr
    assert "catalog: version 1 installed" in done.stdout
    library = StoryLibrary(kiosk.data_dir, str(PUBLISHER.verify_key))
    assert library.load().shown == 2
    stories_dir = kiosk.data_dir / "stories"
    installed = {p.name: p.read_bytes() for p in stories_dir.iterdir() if p.is_file()}

    v2 = routes.publish(2, {**v1.audio, "li-3": audio_for("li-3", 5000)}, serve=False)
    publish(central, v2)
    done = central_run(central, "import", str(stick), "--catalog")
    assert done.returncode == 0 and "catalog version 2 written" in done.stdout
    source = bundle.catalog_dir(stick)
    genuine = {p: p.read_bytes() for p in source.rglob("*") if p.is_file()}

    def tampered(path: Path, data: bytes, code: str) -> None:
        path.write_bytes(data)
        done = kiosk.run("import", str(stick))
        assert done.returncode == 1, done.stdout
        assert f"the catalog on the stick was refused ({code}); the current stories are" \
               " kept" in done.stderr
        after = {p.name: p.read_bytes() for p in stories_dir.iterdir() if p.is_file()
                 and p.name != "last_error.json"}
        assert after == installed  # the installed catalog and its audio unchanged
        assert library.load().version == 1
        last = json.loads((stories_dir / "last_error.json").read_text())
        # Refused by the network path's own checks as the stick is read, before the
        # library's install (which would check again) is even tried.
        assert (last["code"], last["during"]) == (code, "usb")
        assert not list((stories_dir / ".download").glob("*.usb"))  # no copy left behind
        for original, content in genuine.items():
            original.write_bytes(content)

    audio = source / bundle.AUDIO / "li-3.ogg"
    flipped = bytearray(genuine[audio])
    flipped[100] ^= 0xFF
    tampered(audio, bytes(flipped), "audio_mismatch")
    catalog = source / bundle.CATALOG_FILE
    tampered(catalog, genuine[catalog].replace(b'"version":2', b'"version":3'), "bad_signature")
    tampered(source / bundle.SIGNATURE_FILE, v1.signature.encode(), "bad_signature")
    # The installed catalog itself again: nothing to do.
    catalog.write_bytes(v1.data)
    (source / bundle.SIGNATURE_FILE).write_text(v1.signature)
    done = kiosk.run("import", str(stick))
    assert "catalog: version 1 already installed" in done.stdout  # the very same bytes
    # Another catalog with the installed version, validly signed: refused as stale.
    old = routes.publish(1, {"amina-1": v1.audio["amina-1"]}, serve=False)
    (source / bundle.SIGNATURE_FILE).write_text(old.signature)
    tampered(catalog, old.data, "stale_catalog")
    for original, content in genuine.items():
        original.write_bytes(content)
    done = kiosk.run("import", str(stick))
    assert done.returncode == 0 and "catalog: version 2 installed" in done.stdout
    assert library.load().shown == 3


# -- an export cut half way -------------------------------------------------------------------

def test_an_export_cut_half_way_leaves_nothing_that_looks_whole(tmp_path: Path, central, kiosk,
                                                                 monkeypatch) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    sids = [kiosk.submit(answers=2), kiosk.submit()]
    before = {sid: kiosk.files(sid) for sid in sids}

    def pulled_out(p: UsbProgress) -> None:
        if p.done_bytes > p.total_bytes // 2:
            raise OSError(errno.EIO, "Input/output error")

    result = export_bundle(kiosk.cfg, kiosk.store, stick, progress=pulled_out)
    assert result.error == "stick_error" and "nothing was marked exported" in result.detail
    assert bundle.find_bundles(stick).bundles == ()
    for sid in sids:
        assert kiosk.row(sid).exported_at is None and kiosk.files(sid) == before[sid]
    # A stick pulled out cannot even be cleaned: the half bundle stays, under its
    # temporary name, and every reader skips it, saying so.
    monkeypatch.setattr(usb_export.shutil, "rmtree", lambda *a, **k: None)
    export_bundle(kiosk.cfg, kiosk.store, stick, progress=pulled_out)
    monkeypatch.undo()
    leftovers = list(bundle.root(stick).rglob(f"{bundle.TMP_PREFIX}*"))
    assert len(leftovers) == 1 and any(leftovers[0].rglob("*.age"))
    done = central_run(central, "import", str(stick))
    assert done.returncode == 0
    assert "bundles 0: received 0" in done.stdout
    assert "an export that did not finish (stick pulled out?)" in done.stderr
    assert central_db(central, "select count(*) from uploads") == [(0,)]
    # The next export is whole, and goes through.
    done = kiosk.run("export", str(stick))
    assert done.returncode == 0 and "exported 2 submissions" in done.stdout
    done = central_run(central, "import", str(stick))
    assert "received 2" in done.stdout


def test_export_and_import_say_clearly_what_they_cannot_do(tmp_path: Path, central,
                                                           kiosk) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    done = kiosk.run("export", str(stick))
    assert done.returncode == 0 and "nothing to export" in done.stdout
    done = kiosk.run("import", str(stick))
    assert done.returncode == 2 and "nothing to import" in done.stderr
    kiosk.submit()
    done = kiosk.run("export", str(tmp_path / "absent"))
    assert done.returncode == 2 and "is not a folder (is the stick mounted?)" in done.stderr
    done = central_run(central, "import", str(tmp_path / "absent"))
    assert done.returncode == 2 and "is not a folder" in done.stderr
    done = central_run(central, "export-catalog", str(stick))
    assert done.returncode == 2 and "nothing has been published yet" in done.stderr


def test_an_old_store_gains_the_exported_mark(tmp_path: Path) -> None:
    path = tmp_path / "kiosk.db"
    conn = sqlite3.connect(path)
    conn.execute("create table outbox (submission_id text primary key, state text not null,"
                 " entered_at float not null, updated_at float not null, attempts integer"
                 " not null default 0, last_error text, index_sha256 text, receipt text,"
                 " receipt_signature text, acknowledged_at float, purged_at float)")
    conn.commit()
    conn.close()
    store = Store(path)
    try:
        assert "exported_at" in store.db["outbox"].columns_dict
    finally:
        store.close()


def test_the_stick_is_the_variable_else_the_first_drive_under_media(tmp_path: Path) -> None:
    from kiosk.usb.drive import find_usb_folder

    mounts = tmp_path / "mounts"
    media = tmp_path / "media"  # stands for /media/<user>/<label>: what the list names
    (media / "MY STICK").mkdir(parents=True)
    mounts.write_text("proc /proc proc rw 0 0\n"
                      f"/dev/sdb1 {media / 'MY STICK'} vfat rw 0 0\n".replace(" STICK",
                                                                              "\\040STICK"))
    assert find_usb_folder({}, mounts) is None  # not under /media or /run/media
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\n/dev/sdb1 /media/kiosk/absent vfat rw 0 0\n")
    assert find_usb_folder({}, mounts) is None  # listed, but not there
    assert find_usb_folder({"KIOSK_USB_DIR": str(media)}, mounts) == media
    from kiosk.usb import drive

    assert drive.mounted_drives(mounts) == [Path("/media/kiosk/absent")]
    mounts.write_text("/dev/sdb1 /run/media/kiosk/MY\\040STICK vfat rw 0 0\n")
    assert drive.mounted_drives(mounts) == [Path("/run/media/kiosk/MY STICK")]
