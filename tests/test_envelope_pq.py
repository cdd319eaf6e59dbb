"""The hybrid post-quantum recipient type ``mlkem768x25519`` (sync/envelope/mlkem.py).

Stanza-level tests run on their own: key strings, wrap/unwrap, the strict
stanza rules, tampering, and the C2SP ``hybrid*`` vectors' stanzas (parsed
here, leniently, so that each vector's outcome is attributed to the layer
that owns it). File-level tests use the envelope reader/writer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.envelope import (
    EnvelopeError,
    EnvelopeWriter,
    HmacError,
    NoIdentityMatchError,
    Recipient,
    X25519Identity,
    b64,
    bech32,
    cli,
    decrypt_stream,
    encrypt_stream,
    format_identity_file,
    open_bytes,
    open_sealed,
    parse_identity,
    parse_identity_file,
    parse_recipient,
    seal_bytes,
)
from sync.envelope.errors import HeaderError, KeyFormatError
from sync.envelope.mlkem import (
    BODY_SIZE,
    ENC_SIZE,
    HPKE_INFO,
    PUBLIC_KEY_SIZE,
    STANZA_TYPE,
    MlkemIdentity,
    MlkemRecipient,
)
from sync.envelope.stanza import Stanza
from tests.envelope_helpers import VECTORS_DIR

VECTORS = VECTORS_DIR
HYBRID_VECTORS = sorted(p.name for p in VECTORS.glob("hybrid*"))

FILE_KEY = bytes(range(16))
MLKEM_CT = 1088  # the ML-KEM-768 ciphertext leads enc; the X25519 share follows

# One identity for the whole module: key derivation costs ~0.2 ms, but there is
# no reason to pay it per test, and a fixed key keeps failures reproducible.
IDENTITY = MlkemIdentity(hashlib.sha256(b"test_envelope_pq identity").digest())
OTHER = MlkemIdentity(hashlib.sha256(b"test_envelope_pq other").digest())


def _p(n: int) -> bytes:
    return n.to_bytes(32, "little")


_P = 2**255 - 19
# Every 32-byte encoding of an X25519 point of small order: the five classes
# (0, 1, -1, and the two of order 8), unreduced aliases (+p), with and
# without the top bit that RFC 7748 says to ignore.
_LOW_ORDER_BASE = [
    0,
    1,
    _P - 1,
    int.from_bytes(
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"), "little"
    ),
    int.from_bytes(
        bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"), "little"
    ),
]
LOW_ORDER_POINTS = [
    _p(v + top) for x in _LOW_ORDER_BASE for v in (x, x + _P) if v < 2**255 for top in (0, 1 << 255)
]


# --------------------------------------------------------------------------- keys


def test_generated_keys_round_trip_through_their_strings() -> None:
    identity = MlkemIdentity.generate()
    text = str(identity)
    assert text.startswith("AGE-SECRET-KEY-PQ-1") and text == text.upper()
    again = MlkemIdentity.parse(text)
    assert str(again) == text
    recipient = identity.recipient()
    rtext = str(recipient)
    assert rtext.startswith("age1pq1") and rtext == rtext.lower()
    # 1216 bytes -> 1946 data characters + "age1pq1" + 6 checksum characters.
    assert len(rtext) == len("age1pq1") + (PUBLIC_KEY_SIZE * 8 + 4) // 5 + 6
    assert MlkemRecipient.parse(rtext) == recipient == again.recipient()
    assert MlkemRecipient.post_quantum is True and recipient.post_quantum is True


def test_two_generated_identities_differ() -> None:
    assert str(MlkemIdentity.generate()) != str(MlkemIdentity.generate())


def test_reprs_do_not_reveal_the_secret() -> None:
    text = str(IDENTITY)
    secret_part = text[len("AGE-SECRET-KEY-PQ-1") :]
    for shown in (repr(IDENTITY), repr(IDENTITY.recipient())):
        assert secret_part[:8] not in shown and secret_part[-8:] not in shown


def test_vector_identity_derives_the_vector_recipient() -> None:
    # The hybrid_no_match vector's stanza is sealed to some *other* key; the
    # main identity must open `hybrid`, which pins the X-Wing seed expansion.
    meta, stanzas, _ = _load_vector("hybrid")
    identity = MlkemIdentity.parse(meta["identity"][-1])
    assert identity.unwrap(stanzas) == bytes.fromhex(meta["file key"][0])


_GOOD_RECIPIENT = str(IDENTITY.recipient())
_GOOD_IDENTITY = str(IDENTITY)


@pytest.mark.parametrize(
    "text",
    [
        "",
        _GOOD_RECIPIENT.upper(),  # age writes and accepts lower case only
        _GOOD_RECIPIENT[:-1] + ("q" if _GOOD_RECIPIENT[-1] != "q" else "p"),  # checksum
        _GOOD_RECIPIENT[:100] + _GOOD_RECIPIENT[100:].upper(),  # mixed case
        " " + _GOOD_RECIPIENT,
        _GOOD_RECIPIENT + "\n",
        bech32.encode("age1pq", bytes(PUBLIC_KEY_SIZE - 1)),
        bech32.encode("age1pq", bytes(PUBLIC_KEY_SIZE + 1)),
        bech32.encode("age1pqx", IDENTITY.recipient().public_bytes),
        bech32.encode("age", bytes(32)),  # an X25519 recipient is not ours
        _GOOD_IDENTITY,
        "age1pq1",
    ],
    ids=lambda t: repr(t[:24]),
)
def test_recipient_parse_rejects(text: str) -> None:
    with pytest.raises(KeyFormatError):
        MlkemRecipient.parse(text)


def test_recipient_rejects_mlkem_key_failing_the_modulus_check() -> None:
    raw = bytearray(IDENTITY.recipient().public_bytes)
    raw[0] = raw[1] = 0xFF  # first coefficient 0xFFF >= q = 3329
    with pytest.raises(KeyFormatError):
        MlkemRecipient.parse(bech32.encode("age1pq", bytes(raw)))


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8] + p.hex()[-4:])
def test_recipient_rejects_small_order_x25519_half(point: bytes) -> None:
    raw = IDENTITY.recipient().public_bytes[:-32] + point
    with pytest.raises(KeyFormatError):
        MlkemRecipient(raw)


@pytest.mark.parametrize(
    "text",
    [
        "",
        _GOOD_IDENTITY.lower(),
        _GOOD_IDENTITY[:-1] + ("Q" if _GOOD_IDENTITY[-1] != "Q" else "P"),
        _GOOD_IDENTITY + "\n",
        bech32.encode("age-secret-key-pq-", bytes(31), upper=True),
        bech32.encode("age-secret-key-pq-", bytes(33), upper=True),
        bech32.encode("age-secret-key-", bytes(32), upper=True),  # X25519 identity
        _GOOD_RECIPIENT,
    ],
    ids=lambda t: repr(t[:24]),
)
def test_identity_parse_rejects(text: str) -> None:
    with pytest.raises(KeyFormatError) as info:
        MlkemIdentity.parse(text)
    # The message must never carry the secret it failed to parse.
    if len(text) > 30:
        assert text[20:40] not in str(info.value)


# ------------------------------------------------------------------ wrap / unwrap


def test_wrap_makes_one_well_formed_stanza() -> None:
    (stanza,) = IDENTITY.recipient().wrap(FILE_KEY)
    assert stanza.type == STANZA_TYPE
    assert len(stanza.args) == 1
    assert len(stanza.args[0]) == (ENC_SIZE * 4 + 2) // 3  # 1494, unpadded
    assert "=" not in stanza.args[0]
    assert len(stanza.body) == BODY_SIZE
    assert IDENTITY.unwrap([stanza]) == FILE_KEY


def test_wrap_is_randomised() -> None:
    recipient = IDENTITY.recipient()
    a, b = recipient.wrap(FILE_KEY)[0], recipient.wrap(FILE_KEY)[0]
    assert a.args != b.args and a.body != b.body


@pytest.mark.parametrize("size", [0, 15, 17, 32])
def test_wrap_refuses_a_file_key_of_the_wrong_size(size: int) -> None:
    with pytest.raises(ValueError):
        IDENTITY.recipient().wrap(bytes(size))


def test_unwrap_ignores_other_recipients_and_types() -> None:
    theirs = OTHER.recipient().wrap(FILE_KEY)
    ours = IDENTITY.recipient().wrap(FILE_KEY)
    grease = Stanza("x25519", ("AAAA",), b"")  # another type, even if it looks close
    assert IDENTITY.unwrap(theirs) is None
    assert IDENTITY.unwrap([grease]) is None
    assert IDENTITY.unwrap([]) is None
    assert IDENTITY.unwrap([grease, *theirs, *ours]) == FILE_KEY
    assert OTHER.unwrap([*ours, grease, *theirs]) == FILE_KEY


def test_the_hpke_info_string_is_ages() -> None:
    # A different info would still round-trip with ourselves; pin the constant
    # the vectors and typage were built with.
    assert HPKE_INFO == b"age-encryption.org/mlkem768x25519"


# -------------------------------------------------------------- strict stanzas


def _ours() -> Stanza:
    return IDENTITY.recipient().wrap(FILE_KEY)[0]


def _with_enc(stanza: Stanza, enc: bytes) -> Stanza:
    return replace(stanza, args=(base64.b64encode(enc).decode().rstrip("="),))


def _enc(stanza: Stanza) -> bytes:
    return b64.decode(stanza.args[0])


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda s: replace(s, args=()), id="no-argument"),
        pytest.param(lambda s: replace(s, args=(*s.args, "AAAA")), id="extra-argument"),
        pytest.param(lambda s: replace(s, args=(s.args[0] + "==",)), id="padded"),
        pytest.param(lambda s: replace(s, args=(s.args[0][:-1] + "d",)), id="unused-bits-set"),
        pytest.param(
            lambda s: replace(s, args=(s.args[0][:700] + "\n" + s.args[0][700:],)), id="newline"
        ),
        pytest.param(
            lambda s: replace(s, args=(s.args[0][:700] + "-" + s.args[0][701:],)), id="urlsafe"
        ),
        pytest.param(lambda s: replace(s, args=(s.args[0][:-4],)), id="enc-short"),
        pytest.param(lambda s: _with_enc(s, _enc(s) + b"\0"), id="enc-long"),
        pytest.param(lambda s: _with_enc(s, _enc(s)[:MLKEM_CT]), id="enc-without-x25519"),
        pytest.param(lambda s: replace(s, body=s.body[:-1]), id="body-short"),
        pytest.param(lambda s: replace(s, body=s.body + b"\0"), id="body-long"),
        pytest.param(lambda s: replace(s, body=b""), id="body-empty"),
    ],
)
def test_malformed_stanza_is_a_header_failure(mutate) -> None:  # type: ignore[no-untyped-def]
    bad = mutate(_ours())
    with pytest.raises(HeaderError):
        IDENTITY.unwrap([bad])
    # Fatal wherever it sits, even after a stanza we can open: two readers
    # must never disagree on whether a header is valid.
    with pytest.raises(HeaderError):
        IDENTITY.unwrap([_ours(), bad])


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8] + p.hex()[-4:])
def test_small_order_x25519_share_is_a_header_failure(point: bytes) -> None:
    stanza = _ours()
    with pytest.raises(HeaderError):
        IDENTITY.unwrap([_with_enc(stanza, _enc(stanza)[:MLKEM_CT] + point)])


# --------------------------------------------------------------------- tampering


@pytest.mark.parametrize(
    ("part", "index"),
    [
        pytest.param("enc", 0, id="mlkem-first-byte"),
        pytest.param("enc", MLKEM_CT // 2, id="mlkem-middle"),
        pytest.param("enc", MLKEM_CT - 1, id="mlkem-last-byte"),
        pytest.param("enc", MLKEM_CT, id="x25519-first-byte"),
        pytest.param("enc", ENC_SIZE - 2, id="x25519-last-byte-but-one"),
        pytest.param("body", 0, id="body-ciphertext"),
        pytest.param("body", BODY_SIZE - 1, id="body-tag"),
    ],
)
def test_tampered_stanza_does_not_match(part: str, index: int) -> None:
    stanza = _ours()
    if part == "enc":
        enc = bytearray(_enc(stanza))
        enc[index] ^= 0x01
        tampered = _with_enc(stanza, bytes(enc))
    else:
        body = bytearray(stanza.body)
        body[index] ^= 0x80
        tampered = replace(stanza, body=bytes(body))
    assert IDENTITY.unwrap([tampered]) is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    part=st.sampled_from(["mlkem", "x25519", "body"]),
    data=st.data(),
)
def test_any_single_byte_tamper_is_no_match_or_header_failure(
    part: str, data: st.DataObject
) -> None:
    stanza = _ours()
    enc, body = bytearray(_enc(stanza)), bytearray(stanza.body)
    buf, lo, hi = {
        "mlkem": (enc, 0, MLKEM_CT),
        "x25519": (enc, MLKEM_CT, ENC_SIZE),
        "body": (body, 0, BODY_SIZE),
    }[part]
    index = data.draw(st.integers(lo, hi - 1), label="index")
    flip = data.draw(st.integers(1, 255), label="xor")
    buf[index] ^= flip
    tampered = replace(_with_enc(stanza, bytes(enc)), body=bytes(body))
    try:
        result = IDENTITY.unwrap([tampered])
    except HeaderError:
        # Only a small-order share may turn a tamper into a header failure.
        assert part == "x25519"
        return
    assert result is None


def test_flipping_the_ignored_top_bit_of_the_share_still_does_not_match() -> None:
    # RFC 7748 ignores bit 255 of a u-coordinate, so the X25519 secret is
    # unchanged; X-Wing hashes the share's bytes into the key, so the stanza
    # must still fail. (A combiner that skipped them would make this pass.)
    stanza = _ours()
    enc = bytearray(_enc(stanza))
    enc[ENC_SIZE - 1] ^= 0x80
    assert IDENTITY.unwrap([_with_enc(stanza, bytes(enc))]) is None


# ---------------------------------------------------- C2SP vectors, stanza level


@dataclass(frozen=True)
class _Header:
    no_mac: bytes  # the header up to and including "---", as the MAC covers it
    mac: bytes


def _load_vector(name: str) -> tuple[dict[str, list[str]], list[Stanza], _Header]:
    """Split a vector into its metadata, its stanzas and its header MAC.

    Deliberately lenient (plain base64 decode, no line-length rules): the
    header parser's own strictness is tested elsewhere; here we want to know
    what the hybrid identity alone says about each stanza.
    """
    raw = (VECTORS / name).read_bytes()
    head, _, body = raw.partition(b"\n\n")
    meta: dict[str, list[str]] = {}
    for line in head.decode().splitlines():
        key, _, value = line.partition(": ")
        meta.setdefault(key, []).append(value)
    if meta.get("compressed") == ["zlib"]:
        body = zlib.decompress(body)
    mac_at = body.index(b"\n---") + 4
    lines = body[:mac_at].split(b"\n")
    assert lines[0] == b"age-encryption.org/v1"
    stanzas: list[Stanza] = []
    i = 1
    while not lines[i].startswith(b"---"):
        words = lines[i].decode().split(" ")
        assert words[0] == "->"
        i += 1
        chunks = []
        while True:
            chunk = lines[i]
            i += 1
            chunks.append(chunk)
            if len(chunk) < 64:
                break
        text = b"".join(chunks)
        stanzas.append(
            Stanza(words[1], tuple(words[2:]), base64.b64decode(text + b"=" * (-len(text) % 4)))
        )
    mac_text = body[mac_at + 1 : body.index(b"\n", mac_at)]
    mac = base64.b64decode(mac_text + b"=" * (-len(mac_text) % 4))
    return meta, stanzas, _Header(body[:mac_at], mac)


# What the hybrid identity alone must say per vector, where that differs from
# the file-level expectation because another layer owns the failure.
_OWNED_ELSEWHERE = {
    # The body's base64 has unused bits set; the *header parser* decodes
    # bodies and must reject it. The stanza itself is otherwise valid.
    "hybrid_not_canonical_body": "success",
    # An X25519 stanza carrying a hybrid-sized share: the *X25519 identity*
    # must fail the header; to the hybrid identity it is not its type.
    "hybrid_x25519_arg": "no match",
}


def test_all_eighteen_hybrid_vectors_are_present() -> None:
    assert len(HYBRID_VECTORS) == 18, HYBRID_VECTORS


@pytest.mark.parametrize("name", HYBRID_VECTORS)
def test_hybrid_vector_stanzas(name: str) -> None:
    meta, stanzas, header = _load_vector(name)
    expect = _OWNED_ELSEWHERE.get(name, meta["expect"][0])
    identities = [
        MlkemIdentity.parse(t) for t in meta["identity"] if t.startswith("AGE-SECRET-KEY-PQ-")
    ]
    assert identities
    if expect == "header failure":
        with pytest.raises(HeaderError):
            for identity in identities:
                identity.unwrap(stanzas)
        return
    keys = [identity.unwrap(stanzas) for identity in identities]
    found = [k for k in keys if k is not None]
    if expect == "no match":
        assert not found
        return
    assert expect in ("success", "HMAC failure", "payload failure"), expect
    assert found == [bytes.fromhex(meta["file key"][0])]
    # The unwrapped key must authenticate the header (age's HMAC over the
    # header bytes up to "---"), so the stanza decoded to the right key.
    mac_key = _hkdf_sha256(found[0], b"", b"header")
    mac_ok = hmac.compare_digest(
        hmac.new(mac_key, header.no_mac, hashlib.sha256).digest(), header.mac
    )
    assert mac_ok is (meta["expect"][0] != "HMAC failure")


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


# ------------------------------------------------------------ files (reader/writer)

X25519_ME = X25519Identity(hashlib.sha256(b"test_envelope_pq x25519").digest())
PLAIN = bytes(range(256)) * 700  # 175 KiB: three chunks, the last one short


def _sealed_to_other_then_me() -> bytes:
    return seal_bytes(PLAIN, [OTHER.recipient(), IDENTITY.recipient()])


def _open(sealed: bytes) -> tuple[EnvelopeError | None, bytes]:
    out = io.BytesIO()
    try:
        decrypt_stream(io.BytesIO(sealed), out, identities=[IDENTITY])
    except EnvelopeError as exc:
        return exc, out.getvalue()
    return None, out.getvalue()


def test_keys_dispatch_to_the_hybrid_classes() -> None:
    assert isinstance(parse_recipient(str(IDENTITY.recipient())), MlkemRecipient)
    assert isinstance(parse_identity(str(IDENTITY)), MlkemIdentity)
    text = format_identity_file(IDENTITY)
    assert f"# public key: {IDENTITY.recipient()}\n" in text
    (again,) = parse_identity_file(text)
    assert str(again) == str(IDENTITY)


def test_file_round_trip_with_streaming_and_seekable_readers(tmp_path: Path) -> None:
    path = tmp_path / "answer.age"
    with EnvelopeWriter(path, [IDENTITY.recipient(), OTHER.recipient()]) as writer:
        for i in range(0, len(PLAIN), 10_000):
            writer.write(PLAIN[i : i + 10_000])
    sealed = path.read_bytes()
    assert sealed.count(b"\n-> mlkem768x25519 ") == 2
    for identity in (IDENTITY, OTHER):
        assert open_bytes(sealed, [identity]) == PLAIN
        with open_sealed(io.BytesIO(sealed), identities=[identity]) as reader:
            reader.seek(len(PLAIN) - 5)
            assert reader.read() == PLAIN[-5:]
    with pytest.raises(NoIdentityMatchError):
        open_bytes(sealed, [MlkemIdentity.generate(), X25519_ME])


def test_recipients_given_as_strings() -> None:
    sealed = seal_bytes(b"hi", [str(IDENTITY.recipient())])
    assert open_bytes(sealed, [parse_identity(str(IDENTITY))]) == b"hi"


# -- mixing hybrid and X25519 recipients (the check is the writer's; tested here)


def test_writer_refuses_to_mix_hybrid_and_x25519_by_default(tmp_path: Path) -> None:
    mixed: list[Recipient | str] = [IDENTITY.recipient(), X25519_ME.recipient()]
    with pytest.raises(ValueError, match="mix"):
        seal_bytes(b"x", mixed)
    with pytest.raises(ValueError, match="mix"):
        seal_bytes(b"x", [str(X25519_ME.recipient()), str(IDENTITY.recipient())])
    path = tmp_path / "mixed.age"
    with pytest.raises(ValueError, match="mix"):
        EnvelopeWriter(path, mixed)
    # Refused before anything touches the disk.
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="mix"):
        encrypt_stream(io.BytesIO(b"x"), io.BytesIO(), mixed)


def test_writer_mixes_when_asked_and_either_identity_opens(tmp_path: Path) -> None:
    mixed = [IDENTITY.recipient(), X25519_ME.recipient()]
    sealed = seal_bytes(PLAIN, mixed, allow_mixed=True)
    assert open_bytes(sealed, [IDENTITY]) == PLAIN
    assert open_bytes(sealed, [X25519_ME]) == PLAIN
    path = tmp_path / "mixed.age"
    with EnvelopeWriter(path, mixed, allow_mixed=True) as writer:
        writer.write(PLAIN)
    assert open_bytes(path.read_bytes(), [X25519_ME]) == PLAIN


def test_same_kind_recipients_never_count_as_mixed() -> None:
    assert open_bytes(seal_bytes(b"a", [IDENTITY.recipient(), OTHER.recipient()]), [OTHER]) == b"a"
    two_x = [X25519_ME.recipient(), X25519Identity.generate().recipient()]
    assert open_bytes(seal_bytes(b"b", two_x), [X25519_ME]) == b"b"


# -- tampering with a whole file


def _stanza_span(sealed: bytes, recipient_index: int) -> tuple[int, int, int]:
    """(start of enc text, start of body text, end of body text) of one stanza."""
    at = -1
    for _ in range(recipient_index + 1):
        at = sealed.index(b"\n-> mlkem768x25519 ", at + 1)
    enc_start = at + len(b"\n-> mlkem768x25519 ")
    body_start = sealed.index(b"\n", enc_start) + 1
    body_end = sealed.index(b"\n", body_start)
    return enc_start, body_start, body_end


def _swap_char(sealed: bytes, at: int) -> bytes:
    # Another base64 letter with the same low bits is not what we want: pick
    # one that changes the decoded bits but keeps the text canonical.
    old = sealed[at : at + 1]
    new = b"B" if old != b"B" else b"C"
    return sealed[:at] + new + sealed[at + 1 :]


ENC_CHARS = (ENC_SIZE * 4 + 2) // 3  # 1494
MLKEM_CHARS = MLKEM_CT * 4 // 3  # 1450: chars before this are ML-KEM bits only


@pytest.mark.parametrize(
    ("part", "offset"),
    [
        pytest.param("enc", 0, id="mlkem-start"),
        pytest.param("enc", MLKEM_CHARS // 2, id="mlkem-middle"),
        pytest.param("enc", MLKEM_CHARS - 1, id="mlkem-end"),
        pytest.param("enc", MLKEM_CHARS + 3, id="x25519-start"),
        pytest.param("enc", ENC_CHARS - 3, id="x25519-end"),
        pytest.param("body", 0, id="body-start"),
        pytest.param("body", 40, id="body-tag"),
    ],
)
def test_tampered_hybrid_stanza_in_a_file_is_no_match(part: str, offset: int) -> None:
    sealed = _sealed_to_other_then_me()
    enc_start, body_start, _ = _stanza_span(sealed, 1)  # our stanza, the second
    at = (enc_start if part == "enc" else body_start) + offset
    error, released = _open(_swap_char(sealed, at))
    # Our stanza no longer opens and the other one is not ours.
    assert isinstance(error, NoIdentityMatchError), repr(error)
    assert released == b""


def test_tampered_other_stanza_fails_the_header_mac() -> None:
    sealed = _sealed_to_other_then_me()
    enc_start, _, _ = _stanza_span(sealed, 0)
    error, released = _open(_swap_char(sealed, enc_start + 100))
    assert isinstance(error, HmacError), repr(error)
    assert released == b""


@pytest.mark.parametrize(
    ("part", "edit"),
    [
        pytest.param("enc", lambda t: t[:-4], id="enc-short"),
        pytest.param("enc", lambda t: t + b"AA", id="enc-long"),
        pytest.param("enc", lambda t: t[:-1] + (b"B" if t[-1:] != b"B" else b"C"), id="enc-bits"),
        pytest.param("enc", lambda t: t + b" extra", id="extra-argument"),
        pytest.param("body", lambda t: t[:-2], id="body-short"),
    ],
)
def test_malformed_hybrid_stanza_in_a_file_is_a_header_failure(part: str, edit) -> None:  # type: ignore[no-untyped-def]
    sealed = _sealed_to_other_then_me()
    enc_start, body_start, body_end = _stanza_span(sealed, 1)
    if part == "enc":
        start, end = enc_start, body_start - 1
    else:
        start, end = body_start, body_end
    tampered = sealed[:start] + edit(sealed[start:end]) + sealed[end:]
    error, released = _open(tampered)
    assert isinstance(error, HeaderError), repr(error)
    assert released == b""


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_header_byte_tamper_fails_cleanly(data: st.DataObject) -> None:
    sealed = SMALL_SEALED
    at = data.draw(st.integers(0, SMALL_HEADER_SIZE - 1), label="offset")
    flip = data.draw(st.integers(1, 255), label="xor")
    tampered = bytearray(sealed)
    tampered[at] ^= flip
    error, released = _open(bytes(tampered))
    # Never a crash, never success, never plaintext: one of the header-level
    # failures (or, when the edit lands on a line break, a payload failure
    # because the header now ends elsewhere).
    assert isinstance(error, EnvelopeError), repr(error)
    assert released == b""


SMALL_SEALED = seal_bytes(b"testimony", [OTHER.recipient(), IDENTITY.recipient()])
SMALL_HEADER_SIZE = SMALL_SEALED.index(b"\n---") + len(b"\n--- ") + 43 + 1


# ------------------------------------------------------------------------ CLI


def test_cli_keygen_pq_then_encrypt_and_decrypt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "key.txt"
    assert cli.main(["keygen", "--pq", "-o", str(key)]) == 0
    announced = capsys.readouterr().err.strip()
    assert announced.startswith("Public key: age1pq1")
    text = key.read_text()
    assert key.stat().st_mode & 0o077 == 0  # a secret key file is private
    (identity,) = parse_identity_file(text)
    assert isinstance(identity, MlkemIdentity)
    recipient = announced.removeprefix("Public key: ")
    assert f"# public key: {recipient}\n" in text

    plain, sealed, back = tmp_path / "in.bin", tmp_path / "out.age", tmp_path / "back.bin"
    plain.write_bytes(PLAIN)
    assert cli.main(["encrypt", "-r", recipient, "-o", str(sealed), str(plain)]) == 0
    assert b"\n-> mlkem768x25519 " in sealed.read_bytes()
    assert cli.main(["decrypt", "-i", str(key), "-o", str(back), str(sealed)]) == 0
    assert back.read_bytes() == PLAIN

    # A recipients file may name hybrid keys too.
    rfile = tmp_path / "recipients.txt"
    rfile.write_text(f"# vetting team\n{recipient}\n{OTHER.recipient()}\n")
    sealed2 = tmp_path / "out2.age"
    assert cli.main(["encrypt", "-R", str(rfile), "-o", str(sealed2), str(plain)]) == 0
    assert open_bytes(sealed2.read_bytes(), [OTHER]) == PLAIN


def test_cli_refuses_mixed_recipients_and_wrong_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain, sealed = tmp_path / "in.bin", tmp_path / "out.age"
    plain.write_bytes(b"testimony")
    mixed = ["-r", str(IDENTITY.recipient()), "-r", str(X25519_ME.recipient())]
    assert cli.main(["encrypt", *mixed, "-o", str(sealed), str(plain)]) == 1
    assert "mix" in capsys.readouterr().err
    assert not sealed.exists()

    assert cli.main(["encrypt", "-r", str(OTHER.recipient()), "-o", str(sealed), str(plain)]) == 0
    key = tmp_path / "key.txt"
    key.write_text(format_identity_file(IDENTITY))
    back = tmp_path / "back.bin"
    assert cli.main(["decrypt", "-i", str(key), "-o", str(back), str(sealed)]) == 1
    err = capsys.readouterr().err
    assert "no identity matched" in err and str(IDENTITY) not in err
    assert not back.exists()
