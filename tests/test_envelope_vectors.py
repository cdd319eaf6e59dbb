"""The C2SP age test vectors (CCTV), run through both of our readers.

Kinds that are not implemented (armor, scrypt, and hybrid while
``sync.envelope.mlkem`` is missing) are skipped by name, and a summary line
with the counts per kind is printed at the end of the run.
"""

from __future__ import annotations

import io
from collections import Counter

import pytest

from sync.envelope import (
    EnvelopeError,
    HeaderError,
    HmacError,
    NoIdentityMatchError,
    PayloadError,
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
}

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
    return [parse_identity(text) for text in vector.identities]


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


def test_implemented_kinds_are_never_skipped() -> None:
    """Only the kinds the issue allows to leave out may be skipped."""
    kinds = Counter(load_vector(p).kind for p in VECTORS if skip_reason(load_vector(p)) is not None)
    assert set(kinds) <= {"armor", "scrypt", "hybrid"}, kinds
    ran = [p.name for p in VECTORS if skip_reason(load_vector(p)) is None]
    assert len(ran) >= 80, "fewer vectors ran than expected: is the vector folder complete?"
