"""The prompt questions a defender answers, from ``assets/prompts.toml``.

A prompt's ``text`` and ``hint`` are English msgids: show them through a translator
(``tr._(prompt.text)``), at display time. Its ``id`` goes into the sealed manifest.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

PROMPTS_PATH: Path = Path(__file__).resolve().parent.parent / "assets" / "prompts.toml"
_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class PromptsError(ValueError):
    """The prompts file is missing a field, or has a bad or repeated id."""


@dataclass(frozen=True)
class Prompt:
    id: str
    #: The question, in English (a msgid).
    text: str
    #: A line shown under the question, in English (a msgid); may be "".
    hint: str = ""


def load_prompts(path: Path | None = None) -> list[Prompt]:
    """The prompts in ``path`` (default: the kiosk's own), in the order they are asked."""
    path = PROMPTS_PATH if path is None else path
    with path.open("rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise PromptsError(f"{path}: not valid TOML: {exc}") from None
    entries = data.get("prompt")
    if not isinstance(entries, list) or not entries:
        raise PromptsError(f"{path}: no [[prompt]] entries")
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: prompt {number}"
        if not isinstance(entry, dict):
            raise PromptsError(f"{where}: not a table")
        unknown = set(entry) - {"id", "text", "hint"}
        if unknown:
            raise PromptsError(f"{where}: unknown field(s) {sorted(unknown)}")
        pid, text, hint = entry.get("id"), entry.get("text"), entry.get("hint", "")
        if not isinstance(pid, str) or not _ID.match(pid):
            raise PromptsError(f"{where}: id must be a short lower-case word, got {pid!r}")
        if pid in seen:
            raise PromptsError(f"{where}: id {pid!r} is used twice")
        if not isinstance(text, str) or not text.strip():
            raise PromptsError(f"{where} ({pid}): text is missing")
        if not isinstance(hint, str):
            raise PromptsError(f"{where} ({pid}): hint must be text")
        seen.add(pid)
        prompts.append(Prompt(id=pid, text=text.strip(), hint=hint.strip()))
    return prompts
