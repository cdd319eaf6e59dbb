"""Review states on the service: POST /submissions/{id}/state, the queue's new fields and
its state filter; the moves and reasons of sync/vetting.py, both ends' one source."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sync import vetting
from tests.central_helpers import World, make_world, new_submission_id, refused


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from make_world(tmp_path)


def test_the_whole_way_with_reasons_and_story_id(world: World) -> None:
    sid = world.submission()
    entry = world.queue()[0]
    assert entry["state"] == "received" and entry["reason"] is None
    assert entry["story_id"] is None
    for state, reason, story_id, expect_reason in (
            ("in_review", None, None, None),
            ("approved", None, None, "vetted"),  # the default approval reason
            ("published", None, "amina-1", "vetted"),
            ("unpublished", None, None, "vetted"),
            ("published", None, "amina-1", "vetted")):  # re-publish
        reply = world.move(sid, state, reason, story_id)
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"id": sid, "state": state, "reason": expect_reason,
                                "story_id": "amina-1" if state in ("published",
                                                                   "unpublished") else None}
    entry = world.queue()[0]
    assert (entry["state"], entry["reason"], entry["story_id"]) == ("published", "vetted",
                                                                    "amina-1")
    audit = world.audit_text()
    assert f"{sid} approved->published vetted story=amina-1" in audit
    assert f"{sid} received->in_review" in audit


@pytest.mark.parametrize("reason", vetting.REJECT_REASONS)
def test_every_seed_reason_rejects(world: World, reason: str) -> None:
    sid = world.submission()
    reply = world.move(sid, "rejected", reason)
    assert reply.status_code == 200 and reply.json()["reason"] == reason
    assert world.queue("rejected")[0]["reason"] == reason


def test_reject_from_each_allowed_state_and_nowhere_else(world: World) -> None:
    for path in ([], ["in_review"], ["in_review", "approved"]):
        sid = world.submission()
        for state in path:
            assert world.move(sid, state).status_code == 200
        assert world.move(sid, "rejected", "risk_to_others").status_code == 200
    sid = world.submission()
    for state, story in (("in_review", None), ("approved", None), ("published", "s-2")):
        assert world.move(sid, state, None, story).status_code == 200
    refused(world, "POST", f"/api/v1/submissions/{sid}/state", 409, "illegal_transition",
            headers=world.vet, json={"state": "rejected", "reason": "other"})


def test_illegal_moves_are_409_and_change_nothing(world: World) -> None:
    sid = world.submission()
    url = f"/api/v1/submissions/{sid}/state"
    for body in ({"state": "approved"}, {"state": "published", "story_id": "s-1"},
                 {"state": "unpublished"},
                 # Only the receipt code withdraws.
                 {"state": "withdrawn"}):
        refused(world, "POST", url, 409, "illegal_transition", headers=world.vet, json=body)
    assert world.move(sid, "rejected", "vulgar_or_inappropriate").status_code == 200
    for body in ({"state": "in_review"}, {"state": "approved"}, {"state": "received"}):
        refused(world, "POST", url, 409, "illegal_transition", headers=world.vet, json=body)


def test_bad_reasons_states_and_story_ids_are_400(world: World) -> None:
    sid = world.submission()
    url = f"/api/v1/submissions/{sid}/state"
    assert world.move(sid, "in_review").status_code == 200
    for body, error in (
            ({"state": "rejected"}, "bad_reason"),  # a rejection needs a reason
            ({"state": "rejected", "reason": "boring"}, "bad_reason"),
            ({"state": "rejected", "reason": "vetted"}, "bad_reason"),
            ({"state": "approved", "reason": "risk_to_others"}, "bad_reason"),
            ({"state": "in_review", "reason": "other"}, "bad_reason"),
            ({"state": "approved", "story_id": "s-1"}, "bad_story_id"),
            ({"state": "maybe"}, "bad_state"),
            ({"state": "Approved"}, "bad_state"),
            ({"state": "approved", "note": "the note stays home"}, "bad_request"),
            ({"state": 3}, "bad_request"),
            ({}, "bad_request")):
        refused(world, "POST", url, 400, error, headers=world.vet, json=body)
    assert world.move(sid, "approved").status_code == 200
    for story_id in (None, "", "../etc", "Amina", "a/b", "a.ogg", "x" * 65, "-lead"):
        refused(world, "POST", url, 400, "bad_story_id", headers=world.vet,
                json={"state": "published", "story_id": story_id})
    refused(world, "POST", url, 400, "bad_request", headers=world.vet,
            content=b"{not json", )


def test_wrong_tokens_and_unknown_or_path_like_ids(world: World) -> None:
    sid = world.submission()
    body = {"state": "in_review"}
    url = f"/api/v1/submissions/{sid}/state"
    refused(world, "POST", url, 401, "unauthorized", json=body)
    refused(world, "POST", url, 401, "unauthorized", json=body, headers=world.dev)
    refused(world, "POST", url, 401, "unauthorized", json=body,
            headers={"Authorization": "Bearer idrvet_nope"})
    refused(world, "GET", "/api/v1/queue", 401, "unauthorized", headers=world.dev)
    for bad in (new_submission_id(), "..%2f..%2fcentral.sqlite", "%2e%2e", "0" * 36,
                sid.upper()):
        reply = world.client.post(f"/api/v1/submissions/{bad}/state", json=body,
                                  headers=world.vet)
        assert reply.status_code in (404, 405), bad
        if reply.status_code == 404:
            assert reply.json()["error"] == "not_found"
    assert world.queue()[0]["state"] == "received"


def test_same_move_again_is_a_harmless_retry(world: World) -> None:
    sid = world.submission()
    assert world.move(sid, "rejected", "untrue_or_deceptive").status_code == 200
    audit = world.audit_text()
    again = world.move(sid, "rejected", "untrue_or_deceptive")
    assert again.status_code == 200 and again.json()["reason"] == "untrue_or_deceptive"
    assert world.audit_text().count("->rejected") == audit.count("->rejected") == 1
    # Another reason is not a retry: a rejected submission stays as decided.
    assert world.move(sid, "rejected", "other").status_code == 409


def test_a_story_id_names_one_submission(world: World) -> None:
    one, two = world.submission(), world.submission()
    for sid in (one, two):
        for state in ("in_review", "approved"):
            assert world.move(sid, state).status_code == 200
    assert world.move(one, "published", story_id="same").status_code == 200
    refused(world, "POST", f"/api/v1/submissions/{two}/state", 409, "story_id_taken",
            headers=world.vet, json={"state": "published", "story_id": "same"})
    assert world.move(two, "published", story_id="other").status_code == 200


def test_two_vetters_deciding_at_once_one_wins(world: World) -> None:
    # From approved, publishing and rejecting exclude each other (neither leads to the
    # other), and two publications under different story ids too: exactly one wins.
    sid = world.submission()
    for state in ("in_review", "approved"):
        assert world.move(sid, state).status_code == 200
    barrier = threading.Barrier(6)
    replies: list[Any] = []

    def decide(i: int) -> None:
        barrier.wait()
        replies.append(world.move(sid, "published", story_id=f"story-{i}") if i % 2 else
                       world.move(sid, "rejected", "risk_to_defender"))

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = world.queue()[0]
    winners = [r.json() for r in replies if r.status_code == 200]
    # One move won; a 200 beside it can only be the same rejection again (a retry).
    assert {(w["state"], w["story_id"]) for w in winners} == {(final["state"],
                                                               final["story_id"])}
    assert all(r.status_code == 409 for r in replies if r.status_code != 200)
    assert world.audit_text().count(f"{sid} approved->") == 1


def test_queue_state_filter(world: World) -> None:
    a, b, c = world.submission(), world.submission(), world.submission()
    world.move(b, "in_review")
    world.move(c, "rejected", "other")
    assert [e["id"] for e in world.queue("received")] == [a]
    assert [e["id"] for e in world.queue("in_review")] == [b]
    assert [e["id"] for e in world.queue("rejected")] == [c]
    assert world.queue("published") == []
    assert len(world.queue()) == 3
    for bad in ("nope", "RECEIVED", "withdrawn;drop"):
        refused(world, "GET", "/api/v1/queue", 400, "bad_state", headers=world.vet,
                params={"state": bad})
    # Parts stay readable whatever the state.
    entry = world.queue("rejected")[0]
    part = world.client.get(f"/api/v1/submissions/{c}/parts/{entry['parts'][0]['name']}",
                            headers=world.vet)
    assert part.status_code == 200 and len(part.content) == entry["parts"][0]["size"]


def test_the_moves_table_and_path_to() -> None:
    assert vetting.path_to("received", "approved") == ["in_review", "approved"]
    assert vetting.path_to("received", "published") == ["in_review", "approved", "published"]
    assert vetting.path_to("unpublished", "published") == ["published"]
    assert vetting.path_to("approved", "approved") == []
    for current, target in (("rejected", "approved"), ("published", "rejected"),
                            ("received", "withdrawn"), ("withdrawn", "received")):
        with pytest.raises(vetting.IllegalTransition):
            vetting.path_to(current, target)
    assert set(vetting.VETTER_MOVES) == set(vetting.STATES)
    assert all(vetting.WITHDRAWN not in moves for moves in vetting.VETTER_MOVES.values())
    assert vetting.reason_for("approved", None) == "vetted"
    with pytest.raises(vetting.BadReason):
        vetting.reason_for("rejected", None)
    assert len(vetting.REJECT_REASONS) == 7


def test_a_store_from_before_issue_12_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    from sync.central.storage.sqlite_meta import SqliteMetaStore

    path = tmp_path / "central.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
        "INSERT INTO meta VALUES ('schema_version', '2');"
        "CREATE TABLE submissions (id TEXT PRIMARY KEY, device_id TEXT NOT NULL,"
        " index_text BLOB NOT NULL, index_sha256 TEXT NOT NULL, index_signature TEXT NOT NULL,"
        " state TEXT NOT NULL, received_at TEXT NOT NULL);"
        "INSERT INTO submissions VALUES ('old', 'dev-0123456789abcdef', x'7b7d', 'h', 's',"
        " 'received', '2026-11-27T10:00:00Z');")
    conn.close()
    meta = SqliteMetaStore(path, create=True)
    try:
        assert meta.get_meta("schema_version") == "3"
        old = meta.get_submission("old")
        assert old is not None and old.state == "received"
        assert (old.reason, old.story_id, old.withdrawal_key) == (None, None, None)
        assert meta.set_submission_state("old", "received", "in_review", None, None, 1.0)
        assert meta.latest_catalog() is None
    finally:
        meta.close()
