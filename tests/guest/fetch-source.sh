#!/bin/bash
# fetch-source.sh — Debian's linux-source-7.2 into the guest cache, without touching the
# machine's apt configuration: a private sources list and a private state directory.
# Usage: fetch-source.sh   (env: VTDLUD_GUEST_CACHE, default /var/cache/vtdlud-guest; MIRROR)
set -euo pipefail
CACHE=${VTDLUD_GUEST_CACHE:-/var/cache/vtdlud-guest}
PKG=${LINUX_SOURCE_PKG:-linux-source-7.2}
mkdir -p "$CACHE/apt/lists/partial" "$CACHE/apt/archives/partial" "$CACHE/src"
log() { echo "[guest-fetch] $*" >&2; }
if ls "$CACHE"/src/linux-source-*.tar.xz >/dev/null 2>&1; then
  log "source tarball present: $(ls "$CACHE"/src/linux-source-*.tar.xz)"; exit 0
fi
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
MIRROR=${MIRROR:-$(pick_mirror)}
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR sid main" > "$CACHE/apt/sources.list"
APT=(apt-get -o "Dir::Etc::SourceList=$CACHE/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
     -o "Dir::State::Lists=$CACHE/apt/lists" -o "Dir::Cache::Archives=$CACHE/apt/archives"
     -o "Dir::State::status=/var/lib/dpkg/status" -o APT::Get::List-Cleanup=0)
log "apt update (private list: $CACHE/apt/sources.list -> $MIRROR sid)"
"${APT[@]}" update >&2
cd "$CACHE/apt/archives"
log "apt download $PKG"
"${APT[@]}" download "$PKG" >&2
deb=$(ls "$CACHE"/apt/archives/${PKG}_*.deb | head -1)
rm -rf "$CACHE/src/x"; dpkg-deb -x "$deb" "$CACHE/src/x"
mv "$CACHE"/src/x/usr/src/linux-source-*.tar.xz "$CACHE/src/"
rm -rf "$CACHE/src/x"
dpkg-deb -f "$deb" Version > "$CACHE/src/VERSION"
log "got $(ls "$CACHE"/src/linux-source-*.tar.xz) ($(cat "$CACHE/src/VERSION"))"
