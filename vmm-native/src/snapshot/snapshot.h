// A VM snapshot on disk: a directory holding
//   state   - binary, versioned, checksummed (state_file.h): VM, vCPU and device state
//   config  - JSON describing the VM (vCPUs, memory, kernel/initrd hashes, devices, cmdline),
//             so a restore never needs the caller to repeat the configuration
//   memory  - guest RAM (the template's tmpfs file; clones map it MAP_PRIVATE)
// Both files are written atomically; the state carries the config too, and loading refuses a
// config file that does not match it.
#pragma once
#include <string>
#include <vector>

#include "../arch/x86/vcpu_state.h"
#include "../devices/device_manager.h"
#include "../vm_config.h"
#include "state_file.h"

namespace stencil {

constexpr const char* kSnapshotStateFile = "state";
constexpr const char* kSnapshotConfigFile = "config";
constexpr const char* kSnapshotMemoryFile = "memory";

// Every section's payload layout; a state of another version is refused by name.
// 2: virtio-vsock saves its next host port (clones never reuse the template's).
// 3: the configuration records the virtio-net interface.
constexpr uint32_t kSnapshotSectionVersion = 3;

struct SnapshotConfig {
  VmConfig vm;              // as the VM was created (memory: only the size matters)
  std::string cmdline;      // the full command line the guest booted with
  std::string kernel_sha256;
  std::string initrd_sha256;  // empty without an initrd
};

struct Snapshot {
  SnapshotConfig config;
  std::vector<DeviceRecord> layout;
  x86::VmState vm;
  std::vector<x86::VcpuState> vcpus;
  std::vector<std::vector<uint8_t>> devices;  // each device's saved state, in layout order
};

StateFile EncodeSnapshot(const Snapshot& snapshot);
// Throws VmmError(kSnapshot) naming what is missing, truncated or inconsistent.
Snapshot DecodeSnapshot(const StateFile& file);
std::string RenderConfigJson(const SnapshotConfig& config, const std::vector<DeviceRecord>& layout);

// A snapshot's state and config as bytes, without RAM: the two files of a snapshot directory,
// or what a migration stream carries (shim/src/qmp/migration-stream.ts wraps them).
struct SnapshotBytes {
  std::vector<uint8_t> state;
  std::string config;
};
SnapshotBytes RenderSnapshot(const Snapshot& snapshot);
// Decodes and checks state and config (a config that differs from the state's is refused,
// naming the first differing line). The origins name the inputs in errors.
Snapshot LoadSnapshot(const std::vector<uint8_t>& state, const std::string& config, const std::string& state_origin,
                      const std::string& config_origin);

// What a VM is, without its state: the configuration and device layout a live migration's
// destination checks before it takes anything (a state section pair of its own).
struct VmDescription {
  SnapshotConfig config;
  std::vector<DeviceRecord> layout;
};
std::vector<uint8_t> EncodeVmDescription(const VmDescription& description);
// Throws VmmError(kSnapshot) naming what is missing, truncated or of another version.
VmDescription DecodeVmDescription(const std::vector<uint8_t>& bytes, const std::string& origin);

// Writes dir/config then dir/state, each atomically; on failure neither is left behind.
void WriteSnapshot(const std::string& dir, const Snapshot& snapshot);
// Reads and checks dir/state and dir/config (see LoadSnapshot).
Snapshot ReadSnapshot(const std::string& dir);

}  // namespace stencil
