// libFuzzer target: a snapshot's `state` file (snapshot/state_file.h) and what is decoded from it
// (snapshot.h: the configuration, the device layout, the VM and vCPU state). Two ways in, by the
// first byte: the raw file as read from disk (magic, version, sections, checksum), or sections
// cut from the input and sealed with a valid checksum, so the section decoders behind the
// checksum are reached too. Every input decodes or is refused with a VmmError.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../src/error.h"
#include "../src/snapshot/snapshot.h"
#include "../src/snapshot/state_file.h"
#include "../test/sample_snapshot.h"
#include "seeds.h"

namespace {

// The sections a snapshot has (vcpu.N and device.N for the first few N).
const char* const kSections[] = {"config", "devices", "vm", "vcpu.0", "vcpu.1", "device.0", "device.1", "device.2"};

stencil::StateFile SealedSections(const uint8_t* data, size_t size) {
  // Each section: u8 name index, u16 length, the payload.
  stencil::StateFile file;
  while (size >= 3) {
    const char* name = kSections[data[0] % (sizeof kSections / sizeof kSections[0])];
    size_t len = data[1] | size_t{data[2]} << 8;
    data += 3, size -= 3;
    if (len > size) len = size;
    if (!file.Has(name)) file.Add(name, stencil::kSnapshotSectionVersion, std::vector<uint8_t>(data, data + len));
    data += len, size -= len;
  }
  return file;
}

// The sample snapshot's state file as written to disk (raw), and its sections in the sealed form.
std::vector<stencil::fuzz::Seed> Seeds() {
  stencil::StateFile file = stencil::EncodeSnapshot(stencil::testing::SampleSnapshot());
  stencil::fuzz::Seed raw{1};
  std::vector<uint8_t> bytes = file.Encode();
  raw.insert(raw.end(), bytes.begin(), bytes.end());
  stencil::fuzz::Seed sealed{0};
  for (const auto& section : file.sections()) {
    size_t index = 0;
    while (index < sizeof kSections / sizeof kSections[0] && section.name != kSections[index]) index++;
    if (index == sizeof kSections / sizeof kSections[0] || section.payload.size() > 0xffff) continue;
    sealed.push_back(static_cast<uint8_t>(index));
    sealed.push_back(section.payload.size() & 0xff);
    sealed.push_back(section.payload.size() >> 8);
    sealed.insert(sealed.end(), section.payload.begin(), section.payload.end());
  }
  return {raw, sealed};
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  stencil::fuzz::WriteSeedsIfAsked(Seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  bool raw = data[0] & 1;
  data++, size--;
  try {
    stencil::StateFile file = raw ? stencil::StateFile::Decode(std::vector<uint8_t>(data, data + size), "the fuzzer's state file")
                                  : SealedSections(data, size);
    std::vector<uint8_t> bytes = file.Encode();
    try {
      stencil::DecodeVmDescription(bytes, "the fuzzer's description");
    } catch (const stencil::VmmError&) {
    }
    stencil::Snapshot snapshot = stencil::DecodeSnapshot(file);
    // What decodes must render and load again (the config JSON checked against the state): a
    // snapshot the VMM accepts but cannot write back is a bug, not bad input.
    stencil::SnapshotBytes again = stencil::RenderSnapshot(snapshot);
    try {
      stencil::LoadSnapshot(again.state, again.config, "re-rendered state", "re-rendered config");
    } catch (const stencil::VmmError& e) {
      std::fprintf(stderr, "state file fuzz: a decoded snapshot does not load again: %s\n", e.what());
      __builtin_trap();
    }
  } catch (const stencil::VmmError& e) {
    if (std::getenv("STENCIL_FUZZ_VERBOSE")) std::fprintf(stderr, "refused: %s\n", e.what());
    return 0;
  }
  if (std::getenv("STENCIL_FUZZ_VERBOSE")) std::fprintf(stderr, "accepted\n");
  return 0;
}
