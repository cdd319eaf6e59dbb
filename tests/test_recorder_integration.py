"""The recorder and the player through the real stack: espeak-ng speech played into a
PulseAudio virtual microphone, PortAudio, the Opus encoder, the age envelope writer;
then Debian's ``age`` with the team identity; then review playback to the virtual
speakers, captured from their monitor; then the sealed manifest.

The whole run happens under an inotify watch (tests/harness/fswatch.py) of the data
directory and of a private temporary directory: every file written, even one deleted
a moment later, must be one the kiosk may write, and nothing read from any of them
at any time may hold the audio, the manifest or the defender's details in clear."""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from kiosk import logs
from kiosk.audio.devices import AudioDeviceError
from kiosk.audio.player import Player
from kiosk.audio.recorder import EndReason, Recorder, TakeResult
from kiosk.audio.streams import SoundDeviceStreams
from kiosk.vault.ballast import Ballast
from kiosk.vault.custody import SessionCustody
from kiosk.vault.store import Store
from kiosk.vault.sweep import sweep
from sync.envelope import X25519Identity, format_identity_file
from tests.harness.fswatch import (
    AGE_MAGIC,
    FsWatch,
    header_violations,
    is_ciphertext_name,
    kiosk_data_violations,
    private_tempdir,
)
from tests.harness.pulse import RATE, VirtualAudio, read_wav

#: A window this long of the audio plaintext must not appear in any file written.
WINDOW = 4096
#: The manifest is a few hundred bytes: no window this long of it may appear either.
MANIFEST_WINDOW = 64
#: What the defender gives, as the details screen would pass it on.
DEFENDER = {
    "display_name": "Lucía Tzul Ixcoy",
    "contact": "lucia.tzul@riseup.net, +502 5555 0142",
    "country": "Guatemala",
}
MANIFEST = {**DEFENDER, "language": "es", "prompt_ids": ["q1"],
            "consent": {"publish": True, "social_media": False, "contact_ok": True}}
#: Speech starts and ends where the signal first and last rises above -40 dBFS.
SPEECH_LEVEL = int(32768 * 10 ** (-40 / 20))


def age_tool() -> str:
    path = shutil.which("age") or ("/usr/bin/age" if Path("/usr/bin/age").exists() else None)
    if path is None:
        pytest.fail("Debian's `age` tool is missing: apt-get install age (deploy/setup.sh)")
    return path


@dataclass
class Run:
    data_dir: Path
    tmp_dir: Path
    watch: FsWatch
    submission_id: str
    identity_file: Path
    source: np.ndarray
    result: TakeResult
    part: Path
    opus: bytes
    decoded: np.ndarray
    meter_rate: float
    speakers: np.ndarray
    manifest: dict
    manifest_plain: bytes


def age_decrypt(identity_file: Path, path: Path) -> bytes:
    done = subprocess.run([age_tool(), "-d", "-i", str(identity_file), str(path)],
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


@pytest.fixture(scope="module")
def run(virtual_audio: VirtualAudio, speech, tmp_path_factory) -> Run:
    folder = tmp_path_factory.mktemp("recorder-integration")
    data_dir, tmp_dir = folder / "data", folder / "tmp"
    data_dir.mkdir()
    tmp_dir.mkdir()
    team = X25519Identity.generate()
    identity_file = folder / "team-identity.txt"  # the vetters' side: outside data_dir
    identity_file.write_text(format_identity_file(team))
    source, rate = read_wav(speech("en"))  # espeak-ng writes its WAV before the watch
    assert rate == RATE
    # From the first file the kiosk makes to the last write of the store.
    with private_tempdir(tmp_dir), FsWatch(data_dir, tmp_dir) as watch:
        logs.setup(data_dir)
        store = Store.in_data_dir(data_dir)
        sweep(data_dir, store)
        recorder = Recorder(SoundDeviceStreams(), ballast=Ballast(data_dir))
        try:
            assert recorder.warm_up() is not None, "the virtual microphone delivered nothing"
            session = SessionCustody(data_dir=data_dir, store=store,
                                     recipients=[str(team.recipient())])
            name, take = session.record(recorder, "q1")
            time.sleep(0.3)
            player = virtual_audio.play_into_mic(speech("en"))
            readings, began = set(), time.monotonic()
            while player.poll() is None:
                readings.add(take.meters().elapsed_s)  # a new value per block
                time.sleep(0.002)
            meter_rate = len(readings) / (time.monotonic() - began)
            assert player.returncode == 0, player.stderr.read()
            time.sleep(0.4)
            result = take.stop()
            recorder.close()  # the recording screen is left for review
            part = data_dir / "outbox" / session.submission_id / f"{name}.age"
            opus = age_decrypt(identity_file, part)
            decoded, decoded_rate = sf.read(io.BytesIO(opus), dtype="int16")
            assert decoded_rate == RATE

            # Review: the defender listens back through the speakers.
            ended = threading.Event()
            review = Player(SoundDeviceStreams(), on_end=lambda ok: ended.set())
            review.load(session.review_source(name))
            capture = virtual_audio.record_speakers()
            time.sleep(0.3)
            review.play()
            assert ended.wait(result.duration_s + 10), "review playback never ended"
            time.sleep(0.3)
            speakers = capture.stop()
            review.stop()

            manifest_path = session.submit(MANIFEST)
            manifest_plain = age_decrypt(identity_file, manifest_path)
        finally:
            recorder.close()
            store.close()
            for handler in list(logging.getLogger("kiosk").handlers):
                logging.getLogger("kiosk").removeHandler(handler)
                handler.close()
    return Run(data_dir, tmp_dir, watch, session.submission_id, identity_file, source,
               result, part, opus, decoded, meter_rate, speakers,
               json.loads(manifest_plain), manifest_plain)


def speech_span(x: np.ndarray) -> tuple[int, int]:
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > SPEECH_LEVEL)
    assert len(loud), "no speech at all"
    return int(loud[0]), int(loud[-1]) + 1


def similarity(source: np.ndarray, recorded: np.ndarray) -> float:
    """Peak of the normalised cross-correlation, both resampled to 16 kHz."""
    a = signal.resample_poly(source.astype(np.float64), 1, 3)
    b = signal.resample_poly(recorded.astype(np.float64), 1, 3)
    corr = signal.correlate(b, a, mode="full", method="fft")
    offset = int(np.argmax(corr)) - (len(a) - 1)
    segment = np.zeros_like(a)
    lo, hi = max(offset, 0), min(offset + len(a), len(b))
    segment[lo - offset:hi - offset] = b[lo:hi]
    return float(np.dot(a, segment) / (np.linalg.norm(a) * np.linalg.norm(segment)))


def assert_same_speech(source: np.ndarray, recorded: np.ndarray) -> None:
    s0, s1 = speech_span(source)
    r0, r1 = speech_span(recorded)
    score = similarity(source[s0:s1], recorded[r0:r1])
    print(f"speech {(s1 - s0) / RATE:.3f} s, recorded {(r1 - r0) / RATE:.3f} s, ncc {score:.3f}")
    assert abs((s1 - s0) - (r1 - r0)) / RATE <= 0.100, ((s1 - s0) / RATE, (r1 - r0) / RATE)
    assert score >= 0.8


def test_the_take_is_sealed_and_kept_with_no_overflows(run: Run) -> None:
    assert run.result.reason is EndReason.STOPPED and run.result.kept
    assert run.result.message is None and not run.result.silent
    assert run.result.overflows == 0
    assert run.part.exists() and not run.part.with_name(run.part.name + ".part").exists()
    assert run.part.read_bytes().startswith(b"age-encryption.org/v1\n")


def test_age_opens_it_with_the_team_identity_and_it_is_the_speech(run: Run) -> None:
    assert run.opus.startswith(b"OggS")
    assert len(run.decoded) == run.result.frames
    assert_same_speech(run.source, run.decoded)


def test_meters_updated_at_least_20_times_a_second(run: Run) -> None:
    assert run.meter_rate >= 20, run.meter_rate


def test_review_playback_reaches_the_speakers_and_matches_the_source(run: Run) -> None:
    assert_same_speech(run.source, run.speakers)


def test_the_manifest_is_sealed_and_lists_the_part(run: Run) -> None:
    (part,) = run.manifest["parts"]
    assert part["file"] == run.part.name
    assert part["sha256"] == run.result.sealed.sha256
    for key, value in DEFENDER.items():
        assert run.manifest[key] == value
    assert run.manifest_plain.count(DEFENDER["display_name"].encode()) == 1  # UTF-8, as is


# -- what was written to disk during the run --------------------------------------------


def test_only_ciphertext_parts_the_store_logs_and_ballast_were_written(run: Run) -> None:
    assert kiosk_data_violations(run.watch, run.data_dir) == []
    # The watch saw the run as it happened, not only what was left of it.
    rel = {p.relative_to(run.data_dir).as_posix() for p in run.watch.files
           if p.is_relative_to(run.data_dir)}
    outbox = f"outbox/{run.submission_id}"
    assert {f"{outbox}/{run.part.name}.part", f"{outbox}/{run.part.name}",
            f"{outbox}/manifest.json.age.part", f"{outbox}/manifest.json.age",
            "kiosk.db", "logs/kiosk.log", ".ballast"} <= rel, rel
    assert run.watch.files[run.part.with_name(run.part.name + ".part")].gone
    assert not any(p.is_relative_to(run.tmp_dir) for p in run.watch.files)


def test_every_ciphertext_file_was_age_whenever_it_was_read(run: Run) -> None:
    assert header_violations(run.watch) == []
    # Not vacuous: the part was read while it was being written, header and all.
    versions = [data for path, data in run.watch.contents()
                if is_ciphertext_name(path) and path.name.endswith(".part")]
    assert any(len(data) > len(AGE_MAGIC) for data in versions)


def _blocks(plain: bytes, window: int = WINDOW) -> list[bytes]:
    # Any `window`-long stretch of `plain` contains one of its blocks of half that size
    # aligned at a multiple of the half, so searching for every aligned block finds
    # every window there is. Blocks of a single repeated byte are skipped: digital
    # silence is no testimony, and the ballast file is 1 MiB of zeros.
    half = window // 2
    blocks = [plain[i:i + half] for i in range(0, len(plain) - half + 1, half)]
    return [b for b in blocks if b.count(b[:1]) != len(b)]


def _manifest_blocks(run: Run) -> list[bytes]:
    # The store and the logs hold the submission id and the parts' SHA-256 in clear by
    # design (DESIGN.md, threat model 1): a block that is nothing but one of those
    # says nothing about the defender.
    clear = [run.submission_id.encode()] + [p["sha256"].encode() for p in run.manifest["parts"]]
    return [b for b in _blocks(run.manifest_plain, MANIFEST_WINDOW)
            if not any(b in value for value in clear)]


@pytest.mark.parametrize("window", [WINDOW, MANIFEST_WINDOW])
def test_the_scan_finds_any_window_that_is_there(run: Run, window: int) -> None:
    plain = run.opus if window == WINDOW else run.manifest_plain
    blocks = _blocks(plain, window)
    for start in (0, 1, window // 2 - 1, window + 3, len(plain) - window):
        data = b"elsewhere" + plain[start:start + window] + b"more"
        assert any(data.find(block) >= 0 for block in blocks), start


def test_the_manifest_scan_covers_the_defenders_details(run: Run) -> None:
    blocks = _manifest_blocks(run)
    assert len(blocks) >= len(run.manifest_plain) // (MANIFEST_WINDOW // 2) - 4
    for key in DEFENDER:
        start = run.manifest_plain.index(f'"{key}"'.encode())
        window = run.manifest_plain[start:start + MANIFEST_WINDOW]
        assert any(block in window for block in blocks), key


def _written(run: Run) -> list[tuple[Path, bytes]]:
    written = list(run.watch.contents())
    assert any(is_ciphertext_name(path) for path, _ in written)
    assert any(path.name == "kiosk.db" for path, _ in written)
    return written


def test_nothing_written_held_the_audio_in_clear(run: Run) -> None:
    plaintexts = {
        "opus": run.opus,
        "decoded pcm": run.decoded.astype("<i2").tobytes(),
        "source pcm": run.source.astype("<i2").tobytes(),
    }
    for path, data in _written(run):
        for what, plain in plaintexts.items():
            for block in _blocks(plain):
                assert data.find(block) < 0, f"{path} held {what} plaintext"


def test_nothing_written_held_the_defenders_details(run: Run) -> None:
    for path, data in _written(run):
        for key, value in DEFENDER.items():
            for form in (value, json.dumps(value)[1:-1]):  # as is, and JSON-escaped
                assert form.encode() not in data, f"{path} held the defender's {key}"


def test_nothing_written_held_any_window_of_the_manifest(run: Run) -> None:
    blocks = _manifest_blocks(run)
    for path, data in _written(run):
        for block in blocks:
            assert data.find(block) < 0, f"{path} held manifest plaintext: {block!r}"


def test_a_named_microphone_that_is_missing_is_a_clear_error(virtual_audio: VirtualAudio,
                                                             tmp_path: Path) -> None:
    recorder = Recorder(SoundDeviceStreams(input_device="USB Conference Mic"))
    with pytest.raises(AudioDeviceError, match="'USB Conference Mic' named in the config"):
        recorder.start(tmp_path / "p.age", [str(X25519Identity.generate().recipient())])
    assert list(tmp_path.iterdir()) == []
