#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages strand builds and tests with, if any is missing.
# As root: apt-get installs them. Otherwise: prints the exact command and exits 1.
# clang builds the sanitizer pass of scripts/test.sh (so every run builds with GCC and clang);
# its AddressSanitizer runtime is a package of its own on Debian 12 (libclang-rt-14-dev).
set -euo pipefail

need=(cmake make g++ clang libfmt-dev nlohmann-json3-dev libcli11-dev libgtest-dev libopenblas-dev libdnnl-dev
      python3 python3-venv)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# clang's ASan runtime: where the clang package does not bring it, the libclang-rt-N-dev of its version.
asan_missing() {
  command -v clang >/dev/null || return 0
  [ ! -e "$(clang -print-file-name=libclang_rt.asan-x86_64.a 2>/dev/null)" ] &&
    [ ! -e "$(clang -print-file-name=libclang_rt.asan-aarch64.a 2>/dev/null)" ]
}
rt_package() {
  local v
  v=$(clang --version 2>/dev/null | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -n1)
  echo "libclang-rt-${v:-14}-dev"
}
if [ ${#missing[@]} -eq 0 ] && ! asan_missing; then exit 0; fi

if [ "$(id -u)" -eq 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
  apt_get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    echo "strand: installing ${missing[*]}" >&2
    apt_get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
  if asan_missing; then
    echo "strand: installing $(rt_package) (clang's AddressSanitizer runtime)" >&2
    apt_get install -y -qq --no-install-recommends "$(rt_package)" >&2
  fi
else
  asan_missing && command -v clang >/dev/null && missing+=("$(rt_package)")
  echo "strand: missing packages; install them with:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  [ ${#missing[@]} -gt 0 ] && ! command -v clang >/dev/null &&
    echo "  (then run this again: clang's AddressSanitizer runtime may need one more package)" >&2
  exit 1
fi
