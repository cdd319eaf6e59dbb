"""Country names and a default region for a story, without the kiosk's tables.

``sync`` never imports ``kiosk``; Babel (already a dependency) has CLDR's country names.
The region is only a default the vetter can override with ``--region``: it is taken
from the country's time zones (``Africa/Nairobi`` -> Africa), which CLDR also carries,
with the ocean zones placed by hand.
"""

from __future__ import annotations

import functools

__all__ = ["country_name", "default_region"]

_CONTINENT = {"Africa": "Africa", "America": "Americas", "Europe": "Europe", "Asia": "Asia",
              "Australia": "Oceania", "Pacific": "Oceania", "Antarctica": "Antarctica"}
#: Countries whose zones are named for an ocean (Atlantic/, Indian/) or have none.
_BY_HAND = {"RU": "Europe", "IS": "Europe", "FO": "Europe", "XK": "Europe", "BM": "Americas",
            "FK": "Americas", "GS": "Americas", "CV": "Africa", "SH": "Africa",
            "MU": "Africa", "SC": "Africa", "KM": "Africa", "MG": "Africa", "RE": "Africa",
            "YT": "Africa", "TF": "Africa", "MV": "Asia", "IO": "Asia", "CX": "Asia",
            "CC": "Asia", "BV": "Antarctica", "HM": "Antarctica"}


@functools.cache
def _names() -> dict[str, str]:
    try:
        from babel import Locale
    except ImportError:
        return {}
    return {code: name for code, name in Locale("en").territories.items()
            if len(code) == 2 and code.isalpha() and code.isupper()}


def country_name(code: str | None) -> str:
    """The English name of an ISO 3166 code; the code itself if unknown."""
    if not code:
        return ""
    return _names().get(code.upper(), code.upper())


def default_region(code: str | None) -> str | None:
    """A continent-level region for ``code`` (``KE`` -> ``Africa``); None if unknown."""
    if not code:
        return None
    code = code.upper()
    if code in _BY_HAND:
        return _BY_HAND[code]
    try:
        from babel.core import get_global
        zones = get_global("territory_zones").get(code) or []
    except (ImportError, KeyError):
        zones = []
    votes: dict[str, int] = {}
    for zone in zones:
        region = _CONTINENT.get(zone.split("/", 1)[0])
        if region:
            votes[region] = votes.get(region, 0) + 1
    if not votes:
        return None
    return max(sorted(votes), key=lambda r: votes[r])
