// The live migration stream (version 2). Source to destination:
//
//   "STNCLIVE"  u32 version
//   header:     u32 length + the VM's description (snapshot.h: configuration + device layout),
//               u8 template flag [+ template RAM file path + its content SHA-256, hex]
//   records:    'R' u64 RAM offset, u32 pages, the pages          (guest RAM, 4 KiB pages)
//               'Z' u64 RAM offset, u32 pages                     (pages that are all zero)
//               'S' u8 run state (1 running), u32 + state, u32 + config   (snapshot.h bytes)
//               'Y'                                               (sync: only to a destination
//                                                                  that accepted with bit 1)
//               'E' u32 CRC-32C of every byte before it (checksum.h)
//
// Destination to source: after the header 'A' u8 flags (bit 0: the destination starts from the
// same template, so pages a clone never wrote are not sent; bit 1: it answers sync records) or
// 'X' u32 + reason (refused); after each 'Y', 'Y' once it has consumed every byte before it;
// after 'E' 'D' (the VM runs on the destination: the source may go) or 'F' u32 + reason.
// A sync closes each pre-copy round: the source then knows the round arrived (its bandwidth
// figure includes the drain of the socket buffers, megabytes on TCP) and pauses the guest with
// nothing queued ahead of the last pages.
// All integers little-endian. Every length is bounded before anything is allocated.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "checksum.h"
#include "transport.h"

namespace stencil {

constexpr char kLiveMigrationMagic[8] = {'S', 'T', 'N', 'C', 'L', 'I', 'V', 'E'};
constexpr uint32_t kLiveMigrationVersion = 2;  // 1: the end marker carried a SHA-256
constexpr uint32_t kMaxPagesPerRecord = 256;

enum class StreamRecord : uint8_t { kRam = 'R', kZero = 'Z', kState = 'S', kSync = 'Y', kEnd = 'E' };
enum class StreamReply : uint8_t { kAccept = 'A', kRefuse = 'X', kSynced = 'Y', kDone = 'D', kFailed = 'F' };
// Accept flags.
constexpr uint8_t kAcceptUsesTemplate = 1;
constexpr uint8_t kAcceptAnswersSync = 2;
// Header flags.
constexpr uint8_t kHeaderHasTemplate = 1;
constexpr uint8_t kHeaderNicWired = 2;  // the source's NIC has a backend: the destination must give it one

struct StreamHeader {
  uint32_t version = kLiveMigrationVersion;
  std::vector<uint8_t> description;  // EncodeVmDescription
  bool nic_wired = false;
  bool has_template = false;
  std::string template_path;    // a hint where the destination may find it ...
  std::string template_sha256;  // ... and what its content must hash to
};

// Sends records, hashing every byte for the end marker.
class StreamWriter {
 public:
  explicit StreamWriter(MigrationChannel& channel) : channel_(channel) {}
  void Header(const StreamHeader& header);
  void Ram(uint64_t offset, const uint8_t* pages, uint32_t count);
  void Zero(uint64_t offset, uint32_t count);
  void State(bool running, const std::vector<uint8_t>& state, const std::string& config);
  void Sync();
  void End();
  // Sends what is buffered (Header, Sync and End do, as the destination answers them).
  void Flush();

 private:
  static constexpr size_t kFlushBytes = 256 << 10;
  void Put(const void* data, size_t len);
  template <typename T>
  void PutValue(T v) { Put(&v, sizeof v); }
  MigrationChannel& channel_;
  StreamChecksum checksum_;
  std::vector<uint8_t> out_;  // not yet hashed or sent
};

// Reads what StreamWriter sent. Throws VmmError(kMigration) naming what is wrong: not a Stencil
// stream, a version this build does not read, an unknown record, a bound exceeded, a checksum
// that does not match, a stream cut short.
class StreamReader {
 public:
  explicit StreamReader(MigrationChannel& channel) : channel_(channel) {}
  StreamHeader Header();
  StreamRecord NextRecord();
  // After kRam/kZero: where and how many pages. Then for kRam, ReadPages into the destination.
  void RunHeader(uint64_t memory_size, uint64_t* offset, uint32_t* count);
  void ReadPages(uint8_t* out, uint32_t count);
  void State(bool* running, std::vector<uint8_t>* state, std::string* config);
  void End();  // checks the digest

 private:
  void Get(void* out, size_t len, const char* what);
  template <typename T>
  T GetValue(const char* what) {
    T v;
    Get(&v, sizeof v, what);
    return v;
  }
  MigrationChannel& channel_;
  StreamChecksum checksum_;
  uint64_t records_ = 0;
};

// The replies: one byte, and a reason for a refusal or failure.
void SendReply(MigrationChannel& channel, StreamReply reply, const std::string& reason = "", uint8_t flags = 0);
// Reads the reply `expected` (the accept flags into *flags); a refusal or failure becomes
// VmmError(kMigration) carrying the peer's reason, any other reply a protocol error.
void ReadReply(MigrationChannel& channel, const char* stage, StreamReply expected, uint8_t* flags = nullptr);
// After a send failed: the failure a destination that gave up mid-stream sent before closing
// ("the destination failed: ..."), or "" when none is waiting.
std::string WaitingFailureReply(MigrationChannel& channel);

}  // namespace stencil
