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
# The sync and vetting suite again with every central service on PostgreSQL + S3 (a
# private PostgreSQL 15 cluster and moto's S3 server; tests/conftest.py --central-store
# selects the same test files, CENTRAL_SERVICE_FILES): uploads, faults, vetting,
# catalogs, withdrawal, the fleet view, USB import, backup, and three instances behind
# HAProxy.
if [ $# -eq 0 ]; then
  # Two workers (pytest-xdist, one test file each at a time, each with its own cluster
  # and S3 server): these tests mostly wait on services, so two share the two cores.
  .venv/bin/python -m pytest --basetemp="$basetemp/s3" --central-store=postgres+s3 \
    -n 2 --dist loadfile
fi
