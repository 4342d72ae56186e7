// mount(2) and umount2(2) for the shim's host-side mounts (containerd's rootfs mounts, container
// rootfs binds, the pod's read-only share view, template tmpfs): one system call each instead of
// a mount(8) process, which costs a fork and exec per step (~0.1-0.3 s each in a slow host).
#pragma once

#include <string>
#include <vector>

namespace stencil {

struct MountRequest {
  std::string source;
  std::string target;
  std::string fstype;
  // Flag names, as mount(8) spells them: bind, rec, remount, ro, nosuid, nodev, noexec, sync,
  // dirsync, mand, noatime, nodiratime, relatime, strictatime, private, shared, slave, unbindable.
  std::vector<std::string> flags;
  std::string data;  // filesystem options (e.g. "size=4G", overlay's lowerdir=...)
};

// Throws VmmError (kInvalidArgument for an unknown flag, kHost with errno otherwise).
void Mount(const MountRequest& request);

// flags: "detach" (MNT_DETACH, a lazy unmount), "nofollow".
void Unmount(const std::string& target, const std::vector<std::string>& flags);

}  // namespace stencil
