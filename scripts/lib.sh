# Shared shell helpers for Stencil's build scripts. Source it; do not run it.
set -euo pipefail

STENCIL_CACHE="${STENCIL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stencil}"
export STENCIL_CACHE

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Every `set -e` failure names itself: the failing command, its status, file and line. -E carries
# the trap into functions, command substitutions and subshells (a failure inside `$(...)` is
# reported where it happened, then once more where its caller's assignment failed).
set -E
trap 'log "error: exit $? from \`$BASH_COMMAND\` at ${BASH_SOURCE[0]:-$0}:$LINENO"' ERR

# Install Debian packages that are missing (no-op when all are present).
ensure_debs() {
  local missing=()
  for p in "$@"; do
    # (no `| grep -q`: under pipefail a reader that quits early fails the pipeline with SIGPIPE)
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = 'install ok installed' ] || missing+=("$p")
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
