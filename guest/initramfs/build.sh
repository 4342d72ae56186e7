#!/usr/bin/env bash
# Build the Stencil guest initramfs: Debian's busybox-static plus guest/initramfs/init as /init,
# the guest agent (/sbin/stencil-agent, guest/agent/) and Debian's crun with its shared libraries.
# Usage: build.sh [INIT]   (INIT: another /init script, e.g. the emulated host's; default ./init)
# Output: $STENCIL_CACHE/initramfs-<key>/initramfs.cpio.gz; prints that file's path.
# The key hashes /init, this script, the busybox-static and crun versions, the agent binary and
# crun's libraries, so edits rebuild and a second run is instant. The archive is reproducible
# (fixed mtimes, owner root, sorted, gzip -n).
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../scripts/lib.sh"
init="${1:-$here/init}"
[ -f "$init" ] || die "no such init script: $init"

ensure_debs busybox-static cpio gzip crun
bb_version="$(dpkg-query -W -f='${Version}' busybox-static)"
crun_version="$(dpkg-query -W -f='${Version}' crun)"
agent="$("$here/../agent/build.sh")"
# crun is dynamically linked: it goes in with what ldd says it loads (libraries and the loader).
mapfile -t crun_libs < <(ldd /usr/bin/crun | awk '/=> \//{print $3} /^[[:space:]]*\//{print $1}' | LC_ALL=C sort -u)
[ ${#crun_libs[@]} -gt 0 ] || die "ldd found no libraries for /usr/bin/crun"
key="$(input_key "$init" "$here/build.sh" "busybox-static=$bb_version" "crun=$crun_version" "$agent" "${crun_libs[@]}")"
out="$STENCIL_CACHE/initramfs-$key"
if [ -f "$out/initramfs.cpio.gz" ]; then echo "$out/initramfs.cpio.gz"; exit 0; fi

work="$(mktemp -d "${TMPDIR:-/tmp}/stencil-initramfs.XXXXXX")"
trap 'rm -rf "$work" "$out.tmp"' EXIT
root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,dev,proc,sys,tmp,run,root,mnt}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"

cp /bin/busybox "$root/bin/busybox"
# One symlink per applet at the path busybox itself reports (bin/ls, sbin/poweroff, ...).
while IFS= read -r applet; do
  if [ "$applet" = bin/busybox ] || [ -L "$root/$applet" ]; then continue; fi
  mkdir -p "$root/$(dirname "$applet")"
  ln -s /bin/busybox "$root/$applet"
done < <("$root/bin/busybox" --list-full)

install -m 0755 "$init" "$root/init"
install -m 0755 "$agent" "$root/sbin/stencil-agent"
install -D -m 0755 /usr/bin/crun "$root/usr/bin/crun"
for lib in "${crun_libs[@]}"; do install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\ntty:x:5:\n' >"$root/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
# The kernel opens /dev/console before starting /init. Its built-in initramfs already holds
# that node; adding it here too (when we may create device nodes) keeps the archive standalone.
mknod -m 0600 "$root/dev/console" c 5 1 2>/dev/null || log "not root: relying on the kernel's /dev/console"

mkdir -p "$out.tmp"
(
  cd "$root"
  find . -exec touch -h -d @0 {} +
  find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
    cpio --quiet -o -H newc -R 0:0 --reproducible
) | gzip -9n >"$out.tmp/initramfs.cpio.gz"
rm -rf "$out" && mv "$out.tmp" "$out"
log "built $out/initramfs.cpio.gz ($(du -k "$out/initramfs.cpio.gz" | cut -f1) KiB)"
echo "$out/initramfs.cpio.gz"
