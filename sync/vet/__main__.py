"""``python -m sync.vet``: the vetting tool, as the ``vet`` command."""
import sys

from .cli import main

sys.exit(main())
