#include "source.h"

#include <memory>

#include "../error.h"
#include "../memory.h"
#include "../snapshot/snapshot.h"
#include "../vm.h"
#include "ram.h"
#include "stream.h"
#include "../vmm_thread.h"

namespace stencil {

namespace {

using Clock = std::chrono::steady_clock;

int64_t MsSince(Clock::time_point t) { return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count(); }
int64_t UsBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::microseconds>(to - from).count();
}

constexpr auto kConnectTimeout = std::chrono::seconds(3);  // a destination still starting
constexpr auto kPauseTimeout = std::chrono::seconds(10);
constexpr auto kReplyTimeout = std::chrono::seconds(60);
// Rounds allowed on top of max_rounds once the throttle is at its highest.
constexpr uint32_t kRoundsAtFullThrottle = 20;

}  // namespace

const char* MigrationStatusName(MigrationStatus s) {
  switch (s) {
    case MigrationStatus::kNone: return "none";
    case MigrationStatus::kSetup: return "setup";
    case MigrationStatus::kActive: return "active";
    case MigrationStatus::kCompleted: return "completed";
    case MigrationStatus::kFailed: return "failed";
    case MigrationStatus::kCancelled: return "cancelled";
  }
  return "unknown";
}

MigrationSource::MigrationSource(Vm& vm, MigrationEndpoint to, MigrationParameters params,
                                 std::function<void(MigrationStatus)> on_status)
    : vm_(vm),
      to_(std::move(to)),
      params_(params),
      on_status_(std::move(on_status)),
      downtime_limit_ms_(params.downtime_limit.count()),
      max_bandwidth_(params.max_bandwidth) {
  stats_.ram_total = vm.memory().size();
}

MigrationSource::~MigrationSource() {
  cancel_.Cancel();
  if (thread_.joinable()) thread_.join();
}

void MigrationSource::Start() {
  started_ = Clock::now();
  SetStatus(MigrationStatus::kSetup);
  thread_ = StartVmmThread("migrate-out", ThreadRole::kMigration, [this] { Run(); });
}

bool MigrationSource::Cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  if (committing_) return false;
  cancel_.Cancel();
  return true;
}

void MigrationSource::SetLimits(std::chrono::milliseconds downtime_limit, uint64_t max_bandwidth) {
  downtime_limit_ms_ = downtime_limit.count();
  max_bandwidth_ = max_bandwidth;
}

MigrationStats MigrationSource::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  MigrationStats s = stats_;
  if (s.status == MigrationStatus::kSetup || s.status == MigrationStatus::kActive) s.total_time_ms = MsSince(started_);
  return s;
}

bool MigrationSource::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_.status == MigrationStatus::kCompleted || stats_.status == MigrationStatus::kFailed ||
         stats_.status == MigrationStatus::kCancelled;
}

void MigrationSource::SetStatus(MigrationStatus status, const std::string& error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.status = status;
    stats_.error = error;
    if (status == MigrationStatus::kCompleted || status == MigrationStatus::kFailed || status == MigrationStatus::kCancelled)
      stats_.total_time_ms = MsSince(started_);
  }
  if (on_status_) on_status_(status);
}

void MigrationSource::Run() {
  bool dirty_log = false, paused_by_us = false;
  std::unique_ptr<MigrationChannel> connected;
  try {
    UniqueFd socket = ConnectMigration(to_, cancel_, kConnectTimeout);
    connected = std::make_unique<MigrationChannel>(std::move(socket), cancel_, to_.Describe());
    MigrationChannel& channel = *connected;
    channel.SetReadTimeout(kReplyTimeout);
    StreamWriter writer(channel);

    StreamHeader header;
    header.description = EncodeVmDescription(vm_.Describe());
    header.nic_wired = vm_.nic_wired();
    const GuestMemory& memory = vm_.memory();
    if (memory.copy_on_write()) {
      header.has_template = true;
      header.template_path = memory.path();
      header.template_sha256 = TemplateContentHash(memory.path());
    }
    writer.Header(header);
    uint8_t flags = 0;
    ReadReply(channel, "the destination's answer to the stream header", StreamReply::kAccept, &flags);
    const bool sync = flags & kAcceptAnswersSync;
    const RamBaseline baseline = (flags & kAcceptUsesTemplate) && header.has_template ? RamBaseline::kTemplate : RamBaseline::kZero;

    vm_.StartDirtyLog();
    dirty_log = true;
    Update([&](MigrationStats& s) { s.setup_time_ms = MsSince(started_), s.template_shared = baseline == RamBaseline::kTemplate; });
    SetStatus(MigrationStatus::kActive);

    // Sends a bitmap's pages, measuring the link while the cap (which may change) paces it. A
    // pre-copy round ends with a sync: the time until the destination has it all is the link's
    // real speed, and the pause that may follow finds no earlier round still queued in the
    // socket buffers (on TCP they hold megabytes, which would all drain inside the downtime).
    uint64_t bandwidth = 0;
    auto send = [&](const std::vector<uint64_t>& pages, bool skip_zero, bool round_trip) {
      channel.SetBandwidthLimit(max_bandwidth_.load());
      uint64_t before = channel.bytes_written();
      auto t = Clock::now();
      RamSendStats sent;
      SendPages(writer, memory, pages, skip_zero, cancel_, &sent);
      writer.Flush();
      if (round_trip && sync) {
        writer.Sync();
        ReadReply(channel, "the destination to take in a round of RAM", StreamReply::kSynced);
      }
      double seconds = std::chrono::duration<double>(Clock::now() - t).count();
      uint64_t bytes = channel.bytes_written() - before;
      if (bytes >= (1 << 20) && seconds > 0) bandwidth = static_cast<uint64_t>(bytes / seconds);
      Update([&](MigrationStats& s) {
        s.pages_sent += sent.pages, s.zero_pages += sent.zero_pages, s.transferred = channel.bytes_written();
        s.bandwidth = bandwidth;
      });
    };

    std::vector<uint64_t> pages = FirstPassPages(memory, baseline);
    Update([&](MigrationStats& s) { s.remaining = CountPages(pages) * kGuestPageSize; });
    auto last_sync = Clock::now();
    send(pages, baseline == RamBaseline::kZero, true);

    uint32_t throttle = 0;
    for (uint32_t round = 1;; round++) {
      std::fill(pages.begin(), pages.end(), 0);
      vm_.CollectDirtyPages(pages);
      double since = std::chrono::duration<double>(Clock::now() - last_sync).count();
      last_sync = Clock::now();
      const uint64_t dirty = CountPages(pages) * kGuestPageSize;
      uint64_t link = bandwidth;
      if (max_bandwidth_ && (!link || link > max_bandwidth_)) link = max_bandwidth_;
      // Unmeasured (little was sent so far): assume a gigabyte per second, then measure.
      if (!link) link = 1ULL << 30;
      const int64_t expected_ms = static_cast<int64_t>(dirty * 1000 / link);
      Update([&](MigrationStats& s) {
        s.rounds = round, s.remaining = dirty, s.expected_downtime_ms = expected_ms;
        s.dirty_rate = since > 0 ? static_cast<uint64_t>(dirty / since) : 0;
      });
      if (expected_ms <= downtime_limit_ms_) break;
      if (round > params_.max_rounds) {
        if (!params_.throttle)
          throw VmmError(ErrorCode::kMigration, "did not converge in " + std::to_string(params_.max_rounds) + " rounds: " +
                                                    std::to_string(dirty >> 10) + " KiB still dirty, " +
                                                    std::to_string(expected_ms) + " ms to send at " +
                                                    std::to_string(link >> 10) + " KiB/s, the downtime limit is " +
                                                    std::to_string(downtime_limit_ms_.load()) + " ms (throttling is off)");
        if (throttle == 99 && round > params_.max_rounds + kRoundsAtFullThrottle)
          throw VmmError(ErrorCode::kMigration, "did not converge even with the guest throttled by 99%: " +
                                                    std::to_string(dirty >> 10) + " KiB dirty per round");
        throttle = std::min<uint32_t>(99, throttle ? throttle + params_.throttle_increment : params_.throttle_initial);
        vm_.SetThrottle(throttle);
        Update([&](MigrationStats& s) { s.throttle_percent = throttle; });
      }
      send(pages, false, true);
    }

    // Stop and copy: what the guest dirtied last, then the VM's state.
    const auto stop_at = Clock::now();
    const bool was_running = !vm_.paused();
    if (!vm_.PauseAndWait(kPauseTimeout)) throw VmmError(ErrorCode::kMigration, "the VM did not pause for the final round (it has stopped?)");
    paused_by_us = was_running;
    const auto paused_at = Clock::now();
    // `pages` still holds the last count's pages, not yet sent: add what was dirtied since.
    vm_.CollectDirtyPages(pages);
    send(pages, false, false);
    const auto ram_sent_at = Clock::now();
    SnapshotBytes state = vm_.SaveState();
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancel_.ThrowIfCancelled();
      committing_ = true;
    }
    writer.State(was_running, state.state, state.config);
    writer.End();
    const auto state_sent_at = Clock::now();
    ReadReply(channel, "the destination to start the VM", StreamReply::kDone);
    const auto running_there_at = Clock::now();
    vm_.StopDirtyLog();
    vm_.SetThrottle(0);
    Update([&](MigrationStats& s) {
      s.downtime_ms = MsSince(stop_at), s.remaining = 0, s.transferred = channel.bytes_written();
      s.throttle_percent = 0;
      s.downtime_phases = {UsBetween(stop_at, paused_at), UsBetween(paused_at, ram_sent_at),
                           UsBetween(ram_sent_at, state_sent_at), UsBetween(state_sent_at, running_there_at)};
    });
    SetStatus(MigrationStatus::kCompleted);
  } catch (const std::exception& e) {
    if (dirty_log) vm_.StopDirtyLog();
    vm_.SetThrottle(0);
    if (paused_by_us) {
      try {
        vm_.Resume();
      } catch (const std::exception&) {
        // the VM has stopped meanwhile: nothing to resume
      }
    }
    Update([&](MigrationStats& s) { s.throttle_percent = 0; });
    bool cancelled = cancel_.cancelled() && !committing_;
    std::string error = e.what();
    // A destination that gave up mid-stream said why before it closed: its reason beats "Broken pipe".
    if (!cancelled && connected && error.find("sending the migration stream") != std::string::npos) {
      std::string reason = WaitingFailureReply(*connected);
      if (!reason.empty()) error = reason + " (" + error + ")";
    }
    SetStatus(cancelled ? MigrationStatus::kCancelled : MigrationStatus::kFailed, cancelled ? "" : error);
  }
}

}  // namespace stencil
