// The receiving side of a live migration: listens, checks the stream's VM description against
// this host before taking anything (refusing with the reason: memory size or vCPU count other
// than asked for, a disk or shared directory missing here, a version this build does not read),
// fills new RAM (or the same template, when this host has it: same content hash), verifies the
// end checksum. The VM's shell and RAM are handed over as soon as the header is accepted, so
// that its devices are built while RAM streams in; its state once the stream ends. The source
// is told the VM runs here only once the owner says so (Complete); until then it keeps its VM.
#pragma once
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "../snapshot/snapshot.h"
#include "../vm.h"
#include "source.h"
#include "stream.h"
#include "transport.h"

namespace stencil {

struct IncomingOptions {
  std::string memory_dir = "/dev/shm/stencil";  // where new RAM is created ...
  std::string memory_name;                      // ... under this name (removed with the VM)
  bool use_template = true;                     // start from the source clone's template if here
  RestoreOptions restore;                       // expect_vcpus/expect_memory, vsock, shares, net
};

struct IncomingStats {
  MigrationStatus status = MigrationStatus::kNone;  // setup: listening; active: receiving
  std::string error;
  std::string peer;
  uint64_t received = 0;     // bytes
  uint64_t pages = 0;        // pages received in full
  uint64_t zero_pages = 0;
  bool template_shared = false;
  bool state_ready = false;  // the stream is complete and verified: Take() may be called
  bool source_running = false;  // the source VM was running (not paused) when it stopped
};

// What the VM will be, known once the stream's header is accepted: its description, its KVM shell
// (vCPUs, RAM slots over `ram`) and its RAM, which the stream still fills. The owner builds the
// VM's devices from it meanwhile, off the downtime path.
struct ArrivingVm {
  VmDescription description;
  VmShell shell;
  std::shared_ptr<GuestMemory> ram;
};

// The VM's final state, verified against the header, once the stream has ended.
struct ReceivedState {
  Snapshot snapshot;
  bool running = false;  // the source VM was running (else paused) when it stopped
};

class MigrationIncoming {
 public:
  enum class Event { kAccepted, kReceived, kFinished };
  // Listens at once (throws VmmError naming the endpoint). on_event runs on the receive thread.
  MigrationIncoming(const MigrationEndpoint& at, IncomingOptions options, std::function<void(Event)> on_event);
  ~MigrationIncoming();
  MigrationIncoming(const MigrationIncoming&) = delete;
  MigrationIncoming& operator=(const MigrationIncoming&) = delete;

  void Start();
  void Cancel();
  // After Event::kAccepted, once: the VM to build while RAM streams in.
  ArrivingVm TakeArriving();
  // After Event::kReceived, once: the final state to load into it.
  ReceivedState TakeState();
  // The VM runs (Complete) or could not be built (Fail): the source is told. A Fail before the
  // stream ended stops the receiving at the next record.
  void Complete();
  void Fail(const std::string& reason);
  IncomingStats Stats() const;
  const MigrationListener& listener() const { return listener_; }
  const IncomingOptions& options() const { return options_; }

 private:
  void Run();
  std::string CheckHeader(const StreamHeader& header, const VmDescription& description, bool* use_template);
  void Finish(MigrationStatus status, const std::string& error);

  MigrationListener listener_;
  IncomingOptions options_;
  std::function<void(Event)> on_event_;
  Cancellation cancel_;
  mutable std::mutex mu_;
  std::condition_variable decided_cv_;
  IncomingStats stats_;
  std::optional<ArrivingVm> arriving_;
  std::optional<ReceivedState> received_;
  enum class Decision { kNone, kComplete, kFail } decision_ = Decision::kNone;
  std::string fail_reason_;
  std::thread thread_;
};

}  // namespace stencil
