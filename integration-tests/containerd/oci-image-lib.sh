# Shared by busybox-image.sh and pause-image.sh: writing a one-layer OCI image layout tarball
# (oci-layout, index.json, blobs/sha256/{manifest,config,layer}) for `ctr images import`, no
# registry. Reproducible: fixed mtimes, owner root, sorted entries, gzip -n. Source it after
# scripts/lib.sh; do not run it.

# deterministic_tar DIR OUT: a tar of DIR's contents (no "./" prefix), reproducible.
deterministic_tar() {
  (
    cd "$1"
    find . -mindepth 1 -exec touch -h -d @0 {} +
    find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
      tar --no-recursion --format=gnu --owner=0 --group=0 --numeric-owner -cf - -T -
  ) >"$2"
}

# oci_blob BLOBS FILE MEDIATYPE: move FILE into the BLOBS dir (blobs/sha256) under its digest and
# print its descriptor JSON.
oci_blob() {
  local digest size
  digest="$(sha256sum <"$2" | cut -d' ' -f1)"
  size="$(stat -c %s "$2")"
  mv "$2" "$1/$digest"
  printf '{"mediaType":"%s","digest":"sha256:%s","size":%s}' "$3" "$digest" "$size"
}

# oci_image_tar ROOTFS OUT_TAR NAME CONFIG CREATED_BY: package ROOTFS as the image NAME
# (registry/repo:tag) into OUT_TAR. CONFIG is the image config's "config" object as JSON (Env,
# Cmd, Entrypoint, WorkingDir...); CREATED_BY is its one history entry.
oci_image_tar() {
  local rootfs="$1" out_tar="$2" name="$3" config_obj="$4" created_by="$5"
  local work layout blobs diff_id layer config manifest tag
  work="$(mktemp -d "${TMPDIR:-/tmp}/stencil-oci.XXXXXX")"
  layout="$work/layout" blobs="$work/layout/blobs/sha256"
  mkdir -p "$blobs"

  deterministic_tar "$rootfs" "$work/layer.tar"
  diff_id="$(sha256sum <"$work/layer.tar" | cut -d' ' -f1)"
  gzip -9n <"$work/layer.tar" >"$work/layer.tar.gz"
  layer="$(oci_blob "$blobs" "$work/layer.tar.gz" application/vnd.oci.image.layer.v1.tar+gzip)"

  printf '%s' '{"created":"1970-01-01T00:00:00Z","architecture":"amd64","os":"linux",'\
'"config":'"$config_obj"','\
'"rootfs":{"type":"layers","diff_ids":["sha256:'"$diff_id"'"]},'\
'"history":[{"created":"1970-01-01T00:00:00Z","created_by":"'"$created_by"'"}]}' \
    >"$work/config.json"
  config="$(oci_blob "$blobs" "$work/config.json" application/vnd.oci.image.config.v1+json)"

  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' \
    "$config" "$layer" >"$work/manifest.json"
  manifest="$(oci_blob "$blobs" "$work/manifest.json" application/vnd.oci.image.manifest.v1+json)"

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
  rm -rf "$work"
  log "built $out_tar ($name, $(du -k "$out_tar" | cut -f1) KiB)"
}
