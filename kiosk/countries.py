"""Country and territory names for the "where are you from" choice, from Babel's CLDR data.

The codes are ISO 3166-1 alpha-2, as CLDR knows them, less the codes that name no
country: CLDR's numeric regions ("001" World, "150" Europe ...), its pseudo and
grouping codes ("ZZ", "XA", "XB", "EU", "EZ", "UN", "QO") and ISO's exceptionally
reserved codes for parts of other countries ("IC" Canary Islands, "EA" Ceuta and
Melilla, "AC", "CP", "CQ", "DG", "TA"). Kosovo's "XK", user-assigned in ISO but the
code in general use, is kept: defenders from Kosovo must be able to say so.
"""

from __future__ import annotations

import functools
import unicodedata

from babel import Locale

#: Two-letter codes in CLDR's territory list that are not a country or territory.
EXCLUDED: frozenset[str] = frozenset({
    "ZZ", "XA", "XB", "EU", "EZ", "UN", "QO",
    "AC", "CP", "CQ", "DG", "EA", "IC", "TA",
})


def _sort_key(name: str) -> str:
    """Case- and accent-insensitive for Latin script ("Åland" with the As); other
    scripts compare as they are."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@functools.cache
def _countries(language: str) -> tuple[tuple[str, str], ...]:
    territories = Locale.parse(language).territories
    pairs = [(code, name) for code, name in territories.items()
             if len(code) == 2 and code.isascii() and code.isalpha() and code.isupper()
             and code not in EXCLUDED]
    return tuple(sorted(pairs, key=lambda pair: (_sort_key(pair[1]), pair[1], pair[0])))


def countries(language: str) -> list[tuple[str, str]]:
    """Every country and territory as ``(code, name in language)``, sorted by name."""
    return list(_countries(language))


def country_name(code: str, language: str) -> str:
    """The name of ``code`` in ``language``; ``KeyError`` for an unknown or excluded code."""
    code = code.upper()
    if code not in codes():
        raise KeyError(code)
    return Locale.parse(language).territories[code]


def codes() -> frozenset[str]:
    """The codes :func:`countries` offers (the same in every language)."""
    return frozenset(code for code, _name in _countries("en"))
