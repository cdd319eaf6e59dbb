"""``python -m sync.vet.web [--home DIR] [--port P]``: the same as ``vet serve``."""

import sys

from .server import main

sys.exit(main())
