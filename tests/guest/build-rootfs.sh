#!/bin/bash
# build-rootfs.sh — the guest's root filesystem: a Debian bookworm minbase with Python 3.11 and
# vtdlud's runtime dependencies (python3-pyudev, -psutil, -systemd, -structlog, -libfdt) and
# busybox, slimmed and packed as $CACHE/rootfs.cpio.gz. Idempotent: nothing is done when the
# archive exists and is newer than this script.  Env: VTDLUD_GUEST_CACHE, MIRROR.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${VTDLUD_GUEST_CACHE:-/var/cache/vtdlud-guest}
R=$CACHE/rootfs
OUT=$CACHE/rootfs.cpio.gz
PKGS=python3,python3-pyudev,python3-psutil,python3-systemd,python3-structlog,python3-libfdt,busybox
log() { echo "[guest-rootfs] $*" >&2; }
STAMP=$(sha256sum "$HERE/build-rootfs.sh" | cut -d' ' -f1)
if [ -s "$OUT" ] && [ "$(cat "$OUT.stamp" 2>/dev/null)" = "$STAMP" ]; then log "$OUT is current"; exit 0; fi
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
MIRROR=${MIRROR:-$(pick_mirror)}
t0=$(date +%s)
rm -rf "$R.tmp"
log "debootstrap --variant=minbase bookworm from $MIRROR"
debootstrap --variant=minbase --include="$PKGS" bookworm "$R.tmp" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 \
  || { tail -20 "$CACHE/debootstrap.log" >&2; log "debootstrap failed (log: $CACHE/debootstrap.log)"; exit 1; }
( cd "$R.tmp" && rm -rf usr/share/doc/* usr/share/man usr/share/info usr/share/locale/* usr/share/lintian \
    usr/share/common-licenses var/cache/apt/* var/lib/apt/lists/* var/log/* \
    usr/lib/x86_64-linux-gnu/perl-base usr/share/perl5 usr/bin/perl usr/bin/perl5.* \
    usr/lib/python3.11/pydoc_data usr/lib/python3.11/test usr/lib/python3.11/idlelib \
    usr/lib/python3.11/tkinter usr/lib/python3.11/ensurepip usr/lib/python3.11/lib2to3 )
[ -e "$R.tmp/dev/console" ] || mknod -m 600 "$R.tmp/dev/console" c 5 1
mkdir -p "$R.tmp"/{opt/vtdlud,out,proc,sys,tmp,run}
mount -t proc proc "$R.tmp/proc"
if ! chroot "$R.tmp" python3 -c "import pyudev, psutil, systemd.journal, structlog, libfdt"; then
  umount "$R.tmp/proc"; log "python imports failed in the rootfs"; exit 1
fi
umount "$R.tmp/proc"
rm -rf "$R"; mv "$R.tmp" "$R"
( cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -6 ) > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$STAMP" > "$OUT.stamp"
log "rootfs.cpio.gz $(stat -c %s "$OUT") bytes in $(( $(date +%s) - t0 )) s"
