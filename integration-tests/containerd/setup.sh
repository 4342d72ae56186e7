#!/usr/bin/env bash
# setup.sh: what the real-containerd tests need, unpacked into the cache (never installed):
#   containerd 1.6 (Debian bookworm, this machine's apt sources), containerd 2.1 (Debian sid, through
#   a private apt sources list, lists and cache), runc (bookworm; serves both), a busybox OCI
#   image tarball built from Debian's busybox-static (integration-tests/containerd/busybox-image.sh)
#   and the CRI tests' pause (sandbox) image built from pause/pause.c (pause-image.sh). The CRI
#   tests also need the host's CNI plugins (/usr/lib/cni), iptables (legacy) and iproute2.
# Prints the path of a JSON file describing them (binaries, versions, images' names and tarballs):
#   $STENCIL_CACHE/containerd-harness-<key>.json
# Cached by input_key of this script and the image scripts (+ busybox-static's and musl's
# versions); a second run only checks and prints. The first run needs the Debian mirrors (about 60 MB of downloads).
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../scripts/lib.sh"

IMAGE_NAME="stencil.local/busybox:latest"
PAUSE_IMAGE_NAME="stencil.local/pause:3.9"
SID_SOURCE="deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main"

mkdir -p "$STENCIL_CACHE"
ensure_debs busybox-static libseccomp2 debian-archive-keyring musl-tools containernetworking-plugins iptables iproute2
bb_version="$(dpkg-query -W -f='${Version}' busybox-static)"
musl_version="$(dpkg-query -W -f='${Version}' musl-tools)"
deb_key="$(input_key "$here/setup.sh")"
image_key="$(input_key "$here/busybox-image.sh" "$here/oci-image-lib.sh" "busybox-static=$bb_version")"
pause_key="$(input_key "$here/pause-image.sh" "$here/pause/pause.c" "$here/oci-image-lib.sh" "musl-tools=$musl_version")"
json="$STENCIL_CACHE/containerd-harness-$deb_key-$image_key-$pause_key.json"
[ -f "$json" ] && { echo "$json"; exit 0; }

# One setup at a time per cache (tests and make may start it concurrently).
exec 9>"$STENCIL_CACHE/containerd-setup.lock"
flock 9
[ -f "$json" ] && { echo "$json"; exit 0; }

work="$(mktemp -d "${TMPDIR:-/tmp}/stencil-containerd-setup.XXXXXX")"
trap 'rm -rf "$work"' EXIT
apt_quiet=(-q -o APT::Sandbox::User=root) # downloads land in root-owned temp dirs

# unpack DEB NAME: dpkg -x DEB into $STENCIL_CACHE/NAME-<deb_key>/ (atomically); prints the dir.
unpack() {
  local out="$STENCIL_CACHE/$2-$deb_key"
  if [ ! -f "$out/.complete" ]; then
    rm -rf "$out.tmp" && mkdir -p "$out.tmp"
    dpkg -x "$1" "$out.tmp" || die "cannot unpack $1"
    dpkg-deb -f "$1" Version >"$out.tmp/version"
    touch "$out.tmp/.complete"
    rm -rf "$out" && mv "$out.tmp" "$out"
    log "unpacked $(basename "$1") into $out"
  fi
  echo "$out"
}

need_download() { [ ! -f "$STENCIL_CACHE/$1-$deb_key/.complete" ]; }

# --- bookworm: containerd 1.6 and runc, from the machine's own apt sources ---
if need_download containerd-1.6 || need_download runc; then
  if ! apt-cache show containerd runc >/dev/null 2>&1; then
    log "apt lists have no containerd/runc: apt-get update"
    apt-get update -q >&2 || die "apt-get update failed"
  fi
  mkdir -p "$work/bookworm"
  (cd "$work/bookworm" && apt-get "${apt_quiet[@]}" download containerd runc >&2) ||
    die "apt-get download containerd runc (the machine's sources) failed"
fi
[ -d "$work/bookworm" ] && ctd16_deb="$(ls "$work"/bookworm/containerd_*.deb)" && runc_deb="$(ls "$work"/bookworm/runc_*.deb)"
ctd16="$(unpack "${ctd16_deb:-}" containerd-1.6)"
runc="$(unpack "${runc_deb:-}" runc)"

# --- sid: containerd 2.1, with a private sources list, lists and cache (the system's are untouched) ---
if need_download containerd-2.1; then
  sid="$work/apt-sid"
  mkdir -p "$sid/lists/partial" "$sid/cache/archives/partial" "$sid/parts" "$sid/dl"
  echo "$SID_SOURCE" >"$sid/sources.list"
  sid_opts=("${apt_quiet[@]}" -o "Dir::Etc::SourceList=$sid/sources.list" -o "Dir::Etc::SourceParts=$sid/parts"
    -o "Dir::State::Lists=$sid/lists" -o "Dir::Cache=$sid/cache" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
  apt-get "${sid_opts[@]}" update >&2 || die "apt-get update of the private sid sources failed ($SID_SOURCE)"
  (cd "$sid/dl" && apt-get "${sid_opts[@]}" download containerd >&2) || die "apt-get download containerd (sid) failed"
  ctd21_deb="$(ls "$sid"/dl/containerd_*.deb)"
  case "$(dpkg-deb -f "$ctd21_deb" Version)" in
    2.1.*) ;;
    2.*) log "warning: sid now has containerd $(dpkg-deb -f "$ctd21_deb" Version), not 2.1; using it as '2.1'" ;;
    *) die "sid has containerd $(dpkg-deb -f "$ctd21_deb" Version); the tests need 2.x" ;;
  esac
fi
ctd21="$(unpack "${ctd21_deb:-}" containerd-2.1)"

# The binaries must run here (and in the emulated host, which sees this machine's /).
for b in "$ctd16/usr/bin/containerd" "$ctd16/usr/bin/ctr" "$ctd21/usr/bin/containerd" "$ctd21/usr/bin/ctr" \
  "$ctd16/usr/bin/containerd-shim-runc-v2" "$ctd21/usr/bin/containerd-shim-runc-v2"; do
  [ -x "$b" ] || die "missing after unpacking: $b"
done
"$runc/usr/sbin/runc" --version >/dev/null || die "$runc/usr/sbin/runc does not run"
"$ctd16/usr/bin/containerd" --version >/dev/null || die "$ctd16/usr/bin/containerd does not run"
"$ctd21/usr/bin/containerd" --version >/dev/null || die "$ctd21/usr/bin/containerd does not run"

# --- the busybox image ---
image_dir="$STENCIL_CACHE/busybox-oci-$image_key"
if [ ! -f "$image_dir/busybox.oci.tar" ]; then
  "$here/busybox-image.sh" "$image_dir/busybox.oci.tar" "$IMAGE_NAME" || die "building the busybox image failed"
fi

# --- the pause (sandbox) image of the CRI tests ---
pause_dir="$STENCIL_CACHE/pause-oci-$pause_key"
if [ ! -f "$pause_dir/pause.oci.tar" ]; then
  "$here/pause-image.sh" "$pause_dir/pause.oci.tar" "$PAUSE_IMAGE_NAME" || die "building the pause image failed"
fi

entry() { # VERSION-LABEL DIR
  printf '"%s":{"version":"%s","dir":"%s","bin":"%s/usr/bin","containerd":"%s/usr/bin/containerd","ctr":"%s/usr/bin/ctr"}' \
    "$1" "$(cat "$2/version")" "$2" "$2" "$2" "$2"
}
printf '{"containerd":{%s,%s},"runc":{"version":"%s","bin":"%s/usr/sbin","runc":"%s/usr/sbin/runc"},"image":{"name":"%s","tar":"%s","busybox":"%s"},"pause":{"name":"%s","tar":"%s"}}\n' \
  "$(entry 1.6 "$ctd16")" "$(entry 2.1 "$ctd21")" "$(cat "$runc/version")" "$runc" "$runc" \
  "$IMAGE_NAME" "$image_dir/busybox.oci.tar" "$bb_version" "$PAUSE_IMAGE_NAME" "$pause_dir/pause.oci.tar" >"$json.tmp"
mv "$json.tmp" "$json"
log "containerd $(cat "$ctd16/version") and $(cat "$ctd21/version"), runc $(cat "$runc/version"), images $IMAGE_NAME and $PAUSE_IMAGE_NAME: $json"
echo "$json"
