#!/usr/bin/env bash
# Build the Stencil guest agent: a static C11 binary linked with musl (Debian's musl-tools).
# Usage: build.sh          prints the path of the binary
# Output: $STENCIL_CACHE/agent-<key>/stencil-agent, keyed by the sources, this script and the
# musl version, so a second run is instant.
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../scripts/lib.sh"

ensure_debs musl-tools
musl_version="$(dpkg-query -W -f='${Version}' musl-tools)"
mapfile -t sources < <(cd "$here" && find src -type f \( -name '*.c' -o -name '*.h' \) | LC_ALL=C sort)
key="$(input_key "$here/build.sh" "${sources[@]/#/$here/}" "musl-tools=$musl_version")"
out="$STENCIL_CACHE/agent-$key"
if [ -x "$out/stencil-agent" ]; then echo "$out/stencil-agent"; exit 0; fi

mkdir -p "$out.tmp"
trap 'rm -rf "$out.tmp"' EXIT
# -ffile-prefix-map keeps the build directory out of the binary (reproducible).
musl-gcc -std=c11 -O2 -Wall -Wextra -Werror -static -s \
  -ffile-prefix-map="$here/"= \
  -o "$out.tmp/stencil-agent" "$here"/src/*.c 2>&1 | sed 's/^/  /' >&2
[ "${PIPESTATUS[0]}" -eq 0 ] || die "compiling the agent failed"
rm -rf "$out" && mv "$out.tmp" "$out"
log "built $out/stencil-agent ($(du -k "$out/stencil-agent" | cut -f1) KiB)"
echo "$out/stencil-agent"
