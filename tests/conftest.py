"""Session-wide test fixtures: virtual audio, a virtual display, speech, the real app.

Every fixture cleans up after itself: the daemons it starts are stopped and their
temporary directories removed, whatever the tests did.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import central as central_harness
from tests.harness.central import central  # noqa: F401  (a real service on loopback)
from tests.harness.display import VirtualDisplay
from tests.harness.kiosk_app import KioskProcess
from tests.harness.postgres import (  # noqa: F401  (a private PostgreSQL 15 cluster)
    PostgresCluster,
    postgres_cluster,
    postgres_dsn,
)
from tests.harness.pulse import VirtualAudio
from tests.harness.speech import make_speech

REPO = Path(__file__).resolve().parent.parent
# A log field that could carry free text fails the test (kiosk.logs drops it in the
# field); set here so that every kiosk subprocess the tests start inherits it.
os.environ["KIOSK_STRICT_LOGS"] = "1"
#: Screenshots the tests take, for people to look at; ignored by git.
SCREENSHOT_DIR = REPO / "screenshots" / "tests"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--central-store", choices=("sqlite", "postgres", "postgres+s3"),
        default=os.environ.get("CENTRAL_TEST_STORE", "sqlite"),
        help="the metadata store of every central service the tests start (default:"
             " sqlite, the one-directory default; postgres: a private PostgreSQL 15;"
             " postgres+s3: that, with blobs in moto's S3 server on loopback)")


#: The sync and vetting suite: every test file that runs a central service (a subprocess
#: through tests/harness/central.py, or in-process after configure_store). Under
#: ``--central-store=postgres`` or ``postgres+s3`` only these run, the same tests, on that
#: store; the rest of the suite does not touch the service's store.
CENTRAL_SERVICE_FILES = frozenset({
    "test_central_api.py", "test_central_catalog.py", "test_central_vetting.py",
    "test_central_withdraw.py", "test_central_fleet.py", "test_central_loopback.py",
    "test_central_schema.py", "test_central_backup.py", "test_central_scale_out.py",
    "test_sync_e2e.py", "test_sync_faults.py", "test_catalog_sync.py",
    "test_usb_transfer.py", "test_kiosk_enrol.py", "test_publish_e2e.py",
    "test_vet_cli.py", "test_vet_web.py", "test_vet_web_browser.py", "test_app_sync.py",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--central-store") == "sqlite":
        return
    keep = [item for item in items if item.path.name in CENTRAL_SERVICE_FILES]
    dropped = [item for item in items if item.path.name not in CENTRAL_SERVICE_FILES]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session", autouse=True)
def central_store(request: pytest.FixtureRequest) -> Iterator[str]:
    """Under ``--central-store=postgres``, every CentralService gets its own database in
    one private cluster (tests/harness/central.py DATABASE_FACTORY)."""
    kind = str(request.config.getoption("--central-store"))
    if kind not in ("postgres", "postgres+s3"):
        yield kind
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    central_harness.DATABASE_FACTORY = cluster.new_database
    endpoint = None
    if kind == "postgres+s3":
        # Imported here: moto and boto3 load only when asked for.
        from tests.harness.s3 import start_moto

        endpoint = start_moto()
        central_harness.S3_FACTORY = lambda: _new_bucket_conf(endpoint)
    try:
        yield kind
    finally:
        central_harness.DATABASE_FACTORY = None
        central_harness.S3_FACTORY = None
        if endpoint is not None:
            endpoint.server.stop()


def _new_bucket_conf(endpoint: Any) -> dict[str, str]:
    """A fresh bucket on the session's moto server, as central.conf lines."""
    import uuid

    bucket = f"central-{uuid.uuid4().hex[:20]}"
    endpoint.admin_client().create_bucket(Bucket=bucket)
    return {"CENTRAL_S3_ENDPOINT": endpoint.endpoint_url, "CENTRAL_S3_BUCKET": bucket,
            "AWS_ACCESS_KEY_ID": endpoint.access_key_id,
            "AWS_SECRET_ACCESS_KEY": endpoint.secret_access_key,
            "AWS_DEFAULT_REGION": endpoint.region}


@pytest.fixture(scope="session")
def virtual_audio() -> Iterator[VirtualAudio]:
    """A private PulseAudio: default source ``mic.monitor``, default sink ``speakers``.

    The test process's own environment points at it too, and PortAudio is restarted so
    that in-process sounddevice sees the new server.
    """
    audio = VirtualAudio()
    audio.start()
    saved = {k: os.environ.get(k) for k in audio.env}
    os.environ.update(audio.env)
    _restart_portaudio()
    try:
        yield audio
    finally:
        audio.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _restart_portaudio()


def _restart_portaudio() -> None:
    import sys

    sd = sys.modules.get("sounddevice")
    if sd is not None:
        # PortAudio reads the device list (and so the Pulse server) at initialisation.
        sd._terminate()
        sd._initialize()


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``speech(language="en", repeat=1)`` -> a 48 kHz mono WAV made by espeak-ng."""
    folder = tmp_path_factory.mktemp("speech")
    cache: dict[tuple[str, int], Path] = {}

    def make(language: str = "en", repeat: int = 1) -> Path:
        key = (language, repeat)
        if key not in cache:
            cache[key] = make_speech(folder / f"{language}-{repeat}.wav", language,
                                     repeat=repeat)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def virtual_display() -> Iterator[str]:
    display = VirtualDisplay()
    yield display.start()
    display.stop()


@pytest.fixture
def kiosk_env(virtual_display: str, virtual_audio: VirtualAudio) -> dict[str, str]:
    """The environment a kiosk process runs in: the test display and the test audio."""
    env = {**os.environ, **virtual_audio.env, "DISPLAY": virtual_display}
    env.pop("KIOSK_CONFIG", None)
    return env


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """``write_config(text)`` -> a kiosk TOML file whose data_dir is under tmp_path."""

    def write(extra: str = "") -> Path:
        path = tmp_path / "kiosk.toml"
        path.write_text(f'data_dir = "{tmp_path / "data"}"\n{extra}', encoding="utf-8")
        return path

    return write


@pytest.fixture
def kiosk_app(tmp_path: Path, kiosk_env: dict[str, str],
              write_config: Callable[..., Path]) -> Iterator[Callable[..., KioskProcess]]:
    """``kiosk_app(config_text="")`` starts the real app under Xvfb; closed at teardown."""
    started: list[KioskProcess] = []

    def start(config_text: str = "") -> KioskProcess:
        app = KioskProcess(config=write_config(config_text), workdir=tmp_path,
                           env=kiosk_env, screenshot_dir=SCREENSHOT_DIR)
        started.append(app)
        return app

    yield start
    for app in started:
        app.close()
