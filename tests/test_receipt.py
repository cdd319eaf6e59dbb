"""Receipt codes: the word list, the codes, their normal form and their scrypt hash."""

from __future__ import annotations

import base64
import itertools
import random
import re
from pathlib import Path

import pytest

from kiosk import slowhash
from kiosk.session.receipt import hash_code, load_words, new_code, normalise, verify_code

WORDLIST = Path(__file__).resolve().parent.parent / "assets" / "wordlist.txt"
CODE = "meadow-teapot-otter-violin"
# Hashing costs ~0.1 s each (scrypt n=2**15): tests share one stored hash where they can.
# A fixed salt: the malformed strings below are test ids, which must be the same in
# every run (and in every pytest-xdist worker, which each collect the tests).
STORED = hash_code(CODE, salt=bytes(range(16)))


@pytest.fixture(scope="module")
def words() -> list[str]:
    return load_words(WORDLIST)


def _one_apart(a: str, b: str) -> bool:
    """One letter changed, added or removed, or two neighbours swapped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = sorted((a, b), key=len)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


# -- the word list ----------------------------------------------------------------------
def test_word_list_meets_its_rules(words: list[str]) -> None:
    assert len(words) >= 1296  # at least 6**4: four words carry over 41 bits
    assert len(set(words)) == len(words)
    assert all(re.fullmatch(r"[a-z]{3,8}", w) for w in words)


def test_word_list_has_its_header_and_no_blocked_words(words: list[str]) -> None:
    text = WORDLIST.read_text(encoding="utf-8")
    assert text.startswith("#") and "written by hand for this project" in text.lower()
    blocked = {"gun", "dead", "kill", "jail", "bomb", "blood", "war", "prison", "knife",
               "grave", "pig", "black", "white"}
    assert blocked.isdisjoint(words)


def test_no_two_words_are_one_letter_apart(words: list[str]) -> None:
    by_length: dict[int, list[str]] = {}
    for word in words:
        by_length.setdefault(len(word), []).append(word)
    close = [(a, b) for n in by_length
             for a, b in itertools.product(by_length[n], by_length[n] + by_length.get(n + 1, []))
             if a < b or len(a) != len(b)
             if _one_apart(a, b)]
    assert close == []


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "words.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _filler(count: int) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(t) for t in itertools.islice(itertools.product(letters, repeat=4), count)]


def test_load_words_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, ["# a header", "", *_filler(1024), "   ", "# done"])
    assert load_words(path) == _filler(1024)


@pytest.mark.parametrize("bad", ["Apple", "ab", "abcdefghi", "café", "two words", "x1yz"])
def test_load_words_names_the_bad_line(tmp_path: Path, bad: str) -> None:
    path = _write(tmp_path, ["# header", *_filler(1024), bad])
    with pytest.raises(ValueError, match=r":1026:"):
        load_words(path)


def test_load_words_refuses_a_repeat(tmp_path: Path) -> None:
    path = _write(tmp_path, [*_filler(1024), "aaab"])
    with pytest.raises(ValueError, match=r":1025: 'aaab' repeats line 2"):
        load_words(path)


def test_load_words_refuses_a_short_list(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1024"):
        load_words(_write(tmp_path, _filler(1023)))


# -- codes ------------------------------------------------------------------------------
def test_new_code_is_four_different_words_from_the_list(words: list[str]) -> None:
    known = set(words)
    for _ in range(200):
        parts = new_code(words).split("-")
        assert len(parts) == 4 and len(set(parts)) == 4 and known.issuperset(parts)


def test_new_code_uses_the_given_rng(words: list[str]) -> None:
    assert new_code(words, rng=random.Random(7)) == new_code(words, rng=random.Random(7))
    codes = {new_code(words) for _ in range(50)}
    assert len(codes) == 50


@pytest.mark.parametrize("typed", ["River Lamp  sugar-north", "river-lamp-sugar-north",
                                   " RIVER.lamp,sugar\tnorth\n", "river - lamp -- sugar, north"])
def test_normalise_accepts_what_people_type(typed: str) -> None:
    assert normalise(typed) == "river-lamp-sugar-north"


@pytest.mark.parametrize("typed", ["", "river lamp sugar", "river lamp sugar north west",
                                   "river lamp sugar n0rth", "river lamp sugar nörth", "----"])
def test_normalise_refuses_anything_but_four_words(typed: str) -> None:
    with pytest.raises(ValueError):
        normalise(typed)


# -- hashes -----------------------------------------------------------------------------
def test_hash_round_trip_and_format() -> None:
    scheme, log2_n, r, p, salt, digest = STORED.split("$")
    assert (scheme, log2_n, r, p) == ("scrypt", "15", "8", "1")
    assert len(base64.b64decode(salt, validate=True)) == 16
    assert len(base64.b64decode(digest, validate=True)) == 32
    assert verify_code(CODE, STORED)
    assert verify_code("Meadow Teapot otter, VIOLIN", STORED)  # as a person may type it


def test_a_wrong_code_fails() -> None:
    assert not verify_code("meadow-teapot-otter-kite", STORED)
    assert not verify_code("violin-otter-teapot-meadow", STORED)


def test_the_stored_string_never_holds_the_code() -> None:
    lowered = STORED.lower()
    assert all(word not in lowered for word in CODE.split("-"))


def test_same_code_hashes_differently_each_time() -> None:
    assert hash_code(CODE) != STORED
    salt = bytes(range(16))
    assert hash_code(CODE, salt=salt) == hash_code("MEADOW teapot otter violin", salt=salt)


def test_hash_code_refuses_a_bad_salt_or_code() -> None:
    with pytest.raises(ValueError):
        hash_code(CODE, salt=b"short")
    with pytest.raises(ValueError):
        hash_code("three words only")


def _swap(index: int, value: str) -> str:
    fields = STORED.split("$")
    fields[index] = value
    return "$".join(fields)


@pytest.mark.parametrize("stored", [
    "", "scrypt", "not a hash at all", STORED + "$extra", STORED[:-4],
    _swap(0, "bcrypt"), _swap(1, "30"), _swap(1, "14"), _swap(2, "1"), _swap(3, "99"),
    _swap(4, "!!!not-base64!!!"), _swap(4, base64.b64encode(b"short").decode()),
    _swap(5, base64.b64encode(bytes(31)).decode()), _swap(5, "@@@@"),
    STORED.replace("$", "#"),
])
def test_malformed_stored_strings_give_false(stored: str) -> None:
    assert verify_code(CODE, stored) is False


@pytest.mark.parametrize("code", ["", "three words only", None, 42])
def test_codes_that_do_not_normalise_give_false(code: object) -> None:
    assert verify_code(code, STORED) is False  # type: ignore[arg-type]


def test_non_string_stored_gives_false() -> None:
    assert verify_code(CODE, None) is False  # type: ignore[arg-type]
    assert verify_code(CODE, b"scrypt$15$8$1$x$y") is False  # type: ignore[arg-type]


def test_parameters_are_the_documented_ones() -> None:
    assert (slowhash.LOG2_N, slowhash.R, slowhash.P) == (15, 8, 1)
    assert (slowhash.SALT_BYTES, slowhash.HASH_BYTES) == (16, 32)
