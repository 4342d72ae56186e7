#include "stream.h"

#include <cstring>

#include "../error.h"
#include "../memory.h"

namespace stencil {

namespace {

constexpr uint32_t kMaxDescription = 1 << 20;
constexpr uint32_t kMaxState = 64 << 20;
constexpr uint32_t kMaxConfig = 1 << 20;
constexpr uint32_t kMaxText = 4096;

VmmError Corrupt(const std::string& what) { return VmmError(ErrorCode::kMigration, "migration stream: " + what); }

}  // namespace

void StreamWriter::Put(const void* data, size_t len) {
  // Fields and pages gather in one buffer: a send per field would cost a syscall each, thousands
  // in a round of scattered pages, and the final round's are all downtime. The buffer is also
  // the one copy of a page that is both hashed and sent (the guest may be writing the original).
  const auto* p = static_cast<const uint8_t*>(data);
  out_.insert(out_.end(), p, p + len);
  if (out_.size() >= kFlushBytes) Flush();
}

void StreamWriter::Flush() {
  if (out_.empty()) return;
  checksum_.Update(out_.data(), out_.size());
  channel_.Write(out_.data(), out_.size());
  out_.clear();
}

void StreamWriter::Header(const StreamHeader& h) {
  Put(kLiveMigrationMagic, sizeof kLiveMigrationMagic);
  PutValue<uint32_t>(h.version);
  PutValue<uint32_t>(static_cast<uint32_t>(h.description.size()));
  Put(h.description.data(), h.description.size());
  PutValue<uint8_t>((h.has_template ? kHeaderHasTemplate : 0) | (h.nic_wired ? kHeaderNicWired : 0));
  if (h.has_template) {
    for (const std::string* s : {&h.template_path, &h.template_sha256}) {
      PutValue<uint32_t>(static_cast<uint32_t>(s->size()));
      Put(s->data(), s->size());
    }
  }
  Flush();  // the destination answers the header
}

void StreamWriter::Ram(uint64_t offset, const uint8_t* pages, uint32_t count) {
  PutValue<uint8_t>(static_cast<uint8_t>(StreamRecord::kRam));
  PutValue<uint64_t>(offset);
  PutValue<uint32_t>(count);
  Put(pages, static_cast<size_t>(count) * kGuestPageSize);
}

void StreamWriter::Zero(uint64_t offset, uint32_t count) {
  PutValue<uint8_t>(static_cast<uint8_t>(StreamRecord::kZero));
  PutValue<uint64_t>(offset);
  PutValue<uint32_t>(count);
}

void StreamWriter::State(bool running, const std::vector<uint8_t>& state, const std::string& config) {
  PutValue<uint8_t>(static_cast<uint8_t>(StreamRecord::kState));
  PutValue<uint8_t>(running ? 1 : 0);
  PutValue<uint32_t>(static_cast<uint32_t>(state.size()));
  Put(state.data(), state.size());
  PutValue<uint32_t>(static_cast<uint32_t>(config.size()));
  Put(config.data(), config.size());
}

void StreamWriter::Sync() {
  PutValue<uint8_t>(static_cast<uint8_t>(StreamRecord::kSync));
  Flush();  // the destination answers it
}

void StreamWriter::End() {
  PutValue<uint8_t>(static_cast<uint8_t>(StreamRecord::kEnd));
  Flush();
  const uint32_t crc = checksum_.value();  // little-endian, as every integer here
  channel_.Write(&crc, sizeof crc);
}

void StreamReader::Get(void* out, size_t len, const char* what) {
  channel_.Read(out, len, what);
  checksum_.Update(out, len);
}

StreamHeader StreamReader::Header() {
  char magic[sizeof kLiveMigrationMagic];
  Get(magic, sizeof magic, "the stream's magic");
  if (std::memcmp(magic, kLiveMigrationMagic, sizeof magic) != 0) throw Corrupt("not a Stencil live migration stream (bad magic)");
  StreamHeader h;
  h.version = GetValue<uint32_t>("the stream version");
  if (h.version > kLiveMigrationVersion)
    throw Corrupt("version " + std::to_string(h.version) + " is too new: this Stencil reads version " +
                  std::to_string(kLiveMigrationVersion));
  if (h.version != kLiveMigrationVersion)
    throw Corrupt("version " + std::to_string(h.version) + " is not supported (this Stencil reads version " +
                  std::to_string(kLiveMigrationVersion) + ")");
  uint32_t len = GetValue<uint32_t>("the VM description's length");
  if (len == 0 || len > kMaxDescription) throw Corrupt("VM description of " + std::to_string(len) + " bytes (limit " + std::to_string(kMaxDescription) + ")");
  h.description.resize(len);
  Get(h.description.data(), len, "the VM description");
  uint8_t flags = GetValue<uint8_t>("the header flags");
  if (flags & ~(kHeaderHasTemplate | kHeaderNicWired)) throw Corrupt("header flags " + std::to_string(flags) + " (unknown bits set)");
  h.has_template = flags & kHeaderHasTemplate;
  h.nic_wired = flags & kHeaderNicWired;
  if (h.has_template) {
    for (std::string* s : {&h.template_path, &h.template_sha256}) {
      uint32_t n = GetValue<uint32_t>("the template identity's length");
      if (n == 0 || n > kMaxText) throw Corrupt("template identity field of " + std::to_string(n) + " bytes");
      s->resize(n);
      Get(s->data(), n, "the template identity");
    }
    if (h.template_sha256.size() != 64 || h.template_sha256.find_first_not_of("0123456789abcdef") != std::string::npos)
      throw Corrupt("template hash '" + h.template_sha256.substr(0, 80) + "' is not a SHA-256 in hex");
  }
  return h;
}

StreamRecord StreamReader::NextRecord() {
  uint8_t type = GetValue<uint8_t>("the next record's type");
  switch (static_cast<StreamRecord>(type)) {
    case StreamRecord::kRam:
    case StreamRecord::kZero:
    case StreamRecord::kState:
    case StreamRecord::kSync:
    case StreamRecord::kEnd:
      records_++;
      return static_cast<StreamRecord>(type);
  }
  throw Corrupt("unknown record type " + Hex(type) + " after " + std::to_string(records_) + " records (" +
                std::to_string(channel_.bytes_read()) + " bytes in)");
}

void StreamReader::RunHeader(uint64_t memory_size, uint64_t* offset, uint32_t* count) {
  *offset = GetValue<uint64_t>("a page run's offset");
  *count = GetValue<uint32_t>("a page run's length");
  if (*count == 0 || *count > kMaxPagesPerRecord) throw Corrupt("page run of " + std::to_string(*count) + " pages (1.." + std::to_string(kMaxPagesPerRecord) + ")");
  if (*offset % kGuestPageSize || *offset > memory_size || uint64_t{*count} * kGuestPageSize > memory_size - *offset)
    throw Corrupt("page run at " + Hex(*offset) + " of " + std::to_string(*count) + " pages lies outside the guest's " +
                  std::to_string(memory_size) + " bytes of RAM");
}

void StreamReader::ReadPages(uint8_t* out, uint32_t count) { Get(out, static_cast<size_t>(count) * kGuestPageSize, "guest RAM pages"); }

void StreamReader::State(bool* running, std::vector<uint8_t>* state, std::string* config) {
  uint8_t run = GetValue<uint8_t>("the run state");
  if (run > 1) throw Corrupt("run state " + std::to_string(run) + " (0 paused, 1 running)");
  *running = run == 1;
  uint32_t n = GetValue<uint32_t>("the VM state's length");
  if (n == 0 || n > kMaxState) throw Corrupt("VM state of " + std::to_string(n) + " bytes (limit " + std::to_string(kMaxState) + ")");
  state->resize(n);
  Get(state->data(), n, "the VM state");
  n = GetValue<uint32_t>("the VM config's length");
  if (n == 0 || n > kMaxConfig) throw Corrupt("VM config of " + std::to_string(n) + " bytes (limit " + std::to_string(kMaxConfig) + ")");
  config->resize(n);
  Get(config->data(), n, "the VM config");
}

void StreamReader::End() {
  const uint32_t expected = checksum_.value();
  uint32_t got = 0;
  channel_.Read(&got, sizeof got, "the end marker's checksum");
  if (got != expected)
    throw Corrupt("checksum mismatch at the end marker: the stream was corrupted in transit (" +
                  std::to_string(channel_.bytes_read()) + " bytes)");
}

void SendReply(MigrationChannel& channel, StreamReply reply, const std::string& reason, uint8_t flags) {
  std::vector<uint8_t> out{static_cast<uint8_t>(reply)};
  if (reply == StreamReply::kAccept) out.push_back(flags);
  if (reply == StreamReply::kRefuse || reply == StreamReply::kFailed) {
    std::string text = reason.substr(0, kMaxText);
    uint32_t n = static_cast<uint32_t>(text.size());
    out.insert(out.end(), reinterpret_cast<uint8_t*>(&n), reinterpret_cast<uint8_t*>(&n) + 4);
    out.insert(out.end(), text.begin(), text.end());
  }
  channel.Write(out.data(), out.size());
}

void ReadReply(MigrationChannel& channel, const char* stage, StreamReply expected, uint8_t* flags) {
  uint8_t type = 0;
  channel.Read(&type, 1, stage);
  if (type == static_cast<uint8_t>(StreamReply::kRefuse) || type == static_cast<uint8_t>(StreamReply::kFailed)) {
    uint32_t n = 0;
    channel.Read(&n, 4, stage);
    if (n > kMaxText) throw VmmError(ErrorCode::kMigration, "the destination's reply has a reason of " + std::to_string(n) + " bytes");
    std::string reason(n, '\0');
    channel.Read(reason.data(), n, stage);
    throw VmmError(ErrorCode::kMigration, std::string(type == 'X' ? "the destination refused the migration: "
                                                                  : "the destination failed: ") + reason);
  }
  if (type != static_cast<uint8_t>(expected))
    throw VmmError(ErrorCode::kMigration, std::string("unexpected reply ") + Hex(type) + " from the destination while waiting for " + stage +
                                              " (expected '" + static_cast<char>(expected) + "')");
  if (expected == StreamReply::kAccept) {
    uint8_t f = 0;
    channel.Read(&f, 1, stage);
    if (flags) *flags = f;
  }
}

std::string WaitingFailureReply(MigrationChannel& channel) {
  channel.SetReadTimeout(std::chrono::milliseconds(500));
  try {
    ReadReply(channel, "the destination's reason for closing", StreamReply::kDone);
  } catch (const VmmError& e) {
    std::string message = e.what();
    if (message.rfind("the destination failed: ", 0) == 0 || message.rfind("the destination refused", 0) == 0) return message;
  }
  return "";
}

}  // namespace stencil
