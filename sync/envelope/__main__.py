"""``python -m sync.envelope keygen | encrypt | decrypt`` (see :mod:`sync.envelope.cli`)."""

from .cli import main

raise SystemExit(main())
