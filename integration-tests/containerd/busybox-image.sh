#!/usr/bin/env bash
# busybox-image.sh OUT_TAR IMAGE_NAME: write an OCI image layout tarball (oci-layout, index.json,
# blobs/sha256/{manifest,config,layer}) holding one gzip layer with Debian's busybox-static
# (/bin/busybox, a symlink per applet, minimal /etc), for `ctr images import`; no registry.
# The tarball is reproducible: fixed mtimes, owner root, sorted entries, gzip -n.
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../scripts/lib.sh"
[ $# -eq 2 ] || die "usage: busybox-image.sh OUT_TAR IMAGE_NAME"
out_tar="$1" name="$2"
[ -x /bin/busybox ] || die "/bin/busybox is missing (Debian package busybox-static)"

work="$(mktemp -d "${TMPDIR:-/tmp}/stencil-busybox-oci.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs" layout="$work/layout" blobs="$work/layout/blobs/sha256"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,dev,proc,sys,tmp,run,root,var} "$blobs"
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

# deterministic_tar DIR OUT: a tar of DIR's contents (no "./" prefix), reproducible.
deterministic_tar() {
  (
    cd "$1"
    find . -mindepth 1 -exec touch -h -d @0 {} +
    find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
      tar --no-recursion --format=gnu --owner=0 --group=0 --numeric-owner -cf - -T -
  ) >"$2"
}
# blob FILE MEDIATYPE: move FILE into blobs/sha256 and print its descriptor JSON.
blob() {
  local digest size
  digest="$(sha256sum <"$1" | cut -d' ' -f1)"
  size="$(stat -c %s "$1")"
  mv "$1" "$blobs/$digest"
  printf '{"mediaType":"%s","digest":"sha256:%s","size":%s}' "$2" "$digest" "$size"
}

deterministic_tar "$root" "$work/layer.tar"
diff_id="$(sha256sum <"$work/layer.tar" | cut -d' ' -f1)"
gzip -9n <"$work/layer.tar" >"$work/layer.tar.gz"
layer="$(blob "$work/layer.tar.gz" application/vnd.oci.image.layer.v1.tar+gzip)"

# The whole help text first, then its first line: `busybox | head -1` kills busybox with SIGPIPE
# when head quits before busybox's later writes, and pipefail turns that into a failure.
bb_help="$(/bin/busybox 2>&1 || true)"
bb_version="${bb_help%%$'\n'*}"
bb_version="${bb_version%% multi-call*}"
printf '%s' '{"created":"1970-01-01T00:00:00Z","architecture":"amd64","os":"linux",'\
'"config":{"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"WorkingDir":"/"},'\
'"rootfs":{"type":"layers","diff_ids":["sha256:'"$diff_id"'"]},'\
'"history":[{"created":"1970-01-01T00:00:00Z","created_by":"stencil busybox-image.sh: '"$bb_version"'"}]}' \
  >"$work/config.json"
config="$(blob "$work/config.json" application/vnd.oci.image.config.v1+json)"

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' \
  "$config" "$layer" >"$work/manifest.json"
manifest="$(blob "$work/manifest.json" application/vnd.oci.image.manifest.v1+json)"

# The index names the image twice: containerd's own annotation (used by `ctr images import` as
# the full name) and the OCI ref name (the tag).
tag="${name##*:}"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' \
  "${manifest%\}},\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"},\"annotations\":{\"io.containerd.image.name\":\"$name\",\"org.opencontainers.image.ref.name\":\"$tag\"}}" \
  >"$layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"

mkdir -p "$(dirname "$out_tar")"
deterministic_tar "$layout" "$out_tar.tmp"
mv "$out_tar.tmp" "$out_tar"
log "built $out_tar ($name, $(du -k "$out_tar" | cut -f1) KiB)"
