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


# Weak verify keys. The 8 small-order points of edwards25519 in their canonical
# encodings, then the non-canonical encodings of small-order points, as listed in
# "Taming the many EdDSAs" (Chalkias, Garillot, Nikolaenko, 2020) and libsodium's
# blocklist. Written out here, not computed, so the test does not trust the code.
SMALL_ORDER_CANONICAL = [
    "0100000000000000000000000000000000000000000000000000000000000000",  # identity, order 1
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # (0, -1), order 2
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4 (all zero)
    "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
]
SMALL_ORDER_NON_CANONICAL = [
    "0100000000000000000000000000000000000000000000000000000000000080",  # identity, x=0 signed
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",  # (0, -1), x=0 signed
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p (= 0)
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",  # y = p, sign set
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1 (= 1)
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",  # y = p + 1, sign set
]
OTHER_BAD = [
    "ff" * 32,  # y = 2**255 - 1 >= p
    "f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 3: y >= p
    "0200000000000000000000000000000000000000000000000000000000000000",  # y = 2: not on the curve
]


@pytest.mark.parametrize("hex_key", SMALL_ORDER_CANONICAL + SMALL_ORDER_NON_CANONICAL + OTHER_BAD)
def test_weak_and_non_canonical_verify_keys_are_refused(hex_key: str) -> None:
    raw = bytes.fromhex(hex_key)
    with pytest.raises(KeyFormatError) as failure:
        VerifyKey(raw)
    message = str(failure.value)
    assert message.startswith("verify key ")
    assert any(w in message for w in ("small-order", "canonical", "not a valid Ed25519 point"))
    with pytest.raises(KeyFormatError):  # the text form a kiosk would pin
        VerifyKey.parse(bech32.encode("idrverify", raw))


@pytest.mark.parametrize("hex_key", SMALL_ORDER_CANONICAL)
def test_small_order_points_are_named_as_such(hex_key: str) -> None:
    with pytest.raises(KeyFormatError, match="small-order"):
        VerifyKey(bytes.fromhex(hex_key))


def test_the_identity_key_is_refused_before_it_can_accept_a_forgery() -> None:
    """Why this matters: under the identity key, R = identity and s = 0 is a "signature"
    that OpenSSL 3 (cryptography 50) accepts for every message, in every context.
    So the key must never be pinned: VerifyKey refuses it, and parse() with it."""
    identity = bytes.fromhex("01" + "00" * 31)
    with pytest.raises(KeyFormatError, match="small-order"):
        VerifyKey(identity)
    with pytest.raises(KeyFormatError, match="small-order"):
        VerifyKey.parse(bech32.encode("idrverify", identity))


def test_real_keys_are_still_accepted() -> None:
    assert VerifyKey(KEY.verify_key.raw) == KEY.verify_key
    for _ in range(50):
        key = SigningKey.generate()
        pinned = VerifyKey.parse(str(key.verify_key))
        pinned.verify(CATALOG, key.sign(CATALOG, context="catalog"), context="catalog")
