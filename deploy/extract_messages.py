#!/usr/bin/env python3
"""Bring the kiosk's translation catalogues up to date with the code, the kv files and
the prompts, then say how many strings each language still lacks.

    .venv/bin/python deploy/extract_messages.py            # extract, update, report
    .venv/bin/python deploy/extract_messages.py --check    # change nothing; exit 1
                                                           # if anything is missing

1. ``pybabel extract`` (as configured in assets/babel.cfg) over kiosk/**.py and
   kiosk/**.kv, with the keywords _, N_, gettext, ngettext and pgettext;
2. the prompts' questions and hints from assets/prompts.toml are added;
3. the template assets/locale/kiosk.pot is written (only when its messages changed,
   so that a run that changes nothing leaves no diff);
4. ``pybabel update`` (or ``init`` for a new language) merges it into each
   assets/locale/<lang>/LC_MESSAGES/kiosk.po;
5. the untranslated and fuzzy entries of each language are counted.

English is the source language: its msgstrs stay empty. A fuzzy entry is a guess by
``pybabel update`` after an English sentence changed; it is not used until a
translator checks it and removes the ``fuzzy`` flag. ``deploy/setup.sh`` compiles the
.po files into the .mo files the kiosk reads.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the kv extractor is kiosk.i18n:extract_kv

from babel.messages.catalog import Catalog  # noqa: E402
from babel.messages.frontend import CommandLineInterface  # noqa: E402
from babel.messages.pofile import read_po, write_po  # noqa: E402

from kiosk import __version__  # noqa: E402
from kiosk.i18n import DOMAIN, LANGUAGES, LOCALE_DIR, SOURCE_LANGUAGE  # noqa: E402
from kiosk.prompts import PROMPTS_PATH, load_prompts  # noqa: E402

BABEL_CFG = REPO / "assets" / "babel.cfg"
POT = LOCALE_DIR / f"{DOMAIN}.pot"
KEYWORDS = ("_", "N_", "gettext", "ngettext:1,2", "pgettext:1c,2")
PROJECT = "I Defend Rights kiosk"


def _pybabel(*args: str) -> None:
    code = CommandLineInterface().run(["pybabel", "-q", *args])
    if code:
        raise SystemExit(f"pybabel {args[0]} failed ({code})")


def _relative(path: Path) -> str:
    return path.resolve().relative_to(REPO).as_posix()


def extract() -> Catalog:
    """The template: every msgid in the code, the kv files and the prompts."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "code.pot"
        keyword_args = [arg for kw in KEYWORDS for arg in ("-k", kw)]
        _pybabel("extract", "-F", str(BABEL_CFG), "--no-default-keywords", *keyword_args,
                 "--add-comments", "TRANSLATORS:", "--project", PROJECT,
                 "--version", __version__, "--copyright-holder", "I Defend Rights",
                 "-w", "79", "-o", str(out), ".")
        with out.open("rb") as f:
            template = read_po(f)
    add_prompts(template)
    return template


def add_prompts(template: Catalog, path: Path = PROMPTS_PATH) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()

    def line_of(value: str) -> int:
        for number, line in enumerate(lines, start=1):
            if value in line:
                return number
        return 0

    location = _relative(path)
    for prompt in load_prompts(path):
        for kind, text in (("question", prompt.text), ("hint", prompt.hint)):
            if not text:
                continue
            comment = f"Prompt {prompt.id!r}: the {kind} a defender answers by voice."
            if kind == "hint":
                comment = f"Prompt {prompt.id!r}: the hint shown under the question."
            existing = template.get(text)
            if existing is not None:
                existing.locations.append((location, line_of(text)))
                existing.auto_comments.append(comment)
            else:
                template.add(text, locations=[(location, line_of(text))],
                             auto_comments=[comment])


def _signature(catalog: Catalog) -> list[tuple[object, ...]]:
    """What a template says, without its dates."""
    return [(m.id, m.context, sorted({loc for loc, _n in m.locations}),
             tuple(m.auto_comments), m.flags & {"python-format", "python-brace-format"})
            for m in catalog if m.id]


def _po_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def write_template(template: Catalog) -> bool:
    """Write the template if its messages changed; True if it was written."""
    if POT.is_file():
        with POT.open("rb") as f:
            if _signature(read_po(f)) == _signature(template):
                return False
    POT.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    write_po(buf, template, width=79, include_lineno=False)
    POT.write_bytes(buf.getvalue())
    return True


def _ids(catalog: Catalog) -> set[tuple[object, str | None]]:
    return {(m.id, m.context) for m in catalog if m.id}


def update_catalogues(template: Catalog, *, force: bool) -> None:
    for language in LANGUAGES:
        po = _po_path(language)
        common = ["-i", str(POT), "-d", str(LOCALE_DIR), "-D", DOMAIN, "-l", language,
                  "-w", "79"]
        if not po.is_file():
            _pybabel("init", *common)
            continue
        with po.open("rb") as f:
            current = read_po(f)
        if force or _ids(current) != _ids(template):
            _pybabel("update", *common, "--previous")


def report(template: Catalog) -> int:
    """Print each language's state; return how many problems there are."""
    problems = 0
    wanted = _ids(template)
    for language in LANGUAGES:
        po = _po_path(language)
        if not po.is_file():
            print(f"{language}: no catalogue ({_relative(po)})")
            problems += 1
            continue
        with po.open("rb") as f:
            catalog = read_po(f)
        have = _ids(catalog)
        missing, extra = wanted - have, have - wanted
        entries = [m for m in catalog if m.id]
        fuzzy = sum(1 for m in entries if m.fuzzy)
        if language == SOURCE_LANGUAGE:
            untranslated = 0  # English is the msgid itself
        else:
            untranslated = sum(1 for m in entries if not m.fuzzy and not _translated(m))
        line = (f"{language}: {len(entries)} strings, {untranslated} untranslated,"
                f" {fuzzy} fuzzy")
        if missing or extra:
            line += f", out of date ({len(missing)} missing, {len(extra)} no longer used)"
        print(line)
        problems += untranslated + fuzzy + len(missing) + len(extra)
        if language != SOURCE_LANGUAGE:
            for m in entries:
                if m.fuzzy or not _translated(m):
                    first = (m.id if isinstance(m.id, str) else m.id[0]).split("\n")[0]
                    state = "fuzzy" if m.fuzzy else "untranslated"
                    print(f"    {state}: {first[:70]}")
    return problems


def _translated(message: object) -> bool:
    string = message.string  # type: ignore[attr-defined]
    if isinstance(string, tuple | list):
        return all(string)
    return bool(string)


def unwrapped_kv_literals(template: Catalog) -> list[str]:
    from kiosk.i18n import UNWRAPPED_COMMENT

    return [f"{loc}: {m.id!r}" for m in template if m.id and UNWRAPPED_COMMENT in
            m.auto_comments for loc, _n in m.locations]


def main(argv: list[str] | None = None) -> int:
    os.chdir(REPO)  # babel.cfg's patterns and the locations in the .po are repo-relative
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a catalogue is out of date or"
                             " a language lacks a translation")
    args = parser.parse_args(argv)
    template = extract()
    if not args.check:
        written = write_template(template)
        update_catalogues(template, force=written)
        print(f"{_relative(POT)}: {len(_ids(template))} strings"
              f" ({'updated' if written else 'unchanged'})")
    for where in unwrapped_kv_literals(template):
        print(f"note: kv text not yet wrapped in tr._(): {where}")
    problems = report(template)
    if args.check and problems:
        print("Run .venv/bin/python deploy/extract_messages.py, then translate the"
              " entries above in assets/locale/<lang>/LC_MESSAGES/kiosk.po.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
