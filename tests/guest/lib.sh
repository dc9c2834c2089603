# lib.sh — shared by the guest build scripts (sourced).
# pick_mirror: the first Debian archive (not security) in apt's sources, or fail with a reason.
pick_mirror() {
  local m
  m=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | grep debian | head -1 || true)
  [ -n "$m" ] || m=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}' | grep -v security | grep debian | head -1 || true)
  [ -n "$m" ] || { echo "no Debian archive in apt's sources; set MIRROR" >&2; return 1; }
  echo "$m"
}
