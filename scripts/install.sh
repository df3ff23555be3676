#!/usr/bin/env bash
# Install apviz as a system service on Debian / Raspberry Pi OS (arm64 and x86_64).
#
#   sudo scripts/install.sh               install or upgrade, enable the unit (start it with --now)
#   sudo scripts/install.sh --uninstall   remove unit, /opt/apviz and the apviz user; keeps /etc/apviz
#   sudo scripts/install.sh --uninstall --purge    ... and /etc/apviz too
#   scripts/install.sh --dry-run          print every step, change nothing
#
# What it does: Debian packages (Python venv and headers, libsystemd-dev for the journal reader,
# dnsmasq, npm for the pinned data); a system user `apviz` in group systemd-journal; the source tree in
# /opt/apviz/app and a virtual environment in /opt/apviz/venv with apviz installed *editable* from it
# (the kiosk's web/ and the data/ folder live beside the package, not inside the wheel); the pinned
# offline data and the kiosk's JS (npm ci, nothing fetched at run time); /etc/apviz/apviz.toml from
# `apviz config --example` unless it exists (an upgrade keeps it); systemd/apviz.service, enabled.
# The network policy that keeps phones on dnsmasq (docs/network-policy.md): dnsmasq/apviz-policy.conf
# as /etc/dnsmasq.d/apviz-policy.conf, nftables/*.nft in /etc/apviz/nftables/, and the units
# apviz-policy.service (enabled) and apviz-dns-redirect.service (optional: installed, not enabled).
# An upgrade keeps a policy file you edited or deleted (it compares with the copy it shipped last
# time), and leaves the units' enabled/disabled state as you set it; --uninstall removes them all.
# Fresh data (docs/data.md): apviz-data-update.service and its weekly apviz-data-update.timer, which
# runs `apviz data update` as the apviz user into /var/lib/apviz/data; the timer is enabled on the
# first install (an operator who disabled it keeps it disabled); --uninstall removes both and the data.
#
# DESTDIR=/some/root installs into that tree instead of / (for packaging and tests): users and
# systemctl are then skipped, since neither can act on another root.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
DESTDIR="${DESTDIR:-}"
PREFIX=/opt/apviz
ETC=/etc/apviz
UNIT_DIR=/etc/systemd/system
USER_NAME=apviz
PYTHON="${PYTHON:-/usr/bin/python3}"
APT_PKGS="python3-venv python3-dev libsystemd-dev pkg-config gcc dnsmasq nftables npm iproute2 util-linux"
DNSMASQ_D=/etc/dnsmasq.d
# The network policy's files: where each lives in the source tree, and where it is installed.
POLICY_FILES=(
  "dnsmasq/apviz-policy.conf:$DNSMASQ_D/apviz-policy.conf"
  "nftables/apviz-policy.nft:$ETC/nftables/apviz-policy.nft"
  "nftables/apviz-dns-redirect.nft:$ETC/nftables/apviz-dns-redirect.nft"
)
POLICY_UNITS="apviz-policy.service apviz-dns-redirect.service"
DATA_UNITS="apviz-data-update.service apviz-data-update.timer"
STATE_DIR=/var/lib/apviz

DRY=0 UNINSTALL=0 PURGE=0 APT=1 DATA=1 VENV=1 NOW=0
usage() {
  sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
  echo "options: --prefix DIR --dry-run --uninstall --purge --now --no-apt --no-data --no-venv"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="$2"; shift ;;
    --dry-run) DRY=1 ;;
    --uninstall) UNINSTALL=1 ;;
    --purge) PURGE=1 ;;
    --now) NOW=1 ;;
    --no-apt) APT=0 ;;
    --no-data) DATA=0 ;;
    --no-venv) VENV=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [ "$PURGE" = 1 ] && [ "$UNINSTALL" = 0 ]; then
  echo "install.sh: --purge goes with --uninstall" >&2; exit 2
fi

ROOT="$DESTDIR"
APP="$PREFIX/app"
VENV_DIR="$PREFIX/venv"
SYSTEM=1   # act on users and systemd: only for the real root filesystem
[ -n "$DESTDIR" ] && SYSTEM=0

say() { echo ">> $*"; }
run() {
  # Print each step; run it unless --dry-run.
  echo "+ $*"
  [ "$DRY" = 1 ] || "$@"
}

if [ "$DRY" = 0 ] && [ "$SYSTEM" = 1 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo), or use --dry-run / DESTDIR=..." >&2; exit 1
fi

uninstall() {
  if [ "$SYSTEM" = 1 ] && command -v systemctl >/dev/null; then
    for unit in apviz.service $POLICY_UNITS apviz-data-update.timer apviz-data-update.service; do
      # disable --now: stopping a policy unit deletes its nftables table.
      [ -e "$UNIT_DIR/$unit" ] && run systemctl disable --now "$unit"
    done
  fi
  for unit in apviz.service $POLICY_UNITS $DATA_UNITS; do
    run rm -f "$ROOT$UNIT_DIR/$unit"
  done
  # The downloaded data is apviz's own cache: it goes with apviz.
  [ -d "$ROOT$STATE_DIR" ] && run rm -rf "$ROOT$STATE_DIR"
  # The policy goes with apviz: it exists for apviz's sake, nobody would see its effect any more.
  local pair
  for pair in "${POLICY_FILES[@]}"; do
    run rm -f "$ROOT${pair#*:}"
  done
  [ -d "$ROOT$ETC/nftables" ] && run rmdir --ignore-fail-on-non-empty "$ROOT$ETC/nftables"
  if [ "$SYSTEM" = 1 ] && command -v systemctl >/dev/null; then
    run systemctl try-restart dnsmasq.service
  fi
  [ "$SYSTEM" = 1 ] && command -v systemctl >/dev/null && run systemctl daemon-reload
  run rm -rf "$ROOT$PREFIX"
  if [ "$SYSTEM" = 1 ] && getent passwd "$USER_NAME" >/dev/null; then
    run userdel "$USER_NAME"
  fi
  if [ "$PURGE" = 1 ]; then
    run rm -rf "$ROOT$ETC"
  else
    say "kept $ETC (your configuration); --uninstall --purge removes it"
  fi
  say "apviz removed"
}

install_apt() {
  say "Debian packages: $APT_PKGS"
  run apt-get update -q
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $APT_PKGS
}

install_user() {
  if getent passwd "$USER_NAME" >/dev/null; then
    say "user $USER_NAME exists"
  else
    run useradd --system --user-group --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin --comment "apviz exhibit service" "$USER_NAME"
  fi
  # Reads dnsmasq's entries in the system journal (the unit adds the group too; this is for doctor).
  run usermod -aG systemd-journal "$USER_NAME"
}

install_app() {
  say "source tree -> $ROOT$APP"
  run mkdir -p "$ROOT$APP"
  # Only what runs: the package, the front-end, the data and the scripts (node_modules are copied when
  # present, so an offline upgrade works; otherwise npm ci fills them below).
  local parts="apviz web data scripts systemd dnsmasq nftables hostapd pyproject.toml README.md apviz.toml.example"
  local skip=(--exclude=__pycache__ --exclude=data/lab/build)
  [ "$DATA" = 1 ] || skip+=(--exclude=data/node_modules --exclude=web/node_modules)
  echo "+ tar -C $SRC ${skip[*]} -c $parts | tar -C $ROOT$APP -x"
  if [ "$DRY" = 0 ]; then
    # shellcheck disable=SC2086
    tar -C "$SRC" "${skip[@]}" -c $parts | tar -C "$ROOT$APP" -x --no-same-owner
  fi
  run chmod -R u=rwX,go=rX "$ROOT$APP"
}

install_venv() {
  say "virtual environment -> $ROOT$VENV_DIR"
  # The system Python (readable by the apviz user), never a pyenv one under /root.
  [ -x "$ROOT$VENV_DIR/bin/python" ] || run "$PYTHON" -m venv "$ROOT$VENV_DIR"
  run "$ROOT$VENV_DIR/bin/pip" install -q --upgrade pip
  # Editable: web/ and data/ are found beside the package in $APP. [journal]: systemd-python.
  run "$ROOT$VENV_DIR/bin/pip" install -q -e "$ROOT$APP[journal]"
}

install_data() {
  say "pinned offline data and the kiosk's JS"
  if [ "$DRY" = 1 ]; then
    echo "+ (cd $ROOT$APP && PYTHON=$ROOT$VENV_DIR/bin/python scripts/install-data.sh)"
  else
    (cd "$ROOT$APP" && PYTHON="$ROOT$VENV_DIR/bin/python" scripts/install-data.sh $([ "$APT" = 1 ] || echo --no-apt))
  fi
  if [ ! -d "$ROOT$APP/web/node_modules" ]; then
    run npm ci --prefix "$ROOT$APP/web" --ignore-scripts --no-audit --no-fund --loglevel=error
  fi
}

install_config() {
  local conf="$ROOT$ETC/apviz.toml"
  run mkdir -p "$ROOT$ETC"
  if [ -e "$conf" ]; then
    say "kept $ETC/apviz.toml (upgrade); new keys and defaults: $APP/apviz.toml.example"
  else
    say "$ETC/apviz.toml from the example: edit [server] listen and [state] lan for your network"
    run cp "$ROOT$APP/apviz.toml.example" "$conf"
  fi
  run chmod 0640 "$conf"
  if [ "$SYSTEM" = 1 ]; then
    run chgrp "$USER_NAME" "$conf"
  fi
}

# Policy files the operator edited or deleted since the last install: decided before install_app
# replaces the copies shipped last time ($APP/...), which are what "unedited" is compared with.
declare -A POLICY_LOCAL=()
policy_plan() {
  local pair src dest old
  for pair in "${POLICY_FILES[@]}"; do
    src="${pair%%:*}" dest="$ROOT${pair#*:}" old="$ROOT$APP/${pair%%:*}"
    [ -e "$old" ] || continue   # first install of the policy: nothing local to keep
    if [ ! -e "$dest" ]; then
      POLICY_LOCAL[$src]=deleted
    elif ! cmp -s "$old" "$dest"; then
      POLICY_LOCAL[$src]=edited
    fi
  done
}

install_policy() {
  say "network policy -> $DNSMASQ_D/apviz-policy.conf, $ETC/nftables/ (docs/network-policy.md)"
  local pair src dest
  for pair in "${POLICY_FILES[@]}"; do
    src="${pair%%:*}" dest="${pair#*:}"
    case "${POLICY_LOCAL[$src]:-}" in
      deleted) say "kept $dest deleted (you removed it); the shipped one: $APP/$src" ;;
      edited) say "kept your edited $dest; the shipped one: $APP/$src" ;;
      *)
        run mkdir -p "$ROOT$(dirname "$dest")"
        run install -m 0644 "$SRC/$src" "$ROOT$dest"
        ;;
    esac
  done
  local unit first
  for unit in $POLICY_UNITS; do
    first=0
    [ -e "$ROOT$UNIT_DIR/$unit" ] || first=1
    run install -m 0644 "$SRC/systemd/$unit" "$ROOT$UNIT_DIR/$unit"
    # Enable apviz-policy on the first install only: an operator who disabled it keeps it disabled.
    # apviz-dns-redirect stays off until someone turns it on (its trade-offs: docs/network-policy.md).
    if [ "$SYSTEM" = 1 ] && command -v systemctl >/dev/null && [ "$unit" = apviz-policy.service ]; then
      run systemctl daemon-reload
      if [ "$first" = 1 ] && [ "$NOW" = 1 ]; then
        run systemctl enable --now "$unit"
      elif [ "$first" = 1 ]; then
        run systemctl enable "$unit"
      else
        run systemctl try-reload-or-restart "$unit"   # new rules for a policy that is on
      fi
    fi
  done
  if [ "$SYSTEM" = 1 ] && command -v systemctl >/dev/null; then
    # dnsmasq reads its drop-ins at start: restart it if it runs (a second without DNS).
    run systemctl try-restart dnsmasq.service
  fi
}

install_unit() {
  say "systemd unit -> $UNIT_DIR/apviz.service"
  run mkdir -p "$ROOT$UNIT_DIR"
  if [ "$DRY" = 1 ]; then
    echo "+ sed 's#/opt/apviz#$PREFIX#g' $SRC/systemd/apviz.service > $ROOT$UNIT_DIR/apviz.service"
  else
    sed "s#/opt/apviz#$PREFIX#g" "$SRC/systemd/apviz.service" > "$ROOT$UNIT_DIR/apviz.service"
    chmod 0644 "$ROOT$UNIT_DIR/apviz.service"
  fi
  if [ "$SYSTEM" = 1 ] && command -v systemctl >/dev/null; then
    run systemctl daemon-reload
    if [ "$NOW" = 1 ]; then run systemctl enable --now apviz.service; else run systemctl enable apviz.service; fi
  fi
}

install_data_timer() {
  say "data updates -> $UNIT_DIR/apviz-data-update.{service,timer} (weekly; docs/data.md)"
  local first=0 unit
  [ -e "$ROOT$UNIT_DIR/apviz-data-update.timer" ] || first=1
  for unit in $DATA_UNITS; do
    if [ "$DRY" = 1 ]; then
      echo "+ sed 's#/opt/apviz#$PREFIX#g' $SRC/systemd/$unit > $ROOT$UNIT_DIR/$unit"
    else
      sed "s#/opt/apviz#$PREFIX#g" "$SRC/systemd/$unit" > "$ROOT$UNIT_DIR/$unit"
      chmod 0644 "$ROOT$UNIT_DIR/$unit"
    fi
  done
  if [ "$SYSTEM" = 1 ] && command -v systemctl >/dev/null; then
    run systemctl daemon-reload
    # Enabled on the first install only; --now also starts the timer (the first update then runs
    # within the timer's randomised delay, or now with `systemctl start apviz-data-update`).
    if [ "$first" = 1 ] && [ "$NOW" = 1 ]; then
      run systemctl enable --now apviz-data-update.timer
    elif [ "$first" = 1 ]; then
      run systemctl enable apviz-data-update.timer
    fi
  fi
}

if [ "$UNINSTALL" = 1 ]; then
  uninstall
  exit 0
fi
[ "$APT" = 1 ] && [ "$SYSTEM" = 1 ] && install_apt
[ "$SYSTEM" = 1 ] && install_user
policy_plan
install_app
[ "$VENV" = 1 ] && install_venv
[ "$DATA" = 1 ] && install_data
install_config
install_unit
install_policy
install_data_timer
say "done. Check the set-up: sudo $VENV_DIR/bin/apviz doctor --config $ETC/apviz.toml"
[ "$NOW" = 1 ] || say "then start it: sudo systemctl start apviz"
