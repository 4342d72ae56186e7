# Shared shell helpers for Stencil's build scripts. Source it; do not run it.
set -euo pipefail

STENCIL_CACHE="${STENCIL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stencil}"
export STENCIL_CACHE

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Install Debian packages that are missing (no-op when all are present).
ensure_debs() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  if [ ! -f "$STENCIL_CACHE/.apt-updated" ]; then
    apt-get update -q >&2
    mkdir -p "$STENCIL_CACHE" && touch "$STENCIL_CACHE/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
}

# A stable key over the given files' contents (and extra strings): cache entries are named by it.
# Contents only, never paths, so every checkout of the same sources shares the cache.
input_key() {
  { for f in "$@"; do if [ -f "$f" ]; then sha256sum <"$f"; else echo "$f"; fi; done; } | sha256sum | cut -c1-16
}
