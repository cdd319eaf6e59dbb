"""The vet tool's logic against a fake service (httpx.MockTransport) and a fake audio
pipeline: consent and display names, the catalog chain (n = the highest version
anywhere; stories of withdrawn submissions dropped; a catalog signed by another key not
built on), what the pipeline is asked for, resume corner cases, path safety, offline
listing and the exit codes. The real service and the real pipeline run in
tests/test_vet_cli.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync import catalog as cat
from sync import vetting
from sync.envelope import seal_bytes
from sync.signing import SigningKey
from sync.vet import publish as pub
from sync.vet.cli import run
from sync.vet.session import Vet
from sync.vet.workspace import Home

PASSPHRASE = "a long enough passphrase"
OGG = b"OggS" + bytes(60)


@dataclass
class FakePrepared:
    ogg_bytes: bytes
    duration_s: float = 3.5
    lufs: float = -16.0
    true_peak_dbtp: float = -1.5
    sample_rate: int = 48_000


class FakeService:
    """Just enough of the central service's vetter API, with its rules."""

    def __init__(self) -> None:
        self.submissions: dict[str, dict[str, Any]] = {}
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.audio: dict[str, bytes] = {}
        self.catalog: tuple[bytes, str] | None = None
        self.publisher: str | None = None
        self.requests: list[httpx.Request] = []
        self.ignore_range = False
        self.down = False

    def add(self, parts: dict[str, bytes], state: str = "received") -> str:
        sid = str(uuid.UUID(int=(0x0192F0C8 << 96) | (7 << 76) | (2 << 62)
                            | len(self.submissions) + 1))
        self.submissions[sid] = {
            "id": sid, "device_id": "dev-0123456789abcdef", "state": state, "reason": None,
            "story_id": None, "received_at": "2026-11-28T10:00:00Z",
            "parts": [{"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                      for n, d in parts.items()]}
        for name, data in parts.items():
            self.blobs[(sid, name)] = data
        return sid

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    @staticmethod
    def error(status: int, code: str) -> httpx.Response:
        return httpx.Response(status, json={"error": code, "detail": code})

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("refused", request=request)
        self.requests.append(request)
        if request.headers.get("authorization") != "Bearer idrvet_good":
            return self.error(401, "unauthorized")
        path = request.url.path.removeprefix("/api/v1")
        method = request.method
        if (method, path) == ("GET", "/queue"):
            return httpx.Response(200, json={"submissions": list(self.submissions.values())})
        if m := re.fullmatch(r"/submissions/([^/]+)/parts/([^/]+)", path):
            data = self.blobs.get((m[1], m[2]))
            if data is None:
                return self.error(404, "not_found")
            wanted = request.headers.get("range")
            if wanted and not self.ignore_range:
                start = int(wanted.removeprefix("bytes=").rstrip("-"))
                return httpx.Response(206, content=data[start:])
            return httpx.Response(200, content=data)
        if m := re.fullmatch(r"/submissions/([^/]+)/state", path):
            entry = self.submissions.get(m[1])
            if entry is None:
                return self.error(404, "not_found")
            body = json.loads(request.content)
            try:
                vetting.check_move(entry["state"], body["state"])
                reason = vetting.reason_for(body["state"], body["reason"])
            except vetting.IllegalTransition:
                return self.error(409, "illegal_transition")
            except vetting.BadReason:
                return self.error(400, "bad_reason")
            entry["state"] = body["state"]
            entry["reason"] = reason or entry["reason"]
            if body["state"] == "published":
                entry["story_id"] = body["story_id"]
            return httpx.Response(200, json={k: entry[k] for k in
                                             ("id", "state", "reason", "story_id")})
        if m := re.fullmatch(r"/stories/(.+)\.ogg", path):
            if method == "PUT":
                assert request.headers["x-content-sha256"] == \
                    hashlib.sha256(request.content).hexdigest()
                self.audio[m[1]] = request.content
                return httpx.Response(201, json={})
        if path == "/catalog" and method == "GET":
            return httpx.Response(200, content=self.catalog[0]) if self.catalog \
                else self.error(404, "not_found")
        if path == "/catalog.sig" and method == "GET":
            return httpx.Response(200, text=self.catalog[1]) if self.catalog \
                else self.error(404, "not_found")
        if path == "/catalog" and method == "PUT":
            body = json.loads(request.content)
            data = body["catalog"].encode()
            try:
                new = cat.verify(data, body["signature"], self.publisher or "")
            except cat.CatalogError:
                return self.error(400, "bad_signature")
            if self.catalog and new.version <= cat.parse(self.catalog[0]).version:
                return self.error(409, "stale_catalog")
            missing = [s.id for s in new.stories if s.id not in self.audio]
            if missing:
                return self.error(422, "audio_missing")
            self.catalog = (data, body["signature"])
            return httpx.Response(201, json={"version": new.version})
        return self.error(404, "not_found")


class Tool:
    def __init__(self, home: Path, service: FakeService) -> None:
        self.home = home
        self.service = service

    def __call__(self, *args: str, passphrase: str = PASSPHRASE) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        os.environ["VET_PASSPHRASE"] = passphrase
        try:
            code = run(["--home", str(self.home), *args],
                       transport=self.service.transport(), out=out, err=err)
        finally:
            os.environ.pop("VET_PASSPHRASE", None)
        assert "Traceback" not in err.getvalue()
        return code, out.getvalue(), err.getvalue()

    def vet(self) -> Vet:
        return Vet(Home(self.home), passphrase=lambda: PASSPHRASE,
                   transport=self.service.transport())


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> tuple[Tool, FakeService, dict[str, str]]:
    # A guard: should --home ever be lost, nothing lands in the real default home.
    monkeypatch.setenv("VET_HOME", str(tmp_path / "not-this-home"))
    monkeypatch.setenv("HOME", str(tmp_path / "not-this-user"))
    service = FakeService()
    tool = Tool(tmp_path / "home", service)
    code, out, _ = tool("keygen", "--work-factor", "10")
    assert code == 0
    keys = dict(line.split(": ", 1) for line in out.splitlines()[-3:])
    service.publisher = keys["publisher"]
    assert tool("login", "--server", "http://central.test", "--token", "idrvet_good")[0] == 0
    assert not (tmp_path / "not-this-home").exists()
    return tool, service, keys


def add_submission(service: FakeService, keys: dict[str, str], *, show_name: bool = True,
                   name: str | None = "Amina", country: str | None = "KE",
                   publish_voice: bool = True, parts: int = 2,
                   state: str = "received") -> str:
    audio = {f"q{i + 1}.age": seal_bytes(f"opus {i}".encode(), [keys["recipient"]])
             for i in range(parts)}
    manifest = {"language": "sw", "display_name": name if show_name and name else "Anonymous",
                "name": name if show_name else None, "anonymous": not show_name,
                "country": country, "contact": None,
                "consent": {"publish_voice": publish_voice, "show_name": show_name,
                            "may_contact": False},
                "prompt_ids": [f"q{i + 1}" for i in range(parts)],
                # Answered in reverse order of recording: the story follows the answers.
                "answers": [{"prompt_id": f"q{i + 1}", "part": f"q{i + 1}", "skipped": False}
                            for i in reversed(range(parts))],
                "parts": [{"name": f"q{i + 1}", "file": f"q{i + 1}.age", "prompt_id":
                           f"q{i + 1}", "duration_s": 1.0, "size": 1, "sha256": "0" * 64,
                           "overflows": 0} for i in range(parts)]}
    sid = service.add({**audio, "manifest.json.age": seal_bytes(
        json.dumps(manifest).encode(), [keys["recipient"]])}, state=state)
    manifest["submission_id"] = sid
    return sid


class Pipeline:
    """The fake prepare_story_audio: records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[bytes], dict[str, Any]]] = []

    def __call__(self, parts: list[bytes], **kwargs: Any) -> FakePrepared:
        self.calls.append((list(parts), kwargs))
        return FakePrepared(OGG + hashlib.sha256(b"".join(parts)).digest())


@pytest.fixture
def pipeline(monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    fake = Pipeline()
    monkeypatch.setattr(pub, "_pipeline", lambda: fake)
    return fake


def test_publish_asks_the_pipeline_for_the_answers_in_order(world, pipeline) -> None:
    tool, service, keys = world
    sid = add_submission(service, keys)
    assert tool("pull")[0] == 0
    code, out, err = tool("publish", sid, "--trim", "q2:0.5-2", "--trim", "2:1-3",
                          "--disguise-voice", "--disguise-amount", "-3")
    assert code == 0, err
    parts, kwargs = pipeline.calls[0]
    assert parts == [b"opus 1", b"opus 0"]  # the answers' order
    assert kwargs == {"trims": {0: (0.5, 2.0), 1: (1.0, 3.0)}, "disguise": True,
                      "disguise_amount": -3.0}
    story_id = out.splitlines()[-2].removeprefix("story: ")
    assert re.fullmatch(r"s-[0-9a-f]{12}", story_id)
    catalog = cat.verify(*service.catalog, keys["publisher"])  # type: ignore[misc]
    story = catalog.story(story_id)
    assert story is not None
    assert (story.display_name, story.country, story.region, story.language, story.title) == (
        "Amina", "KE", "Africa", "sw", "A defender from Kenya")
    assert hashlib.sha256(service.audio[story_id]).hexdigest() == story.audio_sha256
    assert catalog.prompts == tuple(pub.default_prompts())
    # received -> in_review -> approved -> published, in that order.
    posted = [json.loads(r.content)["state"] for r in service.requests
              if r.url.path.endswith("/state")]
    assert posted == ["in_review", "approved", "published"]
    assert service.submissions[sid]["story_id"] == story_id
    assert Home(tool.home).story_map() == {story_id: sid}


@pytest.mark.parametrize(("show_name", "args", "expected"), [
    (True, [], "Amina"),
    (True, ["--anonymous"], "Anonymous"),
    (True, ["--display-name", "A. D."], "A. D."),
    (False, [], "Anonymous"),
    (False, ["--display-name", "Amina"], None),  # refused: no consent to naming
])
def test_display_name_follows_consent(world, pipeline, show_name, args, expected) -> None:
    tool, service, keys = world
    sid = add_submission(service, keys, show_name=show_name)
    assert tool("pull")[0] == 0
    code, out, err = tool("publish", sid, *args)
    if expected is None:
        assert code == 2 and "consent" in err
        assert service.catalog is None and not service.audio
        assert service.submissions[sid]["state"] == "received"
        return
    assert code == 0, err
    catalog = cat.parse(service.catalog[0])  # type: ignore[index]
    assert catalog.stories[0].display_name == expected


def test_refusals_before_anything_public(world, pipeline) -> None:
    tool, service, keys = world
    no_voice = add_submission(service, keys, publish_voice=False)
    no_country = add_submission(service, keys, country=None)
    withdrawn = add_submission(service, keys)
    assert tool("pull")[0] == 0
    service.submissions[withdrawn]["state"] = "withdrawn"
    code, _, err = tool("publish", no_voice)
    assert code == 2 and "did not consent to publishing" in err
    code, _, err = tool("publish", no_country)
    assert code == 2 and "--country" in err
    code, _, err = tool("publish", withdrawn)
    assert code == 2 and "withdrawn" in err
    code, _, err = tool("publish", no_country, "--country", "KE", "--trim", "5:0-1")
    assert code == 2 and "no part 5" in err
    code, _, err = tool("publish", no_country, "--country", "KE", "--trim", "1:3-1")
    assert code == 2 and "END > START" in err
    assert not service.audio and service.catalog is None and not pipeline.calls
    code, _, err = tool("publish", no_country, "--country", "KE", "--title", "x" * 201)
    assert code == 2 and "title" in err
    assert service.submissions[no_country]["state"] == "received" and not service.audio
    code, out, err = tool("publish", no_country, "--country", "ke", "--region", "East Africa")
    assert code == 0, err
    assert cat.parse(service.catalog[0]).stories[0].region == "East Africa"  # type: ignore


def test_catalog_chain_and_withdrawn_stories(world, pipeline) -> None:
    tool, service, keys = world
    first = add_submission(service, keys)
    second = add_submission(service, keys, show_name=False)
    third = add_submission(service, keys)
    assert tool("pull")[0] == 0
    assert tool("publish", first)[0] == 0
    assert tool("publish", second)[0] == 0
    # Another workstation of the team published versions 3 and 4 meanwhile.
    held = cat.parse(service.catalog[0])  # type: ignore[index]
    vet = tool.vet()
    for version in (3, 4):
        data = cat.build(cat.Catalog(version, "2026-11-28T11:00:00Z", held.recipients,
                                     held.prompts, held.stories))
        service.catalog = (data, cat.sign(data, vet.signing_key()))
    # The defender of the second story withdraws.
    service.submissions[second]["state"] = "withdrawn"
    code, out, err = tool("publish", third)
    assert code == 0, err
    assert "catalog: version 5, 2 stories" in out
    ids = {s.id for s in cat.parse(service.catalog[0]).stories}  # type: ignore[index]
    assert service.submissions[second]["story_id"] not in ids
    assert service.submissions[first]["story_id"] in ids
    assert (tool.home / "published" / "catalog.json").read_bytes() == service.catalog[0]

    # A catalog on the service signed by another key: its stories are not carried over,
    # but its version is counted past.
    stranger = SigningKey.generate()
    data = cat.build(cat.Catalog(9, "2026-11-28T12:00:00Z", held.recipients, held.prompts,
                                 ()))
    service.catalog = (data, cat.sign(data, stranger))
    code, out, err = tool("set-prompts", "work", "--publish-now")
    assert code == 0
    assert "does not verify" in err and "version 10, 2 stories" in out
    assert cat.parse(service.catalog[0]).prompts == ("work",)  # type: ignore[index]


def test_unpublish_and_republish(world, pipeline) -> None:
    tool, service, keys = world
    sid = add_submission(service, keys)
    assert tool("pull")[0] == 0
    code, out, _ = tool("publish", sid)
    story = out.splitlines()[-2].removeprefix("story: ")
    code, out, _ = tool("unpublish", story)
    assert code == 0 and out.splitlines() == [f"unpublished: {story}",
                                              "catalog: version 2, 0 stories"]
    assert service.submissions[sid]["state"] == "unpublished"
    code, out, _ = tool("publish", sid)  # unpublished -> published again, a new story id
    assert code == 0 and "version 3, 1 stories" in out
    assert service.submissions[sid]["state"] == "published"
    assert tool("unpublish", "s-000000000000")[0] == 2
    assert tool("unpublish", "../etc")[0] == 2


def test_pull_resume_corner_cases(world) -> None:
    tool, service, keys = world
    sid = add_submission(service, keys, parts=1)
    home = Home(tool.home)
    home.submission_dir(sid).mkdir(parents=True)
    data = service.blobs[(sid, "q1.age")]
    # A partial part and a service that ignores Range: the part starts again.
    home.part_path(sid, "q1.age").write_bytes(data[:10])
    # A "partial" longer than the part: dropped and fetched again.
    home.part_path(sid, "manifest.json.age").write_bytes(b"x" * 100_000)
    service.ignore_range = True
    code, out, _ = tool("pull")
    assert code == 0 and out.strip() == (
        f"pulled 1 submissions ({len(data) + len(service.blobs[(sid, 'manifest.json.age')])}"
        " bytes)")
    assert home.part_path(sid, "q1.age").read_bytes() == data
    # A partial with wrong bytes: the hash refuses it, the part is deleted.
    service.ignore_range = False
    other = add_submission(service, keys, parts=1)
    home.submission_dir(other).mkdir(parents=True)
    home.part_path(other, "q1.age").write_bytes(b"garbage")
    code, _, err = tool("pull")
    assert code == 2 and "SHA-256" in err
    assert not home.part_path(other, "q1.age").exists() and not home.is_pulled(other)
    code, out, _ = tool("pull")
    assert code == 0 and out.startswith("pulled 1 submissions") and home.is_pulled(other)


def test_a_malicious_queue_cannot_write_outside_the_home(world, tmp_path: Path) -> None:
    tool, service, keys = world
    sid = add_submission(service, keys, parts=1)
    service.submissions[sid]["parts"][0]["name"] = "../../escape"
    service.submissions["../../x"] = {"id": "../../x", "state": "received", "parts": []}
    code, _, err = tool("pull")
    assert code == 2 and "malformed part" in err
    assert not (tool.home / "escape").exists() and not (tmp_path / "escape").exists()


def test_offline_list_wrong_token_and_exit_codes(world, monkeypatch) -> None:
    tool, service, keys = world
    add_submission(service, keys)
    code, out, _ = tool("list", "--json")
    assert code == 0 and len(json.loads(out)) == 1
    service.down = True
    code, out, err = tool("list", "--state", "received")
    assert code == 0 and "last saved" in err and len(out.splitlines()) == 2
    code, out, err = tool("pull")
    assert code == 1 and "network" in err
    service.down = False
    (tool.home / "config.json").write_text(json.dumps(
        {"server": "http://central.test", "token": "idrvet_revoked"}))
    code, _, err = tool("pull")
    assert code == 2 and "vet login" in err
    code, _, err = tool("list", "--state", "nonsense")
    assert code == 2 and "invalid choice" in err
    assert tool("--help")[0] == 0


def test_play_without_sounddevice_says_so(world, monkeypatch) -> None:
    import sys
    tool, service, keys = world
    sid = add_submission(service, keys, parts=1)
    assert tool("pull")[0] == 0
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    code, _, err = tool("play", sid)
    assert code == 2 and "--out" in err


def test_set_recipients_validation(world) -> None:
    tool, service, keys = world
    assert tool("set-recipients", keys["recipient"], keys["recipient"])[0] == 2
    assert tool("set-recipients", "AGE-SECRET-KEY-1XYZ")[0] == 2
    from sync.envelope import X25519Identity
    classic = str(X25519Identity.generate().recipient())
    assert tool("set-recipients", classic)[0] == 2
    code, out, _ = tool("set-recipients", keys["recipient"], classic, "--allow-classic")
    assert code == 0
    assert Home(tool.home).recipients() == [keys["recipient"], classic]


def test_keys_rest_under_the_passphrase(world) -> None:
    tool, service, keys = world
    sid = add_submission(service, keys, parts=1)
    assert tool("pull")[0] == 0
    code, _, err = tool("show", sid, passphrase="wrong one")
    assert code == 2 and err.strip() == "vet: wrong passphrase for keys/team.age"
    code, out, _ = tool("show", sid)
    assert code == 0 and json.loads(out)["country"] == "KE"
    # A key file that is not passphrase-protected is refused.
    from sync.envelope import format_identity_file
    from sync.envelope.mlkem import MlkemIdentity
    (tool.home / "keys" / "team.age").write_text(format_identity_file(MlkemIdentity.generate()))
    code, _, err = tool("show", sid)
    assert code == 2 and "not passphrase-protected" in err
    code, _, err = tool("keygen", "--force", "--work-factor", "10")
    assert code == 0
    code, _, err = tool("show", sid)  # the new team key does not open the old submission
    assert code == 2 and "not sealed to this team's key" in err


def test_play_decodes_in_memory_and_plays(world, monkeypatch) -> None:
    import sys
    import types

    import numpy as np
    import soundfile as sf

    tool, service, keys = world
    buf = io.BytesIO()
    sf.write(buf, np.zeros(4800, dtype=np.float32), 48_000, format="OGG", subtype="OPUS")
    sid = service.add({"q1.age": seal_bytes(buf.getvalue(), [keys["recipient"]]),
                       "manifest.json.age": seal_bytes(json.dumps(
                           {"parts": [{"name": "q1", "file": "q1.age"}]}).encode(),
                           [keys["recipient"]])})
    assert tool("pull")[0] == 0
    played: list[tuple[int, int]] = []
    fake = types.ModuleType("sounddevice")
    fake.play = lambda data, rate: played.append((len(data), rate))  # type: ignore[attr-defined]
    fake.wait = lambda: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    before = {p for p in tool.home.rglob("*")}
    code, out, err = tool("play", sid)
    assert code == 0, err
    assert out == "playing q1.age (0.1 s)\n"
    assert played and played[0][1] == 48_000 and abs(played[0][0] - 4800) < 1000
    assert {p for p in tool.home.rglob("*")} == before  # nothing written


def test_a_publish_cut_at_its_last_step_is_finished_by_the_next(world, pipeline) -> None:
    tool, service, keys = world
    sid = add_submission(service, keys)
    assert tool("pull")[0] == 0
    handle = service.handle

    def refuse_publish_state(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/state") and b'"published"' in request.content:
            raise httpx.ReadTimeout("cut", request=request)
        return handle(request)

    service.handle = refuse_publish_state  # type: ignore[method-assign]
    code, _, err = tool("publish", sid)
    assert code == 1 and "run `vet publish` again" in err
    assert service.submissions[sid]["state"] == "approved"
    story = cat.parse(service.catalog[0]).stories[0]  # type: ignore[index]
    service.handle = handle  # type: ignore[method-assign]
    code, out, _ = tool("publish", sid)
    assert code == 0 and f"story: {story.id}" in out and "version 1, 1 stories" in out
    assert service.submissions[sid]["state"] == "published"
    assert len(pipeline.calls) == 1 and len(service.audio) == 1


def test_one_changing_command_at_a_time(world) -> None:
    import fcntl
    tool, service, keys = world
    add_submission(service, keys, parts=1)
    home = Home(tool.home)
    with open(home.root / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(Exception, match="another vet command"):
            with home.lock(wait_s=0.2):
                pass
    with home.lock(wait_s=0.2):
        pass
