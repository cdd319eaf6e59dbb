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
# The sync path again with every central service's metadata on PostgreSQL (a private
# PostgreSQL 15 cluster; tests/conftest.py --central-store): uploads, faults (kill -9,
# restarts, a full disk), vetting, catalogs, withdrawal, the fleet view and USB import.
# The whole sync and vetting suite on both stores is issue 14's next step.
if [ $# -eq 0 ]; then
  .venv/bin/python -m pytest --basetemp="$basetemp/pg" --central-store=postgres \
    tests/test_sync_e2e.py tests/test_central_loopback.py tests/test_sync_faults.py \
    tests/test_vet_cli.py tests/test_catalog_sync.py tests/test_central_withdraw.py \
    tests/test_central_fleet.py tests/test_usb_transfer.py
  # And a kiosk's submission end to end with blobs in S3 (moto's server) as well.
  .venv/bin/python -m pytest --basetemp="$basetemp/s3" --central-store=postgres+s3 \
    tests/test_sync_e2e.py
fi
