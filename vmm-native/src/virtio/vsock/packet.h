// virtio-vsock packets (virtio 1.x, "Socket Device"): the 44-byte little-endian header, its
// checks, and moving packets in and out of descriptor chains. Everything here treats the header
// as hostile: lengths are checked against what the chain really holds before anything is copied.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "../queue.h"

namespace stencil::vsock {

constexpr uint32_t kHeaderSize = 44;
constexpr uint64_t kHostCid = 2;
constexpr uint16_t kTypeStream = 1;
constexpr uint32_t kMaxPayload = 64 * 1024;  // largest payload we accept or produce per packet
constexpr uint32_t kEventTransportReset = 0;
constexpr uint32_t kEventSize = 4;  // struct virtio_vsock_event { le32 id; }

enum Op : uint16_t {
  kOpInvalid = 0,
  kOpRequest = 1,
  kOpResponse = 2,
  kOpRst = 3,
  kOpShutdown = 4,
  kOpRw = 5,
  kOpCreditUpdate = 6,
  kOpCreditRequest = 7,
};

// SHUTDOWN flags: the sender will not receive (bit 0) / will not send (bit 1) any more.
constexpr uint32_t kShutdownRecv = 1;
constexpr uint32_t kShutdownSend = 2;
constexpr uint32_t kShutdownBoth = kShutdownRecv | kShutdownSend;

struct Header {
  uint64_t src_cid = 0;
  uint64_t dst_cid = 0;
  uint32_t src_port = 0;
  uint32_t dst_port = 0;
  uint32_t len = 0;
  uint16_t type = kTypeStream;
  uint16_t op = kOpInvalid;
  uint32_t flags = 0;
  uint32_t buf_alloc = 0;
  uint32_t fwd_cnt = 0;
};

// Little-endian wire format, independent of host byte order and struct padding.
void EncodeHeader(const Header& h, uint8_t out[kHeaderSize]);
Header DecodeHeader(const uint8_t in[kHeaderSize]);

const char* OpName(uint16_t op);
std::string Describe(const Header& h);  // "REQUEST 3:1024 -> 2:52 len 0 ..." for logs

// What to do with a packet the guest put on the tx queue.
enum class TxVerdict {
  kAccept,    // well formed: hand it to the connection layer
  kReplyRst,  // malformed or unsupported, but addressed well enough to answer with RST
  kDrop,      // not even that (too short, spoofed source, or itself an RST): drop silently
};
struct TxCheck {
  TxVerdict verdict;
  std::string why;  // empty for kAccept
};

// Checks a header read from the tx queue. `payload_available` is how many readable bytes the
// chain holds after the header.
TxCheck CheckTxHeader(const Header& h, uint64_t guest_cid, uint64_t payload_available);

// The header at the start of a tx chain's readable buffers, or nullopt if the chain holds fewer
// than kHeaderSize readable bytes.
std::optional<Header> ReadHeader(const DescriptorChain& chain);

// Bytes of payload an rx chain can take after the header (0 if it cannot even hold a header),
// capped at kMaxPayload.
uint32_t RxPayloadCapacity(const DescriptorChain& chain);

// Writes header + payload into an rx chain's writable buffers. The caller has checked the size
// against RxPayloadCapacity. Returns the bytes written (the used length to report).
uint32_t WritePacket(const DescriptorChain& chain, const Header& h, const uint8_t* payload);

// A reply addressed back to the sender of `h` (ports and CIDs swapped), with len 0.
Header ReplyTo(const Header& h, uint16_t op);

}  // namespace stencil::vsock
