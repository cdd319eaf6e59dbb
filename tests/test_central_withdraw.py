"""Withdrawal by receipt code: POST /withdraw in-process (shape, rate limit, audit) and
end to end on loopback (a real kiosk submission, ``kiosk sync --once``, the real
service)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kiosk.audio.recorder import Recorder
from kiosk.session.receipt import hash_code, load_words, new_code
from kiosk.vault.custody import SessionCustody
from kiosk.vault.store import Store
from sync import catalog as catalog_format
from sync.central.core import Settings
from sync.envelope import X25519Identity
from sync.withdrawal import withdrawal_key
from tests.audio_fakes import FakeStreams, record, tone
from tests.central_helpers import World, catalog_bytes, make_world, ogg, refused, story
from tests.harness.central import CentralService

REPO = Path(__file__).resolve().parent.parent
WORDLIST = REPO / "assets" / "wordlist.txt"
CODE = "meadow-teapot-otter-violin"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    # A generous limit here; the limit itself has its own tests below.
    yield from make_world(tmp_path, Settings(withdraw_per_minute=100, withdraw_per_hour=100))


def withdraw(world: World, code: object, **kwargs: object) -> httpx.Response:
    return world.client.post("/api/v1/withdraw", json={"code": code}, **kwargs)


def test_a_code_withdraws_its_submission_and_only_that(world: World) -> None:
    mine = world.submission(withdrawal_key(CODE))
    other = world.submission(withdrawal_key("river lamp sugar north"))
    keyless = world.submission()
    reply = withdraw(world, "  Meadow TEAPOT otter, violin ")
    assert reply.status_code == 200 and reply.json() == {"withdrawn": True}
    states = {e["id"]: e["state"] for e in world.queue()}
    assert states == {mine: "withdrawn", other: "received", keyless: "received"}
    assert [e["id"] for e in world.queue("withdrawn")] == [mine]
    # Again: still 200 (the code is right), nothing new written.
    before = world.audit_text()
    assert withdraw(world, CODE).status_code == 200
    assert world.audit_text() == before
    # Audited with the id only: never the code, never the key.
    assert f"receipt_code | submission_withdrawn | {mine}" in before
    for secret in (*CODE.split("-"), withdrawal_key(CODE)):
        assert secret not in before
    # A vetter cannot move it anywhere any more.
    refused(world, "POST", f"/api/v1/submissions/{mine}/state", 409, "illegal_transition",
            headers=world.vet, json={"state": "in_review"})


def test_wrong_and_malformed_codes_get_one_answer(world: World) -> None:
    world.submission(withdrawal_key(CODE))
    answers = [refused(world, "POST", "/api/v1/withdraw", 404, "unknown_code",
                       json={"code": code})
               for code in ("meadow teapot otter kite", "violin otter teapot meadow",
                            "three words only", "", "meadow teapot otter vi0lin")]
    assert len({(r.status_code, r.text) for r in answers}) == 1
    for body in ({}, {"code": 5}, {"code": CODE, "extra": 1}, {"code": "x" * 500}):
        refused(world, "POST", "/api/v1/withdraw", 400, "bad_request", json=body)
    refused(world, "POST", "/api/v1/withdraw", 400, "bad_request", content=b"{nope",
            headers={"Content-Type": "application/json"})
    assert world.queue()[0]["state"] == "received"


def test_a_published_story_withdrawn_must_leave_the_next_catalog(world: World) -> None:
    world.pin_publisher()
    sid = world.submission(withdrawal_key(CODE))
    for state in ("in_review", "approved"):
        assert world.move(sid, state).status_code == 200
    assert world.move(sid, "published", story_id="amina-1").status_code == 200
    audio = ogg(3000)
    assert world.put_audio("amina-1", audio).status_code == 201
    v1 = catalog_bytes(1, (story("amina-1", audio),))
    assert world.put_catalog(v1, catalog_format.sign(v1, world.publisher)).status_code == 201

    assert withdraw(world, CODE).status_code == 200
    entry = world.queue()[0]
    assert (entry["state"], entry["story_id"]) == ("withdrawn", "amina-1")
    # The team's next catalog must leave it out; one that keeps it is refused.
    v2 = catalog_bytes(2, (story("amina-1", audio),))
    reply = refused(world, "PUT", "/api/v1/catalog", 409, "withdrawn_story", headers=world.vet,
                    json={"catalog": v2.decode(),
                          "signature": catalog_format.sign(v2, world.publisher)})
    assert reply.json()["stories"] == ["amina-1"]
    v2 = catalog_bytes(2)
    assert world.put_catalog(v2, catalog_format.sign(v2, world.publisher)).status_code == 201
    assert world.client.get("/api/v1/stories/amina-1.ogg", headers=world.dev).status_code == 404


def test_two_submissions_with_one_key_are_both_withdrawn(world: World) -> None:
    # Not UNIQUE on purpose: two codes could (in theory) give one key.
    ids = {world.submission(withdrawal_key(CODE)) for _ in range(2)}
    assert withdraw(world, CODE).status_code == 200
    assert {e["id"] for e in world.queue("withdrawn")} == ids


def test_six_attempts_in_a_minute_the_sixth_is_429(tmp_path: Path) -> None:
    for world in make_world(tmp_path):  # the default limits: 5 a minute, 30 an hour
        world.submission(withdrawal_key(CODE))
        assert withdraw(world, CODE).status_code == 200
        assert withdraw(world, "river lamp sugar north").status_code == 404
        assert world.client.post("/api/v1/withdraw", content=b"{bad").status_code == 400
        assert withdraw(world, "three words only").status_code == 404
        assert withdraw(world, CODE).status_code == 200
        reply = refused(world, "POST", "/api/v1/withdraw", 429, "rate_limited",
                        json={"code": CODE})
        assert 1 <= int(reply.headers["retry-after"]) <= 12
        # Even a right code waits; a token changes nothing.
        assert withdraw(world, CODE, headers=world.vet).status_code == 429


# -- end to end on loopback -----------------------------------------------------------------

def kiosk(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kiosk", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def submit_with_code(data_dir: Path, team: X25519Identity, code: str) -> str:
    """A submission as the session controller makes it: a real receipt code, its slow
    hash and its withdrawal key committed with the row."""
    store = Store.in_data_dir(data_dir)
    try:
        session = SessionCustody(data_dir=data_dir, store=store, recipients=[team.recipient()])
        _, take = record(session, Recorder(FakeStreams([tone(0.3)])), "q1")
        while take.meters().elapsed_s < 0.3:
            time.sleep(0.01)
        take.stop()
        while not take.done:
            time.sleep(0.01)
        session.submit({"display_name": "Anonymous", "language": "en"},
                       receipt_hash=hash_code(code), withdrawal_key=withdrawal_key(code))
        assert store.withdrawal_key(session.submission_id) == withdrawal_key(code)
        return session.submission_id
    finally:
        store.close()


def test_withdrawal_end_to_end_on_loopback(tmp_path: Path) -> None:
    words = load_words(WORDLIST)
    rng = random.Random(2026)
    code, other_code = new_code(words, rng=rng), new_code(words, rng=rng)
    with CentralService(tmp_path / "central") as service:
        data_dir = tmp_path / "kiosk"
        config = tmp_path / "kiosk.toml"
        config.write_text(f'data_dir = "{data_dir}"\n')
        done = kiosk(config, "enrol", "--server", service.url, "--code", service.enrol_code())
        assert done.returncode == 0, done.stderr
        team = X25519Identity.generate()
        mine = submit_with_code(data_dir, team, code)
        theirs = submit_with_code(data_dir, team, other_code)
        done = kiosk(config, "sync", "--once")
        assert done.returncode == 0, done.stderr
        assert "acknowledged 2" in done.stdout

        # The service holds the key the index carried, never the code.
        stored = dict(service.sql("SELECT id, withdrawal_key FROM submissions"))
        assert stored == {mine: withdrawal_key(code), theirs: withdrawal_key(other_code)}

        vetter = {"Authorization": f"Bearer {service.vetter_token()}"}
        with httpx.Client(base_url=service.url, timeout=30) as client:
            typed = "  ".join(w.upper() if i % 2 else w.title()
                              for i, w in enumerate(code.split("-")))
            assert typed != code
            t0 = time.monotonic()
            reply = client.post("/api/v1/withdraw", json={"code": typed})
            took = time.monotonic() - t0
            assert reply.status_code == 200 and reply.json() == {"withdrawn": True}
            queue = {e["id"]: e for e in client.get("/api/v1/queue",
                                                    headers=vetter).json()["submissions"]}
            assert queue[mine]["state"] == "withdrawn"
            assert queue[theirs]["state"] == "received"
            wrong = client.post("/api/v1/withdraw", json={"code": "ocean ocean ocean ocean"})
            assert wrong.status_code == 404 and wrong.json()["error"] == "unknown_code"
            statuses = [client.post("/api/v1/withdraw", json={"code": other_code[::-1]}
                                    ).status_code for _ in range(3)]
            assert statuses == [404, 404, 404]
            sixth = client.post("/api/v1/withdraw", json={"code": other_code})
            assert sixth.status_code == 429, sixth.text
            assert int(sixth.headers["retry-after"]) >= 1
            assert sixth.json()["error"] == "rate_limited"
            queue = {e["id"]: e for e in client.get("/api/v1/queue",
                                                    headers=vetter).json()["submissions"]}
            assert queue[theirs]["state"] == "received"  # the 429 withdrew nothing
        print(f"withdraw round trip on loopback: {took * 1000:.0f} ms (one scrypt)")
        # Neither the service's log nor its audit holds the code or its key.
        log = service.log_text()
        for secret in (code, typed, code.replace("-", " "), withdrawal_key(code)):
            assert secret not in log
        status = json.loads(kiosk(config, "status", "--json").stdout)
        assert status["outbox"] == {"acknowledged": 2}
