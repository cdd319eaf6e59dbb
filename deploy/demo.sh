#!/usr/bin/env bash
# Command 1: set up this machine, make a demo data directory, start the central
# service on 127.0.0.1 and the kiosk window (under Xvfb, with a screenshot, when no
# display is set).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh
exec .venv/bin/python deploy/demo.py "$@"
