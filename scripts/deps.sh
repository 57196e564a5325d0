#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages strand builds with, if any is missing.
# As root: apt-get installs them. Otherwise: prints the exact command and exits 1.
set -euo pipefail

need=(cmake make g++ libfmt-dev nlohmann-json3-dev libcli11-dev libgtest-dev libopenblas-dev libdnnl-dev python3 python3-venv)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  echo "strand: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
  echo "strand: missing packages; install them with:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
