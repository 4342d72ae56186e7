#include "device.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "../../error.h"
#include "../../vmm_thread.h"

namespace stencil {

namespace {

constexpr uint32_t kMaxMsize = 512 * 1024;

UniqueFd OpenShareRoot(const std::string& tag, const std::string& host_path) {
  std::string why = VirtioP9::CheckTag(tag);
  if (!why.empty()) throw VmmError(ErrorCode::kInvalidArgument, "shared directory tag '" + tag + "': " + why);
  std::string what = "shared directory '" + tag + "' (" + host_path + ")";
  if (host_path.empty() || host_path[0] != '/')
    throw VmmError(ErrorCode::kInvalidArgument, what + ": the host path must be absolute");
  UniqueFd fd(open(host_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) throw VmmError(ErrorCode::kInvalidArgument, WithErrno(what + " cannot be opened"));
  return fd;
}

p9::ServerOptions Options(bool read_only) {
  p9::ServerOptions o;
  o.read_only = read_only;
  o.max_msize = kMaxMsize;
  return o;
}

}  // namespace

std::string VirtioP9::CheckTag(const std::string& tag) {
  if (tag.empty()) return "the tag is empty";
  if (tag.size() > kMaxTagLength) return "the tag is longer than " + std::to_string(kMaxTagLength) + " bytes";
  for (char c : tag)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-'))
      return "the tag may only contain letters, digits, '_', '.' and '-'";
  return "";
}

VirtioP9::VirtioP9(const std::string& tag, const std::string& host_path, bool read_only)
    : tag_(tag), read_only_(read_only), server_(OpenShareRoot(tag, host_path), Options(read_only)) {
  config_.push_back(static_cast<uint8_t>(tag.size()));
  config_.push_back(static_cast<uint8_t>(tag.size() >> 8));
  config_.insert(config_.end(), tag.begin(), tag.end());
}

VirtioP9::~VirtioP9() { StopWorker(); }

void VirtioP9::ReadConfig(uint64_t offset, uint8_t* data, uint32_t len) {
  for (uint32_t i = 0; i < len; i++) {
    uint64_t at = offset + i;
    data[i] = at >= offset && at < config_.size() ? config_[at] : 0;
  }
}

void VirtioP9::Activate(const GuestMemoryAccess& mem, std::vector<Virtqueue>& queues, VirtioInterrupt& irq) {
  StopWorker();
  {
    std::lock_guard<std::mutex> lock(serve_mu_);
    mem_ = &mem;
    queue_ = &queues.at(0);
    irq_ = &irq;
    broken_ = false;
    if (pending_indexes_) {
      queue_->RestoreIndexes(pending_indexes_->first, pending_indexes_->second);
      pending_indexes_.reset();
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  stop_ = false;
  kicked_ = true;  // serve anything published before DRIVER_OK
  worker_ = StartVmmThread("9p-" + tag_.substr(0, 12), ThreadRole::kFileShare, [this] { WorkerLoop(); });
}

void VirtioP9::QueueNotify(uint32_t index) {
  if (index != 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  kicked_ = true;
  cv_.notify_one();
}

void VirtioP9::Reset() {
  StopWorker();
  std::lock_guard<std::mutex> lock(serve_mu_);
  server_.Reset();  // closes every fid
  mem_ = nullptr, queue_ = nullptr, irq_ = nullptr;
  broken_ = false;
}

void VirtioP9::Quiesce() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    quiesced_ = true;
  }
  std::lock_guard<std::mutex> wait_for_request_in_flight(serve_mu_);
}

void VirtioP9::Unquiesce() {
  std::lock_guard<std::mutex> lock(mu_);
  quiesced_ = false;
  kicked_ = true;  // serve whatever the guest published while paused
  cv_.notify_one();
}

void VirtioP9::StopWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (worker_.joinable()) worker_.join();
  std::lock_guard<std::mutex> lock(mu_);
  kicked_ = false;
}

void VirtioP9::WorkerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || (kicked_ && !quiesced_); });
    if (stop_) return;
    kicked_ = false;
    lock.unlock();
    ServeQueue();
    lock.lock();
  }
}

void VirtioP9::ServeQueue() {
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_ || quiesced_) return;  // a reset or pause is waiting: leave the rest for later
    }
    std::lock_guard<std::mutex> lock(serve_mu_);
    if (broken_ || !queue_) return;
    try {
      std::optional<DescriptorChain> chain = queue_->Pop(*mem_);
      if (!chain) return;
      // The guest decides the buffer sizes: never gather more than the largest message we accept.
      std::vector<uint8_t> request(std::min<uint64_t>(chain->readable_bytes(), kMaxMsize));
      chain->CopyFromReadable(request.data(), request.size());
      uint64_t room = std::min<uint64_t>(chain->writable_bytes(), kMaxMsize);
      std::vector<uint8_t> reply = server_.Handle(request.data(), request.size(), room);
      uint64_t written = chain->CopyToWritable(reply.data(), reply.size());
      queue_->PushUsed(*mem_, chain->head, static_cast<uint32_t>(written));
      requests_served_++;
      if (queue_->NeedsInterrupt(*mem_)) irq_->SignalUsedBuffer();
    } catch (const VirtqueueError&) {
      broken_ = true;
      irq_->SignalNeedsReset();
      return;
    }
  }
}

VirtioP9::State VirtioP9::SaveState() {
  std::lock_guard<std::mutex> lock(serve_mu_);
  State s;
  s.active = queue_ != nullptr;
  if (queue_) {
    s.next_avail = queue_->next_avail();
    s.next_used = queue_->next_used();
  } else if (pending_indexes_) {
    s.next_avail = pending_indexes_->first;
    s.next_used = pending_indexes_->second;
  }
  s.server = server_.SaveState();
  return s;
}

size_t VirtioP9::RestoreState(const State& state) {
  std::lock_guard<std::mutex> lock(serve_mu_);
  size_t dropped = server_.RestoreState(state.server);
  if (queue_) queue_->RestoreIndexes(state.next_avail, state.next_used);
  else pending_indexes_ = std::make_pair(state.next_avail, state.next_used);
  return dropped;
}

}  // namespace stencil
