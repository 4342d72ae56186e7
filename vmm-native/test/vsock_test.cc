// virtio-vsock logic: header encoding and validation (every way a guest can lie), the CONNECT
// line, the connection state machine with its credit accounting, and the muxer's rx filling.
// The device with real queues and Unix sockets is tested in vsock_device_test.cc.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../src/event_loop.h"
#include "../src/virtio/vsock/connection.h"
#include "../src/virtio/vsock/muxer.h"
#include "../src/virtio/vsock/packet.h"

using namespace stencil;
using namespace stencil::vsock;

namespace {

constexpr uint64_t kGuestCid = 3;

Header GuestHeader(uint16_t op, uint32_t guest_port, uint32_t host_port, uint32_t len = 0) {
  Header h;
  h.src_cid = kGuestCid;
  h.dst_cid = kHostCid;
  h.src_port = guest_port;
  h.dst_port = host_port;
  h.op = op;
  h.len = len;
  h.buf_alloc = 64 * 1024;
  return h;
}

DescriptorChain ReadableChain(std::vector<std::vector<uint8_t>>& bufs) {
  DescriptorChain c{0, {}, {}};
  for (auto& b : bufs) c.readable.push_back({b.data(), static_cast<uint32_t>(b.size())});
  return c;
}

}  // namespace

// --- packets ------------------------------------------------------------------------------------

TEST(VsockPacket, EncodesLittleEndianAtSpecOffsets) {
  Header h;
  h.src_cid = 0x0102030405060708ULL;
  h.dst_cid = 2;
  h.src_port = 0x11223344;
  h.dst_port = 52;
  h.len = 0x1000;
  h.type = kTypeStream;
  h.op = kOpRw;
  h.flags = 3;
  h.buf_alloc = 0x40000;
  h.fwd_cnt = 0xdeadbeef;
  uint8_t raw[kHeaderSize];
  EncodeHeader(h, raw);
  EXPECT_EQ(raw[0], 0x08);
  EXPECT_EQ(raw[7], 0x01);
  EXPECT_EQ(raw[8], 2);
  EXPECT_EQ(raw[16], 0x44);
  EXPECT_EQ(raw[20], 52);
  EXPECT_EQ(raw[25], 0x10);
  EXPECT_EQ(raw[28], 1);  // type
  EXPECT_EQ(raw[30], 5);  // op
  EXPECT_EQ(raw[32], 3);  // flags
  EXPECT_EQ(raw[38], 0x04);
  EXPECT_EQ(raw[40], 0xef);
  EXPECT_EQ(raw[43], 0xde);
  Header back = DecodeHeader(raw);
  EXPECT_EQ(back.src_cid, h.src_cid);
  EXPECT_EQ(back.src_port, h.src_port);
  EXPECT_EQ(back.fwd_cnt, h.fwd_cnt);
  EXPECT_EQ(back.buf_alloc, h.buf_alloc);
  EXPECT_EQ(back.op, h.op);
}

TEST(VsockPacket, HeaderMaySpanDescriptors) {
  uint8_t raw[kHeaderSize];
  EncodeHeader(GuestHeader(kOpRequest, 1000, 52), raw);
  std::vector<std::vector<uint8_t>> bufs = {{raw, raw + 10}, {raw + 10, raw + 30}, {raw + 30, raw + kHeaderSize}};
  auto h = ReadHeader(ReadableChain(bufs));
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->op, kOpRequest);
  EXPECT_EQ(h->dst_port, 52u);
}

TEST(VsockPacket, ShortChainHasNoHeader) {
  std::vector<std::vector<uint8_t>> bufs = {std::vector<uint8_t>(43, 0)};
  EXPECT_FALSE(ReadHeader(ReadableChain(bufs)).has_value());
  std::vector<std::vector<uint8_t>> none;
  EXPECT_FALSE(ReadHeader(ReadableChain(none)).has_value());
}

TEST(VsockPacket, AcceptsWellFormedPackets) {
  EXPECT_EQ(CheckTxHeader(GuestHeader(kOpRequest, 1, 2), kGuestCid, 0).verdict, TxVerdict::kAccept);
  EXPECT_EQ(CheckTxHeader(GuestHeader(kOpRw, 1, 2, 100), kGuestCid, 100).verdict, TxVerdict::kAccept);
  EXPECT_EQ(CheckTxHeader(GuestHeader(kOpRw, 1, 2, 0), kGuestCid, 0).verdict, TxVerdict::kAccept);
  Header sd = GuestHeader(kOpShutdown, 1, 2);
  sd.flags = kShutdownBoth;
  EXPECT_EQ(CheckTxHeader(sd, kGuestCid, 0).verdict, TxVerdict::kAccept);
  // An RST is accepted even to a foreign CID (it is never answered anyway).
  Header rst = GuestHeader(kOpRst, 1, 2);
  rst.dst_cid = 77;
  EXPECT_EQ(CheckTxHeader(rst, kGuestCid, 0).verdict, TxVerdict::kAccept);
}

TEST(VsockPacket, RejectsMalformedHeaders) {
  struct Case {
    const char* name;
    Header h;
    uint64_t available;
    TxVerdict verdict;
  };
  std::vector<Case> cases;
  auto add = [&](const char* name, TxVerdict v, auto mutate, uint64_t available = 0) {
    Header h = GuestHeader(kOpRw, 1000, 52, 0);
    mutate(h);
    cases.push_back({name, h, available, v});
  };
  add("spoofed source cid", TxVerdict::kDrop, [](Header& h) { h.src_cid = 4; });
  add("source cid with upper bits", TxVerdict::kDrop, [](Header& h) { h.src_cid = kGuestCid | (1ULL << 32); });
  add("host cid as source", TxVerdict::kDrop, [](Header& h) { h.src_cid = kHostCid; });
  add("rst with payload", TxVerdict::kDrop, [](Header& h) { h.op = kOpRst, h.len = 4; }, 4);
  add("other destination cid", TxVerdict::kReplyRst, [](Header& h) { h.dst_cid = 9; });
  add("destination cid upper bits", TxVerdict::kReplyRst, [](Header& h) { h.dst_cid = kHostCid | (1ULL << 40); });
  add("seqpacket type", TxVerdict::kReplyRst, [](Header& h) { h.type = 2; });
  add("type zero", TxVerdict::kReplyRst, [](Header& h) { h.type = 0; });
  add("op invalid", TxVerdict::kReplyRst, [](Header& h) { h.op = kOpInvalid; });
  add("op out of range", TxVerdict::kReplyRst, [](Header& h) { h.op = 8; });
  add("op huge", TxVerdict::kReplyRst, [](Header& h) { h.op = 0xffff; });
  add("request with payload", TxVerdict::kReplyRst, [](Header& h) { h.op = kOpRequest, h.len = 1; }, 1);
  add("len beyond chain", TxVerdict::kReplyRst, [](Header& h) { h.len = 101; }, 100);
  add("len beyond max packet", TxVerdict::kReplyRst, [](Header& h) { h.len = kMaxPayload + 1; }, 1ULL << 20);
  add("len 4 GiB - 1", TxVerdict::kReplyRst, [](Header& h) { h.len = 0xffffffff; }, 64);
  add("unknown shutdown flags", TxVerdict::kReplyRst, [](Header& h) { h.op = kOpShutdown, h.flags = 4; });
  for (auto& c : cases) {
    TxCheck r = CheckTxHeader(c.h, kGuestCid, c.available);
    EXPECT_EQ(r.verdict, c.verdict) << c.name;
    EXPECT_FALSE(r.why.empty()) << c.name;
  }
}

TEST(VsockPacket, WritesIntoSplitRxBuffers) {
  std::vector<uint8_t> a(20), b(100);
  DescriptorChain c{0, {}, {{a.data(), 20}, {b.data(), 100}}};
  EXPECT_EQ(RxPayloadCapacity(c), 120u - kHeaderSize);
  Header h = ReplyTo(GuestHeader(kOpRequest, 7, 52), kOpRw);
  h.len = 5;
  EXPECT_EQ(WritePacket(c, h, reinterpret_cast<const uint8_t*>("hello")), kHeaderSize + 5);
  uint8_t raw[kHeaderSize];
  std::memcpy(raw, a.data(), 20);
  std::memcpy(raw + 20, b.data(), kHeaderSize - 20);
  Header back = DecodeHeader(raw);
  EXPECT_EQ(back.src_cid, kHostCid);
  EXPECT_EQ(back.dst_cid, kGuestCid);
  EXPECT_EQ(back.dst_port, 7u);
  EXPECT_EQ(back.src_port, 52u);
  EXPECT_EQ(std::memcmp(b.data() + kHeaderSize - 20, "hello", 5), 0);
  DescriptorChain tiny{0, {}, {{a.data(), 20}}};
  EXPECT_EQ(RxPayloadCapacity(tiny), 0u);
}

TEST(VsockPacket, ParsesConnectLines) {
  EXPECT_EQ(ParseConnectLine("CONNECT 52"), 52u);
  EXPECT_EQ(ParseConnectLine("CONNECT 4294967295"), 4294967295u);
  EXPECT_EQ(ParseConnectLine("CONNECT 1024\r"), 1024u);
  for (const char* bad : {"", "CONNECT", "CONNECT ", "connect 52", "CONNECT 52 ", "CONNECT -1", "CONNECT 4294967296",
                          "CONNECT 99999999999", "CONNECT 5a", "CONNECT  52", "OK 52"})
    EXPECT_FALSE(ParseConnectLine(bad).has_value()) << bad;
}

// --- connection state machine -------------------------------------------------------------------

TEST(VsockConnection, GuestInitiatedHandshake) {
  Header req = GuestHeader(kOpRequest, 5000, 52);
  req.buf_alloc = 8192;
  Connection c = Connection::FromGuestRequest(kGuestCid, req, 65536);
  EXPECT_EQ(c.state(), Connection::State::kHostConnecting);
  EXPECT_FALSE(c.HasControl());
  EXPECT_EQ(c.PeerCredit(), 0u);  // nothing may be sent before RESPONSE
  c.OnHostConnected();
  EXPECT_EQ(c.state(), Connection::State::kEstablished);
  auto resp = c.TakeControl();
  ASSERT_TRUE(resp.has_value());
  EXPECT_EQ(resp->op, kOpResponse);
  EXPECT_EQ(resp->src_cid, kHostCid);
  EXPECT_EQ(resp->dst_cid, kGuestCid);
  EXPECT_EQ(resp->src_port, 52u);
  EXPECT_EQ(resp->dst_port, 5000u);
  EXPECT_EQ(resp->buf_alloc, 65536u);
  EXPECT_EQ(resp->fwd_cnt, 0u);
  EXPECT_FALSE(c.HasControl());
  EXPECT_EQ(c.PeerCredit(), 8192u);
}

TEST(VsockConnection, HostInitiatedHandshakeAndRefusal) {
  Connection c = Connection::ToGuest(kGuestCid, 1u << 30, 52, 65536);
  auto req = c.TakeControl();
  ASSERT_TRUE(req.has_value());
  EXPECT_EQ(req->op, kOpRequest);
  EXPECT_EQ(req->dst_port, 52u);
  EXPECT_EQ(req->src_port, 1u << 30);
  Header resp = GuestHeader(kOpResponse, 52, 1u << 30);
  resp.buf_alloc = 1000;
  resp.fwd_cnt = 77;  // odd but legal: the counters are adopted as they are
  c.OnGuestPacket(resp, nullptr);
  EXPECT_EQ(c.state(), Connection::State::kEstablished);
  EXPECT_EQ(c.PeerCredit(), 1000u);

  Connection refused = Connection::ToGuest(kGuestCid, 1u << 30, 53, 65536);
  refused.TakeControl();
  refused.OnGuestPacket(GuestHeader(kOpRst, 53, 1u << 30), nullptr);
  EXPECT_EQ(refused.state(), Connection::State::kClosed);
  EXPECT_FALSE(refused.HasControl());  // an RST is never answered
  EXPECT_TRUE(refused.Done());

  Connection timed_out = Connection::ToGuest(kGuestCid, 1u << 30, 54, 65536);
  timed_out.TakeControl();
  timed_out.Reset("timeout");
  EXPECT_EQ(timed_out.TakeControl()->op, kOpRst);
  EXPECT_TRUE(timed_out.Done());
}

TEST(VsockConnection, ProtocolViolationsReset) {
  auto established = [] {
    Connection c = Connection::FromGuestRequest(kGuestCid, GuestHeader(kOpRequest, 5000, 52), 4096);
    c.OnHostConnected();
    c.TakeControl();
    return c;
  };
  {
    Connection c = Connection::ToGuest(kGuestCid, 1u << 30, 52, 4096);
    std::vector<uint8_t> data(10);
    c.OnGuestPacket(GuestHeader(kOpRw, 52, 1u << 30, 10), data.data());
    EXPECT_EQ(c.state(), Connection::State::kClosed) << "data before RESPONSE";
    EXPECT_EQ(c.TakeControl()->op, kOpRst);
  }
  {
    Connection c = established();
    c.OnGuestPacket(GuestHeader(kOpResponse, 5000, 52), nullptr);
    EXPECT_EQ(c.state(), Connection::State::kClosed) << "RESPONSE when established";
    EXPECT_NE(c.reset_reason().find("protocol violation"), std::string::npos);
  }
  {
    Connection c = established();
    Header h = GuestHeader(kOpCreditUpdate, 5000, 52);
    h.fwd_cnt = 1;  // acknowledges a byte we never sent
    c.OnGuestPacket(h, nullptr);
    EXPECT_EQ(c.state(), Connection::State::kClosed);
  }
  {
    Connection c = established();
    Header sd = GuestHeader(kOpShutdown, 5000, 52);
    sd.flags = kShutdownSend;
    c.OnGuestPacket(sd, nullptr);
    std::vector<uint8_t> data(1);
    c.OnGuestPacket(GuestHeader(kOpRw, 5000, 52, 1), data.data());
    EXPECT_EQ(c.state(), Connection::State::kClosed) << "data after SHUTDOWN(SEND)";
  }
}

TEST(VsockConnection, GuestCannotExceedOurBuffer) {
  Connection c = Connection::FromGuestRequest(kGuestCid, GuestHeader(kOpRequest, 5000, 52), 4096);
  c.OnHostConnected();
  c.TakeControl();
  std::vector<uint8_t> data(4096, 'x');
  c.OnGuestPacket(GuestHeader(kOpRw, 5000, 52, 3000), data.data());
  EXPECT_EQ(c.host_bound_size(), 3000u);
  c.ConsumeHostBound(1000);  // the host reader took some: 2000 buffered, 2096 free
  EXPECT_EQ(c.fwd_cnt(), 1000u);
  c.OnGuestPacket(GuestHeader(kOpRw, 5000, 52, 2096), data.data());
  EXPECT_EQ(c.state(), Connection::State::kEstablished);
  EXPECT_EQ(c.host_bound_size(), 4096u);
  c.OnGuestPacket(GuestHeader(kOpRw, 5000, 52, 1), data.data());
  EXPECT_EQ(c.state(), Connection::State::kClosed);
  EXPECT_NE(c.reset_reason().find("exceeds the credit"), std::string::npos);
  EXPECT_EQ(c.host_bound_size(), 0u);  // a reset connection delivers nothing more
}

TEST(VsockConnection, CreditUpdatesFollowTheHostReader) {
  Connection c = Connection::FromGuestRequest(kGuestCid, GuestHeader(kOpRequest, 5000, 52), 4096);
  c.OnHostConnected();
  c.TakeControl();
  std::vector<uint8_t> data(4096, 'x');
  c.OnGuestPacket(GuestHeader(kOpRw, 5000, 52, 4096), data.data());  // the guest used all credit
  EXPECT_FALSE(c.HasControl());
  c.ConsumeHostBound(512);
  EXPECT_FALSE(c.HasControl()) << "not worth an update yet";
  c.ConsumeHostBound(512);
  auto upd = c.TakeControl();  // a quarter of the buffer freed: tell the guest
  ASSERT_TRUE(upd.has_value());
  EXPECT_EQ(upd->op, kOpCreditUpdate);
  EXPECT_EQ(upd->fwd_cnt, 1024u);
  EXPECT_EQ(upd->buf_alloc, 4096u);
  EXPECT_FALSE(c.HasControl());
  // CREDIT_REQUEST forces an answer even with nothing new.
  c.OnGuestPacket(GuestHeader(kOpCreditRequest, 5000, 52), nullptr);
  upd = c.TakeControl();
  ASSERT_TRUE(upd.has_value());
  EXPECT_EQ(upd->op, kOpCreditUpdate);
  EXPECT_EQ(upd->fwd_cnt, 1024u);
}

// Host -> guest: 1 MiB through a guest that advertises only 3000 bytes of buffer and consumes at
// its own pace. The device side never has more in flight than the guest's credit.
TEST(VsockConnection, MegabyteToSmallPeerNeverExceedsCredit) {
  constexpr uint32_t kPeerBuf = 3000, kTotal = 1 << 20;
  Header req = GuestHeader(kOpRequest, 5000, 52);
  req.buf_alloc = kPeerBuf;
  Connection c = Connection::FromGuestRequest(kGuestCid, req, 65536);
  c.OnHostConnected();
  c.TakeControl();

  uint32_t sent = 0, guest_fwd = 0, guest_buffered = 0, stalls = 0, credit_requests = 0;
  uint32_t round = 0;
  while (guest_fwd < kTotal) {
    ASSERT_LT(++round, 100000u) << "no progress";
    // Device: send what the credit allows, in packets of at most 1000 (an rx buffer).
    while (sent < kTotal && c.PeerCredit() > 0) {
      uint32_t n = std::min({c.PeerCredit(), 1000u, kTotal - sent});
      Header h = c.TakeData(n);
      ASSERT_EQ(h.len, n);
      sent += n;
      guest_buffered += n;
      ASSERT_LE(guest_buffered, kPeerBuf) << "sent beyond the guest's buffer";
      ASSERT_LE(c.tx_cnt() - c.peer_fwd_cnt(), kPeerBuf);
    }
    if (c.PeerCredit() == 0 && sent < kTotal) stalls++;
    while (auto ctl = c.TakeControl()) credit_requests += ctl->op == kOpCreditRequest;
    // Guest: its reader takes a varying amount, then it advertises the new fwd_cnt.
    uint32_t take = std::min(guest_buffered, 1 + (round * 733) % 2000);
    guest_buffered -= take;
    guest_fwd += take;
    Header upd = GuestHeader(kOpCreditUpdate, 5000, 52);
    upd.buf_alloc = kPeerBuf;
    upd.fwd_cnt = guest_fwd;
    c.OnGuestPacket(upd, nullptr);
    ASSERT_EQ(c.state(), Connection::State::kEstablished);
  }
  EXPECT_EQ(sent, kTotal);
  EXPECT_EQ(c.tx_cnt(), kTotal);
  EXPECT_GT(stalls, 100u) << "the small buffer should have throttled the sender";
  EXPECT_GT(credit_requests, 0u);
}

TEST(VsockConnection, GuestShrinkingItsBufferStopsTheSender) {
  Header req = GuestHeader(kOpRequest, 5000, 52);
  req.buf_alloc = 10000;
  Connection c = Connection::FromGuestRequest(kGuestCid, req, 65536);
  c.OnHostConnected();
  c.TakeControl();
  c.TakeData(8000);
  Header upd = GuestHeader(kOpCreditUpdate, 5000, 52);
  upd.buf_alloc = 4000;  // now less than what is in flight: credit is 0, not negative
  c.OnGuestPacket(upd, nullptr);
  EXPECT_EQ(c.PeerCredit(), 0u);
  EXPECT_FALSE(c.WantsHostRead());
  EXPECT_EQ(c.TakeData(100).len, 0u);
}

TEST(VsockConnection, HalfCloseThenCleanDisconnect) {
  Connection c = Connection::FromGuestRequest(kGuestCid, GuestHeader(kOpRequest, 5000, 52), 4096);
  c.OnHostConnected();
  c.TakeControl();
  std::vector<uint8_t> data(100, 'y');
  c.OnGuestPacket(GuestHeader(kOpRw, 5000, 52, 100), data.data());
  Header sd = GuestHeader(kOpShutdown, 5000, 52);
  sd.flags = kShutdownSend;  // guest: shutdown(SHUT_WR)
  c.OnGuestPacket(sd, nullptr);
  EXPECT_FALSE(c.ShouldShutdownHostWrite()) << "data still buffered for the host";
  c.ConsumeHostBound(100);
  EXPECT_TRUE(c.ShouldShutdownHostWrite());
  c.OnHostWriteShutdown();
  EXPECT_FALSE(c.ShouldShutdownHostWrite());
  EXPECT_TRUE(c.WantsHostRead()) << "the other direction still flows";
  c.TakeData(10);
  c.OnHostEof();  // the host finished too: both directions are done
  EXPECT_EQ(c.state(), Connection::State::kClosing);
  auto shut = c.TakeControl();
  ASSERT_TRUE(shut.has_value());
  EXPECT_EQ(shut->op, kOpShutdown);
  EXPECT_EQ(shut->flags, kShutdownBoth);
  EXPECT_FALSE(c.HasControl());
  c.OnGuestPacket(GuestHeader(kOpRst, 5000, 52), nullptr);  // the guest completes the disconnect
  EXPECT_TRUE(c.Done());
}

TEST(VsockConnection, HostEofSendsShutdownSend) {
  Connection c = Connection::FromGuestRequest(kGuestCid, GuestHeader(kOpRequest, 5000, 52), 4096);
  c.OnHostConnected();
  c.TakeControl();
  c.OnHostEof();
  auto shut = c.TakeControl();
  ASSERT_TRUE(shut.has_value());
  EXPECT_EQ(shut->op, kOpShutdown);
  EXPECT_EQ(shut->flags, kShutdownSend);
  EXPECT_EQ(c.state(), Connection::State::kEstablished);
  EXPECT_EQ(c.PeerCredit(), 0u);  // nothing more to send
  // The guest closes: RST answers it.
  Header sd = GuestHeader(kOpShutdown, 5000, 52);
  sd.flags = kShutdownBoth;
  c.OnGuestPacket(sd, nullptr);
  EXPECT_EQ(c.TakeControl()->op, kOpRst);
  EXPECT_TRUE(c.Done());
}

TEST(VsockConnection, GuestCloseStillDeliversBufferedData) {
  Connection c = Connection::FromGuestRequest(kGuestCid, GuestHeader(kOpRequest, 5000, 52), 4096);
  c.OnHostConnected();
  c.TakeControl();
  std::vector<uint8_t> data(300, 'z');
  c.OnGuestPacket(GuestHeader(kOpRw, 5000, 52, 300), data.data());
  Header sd = GuestHeader(kOpShutdown, 5000, 52);
  sd.flags = kShutdownBoth;
  c.OnGuestPacket(sd, nullptr);
  EXPECT_EQ(c.state(), Connection::State::kClosed);
  EXPECT_EQ(c.TakeControl()->op, kOpRst);
  EXPECT_FALSE(c.Done()) << "300 bytes still go to the host";
  EXPECT_EQ(c.host_bound_size(), 300u);
  c.ConsumeHostBound(300);
  EXPECT_TRUE(c.Done());
}

TEST(VsockConnection, CountersWrapAround) {
  Header req = GuestHeader(kOpRequest, 5000, 52);
  req.buf_alloc = 4096;
  req.fwd_cnt = 0xfffff000;  // a guest socket that has already received almost 4 GiB
  Connection c = Connection::FromGuestRequest(kGuestCid, req, 4096);
  c.OnHostConnected();
  c.TakeControl();
  EXPECT_EQ(c.PeerCredit(), 4096u);
  c.TakeData(4096);
  EXPECT_EQ(c.tx_cnt(), 0u);  // wrapped
  EXPECT_EQ(c.PeerCredit(), 0u);
  Header upd = GuestHeader(kOpCreditUpdate, 5000, 52);
  upd.buf_alloc = 4096;
  upd.fwd_cnt = 0xfffffc00;  // 3 KiB of the 4 KiB consumed
  c.OnGuestPacket(upd, nullptr);
  EXPECT_EQ(c.PeerCredit(), 3072u);
  upd.fwd_cnt = 0;  // everything, across the wrap
  c.OnGuestPacket(upd, nullptr);
  EXPECT_EQ(c.state(), Connection::State::kEstablished);
  EXPECT_EQ(c.PeerCredit(), 4096u);
  upd.fwd_cnt = 1;  // one byte more than was ever sent
  c.OnGuestPacket(upd, nullptr);
  EXPECT_EQ(c.state(), Connection::State::kClosed);
}

// --- the muxer ----------------------------------------------------------------------------------

// A guest that offers only header-sized rx buffers while a connection has data for it: FillRx
// returns at once (it once looped forever there, re-queueing the connection it could not serve),
// and the data goes out in the next buffer that has room.
TEST(VsockMuxer, HeaderOnlyRxBufferWithDataPendingReturnsAndTheDataWaits) {
  char tmpl[] = "/tmp/stencil-muxer-test-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string uds = std::string(tmpl) + "/v.sock";
  int service = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s_1024", uds.c_str());
  ASSERT_EQ(bind(service, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ASSERT_EQ(listen(service, 4), 0);
  {
    EventLoop loop;
    MuxerOptions options;
    options.uds_path = uds;
    Muxer muxer(loop, kGuestCid, options, -1, [] {});
    muxer.OnGuestPacket(GuestHeader(kOpRequest, 5000, 1024), nullptr);
    int host = accept4(service, nullptr, nullptr, SOCK_CLOEXEC);
    ASSERT_GE(host, 0);
    for (int i = 0; i < 10; i++) loop.RunOnce(10);  // the connect completes
    std::vector<uint8_t> rx(kHeaderSize + 4096);
    DescriptorChain big{0, {}, {{rx.data(), static_cast<uint32_t>(rx.size())}}};
    ASSERT_GT(muxer.FillRx(big, RxPayloadCapacity(big)), 0u);
    EXPECT_EQ(DecodeHeader(rx.data()).op, kOpResponse);
    ASSERT_EQ(write(host, "data", 4), 4);
    for (int i = 0; i < 10 && !muxer.HasRxWork(); i++) loop.RunOnce(10);
    ASSERT_TRUE(muxer.HasRxWork());
    DescriptorChain header_only{0, {}, {{rx.data(), kHeaderSize}}};
    EXPECT_EQ(muxer.FillRx(header_only, RxPayloadCapacity(header_only)), 0u);
    EXPECT_TRUE(muxer.HasRxWork()) << "the data still waits for the guest";
    uint32_t n = muxer.FillRx(big, RxPayloadCapacity(big));
    ASSERT_EQ(n, kHeaderSize + 4);
    EXPECT_EQ(DecodeHeader(rx.data()).op, kOpRw);
    EXPECT_EQ(std::string(reinterpret_cast<char*>(rx.data() + kHeaderSize), 4), "data");
    close(host);
  }
  close(service);
  std::system((std::string("rm -rf ") + tmpl).c_str());
}
