// Saving a paused VM: template mode (state and configuration next to its RAM file, which becomes
// the snapshot's memory), copy mode (RAM copied out, the VM runs on) and state-only bytes.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "arch/x86/vcpu_state.h"
#include "error.h"
#include "snapshot/memory_copy.h"
#include "snapshot/sha256.h"
#include "snapshot/snapshot.h"
#include "vm.h"

namespace stencil {

namespace {

std::string RealPath(const std::string& path) {
  char* p = realpath(path.c_str(), nullptr);
  if (!p) return path;
  std::string out(p);
  free(p);
  return out;
}

}  // namespace

SnapshotConfig Vm::CaptureConfig() {
  if (kernel_sha256_.empty()) {
    kernel_sha256_ = Sha256FileHex(config_.kernel_path);
    if (!config_.initrd_path.empty()) initrd_sha256_ = Sha256FileHex(config_.initrd_path);
  }
  SnapshotConfig c;
  c.vm = config_;
  c.cmdline = cmdline_;
  c.kernel_sha256 = kernel_sha256_;
  c.initrd_sha256 = initrd_sha256_;
  return c;
}

Snapshot Vm::CaptureSnapshot() {
  Snapshot s;
  s.config = CaptureConfig();
  s.layout = devices_->layout();
  s.vm = x86::VmState::Save(vm_.get());
  if (msr_indexes_.empty()) msr_indexes_ = x86::SaveableMsrs(kvm_.get(), vcpus_.front()->fd.get());
  for (auto& v : vcpus_) s.vcpus.push_back(x86::VcpuState::Save(v->fd.get(), msr_indexes_));
  for (size_t i = 0; i < devices_->count(); i++) {
    ByteWriter w;
    devices_->device(i).SaveState(w);
    s.devices.push_back(w.Take());
  }
  return s;
}

void Vm::SaveSnapshot(const std::string& dir, SnapshotMemory memory) {
  std::lock_guard<std::mutex> lock(mu_);  // holds off Resume while state is read
  if (!paused_) throw VmmError(ErrorCode::kState, "VM must be paused (all vCPUs parked) to save a snapshot");
  if (!template_dir_.empty()) throw VmmError(ErrorCode::kState, "VM was already saved as the template in " + template_dir_);
  if (memory == SnapshotMemory::kCopy)
    SaveCopy(dir);
  else
    SaveTemplate(dir);
}

SnapshotBytes Vm::SaveState() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!paused_) throw VmmError(ErrorCode::kState, "VM must be paused (all vCPUs parked) to save its state");
  if (!template_dir_.empty()) throw VmmError(ErrorCode::kState, "VM was already saved as the template in " + template_dir_);
  return RenderSnapshot(CaptureSnapshot());
}

void Vm::SaveCopy(const std::string& dir) {
  // The files go to a fresh sibling directory renamed over `dir` at the end (rename replaces an
  // empty directory, and fails on a non-empty one), so `dir` never holds half a snapshot.
  struct stat st;
  if (stat(dir.c_str(), &st) == 0 && !S_ISDIR(st.st_mode))
    throw VmmError(ErrorCode::kSnapshot, "snapshot target " + dir + " exists and is not a directory");
  if (lstat(dir.c_str(), &st) == 0) {
    DIR* d = opendir(dir.c_str());
    if (!d) throw VmmError(ErrorCode::kSnapshot, WithErrno("opening snapshot directory " + dir));
    bool empty = true;
    while (dirent* e = readdir(d))
      if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) empty = false;
    closedir(d);
    if (!empty) throw VmmError(ErrorCode::kSnapshot, "snapshot directory " + dir + " is not empty");
  }
  std::string staging = dir + ".partial-XXXXXX";
  if (!mkdtemp(staging.data()))
    throw VmmError(ErrorCode::kSnapshot, WithErrno("creating " + staging + " (does the parent of " + dir + " exist?)"));
  auto remove_staging = [&] {
    for (const char* name : {kSnapshotMemoryFile, kSnapshotStateFile, kSnapshotConfigFile})
      unlink((staging + "/" + name).c_str());
    rmdir(staging.c_str());
  };
  try {
    Snapshot snapshot = CaptureSnapshot();
    CopyGuestMemory(*memory_, staging + "/" + kSnapshotMemoryFile);
    WriteSnapshot(staging, snapshot);
    if (rename(staging.c_str(), dir.c_str()) != 0)
      throw VmmError(ErrorCode::kSnapshot, WithErrno("renaming " + staging + " to " + dir));
  } catch (...) {
    remove_staging();
    throw;
  }
}

void Vm::SaveTemplate(const std::string& dir) {
  if (memory_->path().empty())
    throw VmmError(ErrorCode::kState, "guest RAM is an anonymous memfd: a snapshot needs RAM in a tmpfs file");
  if (memory_->copy_on_write())
    throw VmmError(ErrorCode::kState, "this VM is a clone (RAM mapped copy-on-write from " + memory_->path() +
                                          "): saving it would need a RAM copy, which template mode never makes");
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw VmmError(ErrorCode::kSnapshot, "snapshot directory " + dir + " does not exist or is not a directory");

  Snapshot snapshot = CaptureSnapshot();
  // RAM stays where it is: the template's memory file is the running VM's own tmpfs file,
  // given a second name in the snapshot directory when it lives elsewhere.
  std::string memory_path = dir + "/" + kSnapshotMemoryFile;
  bool linked = RealPath(memory_->path()) != RealPath(memory_path);
  if (linked && link(memory_->path().c_str(), memory_path.c_str()) != 0)
    throw VmmError(ErrorCode::kSnapshot, WithErrno("linking guest RAM " + memory_->path() + " as " + memory_path +
                                                   " (the snapshot directory must be on the RAM file's tmpfs)"));
  try {
    WriteSnapshot(dir, snapshot);
  } catch (...) {
    if (linked) unlink(memory_path.c_str());
    throw;
  }
  if (!linked) memory_->KeepFile();
  template_dir_ = dir;
}

}  // namespace stencil
