"""End to end on loopback: a real ``central serve``, a kiosk enrolled with its CLI,
sealed submissions made with SessionCustody (fake microphone) and sent with ``kiosk
sync --once``, then the ``vet`` tool does the vetting team's whole day: keygen, login,
pull (byte-identical, resumed, tampering refused), list, show, play --out, decide,
publish (the real audio pipeline; the service serves a catalog that verifies with the
publisher key; the story's audio hash and loudness are measured), set-recipients,
withdrawal and unpublish.

The CLI runs in-process (``sync.vet.cli.run``, the same code as the ``vet`` command,
with an HTTP transport seam for the tampering case); one call goes through the
installed ``vet`` executable.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from kiosk.audio.recorder import Recorder
from kiosk.vault.custody import SessionCustody
from kiosk.vault.layout import OUTBOX
from kiosk.vault.store import Store
from sync import catalog as cat
from sync.envelope import open_bytes, open_with_passphrase, parse_identity_file, parse_recipient
from sync.envelope.mlkem import MlkemIdentity
from sync.vet.cli import run
from sync.withdrawal import withdrawal_key
from tests.audio_fakes import FakeStreams, record, tone
from tests.harness.central import CentralService

REPO = Path(__file__).resolve().parent.parent
PASSPHRASE = "correct horse battery"


def kiosk(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kiosk", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def submit(data_dir: Path, recipients: list[str], manifest: dict, seconds: list[float], *,
           code: str | None = None) -> str:
    store = Store.in_data_dir(data_dir)
    try:
        session = SessionCustody(data_dir=data_dir, store=store,
                                 recipients=[parse_recipient(r) for r in recipients])
        for i, length in enumerate(seconds):
            _, take = record(session, Recorder(FakeStreams([tone(length, hz=220 + 110 * i,
                                                                  amplitude=0.3)])),
                             f"q{i + 1}")
            while take.meters().elapsed_s < length:
                time.sleep(0.01)
            take.stop()
            while not take.done:
                time.sleep(0.01)
        answers = [{"prompt_id": f"q{i + 1}", "part": name, "skipped": False}
                   for i, name in enumerate(p.name for p in session.parts())]
        session.submit({**manifest, "answers": answers},
                       withdrawal_key=withdrawal_key(code) if code else None)
        return session.submission_id
    finally:
        store.close()


class Vet:
    """``vet`` in-process with a home and a passphrase."""

    def __init__(self, home: Path, transport: httpx.BaseTransport | None = None) -> None:
        self.home = home
        self.transport = transport

    def __call__(self, *args: str, passphrase: str = PASSPHRASE,
                 transport: httpx.BaseTransport | None = None) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        old = {k: os.environ.get(k) for k in ("VET_HOME", "VET_PASSPHRASE")}
        os.environ["VET_HOME"] = str(self.home)
        os.environ["VET_PASSPHRASE"] = passphrase
        try:
            code = run(list(args), transport=transport or self.transport, out=out, err=err)
        finally:
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        assert "Traceback" not in err.getvalue()
        if code == 0:
            assert err.getvalue() == "" or err.getvalue().startswith("warning:"), err.getvalue()
        else:
            assert len(err.getvalue().strip().splitlines()) == 1, err.getvalue()
        return code, out.getvalue(), err.getvalue()


class TamperingTransport(httpx.BaseTransport):
    """A man in the middle: flips one byte of every part the service sends."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        reply = self.inner.handle_request(request)
        if "/parts/" not in request.url.path:
            return reply
        body = bytearray(reply.read())
        if body:
            body[len(body) // 2] ^= 0x01
        headers = {k: v for k, v in reply.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding")}
        return httpx.Response(reply.status_code, headers=headers, content=bytes(body))


def lines(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())
            if not k.startswith("#")}


@pytest.fixture
def service(tmp_path: Path):
    with CentralService(tmp_path / "central") as svc:
        yield svc


def test_the_vetting_teams_day(tmp_path: Path, service: CentralService) -> None:
    home = tmp_path / "vet-home"
    vet = Vet(home)

    # -- keygen: three keys, two files under a passphrase, the escrow only printed -------
    code, out, _ = vet("keygen", "--work-factor", "10")
    assert code == 0
    keys = lines(out)
    assert keys["recipient"].startswith("age1pq1") and keys["escrow"].startswith("age1pq1")
    assert keys["publisher"].startswith("idrverify1")
    assert out.splitlines()[-3:] == [f"recipient: {keys['recipient']}",
                                     f"escrow: {keys['escrow']}",
                                     f"publisher: {keys['publisher']}"]
    assert sorted(p.name for p in (home / "keys").iterdir()) == [
        "publisher.age", "recipients.json", "team.age"]
    for name in ("team.age", "publisher.age"):
        assert (home / "keys" / name).stat().st_mode & 0o777 == 0o600
        assert (home / "keys" / name).read_bytes().startswith(b"age-encryption.org/v1\n-> scrypt")
    armored = out[out.index("-----BEGIN"):out.index("-----END AGE ENCRYPTED FILE-----") + 32]
    escrow = parse_identity_file(open_with_passphrase(armored.encode(), PASSPHRASE).decode())
    assert str(escrow[0].recipient()) == keys["escrow"]
    assert keys["escrow"] not in (home / "keys" / "team.age").read_text(errors="replace")
    assert json.loads((home / "keys" / "recipients.json").read_text()) == {
        "recipients": [keys["recipient"], keys["escrow"]]}
    code, _, err = vet("keygen", "--work-factor", "10")
    assert code == 2 and "--force" in err
    team = open_with_passphrase((home / "keys" / "team.age").read_bytes(), PASSPHRASE)
    team_identity = parse_identity_file(team.decode())
    assert isinstance(team_identity[0], MlkemIdentity)
    service.cli("set-publisher-key", keys["publisher"])

    # -- a kiosk: enrol, three submissions sealed to team + escrow, sync ------------------
    data_dir = tmp_path / "kiosk"
    config = tmp_path / "kiosk.toml"
    config.write_text(f'data_dir = "{data_dir}"\n[sync]\nchunk_bytes = 65536\n')
    done = kiosk(config, "enrol", "--server", service.url, "--code", service.enrol_code())
    assert done.returncode == 0, done.stderr
    recipients = [keys["recipient"], keys["escrow"]]
    consent_named = {"publish_voice": True, "show_name": True, "may_contact": False}
    consent_anon = {"publish_voice": True, "show_name": False, "may_contact": False}
    named = submit(data_dir, recipients, {
        "language": "en", "display_name": "Amina Diallo", "name": "Amina Diallo",
        "anonymous": False, "country": "KE", "contact": None, "consent": consent_named,
        "prompt_ids": ["q1", "q2"]}, [1.2, 0.8])
    anonymous = submit(data_dir, recipients, {
        "language": "fr", "display_name": "Anonymous", "name": None, "anonymous": True,
        "country": "SN", "contact": None, "consent": consent_anon, "prompt_ids": ["q1"]},
        [1.0], code="meadow teapot otter violin")
    doubtful = submit(data_dir, recipients, {
        "language": "en", "display_name": "Anonymous", "name": None, "anonymous": True,
        "country": "GB", "contact": None, "consent": consent_anon, "prompt_ids": ["q1"]},
        [0.6])
    done = kiosk(config, "sync", "--once")
    assert done.returncode == 0, done.stderr
    assert "acknowledged 3" in done.stdout

    # -- login --------------------------------------------------------------------------
    token = service.vetter_token("team")
    code, _, err = vet("login", "--server", service.url, "--token", "idrvet_nope")
    assert code == 2 and "refused the token" in err
    assert not (home / "config.json").exists()
    code, out, _ = vet("login", "--server", service.url, "--token", token)
    assert code == 0 and "3 submissions" in out
    assert (home / "config.json").stat().st_mode & 0o777 == 0o600
    assert token not in out

    # -- pull through a tampering proxy: refused, nothing marked complete --------------
    code, out, err = vet("pull", transport=TamperingTransport())
    assert code == 2 and "SHA-256 does not match" in err
    assert "pulled 0 submissions" in out
    for sid in (named, anonymous, doubtful):
        state = json.loads((home / "pulled" / sid / "state.json").read_text())
        assert state["complete"] is False
        assert not any(p.name != "state.json" for p in (home / "pulled" / sid).iterdir())
    code, _, err = vet("show", named)
    assert code == 2 and "not pulled" in err

    # -- pull: resumes a partial part, then byte-identical to the kiosk's sealed files --
    outbox = data_dir / OUTBOX
    first = sorted(p.name for p in (outbox / named).iterdir())[0]
    partial = (outbox / named / first).read_bytes()[:1000]
    (home / "pulled" / named / first).write_bytes(partial)
    total = sum(p.stat().st_size for sid in (named, anonymous, doubtful)
                for p in (outbox / sid).iterdir())
    code, out, _ = vet("pull")
    assert code == 0
    assert out.strip().splitlines()[-1] == f"pulled 3 submissions ({total - 1000} bytes)"
    for sid in (named, anonymous, doubtful):
        for part in (outbox / sid).iterdir():
            assert (home / "pulled" / sid / part.name).read_bytes() == part.read_bytes()
        assert json.loads((home / "pulled" / sid / "state.json").read_text())["complete"]
    code, out, _ = vet("pull")
    assert code == 0 and out.strip() == "pulled 0 submissions (0 bytes)"

    # -- list, show, play --out ---------------------------------------------------------
    code, out, _ = vet("list", "--json")
    rows = {r["id"]: r for r in json.loads(out)}
    assert set(rows) == {named, anonymous, doubtful}
    assert rows[named] == {"id": named, "state": "received", "reason": None,
                           "received_at": rows[named]["received_at"], "parts": 3,
                           "story_id": None, "pulled": True}
    code, out, _ = vet("list")
    assert code == 0 and out.splitlines()[0].split() == [
        "ID", "STATE", "RECEIVED", "PARTS", "STORY", "PULLED"]
    assert len(out.splitlines()) == 4
    code, out, _ = vet("show", named)
    manifest = json.loads(out)
    assert manifest["submission_id"] == named and manifest["display_name"] == "Amina Diallo"
    assert manifest["country"] == "KE" and len(manifest["parts"]) == 2
    export = tmp_path / "answer.ogg"
    code, out, _ = vet("play", named, "2", "--out", str(export))
    assert code == 0
    audio, rate = sf.read(export)
    assert rate == 48_000 and 0.7 < len(audio) / rate < 0.9
    code, _, err = vet("play", named, "2", "--out", str(export))
    assert code == 2 and "exists" in err
    code, _, err = vet("play", named, "7", "--out", str(tmp_path / "x.ogg"))
    assert code == 2 and "no part 7" in err

    # -- bad input: wrong passphrase, unknown id, bad reason ------------------------------
    code, _, err = vet("show", named, passphrase="not the passphrase")
    assert code == 2 and "wrong passphrase" in err
    code, _, err = vet("show", "0192f0c8-0000-7000-8000-000000000000")
    assert code == 2 and "not pulled" in err
    code, _, err = vet("decide", "0192f0c8-0000-7000-8000-000000000000", "reject",
                       "--reason", "other")
    assert code == 2 and "unknown submission" in err
    code, _, err = vet("decide", "not-an-id", "reject", "--reason", "other")
    assert code == 2 and "unknown submission" in err
    code, _, err = vet("decide", doubtful, "reject", "--reason", "boring")
    assert code == 2 and "risk_to_others" in err
    code, _, err = vet("decide", doubtful, "reject")
    assert code == 2

    # -- decide: the reason goes to the service, the note stays here --------------------
    code, out, _ = vet("decide", doubtful, "reject", "--reason", "untrue_or_deceptive",
                       "--note", "dates do not match the events")
    assert code == 0 and "rejected (untrue_or_deceptive)" in out
    queue = httpx.get(f"{service.url}/api/v1/queue", timeout=10,
                      headers={"Authorization": f"Bearer {token}"}).json()["submissions"]
    entry = next(e for e in queue if e["id"] == doubtful)
    assert (entry["state"], entry["reason"]) == ("rejected", "untrue_or_deceptive")
    notes = json.loads((home / "decisions" / f"{doubtful}.json").read_text())
    assert notes["decisions"][-1]["note"] == "dates do not match the events"
    assert (home / "decisions" / f"{doubtful}.json").stat().st_mode & 0o777 == 0o600
    assert "dates do not match" not in service.log_text()
    code, _, err = vet("publish", doubtful)
    assert code == 2 and "rejected" in err

    # -- publish: the real pipeline, the service serves a catalog signed by the team ----
    transcript = tmp_path / "transcript.txt"
    transcript.write_text("I defend the land rights of my community.\n")
    code, _, err = vet("publish", anonymous, "--display-name", "Someone")
    assert code == 2 and "consent" in err
    code, out, _ = vet("publish", named, "--theme", "land", "--transcript", str(transcript),
                       "--trim", "1:0.1-1.1")
    assert code == 0, out
    published = lines(out)
    story_a = published["story"]
    assert published["catalog"] == "version 1, 1 stories"
    with httpx.Client(base_url=f"{service.url}/api/v1", timeout=10,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        data = http.get("/catalog").content
        signature = http.get("/catalog.sig").text
        catalog = cat.verify(data, signature, keys["publisher"])
        assert catalog.version == 1
        assert catalog.recipients == (keys["recipient"], keys["escrow"])
        story = catalog.story(story_a)
        assert story is not None
        assert (story.display_name, story.country, story.region, story.language) == (
            "Amina Diallo", "KE", "Africa", "en")
        assert story.themes == ("land",) and story.transcript.startswith("I defend")
        ogg = http.get(f"/{story.url}").content
        assert hashlib.sha256(ogg).hexdigest() == story.audio_sha256 and len(ogg) == story.size
        samples, rate = sf.read(io.BytesIO(ogg))
        import pyloudnorm
        lufs = pyloudnorm.Meter(rate).integrated_loudness(samples)
        from scipy.signal import resample_poly
        true_peak = 20 * np.log10(np.max(np.abs(resample_poly(samples, 4, 1))))
        print(f"published story {story_a}: {story.duration_s:.2f} s, {lufs:.2f} LUFS,"
              f" true peak {true_peak:.2f} dBTP (4x oversampled; measured on the served"
              f" file), {len(ogg)} bytes")
        assert abs(lufs - -16.0) <= 0.5
        assert true_peak <= -1.0 + 0.05
        # 1.0 s of the first part, a pause, the 0.8 s second part.
        assert 2.2 < story.duration_s < 2.6
    assert (home / "published" / "catalog.json").read_bytes() == data
    code, out, _ = vet("list", "--json")
    row = next(r for r in json.loads(out) if r["id"] == named)
    assert (row["state"], row["story_id"]) == ("published", story_a)
    code, _, err = vet("publish", named)
    assert code == 2 and "already published" in err

    code, out, _ = vet("publish", anonymous, "--title", "Voices", "--region", "West Africa",
                       "--disguise-voice")
    assert code == 0
    story_b = lines(out)["story"]
    assert lines(out)["catalog"] == "version 2, 2 stories"
    second = cat.parse((home / "published" / "catalog.json").read_bytes()).story(story_b)
    assert second is not None
    assert (second.display_name, second.language, second.country, second.title,
            second.region) == ("Anonymous", "fr", "SN", "Voices", "West Africa")

    # -- set-recipients (validated) into the next catalog --------------------------------
    code, _, err = vet("set-recipients", keys["recipient"], "age1notakey")
    assert code == 2 and "not an age recipient" in err
    from sync.envelope import X25519Identity
    classic = str(X25519Identity.generate().recipient())
    code, _, err = vet("set-recipients", keys["recipient"], classic)
    assert code == 2 and "--allow-classic" in err
    new_escrow = str(MlkemIdentity.generate().recipient())
    code, out, _ = vet("set-recipients", keys["recipient"], new_escrow, "--publish-now")
    assert code == 0 and "version 3, 2 stories" in out
    code, _, err = vet("set-prompts", "nonsense")
    assert code == 2 and "unknown prompt" in err
    code, out, _ = vet("set-prompts", "work", "message")
    assert code == 0
    latest = httpx.get(f"{service.url}/api/v1/catalog", timeout=10,
                       headers={"Authorization": f"Bearer {token}"}).content
    assert cat.parse(latest).recipients == (keys["recipient"], new_escrow)

    # -- withdrawal: the defender's code; the next catalog drops the story --------------
    reply = httpx.post(f"{service.url}/api/v1/withdraw", timeout=30,
                       json={"code": "meadow teapot otter violin"})
    assert reply.status_code == 200, reply.text
    code, _, err = vet("publish", anonymous)
    assert code == 2 and "withdrawn" in err

    # -- unpublish: a new catalog without it (and without the withdrawn one) -------------
    code, out, _ = vet("unpublish", story_a)
    assert code == 0 and lines(out)["catalog"] == "version 4, 0 stories"
    with httpx.Client(base_url=f"{service.url}/api/v1", timeout=10,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        catalog = cat.verify(http.get("/catalog").content, http.get("/catalog.sig").text,
                             keys["publisher"])
        assert catalog.version == 4 and catalog.stories == ()
        assert catalog.prompts == ("work", "message")
        assert catalog.recipients == (keys["recipient"], new_escrow)
        states = {e["id"]: e["state"] for e in http.get("/queue").json()["submissions"]}
    assert states == {named: "unpublished", anonymous: "withdrawn", doubtful: "rejected"}
    assert story_b in latest.decode()  # it was there until the withdrawal
    code, _, err = vet("unpublish", story_a)
    assert code == 2 and "unknown story" in err

    # -- pull removes the withdrawn testimony from this workstation; the real command ---
    done = subprocess.run([str(Path(sys.executable).parent / "vet"), "pull"],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "VET_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["removed 1 withdrawn submissions",
                                        "pulled 0 submissions (0 bytes)"]
    assert not (home / "pulled" / anonymous).exists()
    # Nothing in the home is plaintext: every part is still an age file.
    for part in (home / "pulled").rglob("*.age"):
        assert part.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert open_bytes((home / "pulled" / named / "manifest.json.age").read_bytes(),
                      team_identity)
