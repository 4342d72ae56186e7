#include "mount.h"

#include <sys/mount.h>

#include <cerrno>
#include <utility>

#include "../error.h"

namespace stencil {

namespace {

unsigned long FlagBits(const std::vector<std::string>& names, const std::vector<std::pair<const char*, unsigned long>>& table,
                       const std::string& call) {
  unsigned long bits = 0;
  for (const std::string& name : names) {
    bool known = false;
    for (const auto& [flag, bit] : table) {
      if (name == flag) {
        bits |= bit;
        known = true;
      }
    }
    if (!known) throw VmmError(ErrorCode::kInvalidArgument, call + ": unknown flag '" + name + "'");
  }
  return bits;
}

std::string Describe(const MountRequest& r) {
  std::string flags;
  for (const std::string& f : r.flags) flags += (flags.empty() ? "" : ",") + f;
  std::string s = "mount";
  if (!r.fstype.empty()) s += " -t " + r.fstype;
  if (!flags.empty()) s += " [" + flags + "]";
  if (!r.data.empty()) s += " -o " + r.data;
  if (!r.source.empty()) s += " " + r.source;
  return s + " " + r.target;
}

}  // namespace

void Mount(const MountRequest& r) {
  static const std::vector<std::pair<const char*, unsigned long>> kFlags = {
      {"bind", MS_BIND},         {"rec", MS_REC},           {"remount", MS_REMOUNT},
      {"ro", MS_RDONLY},         {"nosuid", MS_NOSUID},     {"nodev", MS_NODEV},
      {"noexec", MS_NOEXEC},     {"sync", MS_SYNCHRONOUS},  {"dirsync", MS_DIRSYNC},
      {"mand", MS_MANDLOCK},     {"noatime", MS_NOATIME},   {"nodiratime", MS_NODIRATIME},
      {"relatime", MS_RELATIME}, {"strictatime", MS_STRICTATIME},
      {"private", MS_PRIVATE},   {"shared", MS_SHARED},     {"slave", MS_SLAVE},
      {"unbindable", MS_UNBINDABLE},
  };
  const std::string what = Describe(r);
  unsigned long flags = FlagBits(r.flags, kFlags, what);
  if (r.target.empty()) throw VmmError(ErrorCode::kInvalidArgument, what + ": no target");
  if (mount(r.source.empty() ? nullptr : r.source.c_str(), r.target.c_str(), r.fstype.empty() ? nullptr : r.fstype.c_str(), flags,
            r.data.empty() ? nullptr : r.data.c_str()) != 0)
    throw VmmError(ErrorCode::kHostCall, WithErrno(what));
}

void Unmount(const std::string& target, const std::vector<std::string>& names) {
  static const std::vector<std::pair<const char*, unsigned long>> kFlags = {{"detach", MNT_DETACH}, {"nofollow", UMOUNT_NOFOLLOW}};
  const std::string what = "umount " + target;
  int flags = static_cast<int>(FlagBits(names, kFlags, what));
  if (umount2(target.c_str(), flags) != 0) throw VmmError(ErrorCode::kHostCall, WithErrno(what));
}

}  // namespace stencil
