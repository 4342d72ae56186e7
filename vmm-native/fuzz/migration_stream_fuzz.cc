// libFuzzer target: a live-migration stream as a destination reads it (migration/stream.h): the
// header and the VM description in it, RAM and zero-page runs into a 1 MiB guest, the vCPU/device
// state and config (decoded and checked as a restore would), sync records and the end digest.
// Every input is read to its end marker or refused with a VmmError; nothing is written outside
// the destination's RAM.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../src/error.h"
#include "../src/migration/stream.h"
#include "../src/migration/transport.h"
#include "../src/snapshot/snapshot.h"
#include "../test/sample_snapshot.h"
#include "seeds.h"

namespace {

constexpr uint64_t kGuestRam = 1 << 20;
// Stays below the socket buffer, so the whole input is written before it is read.
constexpr size_t kMaxInput = 64 << 10;

// What StreamWriter sends for the sample snapshot's VM with a 1 MiB guest: header, a RAM run, a
// zero run, a sync, the state and the end; and the same with a template in the header.
stencil::fuzz::Seed WrittenStream(bool with_template) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) std::abort();
  int buf = 1 << 20;
  setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  stencil::Snapshot snapshot = stencil::testing::SampleSnapshot();
  snapshot.config.vm.memory.size = kGuestRam;
  {
    stencil::Cancellation cancel;
    stencil::MigrationChannel channel(stencil::UniqueFd(fds[0]), cancel, "the seed reader");
    stencil::StreamWriter writer(channel);
    stencil::StreamHeader header;
    header.description = stencil::EncodeVmDescription({snapshot.config, snapshot.layout});
    if (with_template) header.has_template = true, header.template_path = "/dev/shm/t", header.template_sha256 = std::string(64, 'b');
    writer.Header(header);
    std::vector<uint8_t> pages(2 * 4096, 0x5a);
    writer.Ram(0x2000, pages.data(), 2);
    writer.Zero(0x10000, 16);
    writer.Sync();
    stencil::SnapshotBytes bytes = stencil::RenderSnapshot(snapshot);
    writer.State(true, bytes.state, bytes.config);
    writer.End();
  }
  stencil::fuzz::Seed out;
  uint8_t chunk[4096];
  for (ssize_t n; (n = read(fds[1], chunk, sizeof chunk)) > 0;) out.insert(out.end(), chunk, chunk + n);
  close(fds[1]);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  stencil::fuzz::WriteSeedsIfAsked([] { return std::vector<stencil::fuzz::Seed>{WrittenStream(false), WrittenStream(true)}; });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > kMaxInput) size = kMaxInput;
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) __builtin_trap();
  int buf = 4 * kMaxInput;
  setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  for (size_t off = 0; off < size;) {
    ssize_t n = write(fds[0], data + off, size - off);
    if (n <= 0) __builtin_trap();
    off += static_cast<size_t>(n);
  }
  close(fds[0]);

  static std::vector<uint8_t> ram(kGuestRam);
  stencil::Cancellation cancel;
  stencil::MigrationChannel channel(stencil::UniqueFd(fds[1]), cancel, "the fuzzer");
  stencil::StreamReader reader(channel);
  try {
    stencil::StreamHeader header = reader.Header();
    stencil::DecodeVmDescription(header.description, "the stream's VM description");
    for (int records = 0; records < 4096; records++) {
      stencil::StreamRecord record = reader.NextRecord();
      if (record == stencil::StreamRecord::kRam || record == stencil::StreamRecord::kZero) {
        uint64_t offset = 0;
        uint32_t count = 0;
        reader.RunHeader(kGuestRam, &offset, &count);
        if (record == stencil::StreamRecord::kRam) reader.ReadPages(ram.data() + offset, count);
        else std::memset(ram.data() + offset, 0, uint64_t(count) * 4096);
      } else if (record == stencil::StreamRecord::kState) {
        bool running = false;
        std::vector<uint8_t> state;
        std::string config;
        reader.State(&running, &state, &config);
        stencil::LoadSnapshot(state, config, "the stream's state", "the stream's config");
      } else if (record == stencil::StreamRecord::kEnd) {
        reader.End();
        break;
      }
    }
  } catch (const stencil::VmmError& e) {
    // Refused, naming what is wrong: the expected outcome for almost every input.
    if (std::getenv("STENCIL_FUZZ_VERBOSE")) std::fprintf(stderr, "refused: %s\n", e.what());
    return 0;
  }
  if (std::getenv("STENCIL_FUZZ_VERBOSE")) std::fprintf(stderr, "accepted\n");
  return 0;
}
