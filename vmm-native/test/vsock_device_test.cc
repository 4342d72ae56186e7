// The virtio-vsock device end to end without a guest: a fake driver builds virtqueues in a fake
// guest memory, plays the guest's side of the protocol through the tx/rx queues, and real Unix
// sockets in a temporary directory play the host applications. The device runs its own thread.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../src/error.h"
#include "vsock_harness.h"

using namespace stencil;
using namespace stencil::vsock;
using namespace stencil::vsock_test;

TEST(VsockDevice, ConfigAndValidation) {
  TempDir dir;
  MuxerOptions o;
  o.uds_path = dir.path + "/v.sock";
  VirtioVsock dev(kCid, o);
  EXPECT_EQ(dev.device_type(), 19u);
  EXPECT_EQ(dev.queue_max_sizes().size(), 3u);
  uint8_t cfg[8];
  dev.ReadConfig(0, cfg, 8);
  uint64_t cid;
  std::memcpy(&cid, cfg, 8);
  EXPECT_EQ(cid, kCid);
  uint32_t hi = 1;
  dev.ReadConfig(4, reinterpret_cast<uint8_t*>(&hi), 4);
  EXPECT_EQ(hi, 0u);
  EXPECT_TRUE(Exists(o.uds_path)) << "the host socket exists once the device does";
  struct stat st;
  ASSERT_EQ(lstat(o.uds_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "only the VMM's owner may connect";

  auto code_of = [&](uint64_t c, const std::string& path) -> std::string {
    MuxerOptions b;
    b.uds_path = path;
    try {
      VirtioVsock bad(c, b);
    } catch (const VmmError& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      return e.what();
    }
    return "";
  };
  for (uint64_t bad : {0ULL, 1ULL, 2ULL, 0xffffffffULL, 1ULL << 32})
    EXPECT_NE(code_of(bad, dir.path + "/x.sock").find("vsock.guestCid"), std::string::npos) << bad;
  EXPECT_NE(code_of(5, "").find("vsock.udsPath"), std::string::npos);
  EXPECT_NE(code_of(5, dir.path + "/" + std::string(100, 'a')).find("too long"), std::string::npos);
  EXPECT_NE(code_of(5, dir.path + "/missing/v.sock").find("vsock.udsPath"), std::string::npos);
  EXPECT_NE(code_of(5, o.uds_path).find("in use"), std::string::npos);  // the live one above
  std::string plain = dir.path + "/file";
  close(open(plain.c_str(), O_CREAT | O_WRONLY, 0600));
  EXPECT_NE(code_of(5, plain).find("not a socket"), std::string::npos);
}

TEST(VsockDevice, HostConnectHandshakeAndRelay) {
  Fixture f;
  int client = UnixConnect(f.dir.path + "/v.sock");
  ASSERT_GE(client, 0);
  WriteAll(client, "CONNECT 52\nearly");  // bytes right after the line belong to the stream

  auto req = f.driver.NextRx();
  ASSERT_TRUE(req.has_value());
  EXPECT_EQ(req->h.op, kOpRequest);
  EXPECT_EQ(req->h.src_cid, kHostCid);
  EXPECT_EQ(req->h.dst_cid, kCid);
  EXPECT_EQ(req->h.dst_port, 52u);
  EXPECT_EQ(req->h.type, kTypeStream);
  EXPECT_GT(req->h.buf_alloc, 0u);
  uint32_t host_port = req->h.src_port;

  f.driver.SendTx(FromGuest(kOpResponse, 52, host_port));
  EXPECT_EQ(ReadLine(client), "OK " + std::to_string(host_port));

  auto early = f.driver.NextNonCredit();
  ASSERT_TRUE(early.has_value());
  EXPECT_EQ(early->h.op, kOpRw);
  EXPECT_EQ(early->payload, "early");
  WriteAll(client, "hello");
  auto data = f.driver.NextNonCredit();
  ASSERT_TRUE(data.has_value());
  EXPECT_EQ(data->payload, "hello");
  EXPECT_EQ(data->h.dst_port, 52u);

  f.driver.SendTx(FromGuest(kOpRw, 52, host_port, 5), "world");
  EXPECT_EQ(ReadN(client, 5), "world");

  f.driver.SendTx(FromGuest(kOpRst, 52, host_port));
  char c;
  EXPECT_EQ(read(client, &c, 1), 0) << "guest RST closes the host client";
  close(client);
  EXPECT_EQ(f.irq.needs_reset.load(), 0);
  EXPECT_GT(f.irq.used.load(), 0);
}

TEST(VsockDevice, HostConnectRefusedOrUnansweredClosesClient) {
  MuxerOptions o;
  o.connect_timeout = std::chrono::milliseconds(300);
  Fixture f(o);
  int refused = UnixConnect(f.dir.path + "/v.sock");
  WriteAll(refused, "CONNECT 53\n");
  auto req = f.driver.NextRx();
  ASSERT_TRUE(req.has_value());
  f.driver.SendTx(FromGuest(kOpRst, 53, req->h.src_port));  // nobody listens in the guest
  char c;
  EXPECT_EQ(read(refused, &c, 1), 0);
  close(refused);

  int ignored = UnixConnect(f.dir.path + "/v.sock");
  WriteAll(ignored, "CONNECT 54\n");
  req = f.driver.NextRx();
  ASSERT_TRUE(req.has_value());
  EXPECT_EQ(req->h.op, kOpRequest);
  auto start = Clock::now();
  EXPECT_EQ(read(ignored, &c, 1), 0) << "closed after the connect timeout";
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3));
  auto rst = f.driver.NextRx();
  ASSERT_TRUE(rst.has_value());
  EXPECT_EQ(rst->h.op, kOpRst) << "the guest is told to forget the half-open flow";
  close(ignored);

  int garbage = UnixConnect(f.dir.path + "/v.sock");
  WriteAll(garbage, "HELLO 52\n");
  EXPECT_EQ(read(garbage, &c, 1), 0);
  close(garbage);
  EXPECT_NE(f.Log().find("not \"CONNECT <port>\""), std::string::npos);
}

TEST(VsockDevice, GuestConnectsToHostPort) {
  Fixture f;
  int listener = UnixListen(f.dir.path + "/v.sock_1234");
  f.driver.SendTx(FromGuest(kOpRequest, 5000, 1234));
  auto resp = f.driver.NextRx();
  ASSERT_TRUE(resp.has_value());
  EXPECT_EQ(resp->h.op, kOpResponse);
  EXPECT_EQ(resp->h.src_port, 1234u);
  EXPECT_EQ(resp->h.dst_port, 5000u);
  int host = AcceptWithTimeout(listener);
  ASSERT_GE(host, 0);

  f.driver.SendTx(FromGuest(kOpRw, 5000, 1234, 4), "ping");
  EXPECT_EQ(ReadN(host, 4), "ping");
  WriteAll(host, "pong");
  auto data = f.driver.NextNonCredit();
  ASSERT_TRUE(data.has_value());
  EXPECT_EQ(data->h.op, kOpRw);
  EXPECT_EQ(data->payload, "pong");

  // Guest half-closes: the host reads EOF but can still answer.
  Header sd = FromGuest(kOpShutdown, 5000, 1234);
  sd.flags = kShutdownSend;
  f.driver.SendTx(sd);
  char c;
  EXPECT_EQ(read(host, &c, 1), 0);
  WriteAll(host, "bye");
  data = f.driver.NextNonCredit();
  ASSERT_TRUE(data.has_value());
  EXPECT_EQ(data->payload, "bye");
  close(host);  // host done too: SHUTDOWN(both), then the guest's RST ends it
  auto shut = f.driver.NextNonCredit();
  ASSERT_TRUE(shut.has_value());
  EXPECT_EQ(shut->h.op, kOpShutdown);
  EXPECT_EQ(shut->h.flags, kShutdownBoth);
  f.driver.SendTx(FromGuest(kOpRst, 5000, 1234));
  f.driver.WaitTxDone();
  EXPECT_EQ(f.device->connection_count(), 0u);
  close(listener);
}

// A guest that posts an rx buffer with room for a header only, while a connection has data for
// it: the device returns that buffer empty (once it held it, offered it first forever, and the
// data never reached the bigger buffers posted after it) and sends the data in the next one.
TEST(VsockDevice, HeaderOnlyRxBufferIsReturnedEmptyAndDataTakesTheNextOne) {
  Fixture f({}, /*fill_rx=*/false);
  int listener = UnixListen(f.dir.path + "/v.sock_1234");
  f.driver.PostRx(0);
  f.device->QueueNotify(0);
  f.driver.SendTx(FromGuest(kOpRequest, 5000, 1234));
  f.driver.rx_len = kHeaderSize;  // NextRx re-posts buffer 0 with room for a header only
  auto resp = f.driver.NextRx();
  ASSERT_TRUE(resp.has_value());
  ASSERT_EQ(resp->h.op, kOpResponse);
  int host = AcceptWithTimeout(listener);
  ASSERT_GE(host, 0);
  WriteAll(host, "data");

  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (f.driver.UsedIdx(0) == f.driver.rx_seen && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_NE(f.driver.UsedIdx(0), f.driver.rx_seen) << "the header-only buffer was held, not returned";
  auto [id, len] = f.driver.UsedElem(0, f.driver.rx_seen++);
  EXPECT_EQ(id, 0u);
  EXPECT_EQ(len, 0u);
  EXPECT_NE(f.Log().find("no room for data"), std::string::npos) << f.Log();

  f.driver.rx_len = kRxBuf;
  f.driver.PostRx(1);
  f.device->QueueNotify(0);
  auto data = f.driver.NextNonCredit();
  ASSERT_TRUE(data.has_value()) << "the data never reached the bigger buffer";
  EXPECT_EQ(data->h.op, kOpRw);
  EXPECT_EQ(data->payload, "data");
  close(host);
  close(listener);
}

TEST(VsockDevice, ResetsUnknownPortsFlowsAndMalformedPackets) {
  Fixture f;
  f.driver.SendTx(FromGuest(kOpRequest, 5001, 9999));  // nobody listens on <uds>_9999
  auto rst = f.driver.NextRx();
  ASSERT_TRUE(rst.has_value());
  EXPECT_EQ(rst->h.op, kOpRst);
  EXPECT_EQ(rst->h.dst_port, 5001u);
  EXPECT_EQ(rst->h.src_port, 9999u);

  f.driver.SendTx(FromGuest(kOpRw, 5002, 80, 3), "abc");  // no such connection
  rst = f.driver.NextRx();
  ASSERT_TRUE(rst.has_value());
  EXPECT_EQ(rst->h.op, kOpRst);
  EXPECT_EQ(rst->h.dst_port, 5002u);

  // A header claiming more payload than the chain holds: RST, and nothing read past the chain.
  Header lying = FromGuest(kOpRw, 5003, 80, 60000);
  std::vector<uint8_t> raw(kHeaderSize + 10);
  EncodeHeader(lying, raw.data());
  f.driver.SendRaw(raw);
  rst = f.driver.NextRx();
  ASSERT_TRUE(rst.has_value());
  EXPECT_EQ(rst->h.op, kOpRst);
  EXPECT_EQ(rst->h.dst_port, 5003u);

  // Too short for a header, spoofed source, unknown type: never a crash, logged.
  f.driver.SendRaw(std::vector<uint8_t>(10, 0xff));
  Header spoofed = FromGuest(kOpRequest, 5004, 80);
  spoofed.src_cid = 7;
  EncodeHeader(spoofed, raw.data());
  f.driver.SendRaw(std::vector<uint8_t>(raw.begin(), raw.begin() + kHeaderSize));
  Header dgram = FromGuest(kOpRequest, 5005, 80);
  dgram.type = 3;
  f.driver.SendTx(dgram);
  rst = f.driver.NextRx();
  ASSERT_TRUE(rst.has_value());
  EXPECT_EQ(rst->h.dst_port, 5005u) << "short and spoofed packets get no answer";
  f.driver.WaitTxDone();
  EXPECT_FALSE(f.driver.NextRx(std::chrono::milliseconds(100)).has_value());
  std::string log = f.Log();
  EXPECT_NE(log.find("shorter than the 44-byte header"), std::string::npos) << log;
  EXPECT_NE(log.find("source CID 7"), std::string::npos) << log;
  EXPECT_NE(log.find("not STREAM"), std::string::npos) << log;
  EXPECT_NE(log.find("chain holds only"), std::string::npos) << log;
  EXPECT_EQ(f.irq.needs_reset.load(), 0);
}

TEST(VsockDevice, NeverSendsBeyondGuestCredit) {
  Fixture f;
  int listener = UnixListen(f.dir.path + "/v.sock_700");
  Header req = FromGuest(kOpRequest, 6000, 700);
  req.buf_alloc = 1000;
  f.driver.SendTx(req);
  ASSERT_EQ(f.driver.NextRx()->h.op, kOpResponse);
  int host = AcceptWithTimeout(listener);
  WriteAll(host, std::string(5000, 'q'));

  uint32_t received = 0;
  while (received < 1000) {
    auto p = f.driver.NextNonCredit();
    ASSERT_TRUE(p.has_value());
    ASSERT_EQ(p->h.op, kOpRw);
    received += p->h.len;
  }
  EXPECT_EQ(received, 1000u);
  auto more = f.driver.NextNonCredit(std::chrono::milliseconds(200));
  EXPECT_FALSE(more.has_value()) << "sent beyond the guest's 1000-byte buffer";
  Header upd = FromGuest(kOpCreditUpdate, 6000, 700);
  upd.buf_alloc = 1000;
  upd.fwd_cnt = 1000;
  f.driver.SendTx(upd);
  while (received < 2000) {
    auto p = f.driver.NextNonCredit();
    ASSERT_TRUE(p.has_value());
    received += p->h.len;
  }
  EXPECT_EQ(received, 2000u);
  close(host);
  close(listener);
}

// 1 MiB each way through one connection, byte-identical, with a host reader slower than the
// guest writer (our credit must hold the guest back) and a guest that respects our credit.
TEST(VsockDevice, MegabyteBothWaysWithBackpressure) {
  MuxerOptions o;
  o.buf_alloc = 32 * 1024;
  Fixture f(o);
  int listener = UnixListen(f.dir.path + "/v.sock_800");
  f.driver.SendTx(FromGuest(kOpRequest, 7000, 800));
  auto resp = f.driver.NextRx();
  ASSERT_EQ(resp->h.op, kOpResponse);
  uint32_t our_buf = resp->h.buf_alloc, our_fwd = resp->h.fwd_cnt;
  EXPECT_EQ(our_buf, 32u * 1024);
  int host = AcceptWithTimeout(listener);

  std::string up(1 << 20, 0), down(1 << 20, 0);
  for (size_t i = 0; i < up.size(); i++) up[i] = static_cast<char>(i * 7 + (i >> 11)), down[i] = static_cast<char>(i * 13 + 1);
  std::string host_got;
  std::thread reader([&] {
    char buf[4096];
    while (host_got.size() < up.size()) {
      std::this_thread::sleep_for(std::chrono::microseconds(100));  // a slow consumer
      ssize_t n = read(host, buf, sizeof buf);
      if (n <= 0) break;
      host_got.append(buf, static_cast<size_t>(n));
    }
  });
  std::thread writer([&] { WriteAll(host, down); });

  // Guest: send `up` within our credit; collect `down` and grant credit as it is consumed.
  std::string guest_got;
  uint32_t tx_cnt = 0, guest_fwd = 0;
  size_t off = 0;
  auto handle = [&](const Packet& p) {
    our_buf = p.h.buf_alloc, our_fwd = p.h.fwd_cnt;
    if (p.h.op == kOpRw) {
      guest_got += p.payload;
      guest_fwd += p.h.len;
      Header upd = FromGuest(kOpCreditUpdate, 7000, 800);
      upd.fwd_cnt = guest_fwd;
      f.driver.SendTx(upd);
    } else {
      ASSERT_TRUE(p.h.op == kOpCreditUpdate || p.h.op == kOpCreditRequest) << OpName(p.h.op);
    }
  };
  while (off < up.size() || guest_got.size() < down.size()) {
    uint32_t credit = our_buf - (tx_cnt - our_fwd);
    if (off < up.size() && credit > 0) {
      uint32_t n = std::min<uint32_t>({credit, 16384, static_cast<uint32_t>(up.size() - off)});
      Header h = FromGuest(kOpRw, 7000, 800, n);
      h.fwd_cnt = guest_fwd;
      f.driver.SendTx(h, up.substr(off, n));
      off += n, tx_cnt += n;
      while (auto p = f.driver.NextRx(std::chrono::milliseconds(0))) handle(*p);
      continue;
    }
    auto p = f.driver.NextRx();
    ASSERT_TRUE(p.has_value()) << "stalled: sent " << off << ", received " << guest_got.size();
    handle(*p);
  }
  writer.join();
  reader.join();
  EXPECT_TRUE(host_got == up) << "host got " << host_got.size() << " bytes";
  EXPECT_TRUE(guest_got == down) << "guest got " << guest_got.size() << " bytes";
  EXPECT_EQ(f.irq.needs_reset.load(), 0);
  EXPECT_EQ(f.Log().find("violation"), std::string::npos) << f.Log();
  close(host);
  close(listener);
}

TEST(VsockDevice, ManyConcurrentConnections) {
  Fixture f;
  int listener = UnixListen(f.dir.path + "/v.sock_900");
  constexpr int kConns = 20;
  // More connections than the listen backlog (16): the device retries the ones that find it full.
  std::vector<int> hosts;
  std::thread acceptor([&] {
    for (int i = 0; i < kConns; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      hosts.push_back(AcceptWithTimeout(listener));
    }
  });
  for (int i = 0; i < kConns; i++) f.driver.SendTx(FromGuest(kOpRequest, 10000 + i, 900));
  int responses = 0;
  while (responses < kConns) {
    auto p = f.driver.NextRx();
    ASSERT_TRUE(p.has_value());
    ASSERT_EQ(p->h.op, kOpResponse);
    responses++;
  }
  acceptor.join();
  for (int i = 0; i < kConns; i++) {
    std::string msg = "conn-" + std::to_string(i);
    f.driver.SendTx(FromGuest(kOpRw, 10000 + i, 900, static_cast<uint32_t>(msg.size())), msg);
  }
  std::set<std::string> got;
  for (int fd : hosts) {
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf);
    ASSERT_GT(n, 0);
    got.insert(std::string(buf, static_cast<size_t>(n)));
  }
  EXPECT_EQ(got.size(), static_cast<size_t>(kConns));
  EXPECT_EQ(f.device->connection_count(), static_cast<size_t>(kConns));
  for (int fd : hosts) close(fd);
  close(listener);
}

TEST(VsockDevice, TransportResetEventDropsConnections) {
  Fixture f;
  int listener = UnixListen(f.dir.path + "/v.sock_1000");
  f.driver.SendTx(FromGuest(kOpRequest, 5000, 1000));
  ASSERT_EQ(f.driver.NextRx()->h.op, kOpResponse);
  int host = AcceptWithTimeout(listener);
  // The guest's event buffer.
  f.driver.Desc(2, 0, f.driver.Buffer(2, 0), 8, 2, 0);
  std::memset(f.driver.At(f.driver.Buffer(2, 0)), 0xaa, 8);
  f.driver.Publish(2, 0);
  f.device->QueueNotify(2);
  f.device->SendTransportReset();
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (f.driver.UsedIdx(2) == 0 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(f.driver.UsedIdx(2), 1);
  EXPECT_EQ(f.driver.UsedElem(2, 0).second, 4u);
  uint32_t id;
  std::memcpy(&id, f.driver.At(f.driver.Buffer(2, 0)), 4);
  EXPECT_EQ(id, kEventTransportReset);
  char c;
  EXPECT_EQ(read(host, &c, 1), 0) << "connections are dropped";
  EXPECT_EQ(f.device->connection_count(), 0u);
  close(host);
  // A new host connection waits until the guest has handled the reset, which would otherwise
  // reset it too, without a word to the host.
  int client = UnixConnect(f.dir.path + "/v.sock");
  WriteAll(client, "CONNECT 52\n");
  EXPECT_FALSE(f.driver.NextRx(std::chrono::milliseconds(200)).has_value()) << "a request reached a guest still resetting";
  f.driver.AcknowledgeEvent(0);
  auto req = f.driver.NextRx();
  ASSERT_TRUE(req.has_value());
  EXPECT_EQ(req->h.op, kOpRequest);
  close(client);
  close(listener);
}

TEST(VsockDevice, ResetStopsEverythingAndRemovesTheSocket) {
  Fixture f;
  std::string path = f.dir.path + "/v.sock";
  int client = UnixConnect(path);
  WriteAll(client, "CONNECT 52\n");
  ASSERT_EQ(f.driver.NextRx()->h.op, kOpRequest);
  f.device->Reset();
  EXPECT_FALSE(Exists(path));
  char c;
  EXPECT_EQ(read(client, &c, 1), 0);
  close(client);
  // A driver that comes back gets a working device (and socket) again.
  FakeDriver again;
  again.device = f.device.get();
  f.device->Activate(again.mem, again.queues, f.irq);
  again.FillRx();
  EXPECT_TRUE(Exists(path));
  client = UnixConnect(path);
  WriteAll(client, "CONNECT 52\n");
  auto req = again.NextRx();
  ASSERT_TRUE(req.has_value());
  EXPECT_EQ(req->h.op, kOpRequest);
  close(client);
  f.device.reset();
  EXPECT_FALSE(Exists(path));
}

// A device restored from `s` (as CID kCid + 1) onto a fake guest whose rings are where the
// snapshot left them, with one event buffer posted.
struct Restored {
  explicit Restored(const VirtioVsock::State& s) : options(Options(dir)), device(kCid + 1, options) {
    device.RestoreState(s);
    driver.device = &device;
    for (uint16_t q = 0; q < 3; q++) {
      driver.avail_idx[q] = s.next_avail[q];
      std::memcpy(driver.At(driver.base[q] + 0x1000 + 2), &s.next_avail[q], 2);
      std::memcpy(driver.At(driver.base[q] + 0x2000 + 2), &s.next_used[q], 2);
    }
    driver.Desc(2, 0, driver.Buffer(2, 0), 4, 2, 0);
    driver.Publish(2, 0);
    device.Activate(driver.mem, driver.queues, irq);
  }
  static MuxerOptions Options(const TempDir& dir) {
    MuxerOptions o;
    o.uds_path = dir.path + "/w.sock";
    return o;
  }
  TempDir dir;
  MuxerOptions options;
  VirtioVsock device;
  FakeDriver driver;
  FakeIrq irq;
};

TEST(VsockDevice, SaveAndRestoreState) {
  Fixture f;
  f.driver.SendTx(FromGuest(kOpRequest, 5001, 9999));  // some traffic to move the indexes
  ASSERT_TRUE(f.driver.NextRx().has_value());
  f.driver.WaitTxDone();
  EXPECT_THROW(f.device->SaveState(), VmmError);  // running
  f.device->Pause();
  VirtioVsock::State s = f.device->SaveState();
  EXPECT_TRUE(s.activated);
  EXPECT_EQ(s.guest_cid, kCid);
  EXPECT_EQ(s.next_avail[1], 1);
  EXPECT_EQ(s.next_used[1], 1);
  EXPECT_EQ(s.next_used[0], 1);
  EXPECT_EQ(s.next_avail[0], 1) << "one rx chain used, none held";
  f.device->Resume();
  f.device.reset();

  Restored r(s);
  VirtioVsock& restored = r.device;
  FakeDriver& d = r.driver;
  FakeIrq& irq = r.irq;
  MuxerOptions& o = r.options;
  EXPECT_EQ(d.queues[1].next_avail(), 1);
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (d.UsedIdx(2) == s.next_used[2] && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(d.UsedIdx(2), s.next_used[2] + 1) << "a restored device announces TRANSPORT_RESET";
  EXPECT_EQ(irq.needs_reset.load(), 0);

  // A host connection waits until the guest has handled the reset: read its new CID and dropped
  // its old connections, then given the event buffer back. Reading the CID is not enough.
  d.rx_seen = s.next_used[0];
  for (uint16_t i = 0; i < 4; i++) d.PostRx(i);
  restored.QueueNotify(0);
  int client = UnixConnect(o.uds_path);
  WriteAll(client, "CONNECT 52\n");
  uint8_t cid[8];
  restored.ReadConfig(0, cid, sizeof cid);
  uint64_t value;
  std::memcpy(&value, cid, sizeof value);
  EXPECT_EQ(value, kCid + 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(d.UsedIdx(0), s.next_used[0]) << "a request reached the guest before it had handled the transport reset";
  restored.QueueNotify(2);  // a kick without a buffer given back does not count
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(d.UsedIdx(0), s.next_used[0]) << "a request reached the guest before it had handled the transport reset";
  d.AcknowledgeEvent(0);
  auto req = d.NextRx();
  ASSERT_TRUE(req.has_value());
  EXPECT_EQ(req->h.op, kOpRequest);
  EXPECT_EQ(req->h.dst_cid, kCid + 1);
  close(client);
  restored.Reset();  // stops the loop thread before the fake driver's queues go
}

// The guest keeps the template's connections until the transport reset's aftermath closes them
// (a socket the host had closed lingers in the guest for seconds): a clone's host connections
// must not reuse their (host port, guest port) pairs, or the guest hands them to the dead socket.
TEST(VsockDevice, ARestoredDeviceNeverReusesTheTemplatesHostPorts) {
  Fixture f;
  int client = UnixConnect(f.dir.path + "/v.sock");
  WriteAll(client, "CONNECT 52\n");
  auto req = f.driver.NextRx();
  ASSERT_TRUE(req.has_value());
  uint32_t template_port = req->h.src_port;
  f.device->Pause();
  VirtioVsock::State s = f.device->SaveState();
  EXPECT_EQ(s.next_local_port, template_port + 1);
  f.device->Resume();
  close(client);
  f.device.reset();

  Restored r(s);
  r.driver.rx_seen = s.next_used[0];
  for (uint16_t i = 0; i < 4; i++) r.driver.PostRx(i);
  r.device.QueueNotify(0);
  uint8_t cid[8];
  r.device.ReadConfig(0, cid, sizeof cid);  // the guest's reset handler re-reads its CID
  r.driver.AcknowledgeEvent(0);
  int clone_client = UnixConnect(r.options.uds_path);
  WriteAll(clone_client, "CONNECT 52\n");
  auto clone_req = r.driver.NextRx();
  ASSERT_TRUE(clone_req.has_value());
  EXPECT_EQ(clone_req->h.op, kOpRequest);
  EXPECT_GT(clone_req->h.src_port, template_port) << "the clone reused a host port the template's guest still knows";
  close(clone_client);
  r.device.Reset();
}
