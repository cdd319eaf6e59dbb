#!/usr/bin/env bash
# Command 2: set up this machine, then run the whole test suite (lint included).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh
.venv/bin/ruff check kiosk sync tests deploy
# A private base for pytest's temporary directories, removed afterwards: the run
# leaves no temporary directory behind, and parallel runs never share one.
basetemp=$(mktemp -d -t kiosk-tests.XXXXXX)
trap 'rm -rf "$basetemp"' EXIT
.venv/bin/python -m pytest --basetemp="$basetemp/t" "$@"
