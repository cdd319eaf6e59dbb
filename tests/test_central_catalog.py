"""Public audio and the signed catalog on the service: what it refuses to serve.

The service cannot make a catalog (threat model 2): every catalog it accepts is signed
by the publishing key it pinned, strictly newer than the last, and names only audio it
holds with that SHA-256 and size.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync import catalog as catalog_format
from sync.envelope import X25519Identity
from sync.signing import SigningKey
from tests.central_helpers import World, catalog_bytes, make_world, ogg, refused, story
from tests.harness.central import REPO, remove_blob, stored_blobs


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from make_world(tmp_path)


def public_blobs(world: World, story_id: str) -> dict[str, bytes]:
    return {name: data for name, data in stored_blobs(world.data).items()
            if name.startswith(f"public/{story_id}/")}


def signed(world: World, data: bytes) -> str:
    return catalog_format.sign(data, world.publisher)


# -- story audio ---------------------------------------------------------------------------

def test_audio_is_stored_content_addressed_and_never_overwritten(world: World) -> None:
    audio = ogg(5000)
    reply = world.put_audio("amina-1", audio)
    assert reply.status_code == 201, reply.text
    digest = hashlib.sha256(audio).hexdigest()
    assert reply.json() == {"story_id": "amina-1", "sha256": digest, "size": 5000}
    # Named by its SHA-256 (files: public/<story>/<sha>.ogg, S3: public/<story>/<sha>).
    [(name, stored)] = public_blobs(world, "amina-1").items()
    assert digest in name and stored == audio
    before = world.snapshot()
    again = world.put_audio("amina-1", audio)  # idempotent: nothing written again
    assert again.status_code == 201 and again.json() == reply.json()
    assert world.snapshot() == before
    # New audio for the same story is another blob; the old one stays as it was.
    newer = ogg(4000)
    assert world.put_audio("amina-1", newer).status_code == 201
    blobs = public_blobs(world, "amina-1")
    assert len(blobs) == 2 and blobs[name] == audio
    assert "audio_stored" in world.audit_text()


def test_audio_refusals_store_nothing(world: World) -> None:
    audio = ogg(2000)
    good = hashlib.sha256(audio).hexdigest()
    url = "/api/v1/stories/amina-1.ogg"

    def put(status: int, error: str, *, content: bytes = audio, sha: str | None = good,
            ctype: str = "audio/ogg", auth: dict[str, str] | None = None,
            path: str = url) -> None:
        headers = {**(world.vet if auth is None else auth), "Content-Type": ctype}
        if sha is not None:
            headers["X-Content-SHA256"] = sha
        refused(world, "PUT", path, status, error, content=content, headers=headers)

    put(400, "checksum_mismatch", sha=hashlib.sha256(b"other").hexdigest())
    put(400, "bad_checksum", sha=None)
    put(400, "bad_checksum", sha="xyz")
    put(400, "not_ogg", content=b"RIFF" + audio[4:], sha=hashlib.sha256(
        b"RIFF" + audio[4:]).hexdigest())
    put(415, "bad_content_type", ctype="application/octet-stream")
    put(401, "unauthorized", auth=world.dev)  # a kiosk cannot publish audio
    put(401, "unauthorized", auth={})
    for bad in ("Amina", "a.b", "-x", "x" * 65, "%2e%2e", "..", "a%00b"):
        put(400, "bad_story_id", path=f"/api/v1/stories/{bad}.ogg")
    # An encoded slash makes it another path: no route, no file.
    put(404, "not_found", path="/api/v1/stories/..%2fservice.ogg")
    # Traversal folded by the client never reaches a file either.
    reply = world.client.put("/api/v1/stories/../service.key.ogg", content=audio,
                             headers={**world.vet, "Content-Type": "audio/ogg",
                                      "X-Content-SHA256": good})
    assert reply.status_code in (404, 405)
    assert "IDR-SIGNING-KEY" in (world.data / "service.key").read_text()


def test_audio_over_the_size_limit_is_413(tmp_path: Path) -> None:
    from sync.central.core import Settings

    for world in make_world(tmp_path, Settings(max_upload_bytes=1000)):
        audio = ogg(1001)
        refused(world, "PUT", "/api/v1/stories/big.ogg", 413, "too_large", content=audio,
                headers={**world.vet, "Content-Type": "audio/ogg",
                         "X-Content-SHA256": hashlib.sha256(audio).hexdigest()})


def test_audio_reads_etag_range_and_who_may_read_what(world: World) -> None:
    world.pin_publisher()
    audio = ogg(10_240, b"published")
    draft = ogg(3000, b"draft")
    assert world.put_audio("amina-1", audio).status_code == 201
    assert world.put_audio("draft-1", draft).status_code == 201
    url = "/api/v1/stories/amina-1.ogg"
    # Nothing published yet: a kiosk gets nothing, a vetter can check the upload.
    refused(world, "GET", url, 404, "not_found", headers=world.dev)
    assert world.client.get(url, headers=world.vet).content == audio
    data = catalog_bytes(1, (story("amina-1", audio),))
    assert world.put_catalog(data, signed(world, data)).status_code == 201

    full = world.client.get(url, headers=world.dev)
    assert full.status_code == 200 and full.content == audio
    assert full.headers["content-type"] == "audio/ogg"
    assert full.headers["accept-ranges"] == "bytes"
    etag = full.headers["etag"]
    assert etag == f'"{hashlib.sha256(audio).hexdigest()}"'
    assert world.client.get(url, headers={**world.dev, "If-None-Match": etag}
                            ).status_code == 304
    for header, piece in (("bytes=0-0", audio[:1]), ("bytes=100-199", audio[100:200]),
                          ("bytes=10000-", audio[10000:]), ("bytes=-5", audio[-5:])):
        reply = world.client.get(url, headers={**world.dev, "Range": header})
        assert reply.status_code == 206 and reply.content == piece, header
        assert reply.headers["content-range"].endswith(f"/{len(audio)}")
    for header in ("bytes=10240-", "bytes=5-4", "bytes=-0"):
        reply = world.client.get(url, headers={**world.dev, "Range": header})
        assert reply.status_code == 416, header
        assert reply.headers["content-range"] == f"bytes */{len(audio)}"
    # A story in no catalog stays hidden from kiosks; unknown and odd ids are 404.
    for bad in ("draft-1", "nobody", "Amina-1", "%2e%2e", "..%2fcentral"):
        reply = world.client.get(f"/api/v1/stories/{bad}.ogg", headers=world.dev)
        assert reply.status_code == 404, bad
    refused(world, "GET", url, 401, "unauthorized")
    # Taken down by the next catalog: gone for kiosks at once.
    empty = catalog_bytes(2)
    assert world.put_catalog(empty, signed(world, empty)).status_code == 201
    refused(world, "GET", url, 404, "not_found", headers=world.dev)


# -- the catalog -----------------------------------------------------------------------------

def test_no_publisher_key_means_no_catalog(world: World) -> None:
    data = catalog_bytes(1)
    refused(world, "PUT", "/api/v1/catalog", 409, "no_publisher_key", headers=world.vet,
            json={"catalog": data.decode(), "signature": signed(world, data)})
    refused(world, "GET", "/api/v1/catalog", 404, "no_catalog", headers=world.dev)
    refused(world, "GET", "/api/v1/catalog.sig", 404, "no_catalog", headers=world.dev)


def test_publish_then_serve_with_etag_and_304(world: World) -> None:
    world.pin_publisher()
    audio = ogg(4000)
    assert world.put_audio("amina-1", audio).status_code == 201
    data = catalog_bytes(1, (story("amina-1", audio),))
    signature = signed(world, data)
    reply = world.put_catalog(data, signature)
    assert reply.status_code == 201 and reply.json() == {"version": 1}
    # A retry of the very same catalog (lost reply) is answered, and changes nothing.
    before = world.snapshot()
    again = world.put_catalog(data, signature)
    assert again.status_code == 200 and again.json() == {"version": 1}
    assert world.snapshot() == before

    for headers in (world.dev, world.vet):
        got = world.client.get("/api/v1/catalog", headers=headers)
        assert got.status_code == 200 and got.content == data  # byte for byte
        assert got.headers["content-type"] == "application/json"
        assert got.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        sig = world.client.get("/api/v1/catalog.sig", headers=headers)
        assert sig.status_code == 200 and sig.text == signature
        assert sig.headers["content-type"].startswith("text/plain")
        assert sig.headers["etag"] == f'"{hashlib.sha256(signature.encode()).hexdigest()}"'
    # What a kiosk does with it: verify under the key it pinned.
    assert catalog_format.verify(got.content, sig.text, world.publisher.verify_key).version == 1
    etag = got.headers["etag"]
    nothing_new = world.client.get("/api/v1/catalog",
                                   headers={**world.dev, "If-None-Match": etag})
    assert nothing_new.status_code == 304 and nothing_new.content == b""
    assert world.client.get("/api/v1/catalog.sig", headers={
        **world.dev, "If-None-Match": sig.headers["etag"]}).status_code == 304
    assert world.client.get("/api/v1/catalog", headers={
        **world.dev, "If-None-Match": '"' + "0" * 64 + '"'}).status_code == 200
    refused(world, "GET", "/api/v1/catalog", 401, "unauthorized")
    # A newer one replaces it, and the old ETag no longer matches.
    newer = catalog_bytes(2, (story("amina-1", audio),))
    assert world.put_catalog(newer, signed(world, newer)).json() == {"version": 2}
    got = world.client.get("/api/v1/catalog", headers={**world.dev, "If-None-Match": etag})
    assert got.status_code == 200 and got.content == newer
    audit = world.audit_text()
    assert "catalog_published | v1 stories=1" in audit and "v2 stories=1" in audit
    assert world.publisher.verify_key.__str__() not in audit


def test_forged_stale_and_malformed_catalogs_are_refused(world: World) -> None:
    world.pin_publisher()
    audio = ogg(4000)
    assert world.put_audio("amina-1", audio).status_code == 201
    v2 = catalog_bytes(2, (story("amina-1", audio),))
    assert world.put_catalog(v2, signed(world, v2)).status_code == 201

    def put(status: int, error: str, data: bytes, signature: str) -> None:
        refused(world, "PUT", "/api/v1/catalog", status, error, headers=world.vet,
                json={"catalog": data.decode("utf-8", "replace"), "signature": signature})

    v3 = catalog_bytes(3, (story("amina-1", audio),))
    # Re-signed by another key: e.g. a compromised service swapping the recipients to
    # its own, or adding its own story.
    swapped = catalog_bytes(3, (story("amina-1", audio),),
                            recipients=(str(X25519Identity.generate().recipient()),))
    put(400, "bad_signature", swapped, catalog_format.sign(swapped, SigningKey.generate()))
    put(400, "bad_signature", v3, catalog_format.sign(v3, SigningKey.generate()))
    # The publisher's signature over other bytes: one byte changed, recipients swapped.
    put(400, "bad_signature", v3.replace(b"Story amina-1", b"Story amina-2"), signed(world, v3))
    put(400, "bad_signature", swapped, signed(world, v3))
    # The right key in another context (say, a receipt) is not a catalog signature.
    put(400, "bad_signature", v3, str(world.publisher.sign(v3, context="receipt")))
    put(400, "bad_signature", v3, "idrsig1garbage")
    # Replays: an older valid catalog and another catalog with the current version.
    v1 = catalog_bytes(1, (story("amina-1", audio),))
    put(409, "stale_catalog", v1, signed(world, v1))
    other_v2 = catalog_bytes(2)
    put(409, "stale_catalog", other_v2, signed(world, other_v2))
    # Signed but malformed (the signing tool would never make it; a catalog is parsed).
    junk = b'{"version": 9}'
    put(400, "bad_catalog", junk, signed(world, junk))
    for body in ({"catalog": v3.decode()}, {"catalog": 3, "signature": "x"},
                 {"catalog": v3.decode(), "signature": signed(world, v3), "extra": 1}):
        refused(world, "PUT", "/api/v1/catalog", 400, "bad_catalog", headers=world.vet,
                json=body)
    refused(world, "PUT", "/api/v1/catalog", 400, "bad_catalog", headers=world.vet,
            content=b"{nope")
    # Only vetters publish.
    refused(world, "PUT", "/api/v1/catalog", 401, "unauthorized", headers=world.dev,
            json={"catalog": v3.decode(), "signature": signed(world, v3)})
    assert world.put_catalog(v3, signed(world, v3)).status_code == 201


def test_every_story_needs_its_audio_with_that_hash_and_size(world: World) -> None:
    world.pin_publisher()
    stored, other = ogg(4000, b"stored"), ogg(4000, b"other")
    assert world.put_audio("stored", stored).status_code == 201
    cases = (
        story("absent", stored),                                   # nothing under that id
        story("stored", other),                                    # another hash
        story("stored", stored, size=3999),                        # another size
        story("moved", stored),                                    # the bytes, another id
    )
    data = catalog_bytes(1, (story("stored", stored), *cases[:1], *cases[3:]))
    reply = refused(world, "PUT", "/api/v1/catalog", 422, "audio_missing", headers=world.vet,
                    json={"catalog": data.decode(), "signature": signed(world, data)})
    assert reply.json()["stories"] == ["absent", "moved"]
    for bad in cases[1:3]:
        data = catalog_bytes(1, (bad,))
        reply = refused(world, "PUT", "/api/v1/catalog", 422, "audio_missing",
                        headers=world.vet,
                        json={"catalog": data.decode(), "signature": signed(world, data)})
        assert reply.json()["stories"] == ["stored"]
    # The blob's row is not enough: the bytes must be there too.
    digest = hashlib.sha256(stored).hexdigest()
    [name] = [n for n in public_blobs(world, "stored") if digest in n]
    remove_blob(world.data, name)
    data = catalog_bytes(1, (story("stored", stored),))
    refused(world, "PUT", "/api/v1/catalog", 422, "audio_missing", headers=world.vet,
            json={"catalog": data.decode(), "signature": signed(world, data)})


def test_set_publisher_key_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "central"
    key = SigningKey.generate().verify_key

    def central(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sync.central", *args],
                              capture_output=True, text=True, timeout=60, cwd=REPO)

    done = central("init", "--data", str(data), "--publisher-key", str(key))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("idrverify1")  # the service key
    status = central("status", "--data", str(data))
    assert f"publishing key: {key}" in status.stdout
    assert "catalog version: -" in status.stdout
    bad = central("set-publisher-key", "--data", str(data), "not-a-key")
    assert bad.returncode == 2 and "not a publishing key" in bad.stderr
    other = SigningKey.generate().verify_key
    done = central("set-publisher-key", "--data", str(data), str(other))
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == str(other)
    assert f"publishing key: {other}" in central("status", "--data", str(data)).stdout
    verify = central("audit", "verify", "--data", str(data))
    assert verify.returncode == 0 and "intact: 2 entries" in verify.stdout
