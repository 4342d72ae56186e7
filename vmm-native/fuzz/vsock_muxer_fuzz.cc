// libFuzzer target: the hybrid vsock's connection state machine (virtio/vsock/muxer.h) as a
// hostile guest and host clients drive it, single-threaded: the event loop is run by hand. The
// input is a list of operations:
//   0 a guest tx packet: 44-byte header, u16 payload length, the payload (checked by
//     CheckTxHeader as the device does, then handed over or answered with RST)
//   1 one event-loop iteration (host socket events, connect retries and timeouts)
//   2 the guest offers an rx buffer of N bytes: whatever the muxer has for it is written there
//   3 the host side of guest-initiated connections: accept what waits on <uds>_1024 and write
//     N bytes into it (or close it)
//   4 a host client connects to <uds> and writes a line (its CONNECT request, or anything)
// Every packet is served, refused or answered with RST; nothing is written outside the buffers.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../src/event_loop.h"
#include "../src/virtio/vsock/muxer.h"
#include "../src/virtio/vsock/packet.h"
#include "seeds.h"

namespace {

namespace vs = stencil::vsock;

constexpr uint64_t kGuestCid = 3;
std::string g_dir, g_uds;
int g_guest_port_listener = -1;  // <uds>_1024: a host service guests connect to
int g_host_listener = -1;        // <uds>: where host clients send CONNECT

int ListenUnix(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0 || listen(fd, 64) < 0) __builtin_trap();
  return fd;
}

void HostConnect(const uint8_t* line, size_t len) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, g_uds.c_str(), sizeof sa.sun_path - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 && len) {
    ssize_t n = send(fd, line, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n;
  }
  close(fd);  // the muxer sees a client that went away, early or late
}

void ServeGuestConnections(uint8_t n) {
  for (;;) {
    int fd = accept4(g_guest_port_listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    std::vector<uint8_t> data(n * 64u, 'h');
    if (n) {
      ssize_t w = send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      (void)w;
    }
    close(fd);
  }
}

// A guest REQUEST to port 1024 (host service), data, a credit update, a host CONNECT, rx buffers
// and loop turns; and the same with a shutdown and a reset.
std::vector<stencil::fuzz::Seed> Seeds() {
  auto packet = [](stencil::fuzz::Seed& s, uint16_t op, const std::string& payload = {}) {
    vs::Header h;
    h.src_cid = kGuestCid, h.dst_cid = 2, h.src_port = 5000, h.dst_port = 1024, h.op = op, h.buf_alloc = 65536;
    h.len = static_cast<uint32_t>(payload.size());
    if (op == vs::kOpShutdown) h.flags = vs::kShutdownBoth;
    uint8_t wire[vs::kHeaderSize];
    vs::EncodeHeader(h, wire);
    s.push_back(0);
    s.insert(s.end(), wire, wire + sizeof wire);
    stencil::fuzz::Put(s, static_cast<uint16_t>(payload.size()));
    s.insert(s.end(), payload.begin(), payload.end());
  };
  auto op = [](stencil::fuzz::Seed& s, uint8_t code, uint8_t arg) { s.push_back(code), s.push_back(arg); };
  stencil::fuzz::Seed a;
  packet(a, vs::kOpRequest);
  op(a, 1, 0), op(a, 2, 255), op(a, 3, 4), op(a, 1, 0);
  packet(a, vs::kOpRw, "hello from the guest");
  packet(a, vs::kOpCreditUpdate);
  op(a, 1, 0), op(a, 2, 255), op(a, 2, 40);
  std::string line = "CONNECT 1024\n";
  a.push_back(4), a.push_back(static_cast<uint8_t>(line.size()));
  a.insert(a.end(), line.begin(), line.end());
  op(a, 1, 0), op(a, 2, 255);
  stencil::fuzz::Seed b = a;
  packet(b, vs::kOpShutdown);
  op(b, 1, 0);
  packet(b, vs::kOpRst);
  op(b, 2, 255);
  return {a, b};
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  stencil::fuzz::WriteSeedsIfAsked(Seeds);
  g_dir = stencil::fuzz::ScratchDirRemovedAtExit("stencil-vsock-fuzz");
  g_uds = g_dir + "/v.sock";
  g_guest_port_listener = ListenUnix(g_uds + "_1024");
  g_host_listener = ListenUnix(g_uds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  stencil::EventLoop loop;
  vs::MuxerOptions options;
  options.uds_path = g_uds;
  options.buf_alloc = 64 * 1024;
  options.connect_timeout = std::chrono::milliseconds(2);
  options.close_timeout = std::chrono::milliseconds(2);
  options.drain_timeout = std::chrono::milliseconds(2);
  options.max_connections = 16;
  options.max_pending_clients = 4;
  {
    vs::Muxer muxer(loop, kGuestCid, options, g_host_listener, [] {});
    std::vector<uint8_t> rx(64 * 1024 + vs::kHeaderSize);
    for (int ops = 0; size >= 2 && ops < 256; ops++) {
      uint8_t code = data[0] % 5, arg = data[1];
      if (code == 0) {
        if (size < 1 + vs::kHeaderSize + 2) break;
        vs::Header h = vs::DecodeHeader(data + 1);
        size_t len = data[1 + vs::kHeaderSize] | size_t{data[2 + vs::kHeaderSize]} << 8;
        data += 3 + vs::kHeaderSize, size -= 3 + vs::kHeaderSize;
        if (len > size) len = size;
        // As the device: the header is checked against the payload the chain holds, then passed on.
        vs::TxCheck check = vs::CheckTxHeader(h, kGuestCid, len);
        if (check.verdict == vs::TxVerdict::kAccept) muxer.OnGuestPacket(h, data);
        else if (check.verdict == vs::TxVerdict::kReplyRst) muxer.ReplyRst(h);
        data += len, size -= len;
        continue;
      }
      data += 2, size -= 2;
      if (code == 1) {
        loop.RunOnce(0);
      } else if (code == 2) {
        stencil::DescriptorChain chain{0, {}, {{rx.data(), static_cast<uint32_t>(vs::kHeaderSize + arg * 256u)}}};
        if (muxer.HasRxWork()) muxer.FillRx(chain, vs::RxPayloadCapacity(chain));
      } else if (code == 3) {
        ServeGuestConnections(arg);
      } else {
        size_t len = arg < size ? arg : size;
        HostConnect(data, len);
        data += len, size -= len;
      }
    }
    loop.RunOnce(0);
  }
  // Host clients the muxer never accepted wait in the listener's backlog: clear it for the next input.
  for (int fd; (fd = accept4(g_host_listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) close(fd);
  ServeGuestConnections(0);
  return 0;
}
