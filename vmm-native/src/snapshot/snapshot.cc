#include "snapshot.h"

#include <unistd.h>

#include "../error.h"
#include "state_file.h"

namespace stencil {

namespace {

void EncodeConfig(const SnapshotConfig& c, ByteWriter& w) {
  w.U32(c.vm.vcpus);
  w.U64(c.vm.memory.size);
  w.String(c.vm.kernel_path);
  w.String(c.vm.initrd_path);
  w.String(c.vm.cmdline);
  w.Bool(c.vm.virtio_rng);
  w.U32(static_cast<uint32_t>(c.vm.disks.size()));
  for (const auto& d : c.vm.disks) w.String(d.path), w.Bool(d.read_only), w.String(d.serial);
  w.U32(static_cast<uint32_t>(c.vm.shares.size()));
  for (const auto& s : c.vm.shares) w.String(s.tag), w.String(s.host_path), w.Bool(s.read_only);
  w.U32(c.vm.vsock.guest_cid);
  w.String(c.vm.vsock.uds_path);
  w.Bool(c.vm.net.enabled);
  w.Raw(c.vm.net.mac.data(), c.vm.net.mac.size());
  w.String(c.cmdline);
  w.String(c.kernel_sha256);
  w.String(c.initrd_sha256);
}

SnapshotConfig DecodeConfig(ByteReader& r) {
  SnapshotConfig c;
  c.vm.vcpus = r.U32();
  c.vm.memory.size = r.U64();
  c.vm.kernel_path = r.String();
  c.vm.initrd_path = r.String();
  c.vm.cmdline = r.String();
  c.vm.virtio_rng = r.Bool();
  c.vm.disks.resize(r.Count(64, "disks"));
  for (auto& d : c.vm.disks) d.path = r.String(), d.read_only = r.Bool(), d.serial = r.String();
  c.vm.shares.resize(r.Count(64, "shares"));
  for (auto& s : c.vm.shares) s.tag = r.String(), s.host_path = r.String(), s.read_only = r.Bool();
  c.vm.vsock.guest_cid = r.U32();
  c.vm.vsock.uds_path = r.String();
  c.vm.net.enabled = r.Bool();
  r.Raw(c.vm.net.mac.data(), c.vm.net.mac.size(), "virtio-net MAC");
  c.cmdline = r.String();
  c.kernel_sha256 = r.String();
  c.initrd_sha256 = r.String();
  r.ExpectEnd();
  return c;
}

std::string Json(const std::string& s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (ch < 0x20) {
          char buf[8];
          snprintf(buf, sizeof buf, "\\u%04x", ch);
          out += buf;
        } else {
          out += static_cast<char>(ch);
        }
    }
  }
  return out + "\"";
}

std::string JsonProperties(const DeviceProperties& props) {
  std::string out = "{";
  for (size_t i = 0; i < props.size(); i++) out += (i ? ", " : "") + Json(props[i].first) + ": " + Json(props[i].second);
  return out + "}";
}

}  // namespace

std::string RenderConfigJson(const SnapshotConfig& c, const std::vector<DeviceRecord>& layout) {
  // One key per line, fixed order: readable, diffable, and compared line by line on load.
  std::string j = "{\n";
  j += "  \"format\": \"stencil-vm-config\",\n";
  j += "  \"version\": 1,\n";
  j += "  \"vcpus\": " + std::to_string(c.vm.vcpus) + ",\n";
  j += "  \"memoryBytes\": " + std::to_string(c.vm.memory.size) + ",\n";
  j += "  \"kernel\": {\"path\": " + Json(c.vm.kernel_path) + ", \"sha256\": " + Json(c.kernel_sha256) + "},\n";
  j += "  \"initrd\": {\"path\": " + Json(c.vm.initrd_path) + ", \"sha256\": " + Json(c.initrd_sha256) + "},\n";
  j += "  \"cmdline\": " + Json(c.cmdline) + ",\n";
  j += "  \"devices\": [\n";
  for (size_t i = 0; i < layout.size(); i++) {
    const DeviceRecord& d = layout[i];
    j += "    {\"kind\": " + Json(d.kind) + ", \"bus\": " + Json(d.mmio ? "mmio" : "pio") +
         ", \"base\": " + std::to_string(d.base) + ", \"size\": " + std::to_string(d.size) +
         ", \"irq\": " + std::to_string(d.irq) + ", \"guest\": " + JsonProperties(d.guest) +
         ", \"host\": " + JsonProperties(d.host) + "}" + (i + 1 < layout.size() ? "," : "") + "\n";
  }
  j += "  ]\n}\n";
  return j;
}

// The "config" and "devices" sections: what a snapshot's state and a migration header share.
static void AddDescription(StateFile& file, const SnapshotConfig& c, const std::vector<DeviceRecord>& layout) {
  ByteWriter config;
  EncodeConfig(c, config);
  file.Add("config", kSnapshotSectionVersion, config.Take());
  ByteWriter devices;
  DeviceManager::EncodeLayout(layout, devices);
  file.Add("devices", kSnapshotSectionVersion, devices.Take());
}

static VmDescription ReadDescription(const StateFile& file) {
  VmDescription d;
  ByteReader config = file.Reader("config", kSnapshotSectionVersion);
  d.config = DecodeConfig(config);
  ByteReader layout = file.Reader("devices", kSnapshotSectionVersion);
  d.layout = DeviceManager::DecodeLayout(layout);
  layout.ExpectEnd();
  return d;
}

StateFile EncodeSnapshot(const Snapshot& s) {
  StateFile file;
  AddDescription(file, s.config, s.layout);
  ByteWriter vm;
  s.vm.Encode(vm);
  file.Add("vm", kSnapshotSectionVersion, vm.Take());
  for (size_t i = 0; i < s.vcpus.size(); i++) {
    ByteWriter w;
    s.vcpus[i].Encode(w);
    file.Add("vcpu." + std::to_string(i), kSnapshotSectionVersion, w.Take());
  }
  for (size_t i = 0; i < s.devices.size(); i++)
    file.Add("device." + std::to_string(i), kSnapshotSectionVersion, s.devices[i]);
  return file;
}

Snapshot DecodeSnapshot(const StateFile& file) {
  Snapshot s;
  VmDescription description = ReadDescription(file);
  s.config = std::move(description.config);
  s.layout = std::move(description.layout);
  ByteReader vm = file.Reader("vm", kSnapshotSectionVersion);
  s.vm = x86::VmState::Decode(vm);
  vm.ExpectEnd();
  if (s.config.vm.vcpus == 0 || s.config.vm.vcpus > 1024)
    throw VmmError(ErrorCode::kSnapshot, "state config has " + std::to_string(s.config.vm.vcpus) + " vCPUs");
  for (uint32_t i = 0; i < s.config.vm.vcpus; i++) {
    ByteReader r = file.Reader("vcpu." + std::to_string(i), kSnapshotSectionVersion);
    s.vcpus.push_back(x86::VcpuState::Decode(r));
    r.ExpectEnd();
  }
  for (size_t i = 0; i < s.layout.size(); i++) s.devices.push_back(file.Get("device." + std::to_string(i), kSnapshotSectionVersion).payload);
  size_t expected = 3 + s.vcpus.size() + s.devices.size();
  if (file.sections().size() != expected)
    throw VmmError(ErrorCode::kSnapshot, "state has " + std::to_string(file.sections().size()) + " sections, " +
                                             std::to_string(expected) + " expected for " + std::to_string(s.vcpus.size()) +
                                             " vCPUs and " + std::to_string(s.devices.size()) + " devices");
  return s;
}

std::vector<uint8_t> EncodeVmDescription(const VmDescription& d) {
  StateFile file;
  AddDescription(file, d.config, d.layout);
  return file.Encode();
}

VmDescription DecodeVmDescription(const std::vector<uint8_t>& bytes, const std::string& origin) {
  StateFile file = StateFile::Decode(bytes, origin);
  VmDescription d = ReadDescription(file);
  if (file.sections().size() != 2)
    throw VmmError(ErrorCode::kSnapshot, origin + " has " + std::to_string(file.sections().size()) + " sections, 2 expected");
  return d;
}

SnapshotBytes RenderSnapshot(const Snapshot& snapshot) {
  return {EncodeSnapshot(snapshot).Encode(), RenderConfigJson(snapshot.config, snapshot.layout)};
}

Snapshot LoadSnapshot(const std::vector<uint8_t>& state, const std::string& config, const std::string& state_origin,
                      const std::string& config_origin) {
  Snapshot s = DecodeSnapshot(StateFile::Decode(state, state_origin));
  std::string expected = RenderConfigJson(s.config, s.layout);
  if (config != expected) {
    size_t line = 1, a = 0, b = 0;
    for (;;) {
      size_t ea = config.find('\n', a), eb = expected.find('\n', b);
      std::string la = config.substr(a, ea == std::string::npos ? std::string::npos : ea - a);
      std::string lb = expected.substr(b, eb == std::string::npos ? std::string::npos : eb - b);
      if (la != lb || ea == std::string::npos || eb == std::string::npos)
        throw VmmError(ErrorCode::kSnapshot, "snapshot config " + config_origin + " does not match its state: line " +
                                                 std::to_string(line) + " is `" + la + "`, the state says `" + lb + "`");
      a = ea + 1, b = eb + 1, line++;
    }
  }
  return s;
}

void WriteSnapshot(const std::string& dir, const Snapshot& snapshot) {
  std::string config_path = dir + "/" + kSnapshotConfigFile;
  std::string state_path = dir + "/" + kSnapshotStateFile;
  SnapshotBytes bytes = RenderSnapshot(snapshot);
  WriteFileAtomically(config_path, std::vector<uint8_t>(bytes.config.begin(), bytes.config.end()));
  try {
    WriteFileAtomically(state_path, bytes.state);
  } catch (...) {
    unlink(config_path.c_str());
    throw;
  }
}

Snapshot ReadSnapshot(const std::string& dir) {
  std::string state_path = dir + "/" + kSnapshotStateFile;
  std::string config_path = dir + "/" + kSnapshotConfigFile;
  std::vector<uint8_t> state = ReadWholeFile(state_path, "snapshot state");
  std::vector<uint8_t> config = ReadWholeFile(config_path, "snapshot config");
  return LoadSnapshot(state, std::string(config.begin(), config.end()), state_path, config_path);
}

}  // namespace stencil
