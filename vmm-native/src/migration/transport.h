// Where a live migration goes: `tcp:HOST:PORT` or `unix:PATH`, connected or listened on with
// every blocking step cancellable (migrate_cancel, a destination shutting down) and the
// source's sending rate capped (migrate-set-parameters max-bandwidth).
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "../fd.h"

namespace stencil {

struct MigrationEndpoint {
  enum class Kind { kTcp, kUnix } kind = Kind::kTcp;
  std::string host;  // tcp
  uint16_t port = 0;
  std::string path;  // unix
  std::string Describe() const;  // "tcp:127.0.0.1:4446", "unix:/run/x.sock"
};

// Throws VmmError(kInvalidArgument) naming what is wrong with `uri`.
MigrationEndpoint ParseMigrationEndpoint(const std::string& uri);

// A flag plus an eventfd, so a thread blocked in poll() wakes up the moment it is set.
class Cancellation {
 public:
  Cancellation();
  void Cancel();
  bool cancelled() const { return cancelled_.load(); }
  int fd() const { return event_.get(); }
  void ThrowIfCancelled() const;  // VmmError(kCancelled)

 private:
  UniqueFd event_;
  std::atomic<bool> cancelled_{false};
};

// One connected socket carrying a migration. Reads and writes block (in poll) until done, the
// peer goes away (VmmError(kMigration) naming what was being read or written), the deadline set
// for reads passes, or the cancellation fires (VmmError(kCancelled)).
class MigrationChannel {
 public:
  MigrationChannel(UniqueFd socket, const Cancellation& cancel, std::string peer);
  void Write(const void* data, size_t len);
  void Read(void* out, size_t len, const char* what);
  // 0: unlimited. Writes then pace themselves to average at most this many bytes per second.
  void SetBandwidthLimit(uint64_t bytes_per_second);
  void SetReadTimeout(std::chrono::milliseconds timeout) { read_timeout_ = timeout; }
  uint64_t bytes_written() const { return written_; }
  uint64_t bytes_read() const { return read_; }
  const std::string& peer() const { return peer_; }
  void ShutdownWrite();

 private:
  void Wait(short events, const char* what, std::chrono::milliseconds timeout);
  void Pace(size_t len);

  UniqueFd socket_;
  const Cancellation& cancel_;
  std::string peer_;
  static constexpr size_t kReadBufferBytes = 256 << 10;
  std::vector<uint8_t> read_buffer_;  // received, not yet read: [read_pos_, read_end_)
  size_t read_pos_ = 0, read_end_ = 0;
  uint64_t written_ = 0, read_ = 0;  // bytes handed to Write / returned by Read
  uint64_t limit_ = 0;
  uint64_t paced_bytes_ = 0;
  std::chrono::steady_clock::time_point paced_since_;
  std::chrono::milliseconds read_timeout_{std::chrono::minutes(10)};
};

// Connects to a destination that is listening, retrying a refused connection until `timeout`
// (the destination may still be starting). Throws VmmError(kMigration) naming the endpoint.
UniqueFd ConnectMigration(const MigrationEndpoint& endpoint, const Cancellation& cancel, std::chrono::milliseconds timeout);

// A listening socket for an incoming migration; a unix socket file is created 0600 and removed
// on destruction. Throws VmmError naming the endpoint (address in use, bad directory, ...).
class MigrationListener {
 public:
  explicit MigrationListener(const MigrationEndpoint& endpoint);
  ~MigrationListener();
  MigrationListener(const MigrationListener&) = delete;
  MigrationListener& operator=(const MigrationListener&) = delete;
  // Waits for the source. Throws VmmError(kCancelled) if cancelled first. `peer` gets its name.
  UniqueFd Accept(const Cancellation& cancel, std::string* peer);
  const MigrationEndpoint& endpoint() const { return endpoint_; }
  uint16_t port() const { return endpoint_.port; }  // tcp: the bound port (useful with port 0)

 private:
  MigrationEndpoint endpoint_;
  UniqueFd socket_;
};

}  // namespace stencil
