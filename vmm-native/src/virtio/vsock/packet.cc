#include "packet.h"

#include <algorithm>
#include <cstdio>

#include "../../error.h"

namespace stencil::vsock {

namespace {

// Field offsets of struct virtio_vsock_hdr (packed, little-endian).
enum : uint32_t {
  kOffSrcCid = 0, kOffDstCid = 8, kOffSrcPort = 16, kOffDstPort = 20, kOffLen = 24,
  kOffType = 28, kOffOp = 30, kOffFlags = 32, kOffBufAlloc = 36, kOffFwdCnt = 40,
};

template <typename T>
void PutLe(uint8_t* p, T v) {
  for (size_t i = 0; i < sizeof(T); i++) p[i] = static_cast<uint8_t>(uint64_t(v) >> (8 * i));
}

template <typename T>
T GetLe(const uint8_t* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); i++) v |= uint64_t(p[i]) << (8 * i);
  return static_cast<T>(v);
}

}  // namespace

void EncodeHeader(const Header& h, uint8_t out[kHeaderSize]) {
  PutLe<uint64_t>(out + kOffSrcCid, h.src_cid);
  PutLe<uint64_t>(out + kOffDstCid, h.dst_cid);
  PutLe<uint32_t>(out + kOffSrcPort, h.src_port);
  PutLe<uint32_t>(out + kOffDstPort, h.dst_port);
  PutLe<uint32_t>(out + kOffLen, h.len);
  PutLe<uint16_t>(out + kOffType, h.type);
  PutLe<uint16_t>(out + kOffOp, h.op);
  PutLe<uint32_t>(out + kOffFlags, h.flags);
  PutLe<uint32_t>(out + kOffBufAlloc, h.buf_alloc);
  PutLe<uint32_t>(out + kOffFwdCnt, h.fwd_cnt);
}

Header DecodeHeader(const uint8_t in[kHeaderSize]) {
  Header h;
  h.src_cid = GetLe<uint64_t>(in + kOffSrcCid);
  h.dst_cid = GetLe<uint64_t>(in + kOffDstCid);
  h.src_port = GetLe<uint32_t>(in + kOffSrcPort);
  h.dst_port = GetLe<uint32_t>(in + kOffDstPort);
  h.len = GetLe<uint32_t>(in + kOffLen);
  h.type = GetLe<uint16_t>(in + kOffType);
  h.op = GetLe<uint16_t>(in + kOffOp);
  h.flags = GetLe<uint32_t>(in + kOffFlags);
  h.buf_alloc = GetLe<uint32_t>(in + kOffBufAlloc);
  h.fwd_cnt = GetLe<uint32_t>(in + kOffFwdCnt);
  return h;
}

const char* OpName(uint16_t op) {
  switch (op) {
    case kOpRequest: return "REQUEST";
    case kOpResponse: return "RESPONSE";
    case kOpRst: return "RST";
    case kOpShutdown: return "SHUTDOWN";
    case kOpRw: return "RW";
    case kOpCreditUpdate: return "CREDIT_UPDATE";
    case kOpCreditRequest: return "CREDIT_REQUEST";
    default: return "INVALID";
  }
}

std::string Describe(const Header& h) {
  char buf[192];
  snprintf(buf, sizeof buf, "%s(op %u) %llu:%u -> %llu:%u type %u len %u flags 0x%x buf_alloc %u fwd_cnt %u",
           OpName(h.op), h.op, static_cast<unsigned long long>(h.src_cid), h.src_port,
           static_cast<unsigned long long>(h.dst_cid), h.dst_port, h.type, h.len, h.flags, h.buf_alloc, h.fwd_cnt);
  return buf;
}

TxCheck CheckTxHeader(const Header& h, uint64_t guest_cid, uint64_t payload_available) {
  // The guest must use its own CID as the source; anything else is spoofed, and answering it
  // would address a packet to a context that does not exist. An RST is never answered.
  if (h.src_cid != guest_cid)
    return {TxVerdict::kDrop, "source CID " + std::to_string(h.src_cid) + " is not the guest's " + std::to_string(guest_cid)};
  if (h.op == kOpRst) {
    if (h.len != 0) return {TxVerdict::kDrop, "RST carries a payload"};
    return {TxVerdict::kAccept, ""};
  }
  if (h.dst_cid != kHostCid)
    return {TxVerdict::kReplyRst, "destination CID " + std::to_string(h.dst_cid) + " is not the host (2)"};
  if (h.type != kTypeStream) return {TxVerdict::kReplyRst, "socket type " + std::to_string(h.type) + " is not STREAM"};
  if (h.op == kOpInvalid || h.op > kOpCreditRequest)
    return {TxVerdict::kReplyRst, "unknown op " + std::to_string(h.op)};
  if (h.op != kOpRw && h.len != 0)
    return {TxVerdict::kReplyRst, std::string(OpName(h.op)) + " carries a payload of " + std::to_string(h.len)};
  if (h.len > kMaxPayload)
    return {TxVerdict::kReplyRst, "payload length " + std::to_string(h.len) + " exceeds " + std::to_string(kMaxPayload)};
  if (h.len > payload_available)
    return {TxVerdict::kReplyRst, "payload length " + std::to_string(h.len) + " but the chain holds only " +
                                      std::to_string(payload_available) + " bytes after the header"};
  if (h.op == kOpShutdown && (h.flags & ~kShutdownBoth))
    return {TxVerdict::kReplyRst, "unknown SHUTDOWN flags " + Hex(h.flags)};
  return {TxVerdict::kAccept, ""};
}

std::optional<Header> ReadHeader(const DescriptorChain& chain) {
  uint8_t raw[kHeaderSize];
  if (chain.CopyFromReadable(raw, kHeaderSize) != kHeaderSize) return std::nullopt;
  return DecodeHeader(raw);
}

uint32_t RxPayloadCapacity(const DescriptorChain& chain) {
  uint64_t total = chain.writable_bytes();
  if (total < kHeaderSize) return 0;
  return static_cast<uint32_t>(std::min<uint64_t>(total - kHeaderSize, kMaxPayload));
}

uint32_t WritePacket(const DescriptorChain& chain, const Header& h, const uint8_t* payload) {
  uint8_t raw[kHeaderSize];
  EncodeHeader(h, raw);
  uint64_t n = chain.CopyToWritable(raw, kHeaderSize);
  if (h.len && payload) n += chain.CopyToWritable(payload, h.len, kHeaderSize);
  return static_cast<uint32_t>(n);
}

Header ReplyTo(const Header& h, uint16_t op) {
  Header r;
  r.src_cid = h.dst_cid;
  r.dst_cid = h.src_cid;
  r.src_port = h.dst_port;
  r.dst_port = h.src_port;
  r.type = kTypeStream;
  r.op = op;
  return r;
}

}  // namespace stencil::vsock
