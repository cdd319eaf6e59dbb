#!/usr/bin/env bash
# Command 2: set up this machine, then run the whole test suite (lint included).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh
.venv/bin/ruff check kiosk sync tests deploy
exec .venv/bin/python -m pytest "$@"
