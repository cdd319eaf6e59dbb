#!/usr/bin/env bash
# Set up a fresh Debian machine for the kiosk, the central service and the tests:
# system packages (when root; otherwise print the exact apt-get line and stop),
# then .venv with the pinned Python packages. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Audio without a sound card (PulseAudio null sinks reached by PortAudio through
# ALSA's pulse plugin), a virtual display, speech for tests, the reference age tool,
# Chromium for the browser test of `vet serve` (Playwright drives it; no download), and
# a compiler with the Python headers for pyworld (the voice disguise), which PyPI ships
# as source only.
PACKAGES=(
  python3-venv xvfb xauth libgl1 libgl1-mesa-dri fonts-dejavu-core
  libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins
  espeak-ng sox age chromium
  build-essential python3-dev
  # tests/test_deploy.py: shellcheck, a bookworm tree for the install scripts, the units'
  # `systemd-analyze verify` and the Caddyfile's `caddy validate`.
  shellcheck debootstrap systemd caddy
  # The metadata store on PostgreSQL (issue 14): tests/harness/postgres.py runs a
  # private cluster from these binaries (/usr/lib/postgresql/15/bin).
  postgresql-15
  # Several `central serve` instances behind a load balancer (issue 14):
  # tests/harness/haproxy.py runs Debian's HAProxy with deploy/central/haproxy.cfg.
  haproxy
)
# typage (the peer implementation of post-quantum age) runs on Node.js.
command -v node >/dev/null && command -v npm >/dev/null || PACKAGES+=(nodejs npm)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "Missing system packages. Run this as root, then run this command again:" >&2
    echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "Installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed"'
  "$PYTHON" -m venv .venv
fi
# constraints.txt pins every package so that each machine and CI install the same set.
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
# The UI translations: assets/locale/*/LC_MESSAGES/kiosk.po are the source, .mo are built.
.venv/bin/pybabel -q compile -d assets/locale -D kiosk
echo "Set up: .venv ready ($(.venv/bin/python --version))"
