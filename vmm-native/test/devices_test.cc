// Serial port register behaviour the Linux 8250 driver relies on, and guest RAM backing.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "../src/devices/serial.h"
#include "../src/error.h"
#include "../src/memory.h"

using namespace stencil;

namespace {
uint8_t In(Serial& s, uint64_t off) {
  uint8_t v;
  s.Read(off, &v, 1);
  return v;
}
void Out(Serial& s, uint64_t off, uint8_t v) { s.Write(off, &v, 1); }
}  // namespace

TEST(Serial, TransmitsToSink) {
  std::string out;
  Serial s(nullptr, [&](const uint8_t* d, size_t n) { out.append(reinterpret_cast<const char*>(d), n); });
  for (char c : std::string("hi\n")) Out(s, 0, static_cast<uint8_t>(c));
  EXPECT_EQ(out, "hi\n");
  EXPECT_EQ(In(s, 5) & 0x60, 0x60);  // THR empty, transmitter idle
}

TEST(Serial, LoopbackReflectsModemControl) {
  std::string out;
  Serial s(nullptr, [&](const uint8_t* d, size_t n) { out.append(reinterpret_cast<const char*>(d), n); });
  Out(s, 4, 0x10 | 0x0a);             // loopback + OUT2 + RTS
  EXPECT_EQ(In(s, 6) & 0xf0, 0x90);  // DCD + CTS, as the 8250 probe expects
  Out(s, 0, 'x');                    // looped back, not transmitted
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(In(s, 5) & 1, 1);
  EXPECT_EQ(In(s, 0), 'x');
}

TEST(Serial, ReceiveAndInterruptIdentification) {
  Serial s(nullptr, nullptr);
  Out(s, 1, 0x01);                 // IER: receive data available
  EXPECT_EQ(In(s, 2) & 0x0f, 0x01);  // nothing pending
  const uint8_t input[] = {'a', 'b'};
  s.QueueInput(input, 2);
  EXPECT_EQ(In(s, 2) & 0x0f, 0x04);
  EXPECT_EQ(In(s, 0), 'a');
  EXPECT_EQ(In(s, 0), 'b');
  EXPECT_EQ(In(s, 5) & 1, 0);
}

TEST(Serial, DivisorLatchAndScratch) {
  Serial s(nullptr, nullptr);
  Out(s, 3, 0x80);
  Out(s, 0, 0x01);
  Out(s, 1, 0x02);
  EXPECT_EQ(In(s, 0), 0x01);
  EXPECT_EQ(In(s, 1), 0x02);
  Out(s, 3, 0x03);
  Out(s, 7, 0x5a);
  EXPECT_EQ(In(s, 7), 0x5a);
}

TEST(GuestMemory, FileOnTmpfsHasSizeAndIsRemoved) {
  char dir[] = "/dev/shm/stencil-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path;
  {
    MemoryOptions o;
    o.size = 32 << 20;
    o.directory = dir;
    o.name = "t.ram";
    GuestMemory mem(o);
    path = mem.path();
    struct stat st;
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_size, 32 << 20);
    uint32_t v = 0xabcd;
    mem.Write(0x1000, &v, 4);
    EXPECT_NE(mem.Translate((32 << 20) - 4, 4), nullptr);
    EXPECT_EQ(mem.Translate((32 << 20) - 4, 8), nullptr);
    EXPECT_THROW(mem.Write(32 << 20, &v, 4), VmmError);
  }
  EXPECT_NE(access(path.c_str(), F_OK), 0);
  rmdir(dir);
}

TEST(GuestMemory, BadSizesAndDirectories) {
  MemoryOptions o;
  o.name = "t.ram";
  o.directory = "/dev/shm";
  o.size = (32 << 20) + 100;
  EXPECT_THROW({ GuestMemory m(o); }, VmmError);
  o.size = 0;
  EXPECT_THROW({ GuestMemory m(o); }, VmmError);
  o.size = 1ull << 50;
  try {
    GuestMemory m(o);
    FAIL() << "a 1 PiB VM was accepted";
  } catch (const VmmError& e) {
    EXPECT_NE(std::string(e.what()).find("exceeds this host's RAM"), std::string::npos);
  }
  o.size = 32 << 20;
  o.directory = "/nonexistent/stencil";
  try {
    GuestMemory m(o);
    FAIL() << "missing directory accepted";
  } catch (const VmmError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kMemoryBacking);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/stencil"), std::string::npos);
  }
}

TEST(GuestMemory, FullTmpfsIsReportedUpFront) {
  // A 1 MiB tmpfs cannot be mounted without privileges everywhere; skip rather than pretend.
  if (geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs";
  char dir[] = "/tmp/stencil-full-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string cmd = std::string("mount -t tmpfs -o size=4m tmpfs ") + dir;
  if (system(cmd.c_str()) != 0) {
    rmdir(dir);
    GTEST_SKIP() << "cannot mount tmpfs here";
  }
  MemoryOptions o;
  o.size = 32 << 20;
  o.directory = dir;
  o.name = "t.ram";
  try {
    GuestMemory m(o);
    ADD_FAILURE() << "32 MiB VM accepted on a 4 MiB tmpfs";
  } catch (const VmmError& e) {
    EXPECT_NE(std::string(e.what()).find("free"), std::string::npos);
  }
  EXPECT_EQ(access((std::string(dir) + "/t.ram").c_str(), F_OK), -1);  // nothing left behind
  system((std::string("umount ") + dir).c_str());
  rmdir(dir);
}
