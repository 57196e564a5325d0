#!/usr/bin/env bash
# The fresh-machine check: a clean Debian 12 root made with debootstrap, a clean clone of this
# checkout inside it (with ../shared beside it, as CI has it), and the commands of the README's
# first code block run in it with chroot, exactly as the README writes them. A package that
# strand needs and scripts/deps.sh does not install fails here, whatever this machine has.
#
#   sudo scripts/fresh-machine.sh
#
# Needs root (debootstrap, mount, chroot) and Debian's package registry, reached through the
# mirror apt uses on this machine (STRAND_DEBIAN_MIRROR overrides it). debootstrap is installed
# when missing. The clone is of the checkout's HEAD: commit what you want checked.
#
# Caches, in STRAND_FRESH_CACHE (default /var/cache/strand): the bootstrapped base root as a
# tarball, and the .deb files apt downloads inside it, so that a second run on the same machine
# skips the downloads. CI runs on a fresh machine each time and pays for both.
# Environment passed into the root: CI, every STRAND_* variable (e.g.
# STRAND_REQUIRE_COREMLTOOLS=1), and how this machine reaches the registries (apt's mirror and
# Acquire settings, pip's config, index and PIP_CERT bundle); nothing else of the machine.
# STRAND_FRESH_KEEP=1 keeps the root afterwards.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
cache=${STRAND_FRESH_CACHE:-/var/cache/strand}
suite=bookworm
t_start=$SECONDS

say() { echo "== fresh-machine: $* ($((SECONDS - t_start)) s) ==" >&2; }
die() { echo "strand: fresh-machine: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, mount and chroot); run it with sudo"
command -v git >/dev/null || die "needs git (to make a clean clone of $src)"

# The mount points live in a private mount namespace when unshare is there: if this script is
# killed outright, the kernel drops them with the namespace. The trap below unmounts them on
# every ordinary exit as well.
if [ -z "${STRAND_FRESH_NS:-}" ] && command -v unshare >/dev/null && unshare --mount --propagation private true 2>/dev/null; then
  STRAND_FRESH_NS=1 exec unshare --mount --propagation private "$0" "$@"
fi

if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends debootstrap >&2
fi

# The Debian mirror apt uses here (deb822 .sources first, then sources.list), security excluded.
mirror=${STRAND_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
             grep -v '^[[:space:]]*#' | grep -v security | grep -Eo 'https?://[^ ]+/debian/?' | head -n1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}
security=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
             grep -v '^[[:space:]]*#' | grep -Eo 'https?://[^ ]+/debian-security/?' | head -n1 || true)
security=${security:-http://deb.debian.org/debian-security}

# ---- the base root: debootstrap once, then from the cached tarball ------------------------
mkdir -p "$cache/apt-archives/partial"
base_tar="$cache/debian12-minbase.tar"
if [ ! -s "$base_tar" ]; then
  say "bootstrapping Debian 12 ($suite, minbase) from $mirror"
  tmp_base=$(mktemp -d /var/tmp/strand-debootstrap.XXXXXX)
  if ! debootstrap --variant=minbase --cache-dir="$cache/apt-archives" "$suite" "$tmp_base" "$mirror" \
       >"$cache/debootstrap.log" 2>&1; then
    tail -n 20 "$cache/debootstrap.log" >&2
    rm -rf --one-file-system "$tmp_base"
    die "debootstrap failed (the log: $cache/debootstrap.log)"
  fi
  rm -rf "$tmp_base/var/lib/apt/lists/"* "$tmp_base/var/cache/apt/archives/"*.deb
  tar -C "$tmp_base" -cf "$base_tar.tmp" . && mv "$base_tar.tmp" "$base_tar"
  rm -rf --one-file-system "$tmp_base"
  say "base root cached in $base_tar"
fi

root=$(mktemp -d /var/tmp/strand-fresh.XXXXXX)
mounted=()
cleanup() {
  local rc=$? m i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    m=${mounted[$i]}
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || echo "strand: fresh-machine: cannot unmount $m" >&2
  done
  if grep -q " $root/" /proc/self/mounts; then
    echo "strand: fresh-machine: something is still mounted under $root; left in place" >&2
  elif [ "${STRAND_FRESH_KEEP:-0}" = 1 ]; then
    echo "strand: fresh-machine: the root is kept in $root" >&2
  else
    rm -rf --one-file-system "$root"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "unpacking the base root into $root"
tar -C "$root" -xf "$base_tar"
# A real root is searchable by everyone; mktemp (and the tarred '.') made this one 0700, so a
# process that drops to nobody inside the chroot could not reach any path.
chmod 755 "$root"

# apt as on a fresh Debian 12 install, on the mirror this machine reaches, with this machine's
# Acquire settings (e.g. a clock check it needs for that mirror).
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
for f in /etc/apt/apt.conf.d/*; do
  [ -f "$f" ] && grep -q '^[[:space:]]*Acquire::' "$f" && grep '^[[:space:]]*Acquire::' "$f" >>"$root/etc/apt/apt.conf.d/90strand-host-acquire"
done
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
cp -L /etc/hosts "$root/etc/hosts" 2>/dev/null || true
# pip as this machine reaches PyPI: its config file, and the certificate bundle PIP_CERT names
# (a network that inspects TLS has its own authority, which pip's bundled list lacks). The
# bundle goes to a path of its own: installing ca-certificates in the root rewrites the usual
# one. The authorities added by hand here go where ca-certificates picks them up, too.
[ -f /etc/pip.conf ] && cp -L /etc/pip.conf "$root/etc/pip.conf"
root_pip_cert=
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
  mkdir -p "$root/etc/ssl"
  cp -L "$PIP_CERT" "$root/etc/ssl/host-ca-bundle.crt"
  root_pip_cert=/etc/ssl/host-ca-bundle.crt
fi
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp -L /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi

# A clean clone, and shared/ beside it.
say "cloning $src ($(git -C "$src" rev-parse --short HEAD)) into the root"
if [ -n "$(git -C "$src" status --porcelain --untracked-files=no)" ]; then
  echo "strand: fresh-machine: note: $src has uncommitted changes; the root gets HEAD without them" >&2
fi
mkdir -p "$root/root/src"
git clone -q --no-hardlinks "$src" "$root/root/src/strand"
git -C "$root/root/src/strand" checkout -q --detach "$(git -C "$src" rev-parse HEAD)"
if [ -d "$src/../shared" ]; then
  cp -a "$src/../shared" "$root/root/src/shared"
fi

mnt() {  # mnt TARGET MOUNT-ARGS...: mounts, and remembers it for the cleanup
  local target=$1
  shift
  mkdir -p "$target"
  mount "$@" "$target"
  mounted+=("$target")
}
mnt "$root/proc" -t proc proc
mnt "$root/sys" --bind /sys
mnt "$root/dev" --bind /dev
mnt "$root/dev/pts" --bind /dev/pts
mnt "$root/dev/shm" -t tmpfs -o mode=1777 tmpfs
mnt "$root/tmp" -t tmpfs -o mode=1777 tmpfs
mnt "$root/var/cache/apt/archives" --bind "$cache/apt-archives"

# The commands of the README's first ```sh block, comments dropped.
mapfile -t cmds < <(awk '/^```sh/ {f = 1; next} f && /^```/ {exit} f' "$src/README.md" |
                      sed -e 's/[[:space:]]#.*$//' -e 's/^#.*$//' -e 's/[[:space:]]*$//' | grep -v '^$')
[ ${#cmds[@]} -gt 0 ] || die "found no commands in the first sh block of $src/README.md"

envs=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb)
[ -n "${CI:-}" ] && envs+=("CI=$CI")
[ -n "$root_pip_cert" ] && envs+=("PIP_CERT=$root_pip_cert")
for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT; do
  [ -n "${!v:-}" ] && envs+=("$v=${!v}")
done
while IFS='=' read -r name _; do
  [[ $name == STRAND_* && $name != STRAND_FRESH_* ]] && envs+=("$name=${!name}")
done < <(env)

for c in "${cmds[@]}"; do
  say "running the README's \`$c\` in the fresh root"
  t0=$SECONDS
  chroot "$root" /usr/bin/env -i "${envs[@]}" /bin/bash -c "cd /root/src/strand && $c" </dev/null
  say "\`$c\` passed in $((SECONDS - t0)) s"
done
say "the README's commands pass on a fresh Debian 12 root"
