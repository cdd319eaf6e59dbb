"""Helpers for the issue-12 service tests: an in-process service with a vetter, a kiosk
and (optionally) a pinned publishing key; submissions, story audio and signed catalogs.

Every refusal is checked as in tests/test_central_api.py: the status and error code,
and a snapshot of everything stored (rows, audit included, and files) that must not
have changed.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from sync import catalog as catalog_format
from sync.central.app import create_app
from sync.central.core import Settings, init
from sync.envelope import X25519Identity
from sync.signing import SigningKey
from tests.harness.central import (
    configure_store,
    index_body,
    new_submission_id,
    signed_index,
    store_sql,
    stored_state,
    tus_upload,
)
from tests.test_central_api import Env, Kiosk

TABLES = ("devices", "enrol_codes", "uploads", "submissions", "submission_parts", "receipts",
          "catalogs", "public_audio", "audit", "meta")
RECIPIENT = str(X25519Identity.generate().recipient())


def ogg(size: int = 3000, seed: bytes = b"") -> bytes:
    """Bytes that start like an Ogg stream (the service checks only the capture pattern)."""
    body = hashlib.sha256(seed or secrets.token_bytes(8)).digest() * (size // 32 + 1)
    return (b"OggS" + body)[:size]


class World(Env):
    """The service in-process, a vetter token and an enrolled kiosk."""

    def __init__(self, data: Path, client: TestClient) -> None:
        super().__init__(data, client)
        self.vetter_token = self.vetter()
        self.kiosk: Kiosk = self.enrol()
        self.publisher = SigningKey.generate()

    @property
    def vet(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.vetter_token}"}

    @property
    def dev(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.kiosk.token}"}

    def pin_publisher(self) -> None:
        from sync.central.core import set_publisher_key

        set_publisher_key(self.client.app.state.central.meta,  # type: ignore[attr-defined]
                          self.publisher.verify_key)

    def snapshot(self) -> dict[str, Any]:
        return stored_state(self.data, TABLES)

    def submission(self, withdrawal_key: str | None = None) -> str:
        sid = new_submission_id()
        parts = {"a1.age": secrets.token_bytes(500), "manifest.json.age": b"M" * 80}
        for name, data in parts.items():
            tus_upload(self.client, self.kiosk.token, sid, name, data)
        signed = signed_index(self.kiosk.key, self.kiosk.device_id, sid, parts)
        if withdrawal_key is not None:
            from sync.wire import SubmissionIndex

            index = SubmissionIndex.parse(signed.data)
            signed = SubmissionIndex.build(
                submission_id=sid, device_id=index.device_id, recipients_version=0,
                parts=list(index.parts), withdrawal_key=withdrawal_key).sign(self.kiosk.key)
        reply = self.client.post("/api/v1/submissions", json=index_body(signed),
                                 headers=self.dev)
        assert reply.status_code == 201, reply.text
        return sid

    def move(self, sid: str, state: str, reason: str | None = None,
             story_id: str | None = None) -> Any:
        return self.client.post(f"/api/v1/submissions/{sid}/state", headers=self.vet,
                                json={"state": state, "reason": reason, "story_id": story_id})

    def put_audio(self, story_id: str, data: bytes, *, sha256: str | None = None) -> Any:
        return self.client.put(f"/api/v1/stories/{story_id}.ogg", content=data, headers={
            **self.vet, "Content-Type": "audio/ogg",
            "X-Content-SHA256": sha256 or hashlib.sha256(data).hexdigest()})

    def put_catalog(self, data: bytes, signature: str) -> Any:
        return self.client.put("/api/v1/catalog", headers=self.vet,
                               json={"catalog": data.decode("utf-8"), "signature": signature})

    def queue(self, state: str | None = None) -> list[dict[str, Any]]:
        reply = self.client.get("/api/v1/queue", headers=self.vet,
                                params={"state": state} if state else None)
        assert reply.status_code == 200, reply.text
        result: list[dict[str, Any]] = reply.json()["submissions"]
        return result

    def audit_text(self) -> str:
        rows = store_sql(self.data, "SELECT actor, action, subject FROM audit ORDER BY seq")
        return "\n".join(" | ".join(r) for r in rows)


def story(story_id: str, audio: bytes, **over: Any) -> catalog_format.Story:
    fields: dict[str, Any] = {
        "id": story_id, "title": f"Story {story_id}", "display_name": "Anonymous",
        "country": "KE", "region": "Africa", "themes": ("land",), "language": "en",
        "duration_s": 12.5, "transcript": "", "audio_sha256": hashlib.sha256(audio).hexdigest(),
        "size": len(audio), "url": f"stories/{story_id}.ogg"}
    fields.update(over)
    return catalog_format.Story(**fields)


def catalog_bytes(version: int, stories: tuple[catalog_format.Story, ...] = (),
                  recipients: tuple[str, ...] = (RECIPIENT,)) -> bytes:
    return catalog_format.build(catalog_format.Catalog(
        version=version, issued_at="2026-11-28T10:00:00Z", recipients=recipients,
        prompts=("journey",), stories=stories))


def refused(world: World, method: str, url: str, status: int, error: str | None = None,
            **kwargs: Any) -> Any:
    before = world.snapshot()
    reply = world.client.request(method, url, **kwargs)
    assert reply.status_code == status, reply.text
    if method != "HEAD":
        body = reply.json()
        assert set(body) >= {"error", "detail"}, body
        if error is not None:
            assert body["error"] == error, reply.text
    assert world.snapshot() == before, "a refused request changed the stored state"
    return reply


def make_world(tmp_path: Path, settings: Settings | None = None) -> Iterator[World]:
    data = tmp_path / "central"
    configure_store(data)
    init(data)
    with TestClient(create_app(data, settings or Settings(max_upload_bytes=1024 * 1024))) \
            as client:
        yield World(data, client)


__all__ = ["World", "catalog_bytes", "make_world", "new_submission_id", "ogg", "refused",
           "story"]
