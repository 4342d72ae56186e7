#include "destination.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "../arch/x86/mptable.h"
#include "../error.h"
#include "../memory.h"
#include "ram.h"
#include "stream.h"
#include "../vmm_thread.h"

namespace stencil {

namespace {

constexpr auto kHeaderTimeout = std::chrono::seconds(30);
// Between records the source may pause for a while (a slow round, a capped link).
constexpr auto kRecordTimeout = std::chrono::minutes(5);

bool LiveUnixSocket(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return false;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  return probe.valid() && connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

std::pair<std::string, std::string> SplitPath(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return {".", path};
  return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

}  // namespace

MigrationIncoming::MigrationIncoming(const MigrationEndpoint& at, IncomingOptions options, std::function<void(Event)> on_event)
    : listener_(at), options_(std::move(options)), on_event_(std::move(on_event)) {
  if (options_.memory_name.empty() || options_.memory_name.find('/') != std::string::npos)
    throw VmmError(ErrorCode::kInvalidArgument, "incoming RAM file name '" + options_.memory_name + "' is empty or contains '/'");
  stats_.status = MigrationStatus::kSetup;
}

MigrationIncoming::~MigrationIncoming() {
  Cancel();
  if (thread_.joinable()) thread_.join();
}

void MigrationIncoming::Start() { thread_ = StartVmmThread("migrate-in", ThreadRole::kMigration, [this] { Run(); }); }

void MigrationIncoming::Cancel() {
  cancel_.Cancel();
  std::lock_guard<std::mutex> lock(mu_);
  decided_cv_.notify_all();
}

ArrivingVm MigrationIncoming::TakeArriving() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!arriving_) throw VmmError(ErrorCode::kState, "no arriving VM to take (no stream was accepted, or it was taken or failed)");
  ArrivingVm out = std::move(*arriving_);
  arriving_.reset();
  return out;
}

ReceivedState MigrationIncoming::TakeState() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!received_) throw VmmError(ErrorCode::kState, "no received VM state to take (the stream is not complete, or it was taken)");
  ReceivedState out = std::move(*received_);
  received_.reset();
  return out;
}

void MigrationIncoming::Complete() {
  std::lock_guard<std::mutex> lock(mu_);
  if (decision_ == Decision::kNone) decision_ = Decision::kComplete;
  decided_cv_.notify_all();
}

void MigrationIncoming::Fail(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (decision_ == Decision::kNone) decision_ = Decision::kFail, fail_reason_ = reason;
  decided_cv_.notify_all();
}

IncomingStats MigrationIncoming::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void MigrationIncoming::Finish(MigrationStatus status, const std::string& error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.status = status;
    stats_.error = error;
    stats_.state_ready = false;
    arriving_.reset();  // RAM nobody took goes (a new RAM file is removed)
    received_.reset();
  }
  if (on_event_) on_event_(Event::kFinished);
}

std::string MigrationIncoming::CheckHeader(const StreamHeader& header, const VmDescription& d, bool* use_template) {
  const VmConfig& vm = d.config.vm;
  const RestoreOptions& r = options_.restore;
  if (vm.vcpus == 0 || vm.vcpus > x86::kMaxVcpus) return "the stream's VM has " + std::to_string(vm.vcpus) + " vCPUs";
  if (r.expect_vcpus && r.expect_vcpus != vm.vcpus)
    return "vCPU count differs: the stream's VM has " + std::to_string(vm.vcpus) + ", this destination was asked for " +
           std::to_string(r.expect_vcpus);
  if (r.expect_memory && r.expect_memory != vm.memory.size)
    return "memory size differs: the stream's VM has " + std::to_string(vm.memory.size) + " bytes, this destination was asked for " +
           std::to_string(r.expect_memory);
  for (const auto& disk : vm.disks)
    if (access(disk.path.c_str(), disk.read_only ? R_OK : R_OK | W_OK) != 0)
      return WithErrno("device missing: the virtio-blk disk " + disk.path + " is not usable here");
  for (const auto& share : vm.shares) {
    std::string path = share.host_path;
    for (const auto& [tag, override_path] : r.share_paths)
      if (tag == share.tag) path = override_path;
    struct stat st;
    if (stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      return "device missing: the directory " + path + " shared as '" + share.tag + "' does not exist here";
  }
  if (vm.vsock.guest_cid && r.vsock_uds_path.empty() && LiveUnixSocket(vm.vsock.uds_path))
    return "device vsock: its socket " + vm.vsock.uds_path +
           " is in use here (by the source?): give the destination its own vsock socket path";
  if (header.nic_wired && r.net_backend_fd < 0)
    return "device virtio-net: the VM's network interface has a tap at the source and this destination was given none";
  *use_template = false;
  if (header.has_template && options_.use_template) {
    struct stat st;
    if (stat(header.template_path.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) == vm.memory.size) {
      try {
        *use_template = TemplateContentHash(header.template_path) == header.template_sha256;
      } catch (const VmmError&) {
        *use_template = false;  // unreadable here: take every page instead
      }
    }
  }
  return "";
}

void MigrationIncoming::Run() {
  std::unique_ptr<MigrationChannel> channel;
  bool refused = false;  // the source was told why ('X') and went: no failure reply follows
  try {
    std::string peer;
    UniqueFd socket = listener_.Accept(cancel_, &peer);
    channel = std::make_unique<MigrationChannel>(std::move(socket), cancel_, peer);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.status = MigrationStatus::kActive;
      stats_.peer = peer;
    }
    channel->SetReadTimeout(kHeaderTimeout);
    StreamReader reader(*channel);
    StreamHeader header;
    VmDescription description;
    try {
      header = reader.Header();
      description = DecodeVmDescription(header.description, "the migration stream's VM description");
    } catch (const VmmError& e) {
      refused = true;
      SendReply(*channel, StreamReply::kRefuse, e.what());
      throw;
    }
    bool use_template = false;
    std::string refusal = CheckHeader(header, description, &use_template);
    if (!refusal.empty()) {
      refused = true;
      SendReply(*channel, StreamReply::kRefuse, refusal);
      throw VmmError(ErrorCode::kMigration, "refused the incoming VM: " + refusal);
    }

    MemoryOptions memory;
    memory.size = description.config.vm.memory.size;
    memory.backing = MemoryBacking::kTmpfsFile;
    if (use_template) {
      auto [dir, name] = SplitPath(header.template_path);
      memory.directory = dir, memory.name = name, memory.sharing = MemorySharing::kPrivateCopyOnWrite;
    } else {
      memory.directory = options_.memory_dir, memory.name = options_.memory_name, memory.sharing = MemorySharing::kShared;
    }
    // The VM's KVM shell with its RAM slots is made now, while the source still runs the guest:
    // creating vCPUs and registering slots (an SRCU grace period each) stays out of the downtime.
    VmShell shell = VmShell::Create(description.config.vm.vcpus, memory.size);
    memory.fixed_address = shell.memory.base();
    auto ram = std::make_shared<GuestMemory>(memory);
    shell.memory.Release();  // the RAM mapping now owns the reserved range
    SendReply(*channel, StreamReply::kAccept, "", kAcceptAnswersSync | (use_template ? kAcceptUsesTemplate : 0));
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.template_shared = use_template;
      arriving_ = ArrivingVm{description, std::move(shell), ram};
    }
    if (on_event_) on_event_(Event::kAccepted);

    channel->SetReadTimeout(kRecordTimeout);
    bool running = false;
    std::vector<uint8_t> state;
    std::string config;
    bool have_state = false;
    uint64_t pages = 0, zero_pages = 0;
    for (bool end = false; !end;) {
      StreamRecord record = reader.NextRecord();
      switch (record) {
        case StreamRecord::kRam:
        case StreamRecord::kZero: {
          if (have_state) throw VmmError(ErrorCode::kMigration, "migration stream: RAM after the VM state");
          uint64_t offset = 0;
          uint32_t count = 0;
          reader.RunHeader(ram->size(), &offset, &count);
          uint8_t* at = ram->AtOffset(offset, uint64_t{count} * kGuestPageSize);
          if (record == StreamRecord::kRam) {
            reader.ReadPages(at, count);
            pages += count;
          } else {
            // A new file's pages go back to holes; a template clone's become zero copies.
            if (use_template ||
                fallocate(ram->fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                          static_cast<off_t>(uint64_t{count} * kGuestPageSize)) != 0)
              std::memset(at, 0, uint64_t{count} * kGuestPageSize);
            zero_pages += count;
          }
          break;
        }
        case StreamRecord::kState:
          if (have_state) throw VmmError(ErrorCode::kMigration, "migration stream: a second VM state");
          reader.State(&running, &state, &config);
          have_state = true;
          break;
        case StreamRecord::kSync:
          if (have_state) throw VmmError(ErrorCode::kMigration, "migration stream: a sync after the VM state");
          SendReply(*channel, StreamReply::kSynced);
          break;
        case StreamRecord::kEnd:
          if (!have_state) throw VmmError(ErrorCode::kMigration, "migration stream: the end marker came before the VM state");
          reader.End();
          end = true;
          break;
      }
      std::lock_guard<std::mutex> lock(mu_);
      stats_.received = channel->bytes_read(), stats_.pages = pages, stats_.zero_pages = zero_pages;
      if (decision_ == Decision::kFail) throw VmmError(ErrorCode::kMigration, fail_reason_);
    }

    ram.reset();  // arriving_, or the VM built from it, holds it
    Snapshot snapshot = LoadSnapshot(state, config, "the migration stream's VM state", "the migration stream's VM config");
    if (RenderConfigJson(snapshot.config, snapshot.layout) != RenderConfigJson(description.config, description.layout))
      throw VmmError(ErrorCode::kMigration, "migration stream: the final VM state describes another VM than its header");
    {
      std::lock_guard<std::mutex> lock(mu_);
      received_ = ReceivedState{std::move(snapshot), running};
      stats_.state_ready = true;
      stats_.source_running = running;
    }
    if (on_event_) on_event_(Event::kReceived);

    std::unique_lock<std::mutex> lock(mu_);
    decided_cv_.wait(lock, [&] { return decision_ != Decision::kNone || cancel_.cancelled(); });
    Decision decision = decision_;
    std::string reason = decision == Decision::kFail ? fail_reason_ : "the destination was shut down before the VM started";
    lock.unlock();
    if (decision == Decision::kComplete) {
      SendReply(*channel, StreamReply::kDone);
      Finish(MigrationStatus::kCompleted, "");
    } else {
      try {
        SendReply(*channel, StreamReply::kFailed, reason);
      } catch (const VmmError&) {
        // the source is gone too
      }
      Finish(MigrationStatus::kFailed, reason);
    }
  } catch (const std::exception& e) {
    bool cancelled = cancel_.cancelled();
    if (channel && !cancelled && !refused) {
      try {
        SendReply(*channel, StreamReply::kFailed, e.what());
      } catch (const VmmError&) {
        // the source is gone: nobody to tell
      }
    }
    Finish(cancelled ? MigrationStatus::kCancelled : MigrationStatus::kFailed, cancelled ? "" : e.what());
  }
}

}  // namespace stencil
