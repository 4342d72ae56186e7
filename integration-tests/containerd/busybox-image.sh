#!/usr/bin/env bash
# busybox-image.sh OUT_TAR IMAGE_NAME: write an OCI image layout tarball (oci-image-lib.sh)
# holding one gzip layer with Debian's busybox-static (/bin/busybox, a symlink per applet, minimal
# /etc), for `ctr images import`; no registry. Reproducible.
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../scripts/lib.sh"
. "$here/oci-image-lib.sh"
[ $# -eq 2 ] || die "usage: busybox-image.sh OUT_TAR IMAGE_NAME"
out_tar="$1" name="$2"
[ -x /bin/busybox ] || die "/bin/busybox is missing (Debian package busybox-static)"

work="$(mktemp -d "${TMPDIR:-/tmp}/stencil-busybox-oci.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,dev,proc,sys,tmp,run,root,var}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
cp /bin/busybox "$root/bin/busybox"
while IFS= read -r applet; do
  if [ "$applet" = bin/busybox ] || [ -e "$root/$applet" ] || [ -L "$root/$applet" ]; then continue; fi
  mkdir -p "$root/$(dirname "$applet")"
  ln -s /bin/busybox "$root/$applet"
done < <("$root/bin/busybox" --list-full)
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n' >"$root/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"

# The whole help text first, then its first line: `busybox | head -1` kills busybox with SIGPIPE
# when head quits before busybox's later writes, and pipefail turns that into a failure.
bb_help="$(/bin/busybox 2>&1 || true)"
bb_version="${bb_help%%$'\n'*}"
bb_version="${bb_version%% multi-call*}"
oci_image_tar "$root" "$out_tar" "$name" '{"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"WorkingDir":"/"}' \
  "stencil busybox-image.sh: $bb_version"
