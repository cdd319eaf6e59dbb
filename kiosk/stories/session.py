"""What a new defender session takes from the installed catalog: recipients and prompts.

The signed catalog carries the recipients kiosks must seal to and the prompt ids
defenders are asked (DESIGN.md, "Signed catalog"). :func:`session_setup` decides,
for the *next* session, from the shown catalog and the config:

* **recipients**: the catalog's when a catalog is shown, else the config's; the
  config's mix rule applies to both (post-quantum and classic X25519 keys together
  only with ``allow_classic_recipients``). A catalog whose recipients break it is
  refused at sync already (kiosk/stories/pull.py); should one be installed anyway
  (the config changed since), the config's recipients are used and the reason logged.
  ``recipients_version`` says where they came from: the catalog's version, or 0 for
  the config. It goes into the store at submit and into the submission index.
* **prompts**: the catalog's prompt ids, in its order, when each is a prompt the kiosk
  can show (assets/prompts.toml) and there are 3 to 5 of them; else the kiosk's own.

The app applies the result only between sessions (on the attract screen): a session
keeps the recipients and questions it started with.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sync.catalog import Catalog
from sync.envelope import KeyFormatError, parse_recipient

from .. import logs

log = logging.getLogger("kiosk.stories")

#: How many questions a session asks (kiosk/session/machine.py).
MIN_PROMPTS, MAX_PROMPTS = 3, 5


@dataclass(frozen=True)
class SessionSetup:
    recipients: tuple[str, ...]
    #: The catalog version the recipients came from; 0: the config.
    recipients_version: int
    prompt_ids: tuple[str, ...]


def mixes_kinds(recipients: Sequence[str]) -> bool:
    """Whether ``recipients`` holds post-quantum and classic keys together."""
    try:
        return len({parse_recipient(text).post_quantum for text in recipients}) > 1
    except KeyFormatError:
        return True  # never reached for a verified catalog; refuse rather than guess


def session_setup(*, recipients: Sequence[str], allow_classic: bool,
                  catalog: Catalog | None, default_prompts: Sequence[str]) -> SessionSetup:
    """The next session's recipients, their source, and its prompts (module doc)."""
    chosen, version = tuple(recipients), 0
    if catalog is not None:
        if mixes_kinds(catalog.recipients) and not allow_classic:
            logs.event(log, "catalog_recipients_ignored", version=catalog.version,
                       reason="mixed_recipients")
        else:
            chosen, version = tuple(catalog.recipients), catalog.version
    prompts = tuple(default_prompts)
    if catalog is not None:
        known = set(default_prompts)
        wanted = tuple(catalog.prompts)
        if MIN_PROMPTS <= len(wanted) <= MAX_PROMPTS and set(wanted) <= known:
            prompts = wanted
        else:
            logs.event(log, "catalog_prompts_ignored", version=catalog.version,
                       count=len(wanted), unknown=len(set(wanted) - known))
    return SessionSetup(chosen, version, prompts)
