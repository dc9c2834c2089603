#!/bin/bash
# build.sh — everything the guest needs, built once and cached outside the checkout:
#   $CACHE/bzImage        Linux 7.2 from Debian's linux-source-7.2, the project's patches
#                         (tests/guest/patches/*.patch) and config (kernel-config.sh)
#   $CACHE/rootfs.cpio.gz Debian bookworm minbase + python3 + vtdlud's dependencies
# A stamp (sha256 of the source version, the patches and the config script) decides whether the
# kernel is rebuilt; the build tree is kept, so a changed patch rebuilds incrementally.
# Env: VTDLUD_GUEST_CACHE (default /var/cache/vtdlud-guest), MIRROR, JOBS (default nproc+1).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${VTDLUD_GUEST_CACHE:-/var/cache/vtdlud-guest}
export VTDLUD_GUEST_CACHE=$CACHE
JOBS=${JOBS:-$(( $(nproc) + 1 ))}
log() { echo "[guest-build] $*" >&2; }
need_pkgs() {
  local miss=() p
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || miss+=("$p"); done
  if [ ${#miss[@]} -gt 0 ]; then
    log "apt-get install ${miss[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${miss[@]}"; } >&2
  fi
}
need_pkgs qemu-system-x86 build-essential bc flex bison libelf-dev libssl-dev dwarves xz-utils cpio \
  debootstrap file
mkdir -p "$CACHE"
stamp_of() {
  { cat "$CACHE/src/VERSION" 2>/dev/null; cat "$HERE/kernel-config.sh"; cat "$HERE"/patches/*.patch 2>/dev/null; } \
    | sha256sum | cut -d' ' -f1
}
bash "$HERE/fetch-source.sh"
want=$(stamp_of)
if [ -s "$CACHE/bzImage" ] && [ "$(cat "$CACHE/bzImage.stamp" 2>/dev/null)" = "$want" ]; then
  log "kernel: $CACHE/bzImage is current ($(cat "$CACHE/src/VERSION"))"
else
  t0=$(date +%s)
  mkdir -p "$CACHE/build"
  K=$CACHE/build/linux-source-7.2
  if [ ! -f "$K/Makefile" ]; then
    log "kernel: unpacking $(ls "$CACHE"/src/linux-source-*.tar.xz)"
    tar -C "$CACHE/build" -xf "$CACHE"/src/linux-source-7.2.tar.xz
  fi
  # Swap the applied patches for the project's current ones (reverse the old set first).
  A=$K/.vtdlud-applied
  mkdir -p "$A"
  if ! diff -rq "$A" "$HERE/patches" --exclude=README.md >/dev/null 2>&1; then
    for p in $(ls -r "$A"/*.patch 2>/dev/null); do log "kernel: reverting $(basename "$p")"; patch -s -R -p1 -d "$K" < "$p"; rm "$p"; done
    for p in "$HERE"/patches/*.patch; do
      [ -e "$p" ] || continue
      log "kernel: applying $(basename "$p")"; patch -s -p1 -d "$K" < "$p"; cp "$p" "$A/"
    done
  fi
  ( cd "$K" && sh "$HERE/kernel-config.sh" ) > "$CACHE/kernel-config.log" 2>&1 \
    || { tail -5 "$CACHE/kernel-config.log" >&2; exit 1; }
  log "kernel: make -j$JOBS bzImage in $K (a cold build takes ~12-15 min on 2 cores)"
  ( cd "$K" && make -j"$JOBS" bzImage ) > "$CACHE/kernel-build.log" 2>&1 \
    || { tail -30 "$CACHE/kernel-build.log" >&2; log "kernel build FAILED (log: $CACHE/kernel-build.log)"; exit 1; }
  cp "$K/arch/x86/boot/bzImage" "$CACHE/bzImage"
  cp "$K/.config" "$CACHE/kernel.config"
  echo "$want" > "$CACHE/bzImage.stamp"
  log "kernel: built in $(( $(date +%s) - t0 )) s"
fi
bash "$HERE/build-rootfs.sh"
