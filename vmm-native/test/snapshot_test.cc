// Snapshot state serialization: the state file container (checksum, versions, truncation), the
// snapshot directory (state + config, atomic, mismatches refused) and per-device state round trips.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "../src/devices/acpi_pm.h"
#include "../src/devices/device_manager.h"
#include "../src/devices/i8042.h"
#include "../src/devices/serial.h"
#include "../src/error.h"
#include "../src/snapshot/snapshot.h"
#include "../src/snapshot/state_file.h"
#include "../src/virtio/blk.h"
#include "../src/virtio/mmio.h"
#include "../src/virtio/rng.h"
#include "fake_memory.h"
#include "mmio_driver.h"
#include "sample_snapshot.h"

using namespace stencil;
using stencil::testing::ActivateQueue0;
using stencil::testing::Reg;
using stencil::testing::SampleSnapshot;
using stencil::testing::FakeDriverQueue;
using stencil::testing::FakeMemory;

namespace {

std::string ErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const VmmError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kSnapshot) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

#define EXPECT_CONTAINS(haystack, needle) EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

StateFile TwoSections() {
  StateFile f;
  ByteWriter a;
  a.U32(7);
  a.String("hello");
  f.Add("alpha", 1, a.Take());
  f.Add("beta", 3, {1, 2, 3});
  return f;
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/stencil-snapshot-unit-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string path;
};


}  // namespace

TEST(StateFile, RoundTripsSections) {
  StateFile back = StateFile::Decode(TwoSections().Encode(), "test");
  ASSERT_EQ(back.sections().size(), 2u);
  ByteReader r = back.Reader("alpha", 1);
  EXPECT_EQ(r.U32(), 7u);
  EXPECT_EQ(r.String(), "hello");
  r.ExpectEnd();
  EXPECT_EQ(back.Get("beta", 3).payload, (std::vector<uint8_t>{1, 2, 3}));
}

TEST(StateFile, RefusesCorruptTruncatedAndForeignInput) {
  std::vector<uint8_t> good = TwoSections().Encode();
  std::vector<uint8_t> flipped = good;
  flipped[30] ^= 0x40;
  EXPECT_CONTAINS(ErrorOf([&] { StateFile::Decode(flipped, "s"); }), "checksum mismatch");
  std::vector<uint8_t> truncated(good.begin(), good.end() - 10);
  EXPECT_CONTAINS(ErrorOf([&] { StateFile::Decode(truncated, "s"); }), "checksum mismatch");
  EXPECT_CONTAINS(ErrorOf([&] { StateFile::Decode({good.begin(), good.begin() + 20}, "s"); }), "truncated");
  std::vector<uint8_t> other_version = good;
  other_version[16] = 9;
  EXPECT_CONTAINS(ErrorOf([&] { StateFile::Decode(other_version, "s"); }), "format version 9");
  std::vector<uint8_t> not_state = good;
  not_state[0] = 'X';
  EXPECT_CONTAINS(ErrorOf([&] { StateFile::Decode(not_state, "s"); }), "bad magic");
}

TEST(StateFile, NamesMissingSectionsAndVersionMismatches) {
  StateFile f = TwoSections();
  EXPECT_CONTAINS(ErrorOf([&] { f.Get("beta", 1); }), "section 'beta' has version 3");
  EXPECT_CONTAINS(ErrorOf([&] { f.Get("gamma", 1); }), "no section 'gamma'");
  ByteReader r = f.Reader("alpha", 1);
  r.U32();
  r.U32();  // the string's length
  EXPECT_CONTAINS(ErrorOf([&] { r.U64(); }), "section alpha: truncated");
}

TEST(Snapshot, RoundTripsThroughDirectory) {
  TempDir dir;
  Snapshot s = SampleSnapshot();
  WriteSnapshot(dir.path, s);
  for (const auto& e : std::filesystem::directory_iterator(dir.path))
    EXPECT_TRUE(e.path().filename() == "state" || e.path().filename() == "config") << e.path();
  Snapshot back = ReadSnapshot(dir.path);
  EXPECT_EQ(back.config.vm.vcpus, 2u);
  EXPECT_EQ(back.config.vm.memory.size, 256ULL << 20);
  EXPECT_EQ(back.config.cmdline, s.config.cmdline);
  EXPECT_EQ(back.config.vm.shares.at(0).host_path, "/srv/pod");
  EXPECT_EQ(back.config.vm.vsock.guest_cid, 42u);
  EXPECT_TRUE(back.config.vm.net.enabled);
  EXPECT_EQ(back.config.vm.net.mac, s.config.vm.net.mac);
  EXPECT_EQ(back.config.vm.net.backend_fd, -1) << "a backend fd is never saved";
  ASSERT_EQ(back.vcpus.size(), 2u);
  EXPECT_EQ(back.vcpus[1].regs.rip, 0x1001u);
  EXPECT_EQ(back.vcpus[1].msrs.at(0).data, 99u);
  EXPECT_EQ(back.vm.clock.clock, 123456789u);
  EXPECT_EQ(back.layout.at(1).guest, s.layout[1].guest);
  EXPECT_EQ(back.devices, s.devices);

  std::ifstream in(dir.path + "/config");
  std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_CONTAINS(json, "\"vcpus\": 2,");
  EXPECT_CONTAINS(json, "\"memoryBytes\": 268435456,");
  EXPECT_CONTAINS(json, "\"kind\": \"virtio-9p\"");
}

TEST(Snapshot, RefusesConfigThatDiffersFromState) {
  TempDir dir;
  WriteSnapshot(dir.path, SampleSnapshot());
  std::string path = dir.path + "/config";
  std::ifstream in(path);
  std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  json.replace(json.find("\"vcpus\": 2"), 10, "\"vcpus\": 4");
  std::ofstream(path) << json;
  std::string why = ErrorOf([&] { ReadSnapshot(dir.path); });
  EXPECT_CONTAINS(why, "line 4 is `  \"vcpus\": 4,`, the state says `  \"vcpus\": 2,`");
}

TEST(Snapshot, RefusesTruncatedOrMissingState) {
  TempDir dir;
  WriteSnapshot(dir.path, SampleSnapshot());
  std::filesystem::resize_file(dir.path + "/state", 100);
  EXPECT_CONTAINS(ErrorOf([&] { ReadSnapshot(dir.path); }), "state");
  std::filesystem::remove(dir.path + "/state");
  EXPECT_CONTAINS(ErrorOf([&] { ReadSnapshot(dir.path); }), "No such file");
}

TEST(Snapshot, RefusesStateWithMissingVcpu) {
  StateFile f = EncodeSnapshot(SampleSnapshot());
  StateFile partial;
  for (const auto& s : f.sections())
    if (s.name != "vcpu.1") partial.Add(s.name, s.version, s.payload);
  EXPECT_CONTAINS(ErrorOf([&] { DecodeSnapshot(partial); }), "no section 'vcpu.1'");
}

TEST(Snapshot, WriteFailureLeavesNothing) {
  EXPECT_THROW(WriteSnapshot("/nonexistent-dir-for-stencil", SampleSnapshot()), VmmError);
  TempDir dir;
  std::filesystem::create_directory(dir.path + "/state");  // rename over a directory fails
  EXPECT_THROW(WriteSnapshot(dir.path, SampleSnapshot()), VmmError);
  for (const auto& e : std::filesystem::directory_iterator(dir.path))
    EXPECT_EQ(e.path().filename(), "state") << "left behind: " << e.path();
}

TEST(VcpuState, ClearsThePvEoiFlagItsSnapshotLeftSet) {
  // The guest skips an EOI whose flag KVM set; a restored KVM no longer knows it set it.
  FakeMemory mem(0x3000);
  x86::VcpuState vcpu;
  vcpu.msrs = {{0x10, 0, 12345}, {0x4b564d04, 0, 0x2040 | 1}};  // TSC; PV EOI enabled, flag at 0x2040
  mem.Put<uint64_t>(0x2040, 0x0101);
  mem.Put<uint8_t>(0x1000, 1);
  vcpu.ClearPvEoiPending(mem);
  EXPECT_EQ(mem.Get<uint64_t>(0x2040), 0x0100u);  // only the flag's bit
  EXPECT_EQ(mem.Get<uint8_t>(0x1000), 1);

  vcpu.msrs[1].data = 0x1000;  // PV EOI disabled: its address means nothing
  vcpu.ClearPvEoiPending(mem);
  EXPECT_EQ(mem.Get<uint8_t>(0x1000), 1);
  vcpu.msrs[1].data = 0x9000 | 1;  // outside guest memory: left alone, no crash
  vcpu.ClearPvEoiPending(mem);
}

TEST(DeviceState, SerialRoundTrip) {
  Serial a(nullptr, nullptr);
  uint8_t v = 0x80;
  a.Write(3, &v, 1);  // DLAB
  v = 0x03;
  a.Write(0, &v, 1);  // divisor low
  v = 0x03;
  a.Write(3, &v, 1);  // 8N1, DLAB off
  v = 0x5a;
  a.Write(7, &v, 1);  // scratch
  const uint8_t input[] = {'x', 'y'};
  a.QueueInput(input, 2);
  ByteWriter w;
  a.SaveState(w);
  Serial b(nullptr, nullptr);
  ByteReader r(w.data(), "serial");
  b.RestoreState(r);
  r.ExpectEnd();
  uint8_t out;
  b.Read(7, &out, 1);
  EXPECT_EQ(out, 0x5a);
  b.Read(0, &out, 1);
  EXPECT_EQ(out, 'x');
  b.Read(0, &out, 1);
  EXPECT_EQ(out, 'y');
}

TEST(DeviceState, AcpiPmRoundTripAndTruncation) {
  AcpiPm a([] {});
  uint8_t en[2] = {0x21, 0x01};
  a.Write(2, en, 2);
  ByteWriter w;
  a.SaveState(w);
  AcpiPm b([] {});
  ByteReader r(w.data(), "acpi-pm");
  b.RestoreState(r);
  uint8_t out[2];
  b.Read(2, out, 2);
  EXPECT_EQ(out[0], 0x21);
  EXPECT_EQ(out[1], 0x01);
  ByteReader short_input(w.data().data(), 3, "acpi-pm");
  EXPECT_CONTAINS(ErrorOf([&] { b.RestoreState(short_input); }), "truncated");
}

TEST(DeviceState, VirtioMmioRestoresActiveQueueThatKeepsWorking) {
  FakeMemory mem(0x10000);
  VirtioMmio a(std::make_unique<VirtioRng>(), mem, nullptr);
  ActivateQueue0(a, 16);
  Virtqueue driver_view(16);
  FakeDriverQueue driver(mem, driver_view, 16);
  driver.Desc(0, 0x8000, 32, 2 /* WRITE */, 0);
  driver.Publish(0);
  Reg(a, 0x50, 0);
  ASSERT_EQ(driver.used_idx(), 1);

  ByteWriter w;
  a.SaveState(w);
  VirtioMmio b(std::make_unique<VirtioRng>(), mem, nullptr);
  ByteReader r(w.data(), "virtio-rng");
  b.RestoreState(r);
  r.ExpectEnd();
  EXPECT_EQ(Reg(b, 0x70), 15u);
  EXPECT_EQ(Reg(b, 0x44), 1u);
  driver.Desc(1, 0x9000, 16, 2, 0);
  driver.Publish(1);
  Reg(b, 0x50, 0);
  EXPECT_EQ(driver.used_idx(), 2);  // continued from the saved indexes
  EXPECT_EQ(driver.used_len(1), 16u);

  VirtioMmio blk_slot(std::make_unique<VirtioRng>(), mem, nullptr);
  std::vector<uint8_t> other = w.data();
  other[0] = 2;  // device type: blk
  ByteReader wrong(other, "slot");
  EXPECT_CONTAINS(ErrorOf([&] { blk_slot.RestoreState(wrong); }), "device type 2");
}

TEST(DeviceState, BlockDeviceRefusesResizedDisk) {
  TempDir dir;
  std::string disk = dir.path + "/disk";
  std::filesystem::resize_file((std::ofstream(disk), disk), 4096);
  VirtioBlk a({disk, false, "s1"});
  ByteWriter w;
  a.SaveState(w);
  std::filesystem::resize_file(disk, 8192);
  VirtioBlk b({disk, false, "s1"});
  ByteReader r(w.data(), "blk");
  EXPECT_CONTAINS(ErrorOf([&] { b.RestoreState(r); }), "size is 16 sectors, the snapshot's guest saw 8 sectors");
}

TEST(DeviceManager, CheckLayoutNamesTheDifference) {
  Bus pio, mmio;
  DeviceManager dm(-1, pio, mmio);
  dm.AddPio({"i8042", false, 0x60, 5, 0, {}, {}}, std::make_shared<I8042>([] {}));
  dm.AddPio({"acpi-pm", false, 0x600, 8, 0, {{"mode", "s5"}}, {}}, std::make_shared<AcpiPm>([] {}));
  std::vector<DeviceRecord> saved = dm.layout();
  dm.CheckLayout(saved);
  saved[1].guest = {{"mode", "s3"}};
  EXPECT_CONTAINS(ErrorOf([&] { dm.CheckLayout(saved); }), "mode is 's5' here, 's3' in the snapshot");
  saved[1].base = 0x700;
  EXPECT_CONTAINS(ErrorOf([&] { dm.CheckLayout(saved); }), "acpi-pm at port 0x600 here, acpi-pm at port 0x700");
  saved.pop_back();
  EXPECT_CONTAINS(ErrorOf([&] { dm.CheckLayout(saved); }), "the snapshot does not");
  ByteWriter w;
  DeviceManager::EncodeLayout(dm.layout(), w);
  ByteReader r(w.data(), "layout");
  EXPECT_EQ(DeviceManager::DecodeLayout(r).at(1).guest, dm.layout()[1].guest);
}
