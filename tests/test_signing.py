"""Ed25519 signing keys and detached signatures (sync/signing.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.envelope import bech32
from sync.envelope.errors import KeyFormatError
from sync.signing import (
    BadSignatureError,
    Signature,
    SigningKey,
    VerifyKey,
    format_signing_key_file,
    parse_signing_key_file,
)

KEY = SigningKey(bytes(range(32)))
CATALOG = b'{"version": 7, "stories": []}\n'


def test_encodings_are_stable() -> None:
    """Fixed seed, fixed strings: a change here breaks every pinned key and stored signature."""
    assert str(KEY).startswith("IDR-SIGNING-KEY-1")
    assert str(KEY.verify_key).startswith("idrverify1")
    signature = KEY.sign(CATALOG, context="catalog")
    assert str(signature).startswith("idrsig1")
    # Ed25519 is deterministic: the same key, context and message give the same bytes.
    assert KEY.sign(CATALOG, context="catalog") == signature
    assert SigningKey.parse(str(KEY)).verify_key == KEY.verify_key
    assert VerifyKey.parse(str(KEY.verify_key)) == KEY.verify_key
    assert Signature.parse(str(signature)) == signature
    # RFC 8032 key derivation: the public key for seed 00..1f.
    assert KEY.verify_key.raw.hex() == (
        "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    )
    assert str(KEY.verify_key) == bech32.encode("idrverify", KEY.verify_key.raw)
    assert str(KEY) == "IDR-SIGNING-KEY-1QQQSYQCYQ5RQWZQFPG9SCRGWPUGPZYSNZS23V9CCRYDPK8QARC0SDUS3Q0"
    assert (
        str(KEY.verify_key)
        == "idrverify1qwss00lnecgtu8tsm5vwwj7qn9n7f43snwjs6hcamjrxgyj4xxuqmxx4vg"
    )
    assert str(signature) == (
        "idrsig1mew2850dy602dc4j2ez5re30f6ugr5ecfpvw6vw5n9w6fdhgqslpl8xh74z9l8382hkyaxs28r6hg8tf"
        "m66dwe0y6tm63t9h30t4wzsrs9nya"
    )


def test_signature_is_plain_ed25519_over_the_documented_message() -> None:
    signature = KEY.sign(CATALOG, context="catalog")
    Ed25519PublicKey.from_public_bytes(KEY.verify_key.raw).verify(
        signature.raw, b"idr-signature-v1\x00catalog\x00" + CATALOG
    )


def test_verify() -> None:
    signature = KEY.sign(CATALOG, context="catalog")
    KEY.verify_key.verify(CATALOG, signature, context="catalog")
    KEY.verify_key.verify(CATALOG, str(signature), context="catalog")
    with pytest.raises(BadSignatureError):
        KEY.verify_key.verify(CATALOG + b" ", signature, context="catalog")
    with pytest.raises(BadSignatureError):  # the same bytes for another purpose
        KEY.verify_key.verify(CATALOG, signature, context="receipt")
    with pytest.raises(BadSignatureError):
        SigningKey.generate().verify_key.verify(CATALOG, signature, context="catalog")
    with pytest.raises(BadSignatureError):
        KEY.verify_key.verify(CATALOG, "idrsig1garbage", context="catalog")
    flipped = bytearray(signature.raw)
    flipped[10] ^= 1
    with pytest.raises(BadSignatureError):
        KEY.verify_key.verify(CATALOG, Signature(bytes(flipped)), context="catalog")


@pytest.mark.parametrize("context", ["", "a\x00b", "catálogo"])
def test_bad_contexts(context: str) -> None:
    with pytest.raises(ValueError):
        KEY.sign(CATALOG, context=context)


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (SigningKey.parse, str(KEY).lower()),
        (SigningKey.parse, str(KEY)[:-1] + ("Q" if str(KEY)[-1] != "Q" else "P")),
        (SigningKey.parse, str(KEY.verify_key)),
        (VerifyKey.parse, str(KEY.verify_key).upper()),
        (VerifyKey.parse, str(KEY)),
        (VerifyKey.parse, bech32.encode("idrverify", bytes(31))),
        (VerifyKey.parse, "age1qk7w0y2a9dy2lxxt0dvmhu8r9282jpsssnu9jrhqhtenwqts69qsusnwy9"),
        (Signature.parse, bech32.encode("idrsig", bytes(63))),
        (Signature.parse, ""),
    ],
)
def test_strict_parsing(parse, text: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KeyFormatError):
        parse(text)


def test_secret_never_in_repr_or_errors() -> None:
    assert str(KEY) not in repr(KEY)
    bad = str(KEY)[:-1] + ("Q" if str(KEY)[-1] != "Q" else "P")
    with pytest.raises(KeyFormatError) as failure:
        parse_signing_key_file(f"# a comment\n{bad}\n")
    assert bad not in str(failure.value) and "line 2" in str(failure.value)


def test_key_file_round_trip() -> None:
    text = format_signing_key_file(KEY, created=datetime(2026, 11, 24, 10, 0, tzinfo=UTC))
    assert text.splitlines() == [
        "# created: 2026-11-24T10:00:00Z",
        f"# verify key: {KEY.verify_key}",
        str(KEY),
    ]
    assert parse_signing_key_file(text).verify_key == KEY.verify_key
    with pytest.raises(KeyFormatError):
        parse_signing_key_file(text + str(SigningKey.generate()) + "\n")
    with pytest.raises(KeyFormatError):
        parse_signing_key_file("# empty\n")


def test_key_id_is_short_and_stable() -> None:
    assert len(KEY.verify_key.key_id) == 16
    assert KEY.verify_key.key_id == VerifyKey.parse(str(KEY.verify_key)).key_id


@settings(max_examples=30, deadline=None)
@given(message=st.binary(max_size=2000), context=st.sampled_from(["catalog", "receipt", "index"]))
def test_sign_verify_property(message: bytes, context: str) -> None:
    key = SigningKey.generate()
    signature = Signature.parse(str(key.sign(message, context=context)))
    VerifyKey.parse(str(key.verify_key)).verify(message, signature, context=context)
