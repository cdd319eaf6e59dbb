"""Interoperability of hybrid (``mlkem768x25519``) files with typage, both ways.

typage is the age author's TypeScript implementation (npm ``age-encryption``
0.3.x) and the reference we test the post-quantum type against (DESIGN.md,
"Formats"). The test installs it into ``tests/.cache/typage`` (ignored by
git) the first time, then drives ``tests/typage_peer.mjs`` with Node.js.

Each size is checked both ways, byte for byte: files we seal open in typage,
files typage seals open here. Keys cross over too: ours->theirs uses keys we
generate (typage must parse our strings), theirs->ours uses keys typage
generates (we must parse theirs). X25519 runs alongside for good measure.
"""

from __future__ import annotations

import hashlib
import io
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from kiosk.audio.recorder import EndReason, Recorder
from sync.envelope import (
    CHUNK_SIZE,
    NoIdentityMatchError,
    X25519Identity,
    decrypt_stream,
    open_bytes,
    open_sealed,
    parse_identity,
    parse_recipient,
    seal_bytes,
)
from sync.envelope.header import read_header
from sync.envelope.mlkem import MlkemIdentity, MlkemRecipient
from tests.audio_fakes import RATE, FakeStreams, loud_noise, start
from tests.envelope_helpers import Typage, ensure_typage

SIZES = [0, 1, CHUNK_SIZE, 5 * 1024 * 1024]
SIZE_IDS = ["0B", "1B", "64KiB", "5MiB"]
KINDS = ["hybrid", "x25519"]

# The peer, its installation and its driver are shared with the passphrase
# and armor interop tests (tests/envelope_helpers.py).
_ensure_typage = ensure_typage


@pytest.fixture(scope="module")
def typage() -> Iterator[Typage]:
    _ensure_typage()
    yield Typage()


@pytest.fixture(scope="module")
def their_keys(typage: Typage) -> dict[str, tuple[str, str]]:
    """One typage-generated (identity, recipient) per kind: Node start-up is ~0.3 s."""
    return {kind: typage.keygen(kind) for kind in KINDS}


def _payload(size: int) -> bytes:
    # Deterministic and not repetitive, so that a chunk swap cannot go unseen.
    return random.Random(size).randbytes(size)


def _our_identity(kind: str) -> MlkemIdentity | X25519Identity:
    return MlkemIdentity.generate() if kind == "hybrid" else X25519Identity.generate()


# ------------------------------------------------------------------------- keys


def test_typage_is_the_expected_release() -> None:
    assert _ensure_typage().startswith("0.3.")


@pytest.mark.parametrize("kind", KINDS)
def test_key_strings_agree(
    typage: Typage, their_keys: dict[str, tuple[str, str]], kind: str
) -> None:
    # Theirs parsed by us: same recipient derived, same strings written back.
    identity_text, recipient_text = their_keys[kind]
    ours = parse_identity(identity_text)
    assert str(ours) == identity_text
    assert str(ours.recipient()) == recipient_text
    assert str(parse_recipient(recipient_text)) == recipient_text
    # Ours derived by them: X-Wing seed expansion and Bech32 must agree.
    mine = _our_identity(kind)
    assert typage.run("recipient", str(mine)).decode().strip() == str(mine.recipient())


def test_hybrid_recipient_type_is_what_typage_makes(
    their_keys: dict[str, tuple[str, str]],
) -> None:
    _, recipient_text = their_keys["hybrid"]
    recipient = parse_recipient(recipient_text)
    assert isinstance(recipient, MlkemRecipient) and recipient.post_quantum


# ---------------------------------------------------------------- payloads


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("kind", KINDS)
def test_ours_to_theirs(typage: Typage, kind: str, size: int) -> None:
    identity = _our_identity(kind)
    data = _payload(size)
    sealed = seal_bytes(data, [identity.recipient()])
    assert typage.decrypt(sealed, str(identity)) == data


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("kind", KINDS)
def test_theirs_to_ours(
    typage: Typage, their_keys: dict[str, tuple[str, str]], kind: str, size: int
) -> None:
    identity_text, recipient_text = their_keys[kind]
    identity = parse_identity(identity_text)
    data = _payload(size)
    sealed = typage.encrypt(data, recipient_text)
    assert open_bytes(sealed, [identity]) == data
    if size >= CHUNK_SIZE:
        # The seekable reader too, read from the end first.
        with open_sealed(io.BytesIO(sealed), identities=[identity]) as reader:
            reader.seek(size - 1)
            assert reader.read(1) == data[-1:]
            reader.seek(0)
            assert reader.read() == data


def test_two_hybrid_recipients_both_ways(
    typage: Typage, their_keys: dict[str, tuple[str, str]]
) -> None:
    data = _payload(3 * CHUNK_SIZE + 7)
    ours = [MlkemIdentity.generate(), MlkemIdentity.generate()]
    sealed = seal_bytes(data, [i.recipient() for i in ours])
    for identity in ours:
        assert typage.decrypt(sealed, str(identity)) == data
    theirs = [their_keys["hybrid"], typage.keygen("hybrid")]
    sealed = typage.encrypt(data, *(r for _, r in theirs))
    for identity_text, _ in theirs:
        assert open_bytes(sealed, [parse_identity(identity_text)]) == data


def test_mixed_file_from_typage_opens_with_either_identity(
    typage: Typage, their_keys: dict[str, tuple[str, str]]
) -> None:
    # typage does not refuse mixing; our reader must accept such a file.
    data = _payload(1000)
    pq_id, pq_rcpt = their_keys["hybrid"]
    x_id, x_rcpt = their_keys["x25519"]
    sealed = typage.encrypt(data, pq_rcpt, x_rcpt)
    assert open_bytes(sealed, [parse_identity(pq_id)]) == data
    assert open_bytes(sealed, [parse_identity(x_id)]) == data


def test_our_mixed_file_opens_in_typage_with_either_identity(typage: Typage) -> None:
    data = _payload(1000)
    pq, x = MlkemIdentity.generate(), X25519Identity.generate()
    sealed = seal_bytes(data, [pq.recipient(), x.recipient()], allow_mixed=True)
    assert typage.decrypt(sealed, str(pq)) == data
    assert typage.decrypt(sealed, str(x)) == data


def test_wrong_hybrid_identity_fails_both_ways(
    typage: Typage, their_keys: dict[str, tuple[str, str]]
) -> None:
    data = b"not for you"
    ours_sealed = seal_bytes(data, [MlkemIdentity.generate().recipient()])
    done = typage.try_run("decrypt", str(MlkemIdentity.generate()), data=ours_sealed)
    assert done.returncode == 1 and b"no identity matched" in done.stderr
    _, recipient_text = their_keys["hybrid"]
    theirs_sealed = typage.encrypt(data, recipient_text)
    with pytest.raises(NoIdentityMatchError):
        decrypt_stream(
            io.BytesIO(theirs_sealed), io.BytesIO(), identities=[MlkemIdentity.generate()]
        )


# ------------------------------------------------------- the kiosk's streaming writer


def test_a_take_recorded_by_the_kiosk_opens_in_typage(tmp_path: Path, typage: Typage) -> None:
    identity = MlkemIdentity.generate()
    # White noise is Opus's densest input: 90 s at the kiosk's bitrate spans 4+ chunks.
    noise = loud_noise(90.0)
    recorder = Recorder(FakeStreams([noise]), max_answer_s=600)
    try:
        take = start(recorder, tmp_path / "q1-1.age", [identity.recipient()])
        deadline = time.monotonic() + 60
        while take.meters().elapsed_s * RATE < len(noise):
            assert time.monotonic() < deadline, "the fake microphone did not deliver in time"
            time.sleep(0.01)
        result = take.stop()
    finally:
        recorder.close()
    assert result.reason is EndReason.STOPPED and result.sealed is not None
    sealed = result.sealed.path.read_bytes()
    assert hashlib.sha256(sealed).hexdigest() == result.sealed.sha256
    with io.BytesIO(sealed) as src:
        header, _ = read_header(src)
    assert [s.type for s in header.stanzas] == ["mlkem768x25519"]

    theirs = typage.decrypt(sealed, str(identity))
    with open_sealed(result.sealed.path, identities=[identity]) as reader:
        ours = reader.read()
    assert theirs == ours
    assert len(ours) == result.opus_bytes > 3 * CHUNK_SIZE
    # And it is the take: Ogg/Opus with every frame that was recorded.
    samples, rate = sf.read(io.BytesIO(ours), dtype="int16")
    assert rate == RATE and len(samples) == result.frames >= len(noise)
