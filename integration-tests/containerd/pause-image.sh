#!/usr/bin/env bash
# pause-image.sh OUT_TAR IMAGE_NAME: build pause/pause.c (static, musl) and write an OCI image
# layout tarball (oci-image-lib.sh) holding just /pause as its entrypoint: the sandbox image of the
# CRI tests, imported locally so containerd's CRI never pulls one. Reproducible.
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../scripts/lib.sh"
. "$here/oci-image-lib.sh"
[ $# -eq 2 ] || die "usage: pause-image.sh OUT_TAR IMAGE_NAME"
out_tar="$1" name="$2"
command -v musl-gcc >/dev/null || die "musl-gcc is missing (Debian package musl-tools)"

work="$(mktemp -d "${TMPDIR:-/tmp}/stencil-pause-oci.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root"
# -ffile-prefix-map keeps the build directory out of the binary (reproducible).
musl-gcc -std=c11 -O2 -Wall -Wextra -Werror -static -s -ffile-prefix-map="$here/"= \
  -o "$root/pause" "$here/pause/pause.c" || die "compiling pause/pause.c failed"
oci_image_tar "$root" "$out_tar" "$name" '{"Entrypoint":["/pause"],"WorkingDir":"/"}' \
  "stencil pause-image.sh: musl-gcc -static pause.c"
