#!/usr/bin/env bash
# Build the guest kernel from Debian's linux-source-6.1 with tinyconfig + stencil.config.
# Output: $STENCIL_CACHE/kernel-<key>/{vmlinux,bzImage,config}; prints that directory.
# The key hashes the fragment, this script and the source package version, so edits rebuild
# and a second run is instant.
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../scripts/lib.sh"

ensure_debs linux-source-6.1 bc flex bison libelf-dev libssl-dev make gcc xz-utils
src_version="$(dpkg-query -W -f='${Version}' linux-source-6.1)"
key="$(input_key "$here/stencil.config" "$here/build.sh" "linux-source-6.1=$src_version")"
out="$STENCIL_CACHE/kernel-$key"
if [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ]; then echo "$out"; exit 0; fi

# One build at a time per cache: a second caller waits, then finds the result.
mkdir -p "$STENCIL_CACHE"
exec 9>"$STENCIL_CACHE/kernel-build.lock"
flock 9
if [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ]; then echo "$out"; exit 0; fi
rm -rf "$STENCIL_CACHE"/build/kernel-*  # leftovers of interrupted builds

work="$STENCIL_CACHE/build/kernel-$key"
rm -rf "$work" && mkdir -p "$work"
log "extracting linux-source-6.1 ($src_version) into $work"
tar -C "$work" -xf /usr/src/linux-source-6.1.tar.xz
tree="$(echo "$work"/linux-source-6.1)"
log "configuring: tinyconfig + stencil.config"
make -C "$tree" -s tinyconfig >"$work/config.log" 2>&1 || { cat "$work/config.log" >&2; die "make tinyconfig failed"; }
"$tree/scripts/kconfig/merge_config.sh" -m -O "$tree" "$tree/.config" "$here/stencil.config" >/dev/null 2>&1
make -C "$tree" -s olddefconfig >&2

# Every option the fragment asks for must have survived olddefconfig (a missing dependency
# silently drops it otherwise).
bad=0
while IFS= read -r line; do
  case "$line" in CONFIG_*=*) ;; *) continue ;; esac
  opt="${line%%=*}"; want="${line#*=}"
  if [ "$want" = n ]; then
    grep -qx "$opt=y" "$tree/.config" && { log "option $opt wanted off but is on"; bad=1; }
  else
    grep -qx "$line" "$tree/.config" || { log "option $line did not take effect (got: $(grep "^$opt=\|# $opt " "$tree/.config" || echo unset))"; bad=1; }
  fi
done < "$here/stencil.config"
[ "$bad" = 0 ] || die "kernel config fragment does not apply cleanly"

log "building vmlinux and bzImage with $(nproc) jobs (takes a few minutes the first time)"
make -C "$tree" -s -j"$(nproc)" vmlinux bzImage >&2
mkdir -p "$out.tmp"
cp "$tree/vmlinux" "$tree/arch/x86/boot/bzImage" "$out.tmp/"
cp "$tree/.config" "$out.tmp/config"
rm -rf "$out" && mv "$out.tmp" "$out"
rm -rf "$work"
echo "$out"
