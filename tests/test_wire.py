"""The submission index and receipt formats both ends share (sync/wire.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from sync.signing import SigningKey
from sync.wire import (
    BadIndex,
    PartEntry,
    Receipt,
    SignedDocument,
    SubmissionIndex,
    checksum_header,
    decode_metadata,
    encode_metadata,
    parse_checksum_header,
)

SID = "019abcde-f012-7345-8678-9abcdef01234"
DEV = "dev-0123456789abcdef"


def _index(**over: object) -> SubmissionIndex:
    args: dict = {"submission_id": SID, "device_id": DEV, "recipients_version": 0,
                  "parts": [PartEntry("q1.age", 10, "a" * 64),
                            PartEntry("manifest.json.age", 5, "b" * 64)]}
    args.update(over)
    return SubmissionIndex.build(**args)


def test_index_round_trips_and_is_deterministic() -> None:
    key = SigningKey.generate()
    one, two = _index().sign(key), _index().sign(key)
    assert one == two  # a retried POST sends the exact same bytes and signature
    parsed = SubmissionIndex.verify(one, key.verify_key)
    assert [p.name for p in parsed.parts] == ["manifest.json.age", "q1.age"]


def test_index_signature_by_another_key_or_context_is_refused() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    signed = _index().sign(key)
    with pytest.raises(BadIndex, match="signature"):
        SubmissionIndex.verify(signed, other.verify_key)
    # The same key's signature over the same bytes, made for a receipt, is not an index's.
    as_receipt = SignedDocument(signed.data, str(key.sign(signed.data, context="receipt")))
    with pytest.raises(BadIndex, match="signature"):
        SubmissionIndex.verify(as_receipt, key.verify_key)


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(submission_id="../../etc"),
    lambda d: d.update(submission_id="019abcde-f012-4345-8678-9abcdef01234"),  # v4
    lambda d: d.update(device_id="dev-../x"),
    lambda d: d["parts"][0].update(name="../q1.age"),
    lambda d: d["parts"][0].update(name=".hidden.age"),
    lambda d: d["parts"][0].update(size=0),
    lambda d: d["parts"][0].update(size=True),
    lambda d: d["parts"][0].update(sha256="A" * 64),
    lambda d: d.update(parts=[]),
    lambda d: d.update(extra=1),
    lambda d: d.pop("recipients_version"),
    lambda d: d.update(v=2),
    lambda d: d.update(parts=list(reversed(d["parts"]))),
    lambda d: d.pop("withdrawal_key"),
    lambda d: d.update(withdrawal_key="A" * 64),
    lambda d: d.update(withdrawal_key="a" * 63),
    lambda d: d.update(withdrawal_key=""),
    lambda d: d.update(withdrawal_key=7),
    lambda d: d.update(withdrawal_key="meadow teapot otter violin"),
])
def test_malformed_indexes_are_refused(mutate) -> None:
    document = json.loads(_index().to_bytes())
    mutate(document)
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(BadIndex):
        SubmissionIndex.parse(data)


def test_index_carries_the_withdrawal_key_or_null() -> None:
    key = SigningKey.generate()
    plain = json.loads(_index().to_bytes())
    assert plain["withdrawal_key"] is None  # present, null: one text per document
    with_key = _index(withdrawal_key="c" * 64).sign(key)
    assert json.loads(with_key.data)["withdrawal_key"] == "c" * 64
    assert SubmissionIndex.verify(with_key, key.verify_key).withdrawal_key == "c" * 64
    assert SubmissionIndex.parse(_index().to_bytes()).withdrawal_key is None
    # The key is part of what is signed: another key is another index.
    assert with_key.data != _index(withdrawal_key="d" * 64).sign(key).data
    with pytest.raises(BadIndex, match="withdrawal_key"):
        _index(withdrawal_key="not hex")


def test_non_canonical_and_duplicate_keys_are_refused() -> None:
    data = _index().to_bytes()
    with pytest.raises(BadIndex, match="canonical"):
        SubmissionIndex.parse(json.dumps(json.loads(data), indent=1).encode())
    with pytest.raises(BadIndex, match="repeated"):
        SubmissionIndex.parse(b'{"v":1,"v":1}')
    with pytest.raises(BadIndex):
        SubmissionIndex.parse(b"\xff")


def test_receipt_binds_index_and_service_key() -> None:
    device, service = SigningKey.generate(), SigningKey.generate()
    signed_index = _index().sign(device)
    index = SubmissionIndex.parse(signed_index.data)
    receipt = Receipt.for_index(index, signed_index.data, received_at=datetime.now(UTC))
    signed = receipt.sign(service)
    assert Receipt.verify(signed, service.verify_key, expect_index=signed_index) == receipt
    with pytest.raises(BadIndex, match="signature"):
        Receipt.verify(signed, device.verify_key, expect_index=signed_index)
    other = _index(recipients_version=1).sign(device)
    with pytest.raises(BadIndex, match="another index"):
        Receipt.verify(signed, service.verify_key, expect_index=other)
    # A receipt signature cannot pass as an index signature, nor the reverse.
    forged = SignedDocument(signed_index.data, signed.signature)
    with pytest.raises(BadIndex):
        SubmissionIndex.verify(forged, service.verify_key)


def test_tus_headers() -> None:
    header = encode_metadata({"submission_id": SID, "part": "q1.age"})
    assert decode_metadata(header) == {"submission_id": SID, "part": "q1.age"}
    assert decode_metadata("flag") == {"flag": ""}
    for bad in ("a b c", "a !!!", "a YQ==,a YQ=="):
        with pytest.raises(ValueError):
            decode_metadata(bad)
    assert parse_checksum_header(checksum_header("sha256", b"\x01" * 32)) == ("sha256",
                                                                              b"\x01" * 32)
    with pytest.raises(ValueError):
        parse_checksum_header("sha256")
