#!/usr/bin/env bash
# Install the central service on a Debian 12 server. Run as root; safe to run again:
#   sudo deploy/central/install.sh [--domain NAME] [--wheelhouse DIR] [SOURCE]
# SOURCE is the app's source tree (default: the tree this script is in). --domain NAME
# also sets up Caddy as the TLS front (a certificate for NAME, renewed by Caddy).
# --wheelhouse takes the Python packages from a folder of wheels, offline.
#
# It sets up: a `central` system user, the app in /opt/idefendrights-central (root's),
# the data folder /var/lib/idefendrights-central/data (central's, 0700) made by
# `central init`, the hardened idefendrights-central unit on 127.0.0.1:8765, and with
# --domain, Caddy. Works in a chroot: it starts nothing there.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(cd "$here/../.." && pwd)
domain=""
wheelhouse=""

usage() {
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

while (($#)); do
  case $1 in
    --domain) domain=${2:?--domain needs a name}; shift 2 ;;
    --wheelhouse) wheelhouse=${2:?--wheelhouse needs a folder}; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "install.sh: unknown option $1" >&2; usage ;;
    *) source_dir=$(cd "$1" && pwd); shift ;;
  esac
done

if [[ $(id -u) -ne 0 ]]; then
  echo "install.sh: run this as root (sudo $0 ...)" >&2
  exit 1
fi
if [[ ! -f $source_dir/pyproject.toml || ! -d $source_dir/sync ]]; then
  echo "install.sh: $source_dir is not the app's source tree (no pyproject.toml, sync/)" >&2
  exit 2
fi
if [[ -n $domain && ! $domain =~ ^[A-Za-z0-9.-]+$ ]]; then
  echo "install.sh: --domain must be a host name, got $domain" >&2
  exit 2
fi

PREFIX=/opt/idefendrights-central
STATE=/var/lib/idefendrights-central
DATA=$STATE/data
UNIT=idefendrights-central.service

in_chroot() {
  [[ ! -d /proc/1 ]] || [[ "$(stat -Lc %d:%i /)" != "$(stat -Lc %d:%i /proc/1/root/. 2>/dev/null)" ]]
}
running_systemd() { ! in_chroot && [[ -d /run/systemd/system ]]; }

echo "== system packages"
packages=(python3 python3-venv ca-certificates)
if [[ -n $domain ]]; then packages+=(caddy); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "== central user"
if ! id -u central >/dev/null 2>&1; then
  useradd --system --user-group --home-dir "$STATE" --no-create-home \
    --shell /usr/sbin/nologin --comment "I Defend Rights central service" central
fi
install -d -o central -g central -m 0700 "$STATE"

echo "== the app in $PREFIX"
install -d -m 0755 "$PREFIX"
rm -rf "$PREFIX/app.new"
install -d -m 0755 "$PREFIX/app.new"
tar -C "$source_dir" --exclude=.git --exclude=.venv --exclude='*.egg-info' \
  --exclude=__pycache__ --exclude=demo-data --exclude=screenshots --exclude=bench-results \
  --exclude=node_modules --exclude=tests -cf - . | tar -C "$PREFIX/app.new" -xf -
rm -rf "$PREFIX/app.old"
if [[ -d $PREFIX/app ]]; then mv "$PREFIX/app" "$PREFIX/app.old"; fi
mv "$PREFIX/app.new" "$PREFIX/app"
rm -rf "$PREFIX/app.old"
if [[ ! -x $PREFIX/venv/bin/python ]]; then
  python3 -m venv "$PREFIX/venv"
fi
pip_args=(--quiet --disable-pip-version-check --no-cache-dir)
if [[ -n $wheelhouse ]]; then
  pip_args+=(--no-index --find-links "$wheelhouse")
fi
"$PREFIX/venv/bin/pip" install "${pip_args[@]}" -c "$PREFIX/app/constraints.txt" \
  -e "$PREFIX/app"
chown -R root:root "$PREFIX"
chmod -R go-w "$PREFIX"

echo "== data folder $DATA"
# `central init` leaves an existing data folder as it is, and prints the service's key.
runuser -u central -- "$PREFIX/venv/bin/central" init --data "$DATA"
chmod 0700 "$DATA"

echo "== the central unit"
install -m 0644 "$here/$UNIT" "/etc/systemd/system/$UNIT"
if [[ ! -f /etc/default/idefendrights-central ]]; then
  cat >/etc/default/idefendrights-central <<'DEFAULTS'
# Extra options for `central serve` (see `central serve --help`), for example:
# CENTRAL_SERVE_OPTIONS=--max-upload-bytes 1073741824
CENTRAL_SERVE_OPTIONS=
DEFAULTS
fi
systemctl enable "$UNIT" >/dev/null 2>&1

if [[ -n $domain ]]; then
  echo "== Caddy (TLS) for $domain"
  if [[ -f /etc/caddy/Caddyfile ]] && ! cmp -s "$here/Caddyfile" /etc/caddy/Caddyfile \
    && [[ ! -f /etc/caddy/Caddyfile.before-idefendrights ]]; then
    cp -p /etc/caddy/Caddyfile /etc/caddy/Caddyfile.before-idefendrights
  fi
  install -m 0644 "$here/Caddyfile" /etc/caddy/Caddyfile
  touch /etc/default/caddy
  sed -i '/^CENTRAL_DOMAIN=/d' /etc/default/caddy
  echo "CENTRAL_DOMAIN=$domain" >>/etc/default/caddy
  # Debian's caddy.service reads no environment file: a drop-in adds this one.
  install -d -m 0755 /etc/systemd/system/caddy.service.d
  printf '[Service]\nEnvironmentFile=/etc/default/caddy\n' \
    >/etc/systemd/system/caddy.service.d/idefendrights.conf
  systemctl enable caddy.service >/dev/null 2>&1
fi

if running_systemd; then
  systemctl daemon-reload
  systemctl restart "$UNIT"
  if [[ -n $domain ]]; then systemctl restart caddy.service; fi
fi
echo "Central service installed. Data: $DATA. Service key: printed by central init above."
