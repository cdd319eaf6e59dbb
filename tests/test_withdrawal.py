"""Withdrawal keys (sync/withdrawal.py), the kiosk's receipt codes agreeing with them,
the index field that carries them, and the service's per-address rate limiter."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from kiosk.session.receipt import hash_code, load_words, new_code, normalise, verify_code
from sync.central.ratelimit import RateLimiter, retry_after_header
from sync.withdrawal import SALT, is_withdrawal_key, normalise_code, withdrawal_key

WORDLIST = Path(__file__).resolve().parent.parent / "assets" / "wordlist.txt"
CODE = "meadow-teapot-otter-violin"


def test_key_is_the_documented_scrypt_computed_independently() -> None:
    # hashlib's scrypt (OpenSSL) against the module's (cryptography): the same 32 bytes.
    expected = hashlib.scrypt(b"meadow teapot otter violin", salt=b"idr-withdrawal-v1",
                              n=2**15, r=8, p=1, maxmem=64 * 1024 * 1024, dklen=32).hex()
    assert SALT == b"idr-withdrawal-v1"
    assert withdrawal_key(CODE) == expected
    assert is_withdrawal_key(expected) and len(expected) == 64


@pytest.mark.parametrize("typed", [
    "Meadow Teapot  otter-VIOLIN", " meadow.teapot,otter\tviolin\n",
    "meadow - teapot -- otter, violin", "MEADOW_TEAPOT_OTTER_VIOLIN"])
def test_spacing_and_case_do_not_change_the_key(typed: str) -> None:
    assert normalise_code(typed) == "meadow teapot otter violin"
    assert withdrawal_key(typed) == withdrawal_key(CODE)


@pytest.mark.parametrize("typed", ["", "meadow teapot otter", "meadow teapot otter violin kite",
                                   "meadow teapot otter vi0lin", "meadow teapot otter nörth",
                                   "----", "x" * 300, None, 42])
def test_anything_but_four_words_is_refused(typed: object) -> None:
    with pytest.raises(ValueError):
        normalise_code(typed)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        withdrawal_key(typed)  # type: ignore[arg-type]


def test_other_codes_give_other_keys() -> None:
    assert withdrawal_key("violin otter teapot meadow") != withdrawal_key(CODE)
    assert withdrawal_key("meadow teapot otter kite") != withdrawal_key(CODE)


def test_the_kiosk_and_the_service_agree_on_which_texts_are_one_code() -> None:
    words = load_words(WORDLIST)
    rng = random.Random(12)
    for _ in range(5):
        code = new_code(words, rng=rng)
        typed = "  ".join(w.upper() if i % 2 else w for i, w in enumerate(code.split("-")))
        # The kiosk's own check and the service's key see the same code...
        assert normalise(typed) == code
        assert normalise_code(typed) == code.replace("-", " ")
        assert verify_code(typed, hash_code(code))
        assert withdrawal_key(typed) == withdrawal_key(code)
    # ...and refuse the same texts.
    for bad in ("one two three", "a b c d e", "río lamp sugar north"):
        with pytest.raises(ValueError):
            normalise(bad)
        with pytest.raises(ValueError):
            normalise_code(bad)


def test_the_key_holds_no_word_of_the_code() -> None:
    key = withdrawal_key(CODE)
    assert all(word not in key for word in CODE.split("-"))


# -- the rate limiter ---------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_five_a_minute_then_a_wait_that_is_told() -> None:
    clock = Clock()
    limiter = RateLimiter([(5, 60.0), (30, 3600.0)], clock=clock)
    assert [limiter.take("1.2.3.4") for _ in range(5)] == [None] * 5
    wait = limiter.take("1.2.3.4")
    assert wait is not None and 11.9 < wait <= 12.0  # one token per 12 s
    assert retry_after_header(wait) == "12"
    assert limiter.take("5.6.7.8") is None  # another address has its own buckets
    clock.now += 12.0
    assert limiter.take("1.2.3.4") is None
    assert limiter.take("1.2.3.4") is not None


def test_thirty_an_hour_even_when_spread_out() -> None:
    clock = Clock()
    limiter = RateLimiter([(5, 60.0), (30, 3600.0)], clock=clock)
    allowed = 0
    for _ in range(40):
        if limiter.take("a") is None:
            allowed += 1
        clock.now += 13.0  # under the per-minute rate
    # 30 at once, plus what the hourly bucket refilled over 40 x 13 s (4.3 tokens).
    assert 30 <= allowed <= 35
    wait = limiter.take("a")
    assert wait is not None and wait > 60.0  # the hourly bucket is what refuses now
    assert int(retry_after_header(wait)) >= 60


def test_a_refused_attempt_takes_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter([(1, 60.0)], clock=clock)
    assert limiter.take("a") is None
    for _ in range(10):
        assert limiter.take("a") is not None
    clock.now += 60.0
    assert limiter.take("a") is None


def test_bad_windows_are_refused() -> None:
    for windows in ([], [(0, 60.0)], [(5, 0.0)]):
        with pytest.raises(ValueError):
            RateLimiter(windows)
    assert retry_after_header(0.01) == "1"
