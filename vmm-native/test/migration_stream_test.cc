// A live migration's destination fed bad streams over a real unix socket: each is refused or
// fails with an error naming what is wrong, the sender hears why, and no RAM file stays behind.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "../src/error.h"
#include "../src/memory.h"
#include "../src/migration/destination.h"
#include "../src/migration/stream.h"
#include "../src/migration/transport.h"
#include "../src/snapshot/sha256.h"
#include "../src/snapshot/snapshot.h"

using namespace stencil;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kRam = 16ULL << 20;

template <typename T>
void Append(std::vector<uint8_t>& out, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}

std::vector<uint8_t> Header(uint32_t version = kLiveMigrationVersion, uint64_t memory = kRam, uint8_t flags = 0) {
  VmDescription d;
  d.config.vm.vcpus = 1;
  d.config.vm.memory.size = memory;
  d.config.vm.kernel_path = "/nonexistent/kernel";
  std::vector<uint8_t> description = EncodeVmDescription(d);
  std::vector<uint8_t> out(kLiveMigrationMagic, kLiveMigrationMagic + 8);
  Append<uint32_t>(out, version);
  Append<uint32_t>(out, static_cast<uint32_t>(description.size()));
  out.insert(out.end(), description.begin(), description.end());
  out.push_back(flags);  // 0: no template, no wired NIC
  return out;
}

void AppendRam(std::vector<uint8_t>& out, uint64_t offset, uint8_t fill) {
  out.push_back('R');
  Append<uint64_t>(out, offset);
  Append<uint32_t>(out, 1);
  out.insert(out.end(), 4096, fill);
}

// A state record: running, 4 zero bytes of state, config "{}".
void AppendState(std::vector<uint8_t>& out) {
  out.push_back('S');
  out.push_back(1);
  Append<uint32_t>(out, 4);
  Append<uint32_t>(out, 0);
  Append<uint32_t>(out, 2);
  out.push_back('{');
  out.push_back('}');
}

class MigrationStream : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/dev/shm/stencil-migration-stream-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Sends `bytes` (then closes) to a fresh destination; returns its final error and what it
  // replied first ('A', 'X' + reason, 'F' + reason).
  std::pair<std::string, std::string> Feed(const std::vector<uint8_t>& bytes) {
    IncomingOptions options;
    options.memory_dir = dir_;
    options.memory_name = "ram";
    std::mutex mu;
    std::condition_variable cv;
    bool finished = false;
    MigrationIncoming incoming(ParseMigrationEndpoint("unix:" + dir_ + "/in.sock"), options, [&](MigrationIncoming::Event e) {
      std::lock_guard<std::mutex> lock(mu);
      if (e == MigrationIncoming::Event::kFinished) finished = true;
      cv.notify_all();
    });
    incoming.Start();
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string path = dir_ + "/in.sock";
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
    shutdown(fd, SHUT_WR);
    std::string reply;
    char buf[4096];
    for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) reply.append(buf, static_cast<size_t>(n));
    close(fd);
    std::unique_lock<std::mutex> lock(mu);
    EXPECT_TRUE(cv.wait_for(lock, 10s, [&] { return finished; }));
    EXPECT_EQ(MigrationStatusName(incoming.Stats().status), std::string("failed"));
    EXPECT_FALSE(incoming.Stats().state_ready);
    return {incoming.Stats().error, reply};
  }
  bool RamFileLeft() { return std::filesystem::exists(dir_ + "/ram"); }
  std::string dir_;
};

TEST_F(MigrationStream, WrongMagicIsRefused) {
  std::vector<uint8_t> bytes = Header();
  bytes[0] = 'X';
  auto [error, reply] = Feed(bytes);
  EXPECT_NE(error.find("not a Stencil live migration stream (bad magic)"), std::string::npos) << error;
  EXPECT_EQ(reply.substr(0, 1), "X");
  EXPECT_NE(reply.find("bad magic"), std::string::npos);
  EXPECT_FALSE(RamFileLeft());
}

TEST_F(MigrationStream, NewerVersionIsRefusedByName) {
  const std::string newer = "version " + std::to_string(kLiveMigrationVersion + 1) + " is too new: this Stencil reads version " +
                            std::to_string(kLiveMigrationVersion);
  auto [error, reply] = Feed(Header(kLiveMigrationVersion + 1));
  EXPECT_NE(error.find(newer), std::string::npos) << error;
  EXPECT_EQ(reply.substr(0, 1), "X");
  EXPECT_FALSE(RamFileLeft());
  // Version 1 ended in a SHA-256 where version 2 has a CRC-32C.
  std::tie(error, reply) = Feed(Header(1));
  EXPECT_NE(error.find("version 1"), std::string::npos) << error;
  EXPECT_EQ(reply.substr(0, 1), "X");
  EXPECT_FALSE(RamFileLeft());
}

TEST_F(MigrationStream, MissingKernelDoesNotMatterButATooSmallMemoryDoes) {
  // 1 MiB of RAM is below the VMM's minimum: refused when the RAM is created, nothing left.
  auto [error, reply] = Feed(Header(kLiveMigrationVersion, 1 << 20));
  EXPECT_NE(error.find("below the minimum of 16 MiB"), std::string::npos) << error;
  EXPECT_FALSE(RamFileLeft());
}

TEST_F(MigrationStream, AWiredNicNeedsATapAndUnknownHeaderFlagsAreRefused) {
  auto [error, reply] = Feed(Header(kLiveMigrationVersion, kRam, kHeaderNicWired));
  EXPECT_NE(error.find("device virtio-net: the VM's network interface has a tap at the source and this destination was given none"),
            std::string::npos)
      << error;
  EXPECT_EQ(reply.substr(0, 1), "X");
  std::tie(error, reply) = Feed(Header(kLiveMigrationVersion, kRam, 0x80));
  EXPECT_NE(error.find("header flags 128 (unknown bits set)"), std::string::npos) << error;
  EXPECT_FALSE(RamFileLeft());
}

TEST_F(MigrationStream, TruncatedStreamFailsAndDiscardsTheRam) {
  std::vector<uint8_t> bytes = Header();
  AppendRam(bytes, 0, 0x11);
  bytes.resize(bytes.size() - 100);  // cut inside the page
  auto [error, reply] = Feed(bytes);
  EXPECT_NE(error.find("the stream ended while reading guest RAM pages"), std::string::npos) << error;
  EXPECT_EQ(reply.substr(0, 1), "A");
  EXPECT_FALSE(RamFileLeft());
}

TEST_F(MigrationStream, CorruptedPageFailsTheChecksum) {
  std::vector<uint8_t> bytes = Header();
  AppendRam(bytes, 8192, 0x22);
  AppendState(bytes);
  bytes.push_back('E');
  const uint32_t crc = Crc32c(0, bytes.data(), bytes.size());
  bytes[bytes.size() - 100] ^= 1;  // one bit flipped in transit, inside the page
  bytes.insert(bytes.end(), reinterpret_cast<const uint8_t*>(&crc), reinterpret_cast<const uint8_t*>(&crc) + sizeof crc);
  auto [error, reply] = Feed(bytes);
  EXPECT_NE(error.find("checksum mismatch at the end marker"), std::string::npos) << error;
  EXPECT_NE(reply.find("F"), std::string::npos);
  EXPECT_FALSE(RamFileLeft());
}

TEST_F(MigrationStream, PagesOutsideRamAndUnknownRecordsAreNamed) {
  std::vector<uint8_t> bytes = Header();
  AppendRam(bytes, kRam, 0x33);
  auto [error, reply] = Feed(bytes);
  EXPECT_NE(error.find("lies outside the guest's 16777216 bytes of RAM"), std::string::npos) << error;

  bytes = Header();
  bytes.push_back('Q');
  std::tie(error, reply) = Feed(bytes);
  EXPECT_NE(error.find("unknown record type 0x51"), std::string::npos) << error;
  EXPECT_FALSE(RamFileLeft());
}

TEST_F(MigrationStream, ASyncIsAnsweredAfterTheRecordsBeforeItAndNotAfterTheState) {
  // Accepted with the sync bit; each sync answered in order; a sync after the state is refused.
  std::vector<uint8_t> bytes = Header();
  AppendRam(bytes, 0, 0x44);
  bytes.push_back('Y');
  AppendRam(bytes, 4096, 0x45);
  bytes.push_back('Y');
  AppendState(bytes);
  bytes.push_back('Y');
  auto [error, reply] = Feed(bytes);
  ASSERT_GE(reply.size(), 4u) << reply;
  EXPECT_EQ(reply[0], 'A');
  EXPECT_TRUE(reply[1] & kAcceptAnswersSync);
  EXPECT_EQ(reply.substr(2, 3), "YYF") << "two syncs answered, then the failure";
  EXPECT_NE(error.find("a sync after the VM state"), std::string::npos) << error;
  EXPECT_FALSE(RamFileLeft());
}

TEST(MigrationEndpoint, ParsesAndNamesBadUris) {
  EXPECT_EQ(ParseMigrationEndpoint("tcp:127.0.0.1:4446").Describe(), "tcp:127.0.0.1:4446");
  EXPECT_EQ(ParseMigrationEndpoint("tcp:[::1]:80").host, "::1");
  EXPECT_EQ(ParseMigrationEndpoint("unix:/run/m.sock").path, "/run/m.sock");
  auto message = [](const std::string& uri) {
    try {
      ParseMigrationEndpoint(uri);
    } catch (const VmmError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message("tcp:host").find("no port"), std::string::npos);
  EXPECT_NE(message("tcp:host:99999").find("port '99999' is not a number in 0..65535"), std::string::npos);
  EXPECT_NE(message("unix:").find("no socket path"), std::string::npos);
  EXPECT_NE(message("rdma:x").find("unknown transport"), std::string::npos);
  EXPECT_NE(message("unix:/" + std::string(200, 'a')).find("longer than"), std::string::npos);
}

// The incoming migration's Unix socket: only its owner may connect, and it goes with the listener.
TEST(MigrationListener, UnixSocketIsOwnerOnlyAndRemovedAfter) {
  std::string dir = std::filesystem::temp_directory_path() / ("stencil-listener-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::string path = dir + "/m.sock";
  {
    MigrationListener listener(ParseMigrationEndpoint("unix:" + path));
    struct stat st;
    ASSERT_EQ(lstat(path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0600u);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  std::filesystem::remove_all(dir);
}

}  // namespace
