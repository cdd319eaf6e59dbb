"""Catalog sync on the kiosk (issue 12, item 5): a sync pass pulls the signed catalog,
verifies it against the pinned publishing key, downloads new audio with Range resume,
and swaps atomically; takedowns, the quota, and each tampering the issue names.

Unit tests run against an in-memory service (tests/catalog_fakes.py over
tests/sync_fakes.py, ``httpx.MockTransport``); the loopback tests at the end use the
real service (tests/harness/central.py) when it has the catalog endpoints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kiosk.config import KioskConfig, StoriesConfig, SyncConfig
from kiosk.staff.facts import gather
from kiosk.stories import StoryLibrary
from kiosk.stories.pull import DOWNLOAD_DIR
from kiosk.sync_runner import SyncResult, sync_once
from kiosk.vault.store import Store
from sync import catalog as catalog_mod

from .catalog_fakes import (
    CLASSIC_RECIPIENT,
    OTHER_PUBLISHER,
    PUBLISHER,
    CatalogRoutes,
    Edition,
    audio_for,
)
from .sync_fakes import API, FakeCentral, enrolled, make_submission


@dataclass
class Kiosk:
    cfg: KioskConfig
    store: Store
    central: FakeCentral
    routes: CatalogRoutes

    def sync(self) -> SyncResult:
        return sync_once(self.cfg, self.store, transport=self.central.transport())

    def library(self) -> StoryLibrary:
        lib = StoryLibrary.from_config(self.cfg)
        lib.load()
        return lib

    @property
    def stories_dir(self) -> Path:
        return Path(self.cfg.data_dir) / "stories"

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.stories_dir.glob("*.ogg"))}

    def facts(self) -> dict:
        return gather(self.cfg, store=self.store, library=self.library()).as_dict()


@pytest.fixture
def kiosk(tmp_path: Path) -> Iterator[Kiosk]:
    central = FakeCentral()
    routes = CatalogRoutes().install(central)
    data_dir = tmp_path / "kiosk"
    enrolled(data_dir, central)
    cfg = KioskConfig(data_dir=data_dir, publisher_key=str(PUBLISHER.verify_key),
                      sync=SyncConfig(retention_days=7.0))
    store = Store.in_data_dir(data_dir)
    yield Kiosk(cfg, store, central, routes)
    store.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


V1 = {"amina": audio_for("amina", 6000), "bruno": audio_for("bruno", 4000),
      "chen": audio_for("chen", 9000)}


def installed_v1(kiosk: Kiosk) -> Edition:
    edition = kiosk.routes.publish(1, V1)
    result = kiosk.sync()
    assert result.catalog_installed and result.catalog_version == 1, result
    return edition


# ----------------------------------------------------------------------- the good path


def test_a_new_catalog_is_installed_with_verified_playable_files(kiosk: Kiosk) -> None:
    assert kiosk.sync().catalog_version is None  # nothing published: not an error
    assert kiosk.library().last_error() is None
    kiosk.routes.publish(1, V1)
    result = kiosk.sync()
    assert result.error is None and result.catalog_error is None
    assert result.catalog_installed and result.catalog_version == 1
    lib = kiosk.library()
    assert lib.version == 1 and [s.id for s in lib.stories()] == ["amina", "bruno", "chen"]
    for story in lib.stories():
        data = lib.audio_path(story).read_bytes()
        assert data == V1[story.id] and sha(data) == story.audio_sha256
    # Renamed in from the downloads, never copied twice: no .part left behind.
    assert list((kiosk.stories_dir / DOWNLOAD_DIR).glob("*.part")) == []
    facts = kiosk.facts()
    assert facts["catalog"] == {"version": 1, "stories": 3, "error": None}


def test_nothing_new_costs_exactly_one_request_answered_304(kiosk: Kiosk) -> None:
    installed_v1(kiosk)
    before = len(kiosk.routes.served)
    result = kiosk.sync()
    assert result.catalog_version == 1 and not result.catalog_installed
    assert result.catalog_error is None
    served = kiosk.routes.served[before:]
    assert [(path, status) for path, status, _r, _n in served] == [(f"{API}/catalog", 304)]
    print(f"\nnothing new: {len(served)} catalog request(s), {served[0][3]} body bytes")


def test_uploads_go_on_and_the_catalog_follows_in_the_same_pass(kiosk: Kiosk) -> None:
    make_submission(Path(kiosk.cfg.data_dir), kiosk.store)
    kiosk.routes.publish(1, V1)
    result = kiosk.sync()
    assert result.acknowledged == 1 and result.catalog_installed


def test_takedown_deletes_the_story_and_its_file_at_that_sync(kiosk: Kiosk) -> None:
    installed_v1(kiosk)
    assert "bruno.ogg" in kiosk.files()
    before = len(kiosk.routes.served)
    kiosk.routes.publish(2, {k: v for k, v in V1.items() if k != "bruno"})
    result = kiosk.sync()
    assert result.catalog_installed and result.catalog_version == 2
    assert sorted(kiosk.files()) == ["amina.ogg", "chen.ogg"]
    lib = kiosk.library()
    assert lib.get("bruno") is None and [s.id for s in lib.stories()] == ["amina", "chen"]
    # The stories it kept were not fetched again: the catalog and its signature only.
    assert [p for p, *_ in kiosk.routes.served[before:]] == [f"{API}/catalog",
                                                             f"{API}/catalog.sig"]


def test_a_story_whose_audio_changed_is_fetched_again(kiosk: Kiosk) -> None:
    installed_v1(kiosk)
    new_audio = audio_for("amina", 6100, edition=1)
    kiosk.routes.publish(2, {**V1, "amina": new_audio})
    assert kiosk.sync().catalog_installed
    assert kiosk.files()["amina.ogg"] == new_audio


def test_a_cut_download_resumes_with_range_and_fetches_only_what_was_missing(
        kiosk: Kiosk) -> None:
    big = audio_for("dina", 700_000)
    kiosk.routes.publish(1, {"dina": big})
    kiosk.routes.cut_after["dina"] = 250_000
    first = kiosk.sync()
    assert first.catalog_error == "network" and not first.catalog_installed
    assert first.error is None  # the uploads' outcome is their own
    (part,) = (kiosk.stories_dir / DOWNLOAD_DIR).glob("dina.*.part")
    kept = part.stat().st_size
    assert kept == 250_000
    assert kiosk.library().version is None
    assert "network during sync" in (kiosk.facts()["catalog"]["error"] or "")

    before = len(kiosk.routes.served)
    second = kiosk.sync()
    assert second.catalog_installed and second.catalog_version == 1
    audio = [r for r in kiosk.routes.served[before:] if r[0].startswith(f"{API}/stories/")]
    assert len(audio) == 1
    _path, status, asked, sent = audio[0]
    missing = len(big) - kept
    assert (status, asked) == (206, f"bytes={kept}-")
    assert sent <= missing
    assert kiosk.files()["dina.ogg"] == big
    assert kiosk.library().last_error() is None  # the 304-or-install clears it
    print(f"\nresume: cut after {kept} of {len(big)} bytes; the second pass asked"
          f" {asked!r} and received {sent} bytes ({missing} were missing)")


# --------------------------------------------------------------------------- tampering


def _one_byte_changed(kiosk: Kiosk, v1: Edition) -> str:
    edition = kiosk.routes.publish(2, {**V1, "eve": audio_for("eve", 3000)})
    data = bytearray(edition.data)
    at = data.index(b"Story eve")
    data[at] = ord("s")  # "story eve": still a valid catalog, but not the signed bytes
    kiosk.routes.catalog = bytes(data)
    return "bad_signature"


def _older_replayed(kiosk: Kiosk, v1: Edition) -> str:
    kiosk.routes.publish(2, {**V1, "eve": audio_for("eve", 3000)})
    assert kiosk.sync().catalog_version == 2
    kiosk.routes.serve(v1)  # valid, signed, and older than what the kiosk holds
    return "stale_catalog"


def _other_key(kiosk: Kiosk, v1: Edition) -> str:
    kiosk.routes.publish(2, {**V1, "eve": audio_for("eve", 3000)}, key=OTHER_PUBLISHER)
    return "bad_signature"


def _audio_hash_differs(kiosk: Kiosk, v1: Edition) -> str:
    good = audio_for("eve", 3000)
    kiosk.routes.publish(2, {**V1, "eve": good})
    bad = bytearray(good)
    bad[1234] ^= 0x01
    kiosk.routes.audio["eve"] = bytes(bad)  # same size, one bit off
    return "audio_mismatch"


def _recipients_swapped(kiosk: Kiosk, v1: Edition) -> str:
    edition = kiosk.routes.publish(2, {**V1, "eve": audio_for("eve", 3000)})
    doc = json.loads(edition.data)
    from sync.envelope import X25519Identity

    doc["recipients"] = [str(X25519Identity.generate().recipient())]  # the service's key
    kiosk.routes.catalog = catalog_mod.build(catalog_mod.parse(
        json.dumps(doc).encode()))  # canonical again, with the old signature
    return "bad_signature"


TAMPERING = {"one_byte_changed": _one_byte_changed, "older_catalog_replayed": _older_replayed,
             "signed_by_another_key": _other_key, "story_hash_differs": _audio_hash_differs,
             "recipients_swapped": _recipients_swapped}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampering_is_refused_and_the_previous_catalog_kept(kiosk: Kiosk, case: str) -> None:
    v1 = installed_v1(kiosk)
    expected = TAMPERING[case](kiosk, v1)
    kept_version = kiosk.library().version
    kept_files = kiosk.files()
    make_submission(Path(kiosk.cfg.data_dir), kiosk.store)
    result = kiosk.sync()
    assert result.acknowledged == 1 and result.error is None  # uploads go on
    assert not result.catalog_installed and result.catalog_error == expected
    assert result.catalog_version == kept_version
    lib = kiosk.library()
    assert lib.version == kept_version and kiosk.files() == kept_files
    assert lib.get("eve") is None or kept_version == 2
    assert lib.last_error() is not None and lib.last_error().code == expected  # type: ignore[union-attr]
    facts = kiosk.facts()
    assert facts["catalog"]["version"] == kept_version
    assert facts["catalog"]["error"].startswith(f"{expected} during sync")
    # Refused again at the next pass, still without touching the stories.
    assert kiosk.sync().catalog_error == expected and kiosk.files() == kept_files
    assert list((kiosk.stories_dir / DOWNLOAD_DIR).glob("eve.*.part")) == []


def test_a_recipient_swap_even_by_the_publisher_format_needs_the_signature(
        kiosk: Kiosk) -> None:
    """The same swap, now served with a signature of the service's own key."""
    v1 = installed_v1(kiosk)
    _recipients_swapped(kiosk, v1)
    kiosk.routes.signature = catalog_mod.sign(kiosk.routes.catalog or b"", OTHER_PUBLISHER)
    assert kiosk.sync().catalog_error == "bad_signature"
    assert kiosk.library().catalog.recipients == (CLASSIC_RECIPIENT,)  # type: ignore[union-attr]


# ------------------------------------------------------------------------------- quota


def test_a_catalog_over_the_quota_is_refused_before_any_download(kiosk: Kiosk) -> None:
    installed_v1(kiosk)
    total = len(kiosk.routes.editions[0].data) + sum(len(a) for a in V1.values())
    kiosk.cfg = dataclasses.replace(kiosk.cfg, stories=StoriesConfig(quota_bytes=total + 5000))
    before = len(kiosk.routes.served)
    kiosk.routes.publish(2, {**V1, "huge": audio_for("huge", 20_000)})
    result = kiosk.sync()
    assert result.catalog_error == "quota_exceeded" and result.catalog_version == 1
    assert not any(p.startswith(f"{API}/stories/") for p, *_ in kiosk.routes.served[before:])
    assert sorted(kiosk.files()) == ["amina.ogg", "bruno.ogg", "chen.ogg"]
    assert kiosk.facts()["catalog"]["error"].startswith("quota_exceeded during sync")
    # Within the quota it goes in.
    kiosk.cfg = dataclasses.replace(kiosk.cfg, stories=StoriesConfig(quota_bytes=10**9))
    assert kiosk.sync().catalog_version == 2


def test_quota_config_key(tmp_path: Path) -> None:
    from kiosk import config as config_mod

    cfg = config_mod.parse({"stories": {"quota_bytes": 1000}}, base_dir=tmp_path)
    assert cfg.stories.quota_bytes == 1000
    assert config_mod.KioskConfig().stories.quota_bytes == 2 * 1024**3
    for bad in (0, -1, 1.5, True, "2GB"):
        with pytest.raises(config_mod.ConfigError, match="stories.quota_bytes"):
            config_mod.parse({"stories": {"quota_bytes": bad}}, base_dir=tmp_path)


def test_a_kiosk_without_a_pinned_key_fetches_nothing(kiosk: Kiosk) -> None:
    kiosk.cfg = dataclasses.replace(kiosk.cfg, publisher_key=None)
    kiosk.routes.publish(1, V1)
    result = kiosk.sync()
    assert result.catalog_error == "no_publisher_key" and kiosk.routes.served == []


# ------------------------------------------------- recipients and prompts from the catalog


def _record_and_submit(kiosk: Kiosk, setup) -> str:  # noqa: ANN001
    import time

    from kiosk.audio.recorder import Recorder
    from kiosk.vault.custody import SessionCustody

    from .audio_fakes import FakeStreams, tone
    from .audio_fakes import record as record_take

    custody = SessionCustody(data_dir=Path(kiosk.cfg.data_dir), store=kiosk.store,
                             recipients=setup.recipients,
                             allow_mixed=kiosk.cfg.allow_classic_recipients,
                             recipients_version=setup.recipients_version)
    recorder = Recorder(FakeStreams([tone(0.3)]))
    _name, take = record_take(custody, recorder, setup.prompt_ids[0])
    while take.meters().elapsed_s < 0.3:
        time.sleep(0.01)
    take.stop()
    custody.submit({"language": "en", "display_name": "Anonymous"})
    return custody.submission_id


def _setup(kiosk: Kiosk):  # noqa: ANN202
    from kiosk.prompts import load_prompts
    from kiosk.stories.session import session_setup

    return session_setup(recipients=kiosk.cfg.recipients,
                         allow_classic=kiosk.cfg.allow_classic_recipients,
                         catalog=kiosk.library().catalog,
                         default_prompts=[p.id for p in load_prompts()])


def test_the_next_session_seals_to_the_catalogs_recipients(kiosk: Kiosk) -> None:
    from sync.envelope import X25519Identity, open_bytes
    from sync.wire import SubmissionIndex

    config_team, catalog_team = X25519Identity.generate(), X25519Identity.generate()
    kiosk.cfg = dataclasses.replace(kiosk.cfg, recipients=(str(config_team.recipient()),))
    before = _setup(kiosk)  # no catalog yet: the config's, version 0, the kiosk's prompts
    assert before.recipients == kiosk.cfg.recipients and before.recipients_version == 0
    assert before.prompt_ids == ("work", "why", "change", "message")
    first = _record_and_submit(kiosk, before)

    kiosk.routes.publish(1, V1, recipients=(str(catalog_team.recipient()),),
                         prompts=("message", "work", "why"))
    assert kiosk.sync().catalog_installed
    after = _setup(kiosk)
    assert after.recipients == (str(catalog_team.recipient()),)
    assert after.recipients_version == 1 and after.prompt_ids == ("message", "work", "why")
    second = _record_and_submit(kiosk, after)

    assert kiosk.store.recipients_version(first) == 0
    assert kiosk.store.recipients_version(second) == 1
    folder = Path(kiosk.cfg.data_dir) / "outbox" / second
    sealed = (folder / "manifest.json.age").read_bytes()
    assert open_bytes(sealed, [catalog_team])  # the catalog's team opens it
    with pytest.raises(Exception):  # noqa: B017 - the config's key no longer does
        open_bytes(sealed, [config_team])
    # The submission index says where the recipients came from.
    assert kiosk.sync().acknowledged == 1  # the first went with the catalog's pass
    versions = {sid: SubmissionIndex.parse(data).recipients_version
                for sid, (data, _receipt) in kiosk.central.stored.items()}
    assert versions == {first: 0, second: 1}


def test_prompts_change_only_between_sessions() -> None:
    from kiosk.session.machine import SessionMachine

    machine = SessionMachine(prompt_ids=["work", "why", "change"], languages=["en"],
                             warn_after_s=60, discard_after_s=30)
    machine.share(now=1.0)  # a session is under way
    assert machine.use_prompts(["message", "work", "why"]) is False
    assert machine.prompt_ids == ("work", "why", "change")
    fresh = SessionMachine(prompt_ids=["work", "why", "change"], languages=["en"],
                           warn_after_s=60, discard_after_s=30)
    assert fresh.use_prompts(["message", "work", "why"]) is True
    assert fresh.prompt_ids == ("message", "work", "why")


def test_unknown_or_too_few_catalog_prompts_keep_the_kiosks_own(kiosk: Kiosk) -> None:
    kiosk.routes.publish(1, V1, prompts=("work", "nonexistent", "why"))
    assert kiosk.sync().catalog_installed
    assert _setup(kiosk).prompt_ids == ("work", "why", "change", "message")


def test_a_mixed_recipient_catalog_is_refused_unless_allowed(kiosk: Kiosk) -> None:
    from sync.envelope.mlkem import MlkemIdentity

    pq = str(MlkemIdentity.generate().recipient())
    installed_v1(kiosk)
    kiosk.routes.publish(2, V1, recipients=(pq, CLASSIC_RECIPIENT))
    result = kiosk.sync()
    assert result.catalog_error == "mixed_recipients" and result.catalog_version == 1
    assert kiosk.facts()["catalog"]["error"].startswith("mixed_recipients during sync")
    assert _setup(kiosk).recipients == (CLASSIC_RECIPIENT,)  # v1's, still

    kiosk.cfg = dataclasses.replace(kiosk.cfg, allow_classic_recipients=True)
    assert kiosk.sync().catalog_version == 2
    setup = _setup(kiosk)
    assert setup.recipients == (pq, CLASSIC_RECIPIENT) and setup.recipients_version == 2
    facts = kiosk.facts()
    assert facts["sealing"]["recipients_version"] == 2
    assert facts["sealing"]["recipients"] == 2 and facts["sealing"]["post_quantum"] is False
    # Should the config stop allowing it later, sessions go back to the config's.
    strict = dataclasses.replace(kiosk.cfg, allow_classic_recipients=False)
    kiosk.cfg = strict
    assert _setup(kiosk).recipients_version == 0


# ------------------------------------------------------------ loopback: the real service

_HAS_SERVICE = (Path(__file__).resolve().parent.parent / "sync" / "central" / "api"
                / "publishing.py").exists()
loopback = pytest.mark.skipif(not _HAS_SERVICE, reason="the service has no catalog endpoints")


class _Tamper(httpx.BaseTransport):
    """A transport to the real service that changes what it answers (a compromised
    service, or a network cut): ``body`` rewrites a path's body, ``cut`` cuts a path's
    next body after n bytes."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.body: dict[str, object] = {}
        self.cut: dict[str, int] = {}
        self.log: list[tuple[str, int, str, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        path = request.url.path
        if path in self.body or path in self.cut:
            data = response.read()
            response.close()
            if path in self.body:
                change = self.body[path]
                data = change(data) if callable(change) else change  # type: ignore[assignment]
            headers = [(k, v) for k, v in response.headers.items()
                       if k.lower() not in ("content-length", "transfer-encoding")]
            cut = self.cut.pop(path, None)
            if cut is not None:
                from .catalog_fakes import _CutStream

                self.log.append((path, response.status_code, request.headers.get("range", ""),
                                 cut))
                return httpx.Response(response.status_code, headers=headers,
                                      stream=_CutStream(data, cut))
            self.log.append((path, response.status_code, request.headers.get("range", ""),
                             len(data)))
            return httpx.Response(response.status_code, headers=headers, content=data)
        self.log.append((path, response.status_code, request.headers.get("range", ""),
                         int(response.headers.get("content-length", "0") or 0)))
        return response

    def close(self) -> None:
        pass  # each pass's client closes it; the fixture closes the real one at the end


class _RealPublisher:
    def __init__(self, central) -> None:  # noqa: ANN001
        self.client = httpx.Client(base_url=central.url, timeout=30, headers={
            "Authorization": f"Bearer {central.vetter_token('team')}"})

    def put_audio(self, story_id: str, data: bytes) -> None:
        reply = self.client.put(f"/api/v1/stories/{story_id}.ogg", content=data, headers={
            "Content-Type": "audio/ogg", "X-Content-SHA256": sha(data)})
        assert reply.status_code in (200, 201), reply.text

    def publish(self, edition: Edition) -> None:
        for story_id, audio in edition.audio.items():
            self.put_audio(story_id, audio)
        reply = self.client.put("/api/v1/catalog", json={
            "catalog": edition.data.decode("utf-8"), "signature": edition.signature})
        assert reply.status_code in (200, 201), reply.text


@pytest.fixture
def real(tmp_path: Path, central):  # noqa: ANN001, ANN201
    from kiosk.device import enrol_device

    central.cli("set-publisher-key", str(PUBLISHER.verify_key))
    data_dir = tmp_path / "real-kiosk"
    enrol_device(data_dir, server_url=central.url, code=central.enrol_code(), force=True)
    cfg = KioskConfig(data_dir=data_dir, publisher_key=str(PUBLISHER.verify_key),
                      server_url=central.url)
    store = Store.in_data_dir(data_dir)
    tamper = _Tamper()
    yield cfg, store, tamper, _RealPublisher(central)
    store.close()
    tamper.inner.close()


@loopback
def test_loopback_publish_sync_304_takedown_and_resume(real) -> None:  # noqa: ANN001
    cfg, store, tamper, publisher = real
    routes = CatalogRoutes()  # only to build and sign editions

    def sync() -> SyncResult:
        return sync_once(cfg, store, transport=tamper)

    big = audio_for("dina", 400_000)
    v1 = routes.publish(1, {**V1, "dina": big}, serve=False)
    publisher.publish(v1)
    tamper.cut[f"{API}/stories/dina.ogg"] = 150_000
    first = sync()
    assert first.catalog_error == "network" and first.catalog_version is None
    before = len(tamper.log)
    second = sync()
    assert second.catalog_installed and second.catalog_version == 1, second
    resumed = [r for r in tamper.log[before:] if r[0] == f"{API}/stories/dina.ogg"]
    assert [(s, rng) for _p, s, rng, _n in resumed] == [(206, "bytes=150000-")]
    assert resumed[0][3] <= len(big) - 150_000
    lib = StoryLibrary.from_config(cfg)
    lib.load()
    assert lib.version == 1 and len(lib.stories()) == 4
    assert lib.audio_path("dina").read_bytes() == big

    before = len(tamper.log)
    assert sync().catalog_version == 1
    assert [(p, s) for p, s, *_ in tamper.log[before:]
            if p.startswith(f"{API}/catalog") or p.startswith(f"{API}/stories")] == [
        (f"{API}/catalog", 304)]

    publisher.publish(routes.publish(2, V1, serve=False))  # "dina" taken down
    assert sync().catalog_version == 2
    assert not (Path(cfg.data_dir) / "stories" / "dina.ogg").exists()
    lib.load()
    assert lib.get("dina") is None and len(lib.stories()) == 3


@loopback
def test_loopback_tampering_by_the_service_is_refused(real) -> None:  # noqa: ANN001
    cfg, store, tamper, publisher = real
    routes = CatalogRoutes()
    publisher.publish(routes.publish(1, V1, serve=False))
    assert sync_once(cfg, store, transport=tamper).catalog_version == 1  # type: ignore[arg-type]
    v2 = routes.publish(2, {**V1, "eve": audio_for("eve", 3000)}, serve=False)
    publisher.publish(v2)
    # The service swaps the recipients in what it serves (the signature no longer holds).
    from sync.envelope import X25519Identity

    def swap(data: bytes) -> bytes:
        doc = json.loads(data)
        doc["recipients"] = [str(X25519Identity.generate().recipient())]
        return catalog_mod.build(catalog_mod.parse(json.dumps(doc).encode()))

    tamper.body[f"{API}/catalog"] = swap
    result = sync_once(cfg, store, transport=tamper)
    assert result.catalog_error == "bad_signature" and result.catalog_version == 1
    # Then a story file whose hash does not match.
    tamper.body.clear()
    tamper.body[f"{API}/stories/eve.ogg"] = lambda data: data[:-1] + b"!"  # type: ignore[operator]
    result = sync_once(cfg, store, transport=tamper)
    assert result.catalog_error == "audio_mismatch" and result.catalog_version == 1
    lib = StoryLibrary.from_config(cfg)
    lib.load()
    facts = gather(cfg, store=store, library=lib).as_dict()
    assert facts["catalog"]["version"] == 1 and facts["catalog"]["stories"] == 3
    assert facts["catalog"]["error"].startswith("audio_mismatch during sync")
    tamper.body.clear()
    assert sync_once(cfg, store, transport=tamper).catalog_version == 2  # type: ignore[arg-type]


# ------------------------------------------------------------ the running app reloads


def test_the_worker_tells_the_app_and_the_app_sees_the_change_on_disk(kiosk: Kiosk) -> None:
    """The app's library is another instance: after a pass installs a catalog it learns
    of it from the worker (on_pass), or from the file itself (``kiosk sync --once``)."""
    import threading

    from kiosk.sync_worker import SyncWorker

    app_library = kiosk.library()
    assert app_library.version is None and not app_library.changed_on_disk()
    kiosk.routes.publish(1, V1)
    heard: list[object] = []
    done = threading.Event()
    worker = SyncWorker(kiosk.cfg, kiosk.store, enrolled=lambda: True, first_pass_after_s=0,
                        sync_once=lambda cfg, store, **kw: sync_once(
                            cfg, store, transport=kiosk.central.transport(), **kw))
    worker.on_pass.append(lambda result: (heard.append(result), done.set()))
    worker.run_now()
    assert done.wait(10)
    worker.stop()
    assert getattr(heard[0], "catalog_installed", False)
    assert app_library.changed_on_disk()
    app_library.load()
    assert app_library.version == 1 and not app_library.changed_on_disk()
