// Test harness for the virtio-vsock device tests: a fake guest driver that builds the three
// virtqueues in fake guest memory and plays the guest's side of the protocol, plus blocking Unix
// socket helpers for the host side.
#pragma once
#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../src/virtio/vsock/device.h"
#include "fake_memory.h"

namespace stencil::vsock_test {

using namespace stencil::vsock;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kCid = 42;
constexpr uint16_t kQueueSize = 64;
constexpr uint32_t kSlot = 72 * 1024;  // data buffer per descriptor
constexpr uint32_t kRxBuf = kHeaderSize + 4096;

using stencil::testing::FakeMemory;
using FakeIrq = stencil::testing::CountingInterrupt;

struct Packet {
  Header h;
  std::string payload;
};

// The guest driver's side of the three queues.
class FakeDriver {
 public:
  FakeDriver() : mem(3 * (0x3000 + kQueueSize * uint64_t(kSlot)) + 0x10000) {
    for (uint16_t q = 0; q < 3; q++) {
      queues.emplace_back(kQueueSize);
      base[q] = 0x10000 + q * (0x3000 + kQueueSize * uint64_t(kSlot));
      queues[q].desc_addr = base[q];
      queues[q].avail_addr = base[q] + 0x1000;
      queues[q].used_addr = base[q] + 0x2000;
      queues[q].set_ready(true);
    }
  }
  uint8_t* At(uint64_t addr) { return mem.bytes.data() + addr; }
  uint64_t Buffer(uint16_t q, uint16_t desc) { return base[q] + 0x3000 + desc * uint64_t(kSlot); }
  void Desc(uint16_t q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) {
    uint8_t* d = At(base[q] + i * 16ull);
    std::memcpy(d, &addr, 8);
    std::memcpy(d + 8, &len, 4);
    std::memcpy(d + 12, &flags, 2);
    std::memcpy(d + 14, &next, 2);
  }
  void Publish(uint16_t q, uint16_t head) {
    uint16_t& idx = avail_idx[q];
    std::memcpy(At(base[q] + 0x1000 + 4 + (idx % kQueueSize) * 2), &head, 2);
    idx++;
    __atomic_store_n(reinterpret_cast<uint16_t*>(At(base[q] + 0x1000 + 2)), idx, __ATOMIC_RELEASE);
  }
  uint16_t UsedIdx(uint16_t q) { return __atomic_load_n(reinterpret_cast<uint16_t*>(At(base[q] + 0x2000 + 2)), __ATOMIC_ACQUIRE); }
  std::pair<uint32_t, uint32_t> UsedElem(uint16_t q, uint16_t i) {
    uint32_t id, len;
    std::memcpy(&id, At(base[q] + 0x2000 + 4 + (i % kQueueSize) * 8), 4);
    std::memcpy(&len, At(base[q] + 0x2000 + 8 + (i % kQueueSize) * 8), 4);
    return {id, len};
  }

  // tx: header and payload in separate descriptors (2 per chain), like the Linux driver.
  void SendTx(const Header& h, const std::string& payload = {}) {
    while (uint16_t(avail_idx[1] - UsedIdx(1)) >= kQueueSize / 2) std::this_thread::yield();
    uint16_t head = (tx_next++ % (kQueueSize / 2)) * 2;
    uint8_t raw[kHeaderSize];
    EncodeHeader(h, raw);
    std::memcpy(At(Buffer(1, head)), raw, kHeaderSize);
    std::memcpy(At(Buffer(1, head + 1)), payload.data(), payload.size());
    if (payload.empty()) {
      Desc(1, head, Buffer(1, head), kHeaderSize, 0, 0);
    } else {
      Desc(1, head, Buffer(1, head), kHeaderSize, /*NEXT*/ 1, head + 1);
      Desc(1, head + 1, Buffer(1, head + 1), static_cast<uint32_t>(payload.size()), 0, 0);
    }
    Publish(1, head);
    device->QueueNotify(1);
  }
  void SendRaw(const std::vector<uint8_t>& bytes) {  // one descriptor, whatever the bytes say
    while (uint16_t(avail_idx[1] - UsedIdx(1)) >= kQueueSize / 2) std::this_thread::yield();
    uint16_t head = (tx_next++ % (kQueueSize / 2)) * 2;
    std::memcpy(At(Buffer(1, head)), bytes.data(), bytes.size());
    Desc(1, head, Buffer(1, head), static_cast<uint32_t>(bytes.size()), 0, 0);
    Publish(1, head);
    device->QueueNotify(1);
  }
  void WaitTxDone() {
    auto deadline = Clock::now() + std::chrono::seconds(5);
    while (UsedIdx(1) != avail_idx[1] && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // rx: one writable descriptor per chain, all 64 posted up front and re-posted when used.
  void PostRx(uint16_t desc) {
    Desc(0, desc, Buffer(0, desc), rx_len, /*WRITE*/ 2, 0);
    Publish(0, desc);
  }
  void FillRx() {
    for (uint16_t i = 0; i < kQueueSize; i++) PostRx(i);
    device->QueueNotify(0);
  }
  std::optional<Packet> NextRx(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
    auto deadline = Clock::now() + timeout;
    while (UsedIdx(0) == rx_seen) {
      if (Clock::now() > deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    auto [id, len] = UsedElem(0, rx_seen++);
    EXPECT_GE(len, kHeaderSize);
    Packet p;
    p.h = DecodeHeader(At(Buffer(0, static_cast<uint16_t>(id))));
    EXPECT_EQ(len, kHeaderSize + p.h.len);
    p.payload.assign(reinterpret_cast<char*>(At(Buffer(0, static_cast<uint16_t>(id)) + kHeaderSize)), p.h.len);
    PostRx(static_cast<uint16_t>(id));
    device->QueueNotify(0);
    return p;
  }
  // What Linux's event work does once it has handled an event (re-read guest_cid, reset the
  // connected sockets): give the event buffer `desc` back and kick the event queue. Waits for the
  // event first (the device has used every event buffer posted), as the guest can only answer it.
  void AcknowledgeEvent(uint16_t desc) {
    auto deadline = Clock::now() + std::chrono::seconds(5);
    while (UsedIdx(2) != avail_idx[2] && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(UsedIdx(2), avail_idx[2]) << "no event to acknowledge";
    Publish(2, desc);
    device->QueueNotify(2);
  }
  // Next rx packet that is not a credit message.
  std::optional<Packet> NextNonCredit(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
    for (;;) {
      auto p = NextRx(timeout);
      if (!p || (p->h.op != kOpCreditUpdate && p->h.op != kOpCreditRequest)) return p;
    }
  }

  FakeMemory mem;
  std::vector<Virtqueue> queues;
  uint64_t base[3];
  uint16_t avail_idx[3] = {};
  uint16_t rx_seen = 0;
  uint32_t rx_len = kRxBuf;  // the size of rx buffers posted from now on
  uint32_t tx_next = 0;
  VirtioVsock* device = nullptr;
};

inline Header FromGuest(uint16_t op, uint32_t guest_port, uint32_t host_port, uint32_t len = 0) {
  Header h;
  h.src_cid = kCid;
  h.dst_cid = kHostCid;
  h.src_port = guest_port;
  h.dst_port = host_port;
  h.op = op;
  h.len = len;
  h.buf_alloc = 256 * 1024;
  return h;
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/vsock-test.XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { [[maybe_unused]] int r = system(("rm -rf " + path).c_str()); }
  std::string path;
};

inline int UnixConnect(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path.c_str());
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
    close(fd);
    return -1;
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

inline int UnixListen(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path.c_str());
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_EQ(listen(fd, 16), 0);
  return fd;
}

inline int AcceptWithTimeout(int listen_fd) {
  pollfd p{listen_fd, POLLIN, 0};
  if (poll(&p, 1, 5000) != 1) return -1;
  int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

inline std::string ReadN(int fd, size_t n) {
  std::string out;
  char buf[65536];
  while (out.size() < n) {
    ssize_t r = read(fd, buf, std::min(sizeof buf, n - out.size()));
    if (r <= 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

inline std::string ReadLine(int fd) {
  std::string out;
  char c;
  while (read(fd, &c, 1) == 1 && c != '\n') out += c;
  return out;
}

inline void WriteAll(int fd, const std::string& s) { ASSERT_EQ(write(fd, s.data(), s.size()), static_cast<ssize_t>(s.size())); }

inline bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

struct Fixture {
  explicit Fixture(MuxerOptions extra = {}, bool fill_rx = true) {
    extra.uds_path = dir.path + "/v.sock";
    extra.log = [this](const std::string& m) {
      std::lock_guard<std::mutex> lock(log_mu);
      log += m + "\n";
    };
    device = std::make_unique<VirtioVsock>(kCid, extra);
    driver.device = device.get();
    device->Activate(driver.mem, driver.queues, irq);
    if (fill_rx) driver.FillRx();
  }
  std::string Log() {
    std::lock_guard<std::mutex> lock(log_mu);
    return log;
  }
  TempDir dir;
  FakeDriver driver;
  FakeIrq irq;
  std::unique_ptr<VirtioVsock> device;
  std::mutex log_mu;
  std::string log;
};

}  // namespace stencil::vsock_test
