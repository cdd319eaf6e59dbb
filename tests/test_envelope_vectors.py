"""The C2SP age test vectors (CCTV), run through both of our readers.

All 143 run: X25519, hybrid, scrypt (with the reader's default work-factor
limit, 2**22, which ``scrypt_work_factor_23`` expects to refuse) and armor
(detected by the readers themselves: the tests never say a file is armored).
A summary line with the counts is printed at the end of the run; a skip
would be counted there by kind, and is a failure of
``test_every_vector_runs``.
"""

from __future__ import annotations

import io
from collections import Counter

import pytest

from sync.envelope import (
    ArmorError,
    EnvelopeError,
    HeaderError,
    HmacError,
    NoIdentityMatchError,
    PayloadError,
    ScryptIdentity,
    decrypt_stream,
    open_sealed,
    parse_identity,
)
from tests.envelope_helpers import HashingSink, Vector, all_vectors, load_vector, skip_reason

EXPECTED_ERRORS: dict[str, type[EnvelopeError]] = {
    "header failure": HeaderError,
    "no match": NoIdentityMatchError,
    "HMAC failure": HmacError,
    "payload failure": PayloadError,
    "armor failure": ArmorError,
}
#: The number of vectors in the C2SP set this project carries.
VECTOR_COUNT = 143

VECTORS = all_vectors()
_outcomes: Counter[str] = Counter()


class _Summary:
    def pytest_terminal_summary(self, terminalreporter) -> None:  # type: ignore[no-untyped-def]
        if not _outcomes:
            return
        ran = _outcomes.pop("ran", 0)
        skipped = ", ".join(f"{kind} {n}" for kind, n in sorted(_outcomes.items()))
        terminalreporter.write_line(
            f"age test vectors: {ran} run; skipped by kind: {skipped or 'none'}"
        )
        _outcomes.clear()


@pytest.fixture(scope="module", autouse=True)
def _vector_summary(request: pytest.FixtureRequest) -> None:
    manager = request.config.pluginmanager
    if not manager.has_plugin("envelope-vector-summary"):
        manager.register(_Summary(), "envelope-vector-summary")


def _identities(vector: Vector) -> list:
    # Every key and passphrase the vector names, with the default work-factor limit.
    keys = [parse_identity(text) for text in vector.identities]
    return keys + [ScryptIdentity(p) for p in vector.passphrases]


def _run(vector: Vector) -> None:
    reason = skip_reason(vector)
    if reason is not None:
        _outcomes[reason.split(":", 1)[0]] += 1
        pytest.skip(reason)
    _outcomes["ran"] += 1


@pytest.mark.parametrize("path", VECTORS, ids=[p.name for p in VECTORS])
def test_vector_streaming(path) -> None:  # type: ignore[no-untyped-def]
    vector = load_vector(path)
    _run(vector)
    sink = HashingSink()
    error: Exception | None = None
    try:
        decrypt_stream(io.BytesIO(vector.data), sink, identities=_identities(vector))
    except EnvelopeError as exc:
        error = exc
    if vector.expect == "success":
        assert error is None, f"{vector.name}: unexpected {type(error).__name__}: {error}"
    else:
        expected = EXPECTED_ERRORS[vector.expect]
        assert isinstance(error, expected), (
            f"{vector.name}: expected {expected.__name__}, got {error!r}"
        )
    if vector.payload is not None:
        assert sink.hexdigest() == vector.payload, f"{vector.name}: released plaintext differs"
    else:
        assert sink.count == 0, f"{vector.name}: released plaintext where none was expected"


@pytest.mark.parametrize("path", VECTORS, ids=[p.name for p in VECTORS])
def test_vector_seekable(path) -> None:  # type: ignore[no-untyped-def]
    """The random-access reader reaches the same verdict.

    It authenticates the final chunk when it opens, so on a failure it may
    release less than the streaming reader, never more.
    """
    vector = load_vector(path)
    if skip_reason(vector) is not None:
        pytest.skip(skip_reason(vector) or "")
    sink = HashingSink()
    try:
        with open_sealed(io.BytesIO(vector.data), identities=_identities(vector)) as reader:
            reader.seek(0, io.SEEK_END)
            size = reader.tell()
            reader.seek(0)
            while block := reader.read(50_000):
                sink.write(block)
    except EnvelopeError as exc:
        expected = EXPECTED_ERRORS.get(vector.expect)
        assert expected is not None and isinstance(exc, expected), f"{vector.name}: got {exc!r}"
        return
    assert vector.expect == "success", f"{vector.name}: expected {vector.expect}, read succeeded"
    assert sink.count == size
    assert sink.hexdigest() == vector.payload


def test_every_vector_runs() -> None:
    """143 of 143: no kind is skipped any more, and the folder is complete."""
    assert len(VECTORS) == VECTOR_COUNT, f"{len(VECTORS)} vectors found, {VECTOR_COUNT} expected"
    skipped = [p.name for p in VECTORS if skip_reason(load_vector(p)) is not None]
    assert skipped == []
    kinds = Counter(load_vector(p).kind for p in VECTORS)
    assert kinds["armor"] >= 30 and kinds["scrypt"] >= 20, kinds
    expects = {load_vector(p).expect for p in VECTORS}
    assert expects == {"success", *EXPECTED_ERRORS}, expects
