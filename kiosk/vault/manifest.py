"""Sealing a submission's manifest: what the defender gave, only ever sealed on disk.

The manifest holds the name or "Anonymous", the country, the contact, the consent
choices and the answers' metadata. It exists in clear only in RAM, as one bytearray
that is zeroed once sealed; its file key is dropped at once, because nobody on the
kiosk ever needs to read it back. Python cannot promise that the JSON encoder left no
transient copy in freed memory (swap is off on deployed kiosks, DESIGN.md), but no live
object keeps the plaintext or the key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..audio.take import SealedFileLike, WriterFactory, envelope_writer
from .layout import MANIFEST_FILE
from .store import PartRecord


def build_manifest(submission_id: str, given: Mapping[str, Any],
                   parts: Sequence[PartRecord]) -> dict[str, Any]:
    """The manifest's document: what the session gathered plus each part's metadata."""
    return {
        **given,
        "submission_id": submission_id,
        "parts": [{"name": p.name, "prompt_id": p.prompt_id, "file": f"{p.name}.age",
                   "duration_s": p.duration_s, "size": p.size, "sha256": p.sha256,
                   "overflows": p.overflows} for p in parts],
    }


def seal_manifest(directory: Path, document: Mapping[str, Any], recipients: Iterable[Any], *,
                  allow_mixed: bool = False,
                  writer_factory: WriterFactory | None = None) -> SealedFileLike:
    """Seal ``document`` as ``directory/manifest.json.age``; replaces a failed attempt's.

    On any failure nothing is left on disk (the writer deletes its ``.part``) and the
    error is raised.
    """
    path = directory / MANIFEST_FILE
    # An earlier attempt that sealed but failed to commit: its file is superseded.
    path.unlink(missing_ok=True)
    data = bytearray(json.dumps(document, ensure_ascii=False, sort_keys=True)
                     .encode("utf-8"))
    factory = writer_factory or envelope_writer
    writer = factory(path, recipients, allow_mixed=allow_mixed)
    try:
        writer.write(data)
        return writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        data[:] = bytes(len(data))
        writer.drop_key()
