"""``vet serve``'s web app with httpx: the gate (token, Origin, Host), the decrypted
manifest and audio, Range, the preview cache, and no plaintext in the home folder.

The submissions are real: sealed by the kiosk's own custody code (fake microphone,
real Opus encoder, real age writer) to a post-quantum team identity, then laid out in
a ``vet`` home as ``vet pull`` leaves them. No service is needed here (the page falls
back to the last queue the workstation saw); the browser test runs the real one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from kiosk.audio.recorder import Recorder
from kiosk.vault.custody import SessionCustody
from kiosk.vault.layout import OUTBOX
from kiosk.vault.store import Store
from sync.envelope import open_bytes, open_sealed
from sync.envelope.mlkem import MlkemIdentity
from sync.vet import keys
from sync.vet.session import Vet
from sync.vet.web import Gate, PreparedPreview, VetBackend, create_app
from sync.vet.web import backend as backend_module
from sync.vet.web.server import unlock
from sync.vet.workspace import Home
from tests.audio_fakes import FakeStreams, record, tone

REPO = Path(__file__).resolve().parent.parent
PORT = 48765
BASE = f"http://127.0.0.1:{PORT}"
ORIGIN = {"Origin": BASE}
NAME = "Amina Diallo-Testimony"
PASSPHRASE = "correct horse"


def seal_submission(data_dir: Path, recipients: list[Any], answers: int, name: str, *,
                    consent: dict[str, bool] | None = None) -> str:
    """One kiosk submission (``answers`` tones), sealed to ``recipients``: its id."""
    store = Store.in_data_dir(data_dir)
    try:
        session = SessionCustody(data_dir=data_dir, store=store, recipients=recipients)
        for i in range(answers):
            _, take = record(session, Recorder(FakeStreams([tone(0.6, hz=300 + 150 * i)])),
                             f"q{i + 1}")
            while take.meters().elapsed_s < 0.6:
                time.sleep(0.01)
            take.stop()
            while not take.done:
                time.sleep(0.01)
        given: dict[str, Any] = {"display_name": name, "language": "en", "country": "KE"}
        if consent is not None:
            given["consent"] = consent
        session.submit(given)
        return session.submission_id
    finally:
        store.close()


def lay_out_pulled(home: Home, data_dir: Path, submission_id: str) -> dict[str, str]:
    """Copy the sealed files as ``vet pull`` leaves them; return {part: sha256}."""
    folder = data_dir / OUTBOX / submission_id
    parts = {}
    target = home.submission_dir(submission_id)
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.iterdir()):
        shutil.copyfile(path, target / path.name)
        parts[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    home.save_pull_state(submission_id, parts, True)
    return parts


def every_file(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file():
            yield path


class World:
    def __init__(self, root: Path) -> None:
        self.team = MlkemIdentity.generate()
        self.home = Home(root / "home")
        self.home.ensure()
        self.kiosk = root / "kiosk"
        self.sids = [seal_submission(self.kiosk, [self.team.recipient()], 2, NAME),
                     seal_submission(self.kiosk, [self.team.recipient()], 1, "Anonymous")]
        # The first is pulled; the second only listed (as if `vet pull` had not run yet).
        self.parts = lay_out_pulled(self.home, self.kiosk, self.sids[0])
        self.home.write_json(self.home.queue_path, {"submissions": [
            {"id": sid, "device_id": "dev-0123456789abcdef", "state": "received",
             "reason": None, "story_id": None, "received_at": "2026-11-28T05:00:00Z",
             "parts": []} for sid in self.sids]})
        self.gate = Gate(port=PORT)
        keys.write_identity(self.home.team_key, self.team, PASSPHRASE, work_factor=10)
        vet = Vet(self.home, passphrase=lambda: PASSPHRASE)
        unlock(vet)  # as `vet serve` does at start
        self.backend = VetBackend(vet)
        self.app = create_app(self.backend, self.gate)

    def client(self, *, auth: bool = True, **kwargs: Any) -> TestClient:
        headers = {"Authorization": f"Bearer {self.gate.login_token}"} if auth else {}
        headers.update(kwargs.pop("headers", {}))
        return TestClient(self.app, base_url=BASE, headers=headers, **kwargs)

    def plaintext(self, part: str) -> bytes:
        with open_sealed(self.home.part_path(self.sids[0], part),
                         identities=[self.team]) as f:
            return f.read()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("vetweb"))


def audio_parts(world: World) -> list[str]:
    return sorted(p for p in world.parts if p != "manifest.json.age")


# -- the gate ---------------------------------------------------------------------------

def test_no_token_is_401_everywhere_under_api(world: World) -> None:
    sid = world.sids[0]
    part = audio_parts(world)[0]
    with world.client(auth=False) as client:
        for path in ("/api/info", "/api/queue", f"/api/submissions/{sid}",
                     f"/api/submissions/{sid}/audio/{part}",
                     f"/api/submissions/{sid}/preview"):
            reply = client.get(path)
            assert reply.status_code == 401, path
            assert reply.json()["error"] == "unauthorized"
            assert NAME not in reply.text
        reply = client.post(f"/api/submissions/{sid}/decision", headers=ORIGIN,
                            json={"decision": "reject", "reason": "other"})
        assert reply.status_code == 401
        # A wrong token, or a forged cookie, is no better.
        bad = client.get("/api/queue", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        client.cookies.set(world.gate.cookie_name, "forged")
        assert client.get("/api/queue").status_code == 401
        # The page itself holds no data and loads without a token.
        page = client.get("/")
        assert page.status_code == 200 and "vet" in page.text


def test_login_token_buys_an_httponly_strict_cookie(world: World) -> None:
    with world.client(auth=False) as client:
        refused = client.post("/api/session", headers={**ORIGIN, "Authorization": "Bearer x"})
        assert refused.status_code == 401
        done = client.post("/api/session", headers={
            **ORIGIN, "Authorization": f"Bearer {world.gate.login_token}"})
        assert done.status_code == 204
        cookie = done.headers["set-cookie"]
        assert cookie.startswith(f"{world.gate.cookie_name}=")
        lowered = cookie.lower()
        assert "httponly" in lowered and "samesite=strict" in lowered and "path=/" in lowered
        # The cookie is not the printed token.
        assert world.gate.login_token not in cookie
        assert client.get("/api/queue").status_code == 200  # the cookie alone now
        # Without an Origin (a form posted by a script elsewhere): refused.
        bare = client.post("/api/session",
                           headers={"Authorization": f"Bearer {world.gate.login_token}"})
        assert bare.status_code == 403


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1",
                                    "https://127.0.0.1:48765"])
def test_other_origins_are_403(world: World, origin: str) -> None:
    sid = world.sids[0]
    with world.client() as client:
        for reply in (client.get("/api/queue", headers={"Origin": origin}),
                      client.get(f"/api/submissions/{sid}", headers={"Origin": origin}),
                      client.post(f"/api/submissions/{sid}/decision", headers={"Origin": origin},
                                  json={"decision": "reject", "reason": "other"})):
            assert reply.status_code == 403
            assert reply.json()["error"] == "bad_origin"
            assert NAME not in reply.text


def test_fetch_metadata_and_missing_origin(world: World) -> None:
    sid = world.sids[0]
    part = audio_parts(world)[0]
    with world.client() as client:
        for site in ("cross-site", "same-site"):
            reply = client.get(f"/api/submissions/{sid}/audio/{part}",
                               headers={"Sec-Fetch-Site": site})
            assert reply.status_code == 403 and reply.json()["error"] == "cross_site"
            assert client.get("/", headers={"Sec-Fetch-Site": site}).status_code == 403
        # A typed URL (none) may load the page, not the data.
        assert client.get("/", headers={"Sec-Fetch-Site": "none"}).status_code == 200
        assert client.get("/api/queue", headers={"Sec-Fetch-Site": "none"}).status_code == 403
        ok = client.get("/api/queue", headers={"Sec-Fetch-Site": "same-origin"})
        assert ok.status_code == 200
        # Every state-changing request needs our Origin, even with the token.
        reply = client.post(f"/api/submissions/{sid}/decision",
                            json={"decision": "reject", "reason": "other"})
        assert reply.status_code == 403
        assert client.post("/api/pull").status_code == 403


@pytest.mark.parametrize("host", ["evil.example", f"evil.example:{PORT}", "127.0.0.1",
                                  "127.0.0.1:1", f"0.0.0.0:{PORT}", f"[::1]:{PORT}"])
def test_wrong_host_is_421(world: World, host: str) -> None:
    """DNS rebinding: another name pointing at 127.0.0.1 sends its own Host."""
    with world.client() as client:
        for path in ("/", "/api/queue", f"/api/submissions/{world.sids[0]}"):
            reply = client.get(path, headers={"Host": host})
            assert reply.status_code == 421, (host, path)
            assert reply.json()["error"] == "bad_host"
            assert NAME not in reply.text
    with world.client() as client:
        assert client.get("/api/queue", headers={"Host": f"localhost:{PORT}"}).status_code \
            == 200


def test_every_response_says_no_store_and_locks_the_page(world: World) -> None:
    with world.client() as client:
        for reply in (client.get("/"), client.get("/static/app.js"),
                      client.get("/api/queue"), client.get("/api/queue", headers={"Host": "x"})):
            assert reply.headers["cache-control"] == "no-store"
            assert reply.headers["x-frame-options"] == "DENY"
            assert "frame-ancestors 'none'" in reply.headers["content-security-policy"]
            assert "script-src 'self'" in reply.headers["content-security-policy"]
            assert reply.headers["referrer-policy"] == "no-referrer"
        assert client.get("/static/../backend.py").status_code == 404
        assert client.get("/static/server.py").status_code == 404


# -- data ----------------------------------------------------------------------------------

def test_queue_falls_back_to_the_last_seen_and_filters(world: World) -> None:
    with world.client() as client:
        info = client.get("/api/info").json()
        assert "risk_to_defender" in info["reject_reasons"] and info["approve_reasons"] == [
            "vetted"]
        assert info["server"] is None and info["can_publish"] is False
        listed = client.get("/api/queue").json()
        assert listed["error"] == "not_logged_in"
        assert {s["id"]: s["pulled"] for s in listed["submissions"]} == {
            world.sids[0]: True, world.sids[1]: False}
        only = client.get("/api/queue", params={"pulled": "no"}).json()["submissions"]
        assert [s["id"] for s in only] == [world.sids[1]]
        assert client.get("/api/queue", params={"state": "rejected"}).json()[
            "submissions"] == []
        assert client.get("/api/queue", params={"state": "bogus"}).status_code == 400


def test_manifest_endpoint_returns_the_decrypted_manifest(world: World) -> None:
    sid = world.sids[0]
    sealed = world.home.part_path(sid, "manifest.json.age").read_bytes()
    expected = json.loads(open_bytes(sealed, [world.team]))
    with world.client() as client:
        reply = client.get(f"/api/submissions/{sid}")
        assert reply.status_code == 200
        assert reply.headers["cache-control"] == "no-store"
        body = reply.json()
        assert body["manifest"] == expected
        assert body["manifest"]["display_name"] == NAME
        assert body["state"] == "received"
        assert [a["file"] for a in body["audio"]] == [p["file"] for p in expected["parts"]]
        assert all(a["duration_s"] > 0.4 for a in body["audio"])
        # Not pulled yet: a clear 409, not a crash.
        missing = client.get(f"/api/submissions/{world.sids[1]}")
        assert missing.status_code == 409 and missing.json()["error"] == "not_pulled"
        assert client.get("/api/submissions/not-an-id").status_code == 404


def test_audio_endpoint_streams_decryptable_opus_with_ranges(world: World) -> None:
    sid = world.sids[0]
    for part in audio_parts(world):
        plain = world.plaintext(part)
        with world.client() as client:
            reply = client.get(f"/api/submissions/{sid}/audio/{part}")
            assert reply.status_code == 200
            assert reply.headers["content-type"] == "audio/ogg"
            assert reply.headers["cache-control"] == "no-store"
            assert reply.headers["accept-ranges"] == "bytes"
            assert reply.content == plain
            assert reply.content[:4] == b"OggS" and b"OpusHead" in reply.content[:64]
            audio, rate = sf.read(io.BytesIO(reply.content), dtype="int16")
            assert rate == 48_000 and len(audio) >= 0.5 * rate
            # Seeking: one range, the last bytes, and one past the end.
            mid = client.get(f"/api/submissions/{sid}/audio/{part}",
                             headers={"Range": "bytes=100-70099"})
            assert mid.status_code == 206
            assert mid.headers["content-range"] == f"bytes 100-{min(70099, len(plain) - 1)}/" \
                                                   f"{len(plain)}"
            assert mid.content == plain[100:70100]
            tail = client.get(f"/api/submissions/{sid}/audio/{part}",
                              headers={"Range": "bytes=-10"})
            assert tail.status_code == 206 and tail.content == plain[-10:]
            past = client.get(f"/api/submissions/{sid}/audio/{part}",
                              headers={"Range": f"bytes={len(plain)}-"})
            assert past.status_code == 416
            assert past.headers["content-range"] == f"bytes */{len(plain)}"
    with world.client() as client:
        for bad in ("manifest.json.age", "nothere.age", "..%2Fstate.json"):
            assert client.get(f"/api/submissions/{sid}/audio/{bad}").status_code == 404


def test_preview_is_made_once_in_memory_and_served_with_ranges(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's side of the preview (P's pipeline is tested on its own): the decrypted
    parts go in, in the manifest's order, with the trims and disguise the page asked."""
    calls: list[tuple[list[bytes], Any, bool]] = []

    def prepare(parts: list[bytes], *, trims: Any, disguise: bool) -> Any:
        calls.append((list(parts), trims, disguise))
        return PreparedPreview(ogg_bytes=b"OggS" + bytes(range(256)) * 600, duration_s=1.5)

    monkeypatch.setattr(backend_module, "_audio_api", lambda: prepare)
    sid = world.sids[0]
    manifest = json.loads(open_bytes(
        world.home.part_path(sid, "manifest.json.age").read_bytes(), [world.team]))
    with world.client() as client:
        url = f"/api/submissions/{sid}/preview"
        params = {"trim": ["0:0.1-0.5", "1:0.2-0"], "disguise": "true"}
        first = client.get(url, params=params)
        assert first.status_code == 200 and first.headers["x-duration"] == "1.500"
        again = client.get(url, params=params, headers={"Range": "bytes=4-259"})
        assert again.status_code == 206 and again.content == bytes(range(256))
        assert len(calls) == 1
        parts, trims, disguise = calls[0]
        assert parts == [world.plaintext(p["file"]) for p in manifest["parts"]]
        # "end 0" (to the end) reaches the pipeline as the part's exact length.
        info = sf.info(io.BytesIO(parts[1]))
        assert trims == {0: (0.1, 0.5), 1: (0.2, info.frames / info.samplerate)}
        assert disguise is True
        assert client.get(url, params={"trim": "0:2-1"}).status_code == 400
        assert client.get(url, params={"trim": "x"}).status_code == 400


def test_bad_bodies_are_400(world: World) -> None:
    sid = world.sids[0]
    with world.client(headers=ORIGIN) as client:
        reply = client.post(f"/api/submissions/{sid}/decision", json={"decision": "maybe"})
        assert reply.status_code == 400 and reply.json()["error"] == "bad_request"
        reply = client.post(f"/api/submissions/{sid}/publish",
                            json={"title": "t", "anonymous": False})
        assert reply.status_code == 400
        assert reply.json()["error"] == "display_name_missing"


def test_preview_runs_the_real_pipeline_with_trim_and_disguise(world: World) -> None:
    """The real audio pipeline (P's), in memory: trimmed and disguised, -16 LUFS Opus."""
    from sync.vet.audio import measure

    sid = world.sids[0]
    url = f"/api/submissions/{sid}/preview"
    with world.client() as client:
        plain = client.get(url)
        trimmed = client.get(url, params={"trim": "0:0.2-0", "disguise": "true"})
    assert plain.status_code == 200 and trimmed.status_code == 200, trimmed.text
    for reply in (plain, trimmed):
        assert reply.headers["content-type"] == "audio/ogg"
        assert reply.headers["cache-control"] == "no-store"
        audio, rate = sf.read(io.BytesIO(reply.content), dtype="float32")
        assert rate == 48_000
        lufs, peak = measure(reply.content)
        assert abs(lufs + 16) <= 0.5 and peak <= -1.0
    # 0.2 s fewer, within Opus's framing.
    assert abs(float(plain.headers["x-duration"]) - float(trimmed.headers["x-duration"])
               - 0.2) < 0.03
    assert plain.content != trimmed.content


def test_no_plaintext_in_the_home_folder(world: World) -> None:
    """After every request above (and these), nothing in the home holds plaintext."""
    sid = world.sids[0]
    with world.client() as client:
        client.get(f"/api/submissions/{sid}")
        for part in audio_parts(world):
            client.get(f"/api/submissions/{sid}/audio/{part}")
        client.get(f"/api/submissions/{sid}/preview", params={"trim": "1:0.1-0.4"})
    manifest = open_bytes(world.home.part_path(sid, "manifest.json.age").read_bytes(),
                          [world.team])
    needles = [manifest, NAME.encode(), json.dumps(NAME).encode()]
    for part in audio_parts(world):
        plain = world.plaintext(part)
        # Any 64-byte window of the Opus payload (past the common Ogg headers).
        needles += [plain[i:i + 64] for i in range(200, len(plain) - 64, 997)]
    files = list(every_file(world.home.root))
    assert files
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"plaintext in {path.relative_to(world.home.root)}"
    # And nothing new appeared besides what `vet pull` laid out.
    names = {str(p.relative_to(world.home.root)) for p in files}
    assert names == {"queue.json", "keys/team.age", f"pulled/{sid}/state.json",
                     *(f"pulled/{sid}/{p}" for p in world.parts)}


# -- the real server -------------------------------------------------------------------------

def test_serve_prints_a_login_link_and_listens_on_loopback_only(tmp_path: Path,
                                                                world: World) -> None:
    import httpx

    from sync.vet import keys

    home = Home(tmp_path / "home")
    home.ensure()
    keys.write_identity(home.team_key, world.team, PASSPHRASE, work_factor=10)
    env = {**os.environ, "VET_PASSPHRASE": "wrong", "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "sync.vet.web", "--home", str(home.root), "--port", "0"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2 and "wrong passphrase" in done.stderr
    env["VET_PASSPHRASE"] = PASSPHRASE
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("vet serve: open http://127.0.0.1:"), line
        url = line.split()[-1]
        base, token = url.split("/#token=")
        port = int(base.rsplit(":", 1)[1])
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/api/queue").status_code == 401
            assert client.get("/api/queue", headers={"Authorization": f"Bearer {token}",
                                                     "Host": "rebind.example"}).status_code \
                == 421
            ok = client.get("/api/queue", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200
            assert "server" not in {k.lower() for k in ok.headers}
        # Loopback only: the same port on another local address answers nothing.
        import socket

        addresses = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None,
                                                         socket.AF_INET)} - {"127.0.0.1"}
        for address in addresses:
            if address.startswith("127."):
                continue
            with pytest.raises(OSError), socket.create_connection((address, port), 1):
                pass
    finally:
        proc.terminate()
        proc.wait(10)
    rest = (proc.stdout.read() if proc.stdout else "") + (proc.stderr.read()
                                                          if proc.stderr else "")
    assert token not in rest  # printed once

