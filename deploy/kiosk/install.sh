#!/usr/bin/env bash
# Set up a Debian 12 or Raspberry Pi OS (bookworm) machine as an exhibit kiosk. Run as
# root; safe to run again (each step checks before it changes anything):
#   sudo deploy/kiosk/install.sh [--server-url URL] [--wheelhouse DIR] [SOURCE]
# SOURCE is the app's source tree (default: the tree this script is in). --wheelhouse
# takes the Python packages from a folder of wheels, offline (`pip wheel -w DIR .`).
#
# It sets up: the system packages (packages.txt), a `kiosk` system user, the app in
# /opt/idefendrights (root's: the kiosk user cannot change its code), the config file
# /etc/idefendrights/kiosk.toml (root's, readable by the kiosk user only), the data
# folder /var/lib/idefendrights (the kiosk user's, 0700), the idefendrights-kiosk unit
# (cage on tty1, watchdog, restart), swap off, screen blanking off, journald size limits
# and time sync. Sync runs inside the app, so there is no sync unit. Works in a chroot
# (no running systemd needed): `systemctl enable` only writes symlinks.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(cd "$here/../.." && pwd)
server_url=http://127.0.0.1:8765
wheelhouse=""

usage() {
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

while (($#)); do
  case $1 in
    --server-url) server_url=${2:?--server-url needs a URL}; shift 2 ;;
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
if [[ ! -f $source_dir/pyproject.toml || ! -d $source_dir/kiosk ]]; then
  echo "install.sh: $source_dir is not the app's source tree (no pyproject.toml, kiosk/)" >&2
  exit 2
fi
if [[ -n $wheelhouse && ! -d $wheelhouse ]]; then
  echo "install.sh: wheelhouse $wheelhouse is not a folder" >&2
  exit 2
fi
case $server_url in
  http://* | https://*) ;;
  *) echo "install.sh: --server-url must start with http:// or https://" >&2; exit 2 ;;
esac

PREFIX=/opt/idefendrights
CONFIG_DIR=/etc/idefendrights
DATA_DIR=/var/lib/idefendrights
UNIT=idefendrights-kiosk.service

# In a chroot (an image being built) nothing is running: change files, start nothing.
in_chroot() {
  [[ ! -d /proc/1 ]] || [[ "$(stat -Lc %d:%i /)" != "$(stat -Lc %d:%i /proc/1/root/. 2>/dev/null)" ]]
}

step() { echo "== $*"; }

step "system packages"
mapfile -t packages < <(grep -v '^[[:space:]]*\(#\|$\)' "$here/packages.txt")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

step "kiosk user"
if ! id -u kiosk >/dev/null 2>&1; then
  useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home \
    --shell /usr/sbin/nologin --comment "I Defend Rights kiosk" kiosk
fi
# Sound, the screen, the GPU and the touchscreen (the groups this system has).
for group in audio video render input; do
  if getent group "$group" >/dev/null && ! id -nG kiosk | tr ' ' '\n' | grep -qx "$group"; then
    usermod -aG "$group" kiosk
  fi
done
install -d -o kiosk -g kiosk -m 0700 "$DATA_DIR" "$DATA_DIR/kiosk"

step "the app in $PREFIX"
# The app reads its assets (translations, prompts, word list) next to its packages, so the
# source tree is copied to $PREFIX/app and installed editable from there, root's.
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
"$PREFIX/venv/bin/pybabel" -q compile -d "$PREFIX/app/assets/locale" -D kiosk
chown -R root:root "$PREFIX"
chmod -R go-w "$PREFIX"

step "config file $CONFIG_DIR/kiosk.toml"
install -d -o root -g kiosk -m 0750 "$CONFIG_DIR"
if [[ ! -f $CONFIG_DIR/kiosk.toml ]]; then
  # First install only: later runs keep the venue's settings (PIN, keys, server).
  sed "s|@SERVER_URL@|$server_url|" "$here/kiosk.toml" >"$CONFIG_DIR/kiosk.toml"
fi
chown root:kiosk "$CONFIG_DIR/kiosk.toml"
chmod 0640 "$CONFIG_DIR/kiosk.toml"

step "swap off"
# Recordings are in memory before they are sealed: swap would write them to disk in clear.
if [[ -f /etc/fstab ]] && grep -Eq '^[^#].*[[:space:]]swap[[:space:]]' /etc/fstab; then
  sed -i -E 's/^([^#].*[[:space:]]swap[[:space:]].*)$/# swap off for the kiosk: \1/' /etc/fstab
fi
if [[ -e /lib/systemd/system/dphys-swapfile.service ]]; then  # Raspberry Pi OS
  systemctl disable dphys-swapfile.service >/dev/null 2>&1 || true
fi
# Whatever else would turn swap on (a zram or swap unit) waits for swap.target.
systemctl mask swap.target >/dev/null
if ! in_chroot; then swapoff -a || true; fi

step "screen blanking off"
# The console's own blanking (the compositor has none; SDL keeps the screen on).
for cmdline in /boot/firmware/cmdline.txt /boot/cmdline.txt; do
  if [[ -f $cmdline ]] && ! grep -q 'consoleblank=0' "$cmdline"; then
    sed -i '1 s/$/ consoleblank=0/' "$cmdline"
    break
  fi
done
if [[ -f /etc/default/grub ]] && ! grep -q 'consoleblank=0' /etc/default/grub; then
  sed -i 's/^GRUB_CMDLINE_LINUX_DEFAULT="/&consoleblank=0 /' /etc/default/grub
  if command -v update-grub >/dev/null && ! in_chroot; then update-grub; fi
fi

step "journald size limits"
install -d -m 0755 /etc/systemd/journald.conf.d
install -m 0644 "$here/journald-kiosk.conf" /etc/systemd/journald.conf.d/idefendrights.conf

step "time sync"
systemctl enable systemd-timesyncd.service >/dev/null 2>&1

step "the kiosk unit"
install -m 0644 "$here/$UNIT" "/etc/systemd/system/$UNIT"
systemctl enable "$UNIT" >/dev/null 2>&1
systemctl set-default graphical.target >/dev/null 2>&1
if ! in_chroot && [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  systemctl restart systemd-journald.service systemd-timesyncd.service
  echo "Start the kiosk now with: systemctl restart $UNIT (or reboot)"
fi
echo "Kiosk set up. Next: set the staff PIN, then enrol (see README: Setting up a kiosk)."
