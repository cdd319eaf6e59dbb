"""sync.client.backoff: full jitter under a doubling ceiling, the cap, Retry-After as a
floor, reset."""

from __future__ import annotations

import math
import random

import pytest

from sync.client.backoff import BASE_S, CAP_S, Backoff


class MaxRng(random.Random):
    """Always draws the top of the range: the delays are the ceilings."""

    def uniform(self, a: float, b: float) -> float:
        return b


class MinRng(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


def test_defaults_are_the_issues_base_and_cap() -> None:
    assert (BASE_S, CAP_S) == (2.0, 900.0)
    backoff = Backoff()
    assert (backoff.base, backoff.cap) == (2.0, 900.0)


def test_the_ceiling_doubles_from_base_up_to_the_cap() -> None:
    backoff = Backoff(rng=MaxRng())
    delays = [backoff.next_delay() for _ in range(12)]
    assert delays == [2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900]


def test_full_jitter_draws_from_zero_to_the_ceiling() -> None:
    rng = random.Random(1234)
    delays = []
    for _ in range(2000):
        backoff = Backoff(rng=rng)
        for _ in range(3):
            backoff.next_delay()
        delays.append(backoff.next_delay())  # the fourth failure: ceiling 16 s
    assert min(delays) >= 0 and max(delays) <= 16
    assert min(delays) < 0.5 and max(delays) > 15.5  # the whole range, not a band
    assert abs(sum(delays) / len(delays) - 8) < 0.5  # uniform: mean half the ceiling


def test_a_seeded_rng_gives_the_same_delays() -> None:
    a = Backoff(rng=random.Random(7))
    b = Backoff(rng=random.Random(7))
    assert [a.next_delay() for _ in range(6)] == [b.next_delay() for _ in range(6)]


def test_retry_after_is_a_floor_never_shortened() -> None:
    backoff = Backoff(rng=MinRng())
    assert backoff.next_delay(retry_after=30) == 30
    assert backoff.next_delay(retry_after=0.5) == 0.5
    # Beyond the cap too: the service knows its own load.
    assert backoff.next_delay(retry_after=3600) == 3600
    high = Backoff(rng=MaxRng())
    assert high.next_delay(retry_after=1) == 2  # the jitter drew more than asked: kept


@pytest.mark.parametrize("bad", [-5.0, math.nan, math.inf, 0.0])
def test_a_broken_retry_after_is_ignored(bad: float) -> None:
    assert Backoff(rng=MaxRng()).next_delay(retry_after=bad) == 2


def test_reset_starts_again_from_base() -> None:
    backoff = Backoff(rng=MaxRng())
    for _ in range(5):
        backoff.next_delay()
    assert backoff.attempt == 5
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_delay() == 2


def test_weeks_without_network_do_not_overflow() -> None:
    backoff = Backoff(rng=MaxRng())
    backoff.attempt = 100_000
    assert backoff.next_delay() == 900


@pytest.mark.parametrize("base, cap", [(0, 10), (-1, 10), (10, 5)])
def test_nonsense_parameters_are_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        Backoff(base, cap)


def test_a_custom_base_and_cap() -> None:
    backoff = Backoff(0.5, 3.0, rng=MaxRng())
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
