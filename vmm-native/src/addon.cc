// Node-API binding of the VMM core. JavaScript never blocks on the guest: vCPUs run on their own
// threads and report back through thread-safe functions (console bytes, paused, exited).
#include <napi.h>

#include <cmath>
#include <memory>
#include <mutex>
#include <string>

#include "error.h"
#include "addon_migration.h"
#include "addon_util.h"
#include "kvm.h"
#include "snapshot/snapshot.h"
#include "virtio/vsock/device.h"
#include "vm.h"

namespace stencil {

// {restoreFrom: dir | restoreState: {state: Buffer, config: string}, memoryPath?, memoryShared?,
// vsock?: {guestCid?, udsPath?}, shares?: [{tag, hostPath}], vcpus?, memoryBytes?}: everything
// else comes from the snapshot's own configuration. Throws VmmError naming bad input.
RestoreOptions ParseRestoreOptions(const Napi::Object& c) {
  RestoreOptions o;
  if (c.Has("restoreFrom")) {
    o.snapshot_dir = c.Get("restoreFrom").ToString().Utf8Value();
    if (o.snapshot_dir.empty()) throw VmmError(ErrorCode::kInvalidArgument, "restoreFrom must be a snapshot directory");
  } else {
    o.origin = "migration stream";
  }
  if (c.Has("memoryPath") && !c.Get("memoryPath").IsUndefined()) {
    if (!c.Get("memoryPath").IsString()) throw VmmError(ErrorCode::kInvalidArgument, "memoryPath must be a string");
    o.memory_path = c.Get("memoryPath").As<Napi::String>().Utf8Value();
    if (o.memory_path.empty()) throw VmmError(ErrorCode::kInvalidArgument, "memoryPath must not be empty");
  }
  o.memory_shared = c.Has("memoryShared") && c.Get("memoryShared").ToBoolean();
  uint64_t n = 0;
  if (c.Has("vcpus") && !c.Get("vcpus").IsUndefined()) {
    ReadWholeNumber(c.Get("vcpus"), "vcpus", 4294967295.0, &n);
    o.expect_vcpus = static_cast<uint32_t>(n);
  }
  if (c.Has("memoryBytes") && !c.Get("memoryBytes").IsUndefined())
    ReadWholeNumber(c.Get("memoryBytes"), "memoryBytes", 9007199254740991.0, &o.expect_memory);
  if (c.Has("vsock") && c.Get("vsock").IsObject()) {
    Napi::Object v = c.Get("vsock").As<Napi::Object>();
    if (v.Has("guestCid")) {
      ReadWholeNumber(v.Get("guestCid"), "vsock.guestCid", 4294967295.0, &n);
      VirtioVsock::ValidateGuestCid(n);
      o.vsock_guest_cid = static_cast<uint32_t>(n);
    }
    if (v.Has("udsPath")) o.vsock_uds_path = v.Get("udsPath").ToString().Utf8Value();
  }
  if (c.Has("net") && !c.Get("net").IsUndefined()) {
    NetworkConfig net = ParseNetwork(c.Get("net"));
    o.net_backend_fd = net.backend_fd;
    if (c.Get("net").As<Napi::Object>().Has("mac")) o.net_mac = net.mac;
  }
  if (c.Has("shares") && c.Get("shares").IsArray()) {
    Napi::Array shares = c.Get("shares").As<Napi::Array>();
    for (uint32_t i = 0; i < shares.Length(); i++) {
      Napi::Value s = shares.Get(i);
      if (!s.IsObject() || !s.As<Napi::Object>().Get("tag").IsString() || !s.As<Napi::Object>().Get("hostPath").IsString())
        throw VmmError(ErrorCode::kInvalidArgument, "shares[" + std::to_string(i) + "] must be {tag: string, hostPath: string}");
      o.share_paths.emplace_back(s.As<Napi::Object>().Get("tag").As<Napi::String>().Utf8Value(),
                                 s.As<Napi::Object>().Get("hostPath").As<Napi::String>().Utf8Value());
    }
  }
  return o;
}

namespace {

// restoreState: {state: Buffer, config: string}, as saveState() returned them.
Snapshot SnapshotFromObject(const Napi::Value& v) {
  if (!v.IsObject() || !v.As<Napi::Object>().Get("state").IsBuffer() || !v.As<Napi::Object>().Get("config").IsString())
    throw VmmError(ErrorCode::kInvalidArgument, "restoreState must be {state: Buffer, config: string}");
  auto state = v.As<Napi::Object>().Get("state").As<Napi::Buffer<uint8_t>>();
  return LoadSnapshot(std::vector<uint8_t>(state.Data(), state.Data() + state.Length()),
                      v.As<Napi::Object>().Get("config").As<Napi::String>().Utf8Value(), "migration stream state",
                      "migration stream config");
}

// Console output is batched: vCPU threads append, and one pending JS call drains everything.
class ConsoleBuffer {
 public:
  bool Append(const uint8_t* d, size_t n) {  // true if a drain must be scheduled
    std::lock_guard<std::mutex> lock(mu_);
    bool was_empty = data_.empty();
    data_.append(reinterpret_cast<const char*>(d), n);
    return was_empty;
  }
  std::string Take() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    out.swap(data_);
    return out;
  }

 private:
  std::mutex mu_;
  std::string data_;
};

enum class EventType { kConsole, kPaused, kExited, kMigration };
struct Event {
  EventType type;
  std::string reason, detail;
};

// new NativeVmShell(vcpus, memoryBytes): a VmShell created ahead of a restore (a warm pool's
// slot), handed to `new NativeVm({restoreFrom, shell})`, which consumes it.
class NativeVmShell : public Napi::ObjectWrap<NativeVmShell> {
 public:
  static Napi::Function Init(Napi::Env env) { return DefineClass(env, "NativeVmShell", {}); }

  explicit NativeVmShell(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeVmShell>(info) {
    double vcpus = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0;
    double memory = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : 0;
    try {
      if (!(vcpus >= 1 && vcpus <= 1024) || vcpus != std::floor(vcpus) || !(memory > 0) || memory != std::floor(memory))
        throw VmmError(ErrorCode::kInvalidArgument, "NativeVmShell(vcpus, memoryBytes) expects positive integers");
      shell_ = std::make_unique<VmShell>(VmShell::Create(static_cast<uint32_t>(vcpus), static_cast<uint64_t>(memory)));
    } catch (const VmmError& e) {
      ToJsError(info.Env(), e).ThrowAsJavaScriptException();
    }
  }

  // The shell, once: a second restore from the same object is refused.
  VmShell Take() {
    if (!shell_) throw VmmError(ErrorCode::kState, "this VM shell was already used by a restore");
    VmShell shell = std::move(*shell_);
    shell_.reset();
    return shell;
  }

 private:
  std::unique_ptr<VmShell> shell_;
};

// Per-environment data: the shell constructor, to recognise shell objects passed in.
struct AddonData {
  Napi::FunctionReference shell_constructor;
};

class NativeVm : public Napi::ObjectWrap<NativeVm> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeVm",
                       {InstanceMethod("start", &NativeVm::Start), InstanceMethod("pause", &NativeVm::Pause),
                        InstanceMethod("resume", &NativeVm::Resume), InstanceMethod("stop", &NativeVm::Stop),
                        InstanceMethod("injectNmi", &NativeVm::InjectNmi),
                        InstanceMethod("destroy", &NativeVm::Destroy),
                        InstanceMethod("startOnArrival", &NativeVm::StartOnArrival),
                        InstanceMethod("arrival", &NativeVm::Arrival),
                        InstanceMethod("sendConsoleInput", &NativeVm::SendConsoleInput),
                        InstanceMethod("saveSnapshot", &NativeVm::SaveSnapshot),
                        InstanceMethod("saveState", &NativeVm::SaveState),
                        InstanceMethod("info", &NativeVm::Info), InstanceMethod("stats", &NativeVm::Stats),
                        InstanceMethod("migrate", &NativeVm::Migrate),
                        InstanceMethod("migrateCancel", &NativeVm::MigrateCancel),
                        InstanceMethod("migrationStats", &NativeVm::GetMigrationStats),
                        InstanceMethod("setMigrationLimits", &NativeVm::SetMigrationLimits)});
  }

  // new NativeVm(config, onEvent(type, a, b)); config {restoreFrom: dir, ...} restores a snapshot.
  explicit NativeVm(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeVm>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
      Napi::TypeError::New(env, "NativeVm(config, onEvent) expects an object and a function")
          .ThrowAsJavaScriptException();
      return;
    }
    Napi::Object c = info[0].As<Napi::Object>();
    if (c.Has("incoming")) {
      // The VM a live migration brings, built while its RAM streams in; start() loads its final state.
      CreateVm(env, info[1].As<Napi::Function>(), [&](VmCallbacks cb) {
        RestoreOptions options;
        ArrivingVm arriving = TakeArrivingVm(c.Get("incoming"), &options, &arrival_);
        return std::make_unique<Vm>(std::move(arriving.shell), arriving.description, options, std::move(arriving.ram), std::move(cb));
      });
      return;
    }
    if (c.Has("restoreFrom") || c.Has("restoreState")) {
      NativeVmShell* ahead = nullptr;
      if (c.Has("shell") && c.Get("shell").IsObject() &&
          c.Get("shell").As<Napi::Object>().InstanceOf(env.GetInstanceData<AddonData>()->shell_constructor.Value()))
        ahead = NativeVmShell::Unwrap(c.Get("shell").As<Napi::Object>());
      CreateVm(env, info[1].As<Napi::Function>(), [&](VmCallbacks cb) {
        RestoreOptions options = ParseRestoreOptions(c);
        if (c.Has("shell") && !c.Get("shell").IsUndefined() && !ahead)
          throw VmmError(ErrorCode::kInvalidArgument, "shell must be a NativeVmShell");
        Snapshot snapshot = options.snapshot_dir.empty() ? SnapshotFromObject(c.Get("restoreState")) : ReadSnapshot(options.snapshot_dir);
        VmShell shell = ahead ? ahead->Take() : VmShell::Create(snapshot.config.vm.vcpus, snapshot.config.vm.memory.size);
        return std::make_unique<Vm>(std::move(shell), snapshot, options, std::move(cb));
      });
      return;
    }
    VmConfig config;
    auto str = [&](const char* key) { return c.Has(key) ? c.Get(key).ToString().Utf8Value() : std::string(); };
    uint64_t vcpus = 0, cid = 0;
    try {
      ReadWholeNumber(c.Get("vcpus"), "vcpus", 4294967295.0, &vcpus);
      ReadWholeNumber(c.Get("memoryBytes"), "memoryBytes", 9007199254740991.0, &config.memory.size);
      if (c.Has("vsock") && c.Get("vsock").IsObject()) {
        ReadWholeNumber(c.Get("vsock").As<Napi::Object>().Get("guestCid"), "vsock.guestCid", 4294967295.0, &cid);
        // (checked here: in VmConfig a CID of 0 means "no vsock device")
        VirtioVsock::ValidateGuestCid(cid);
      }
      if (c.Has("net") && !c.Get("net").IsUndefined()) config.net = ParseNetwork(c.Get("net"));
    } catch (const VmmError& e) {
      released_ = true;  // no thread-safe function exists yet
      ToJsError(env, e).ThrowAsJavaScriptException();
      return;
    }
    config.vcpus = static_cast<uint32_t>(vcpus);
    config.memory.backing = str("memoryBacking") == "memfd" ? MemoryBacking::kMemfd : MemoryBacking::kTmpfsFile;
    config.memory.directory = str("memoryDir");
    config.memory.name = str("memoryFileName");
    config.memory.keep_file = c.Has("keepMemoryFile") && c.Get("keepMemoryFile").ToBoolean();
    config.kernel_path = str("kernel");
    config.initrd_path = str("initrd");
    config.cmdline = str("cmdline");
    if (c.Has("virtioRng")) config.virtio_rng = c.Get("virtioRng").ToBoolean();
    if (c.Has("disks") && c.Get("disks").IsArray()) {
      Napi::Array disks = c.Get("disks").As<Napi::Array>();
      for (uint32_t i = 0; i < disks.Length(); i++) {
        Napi::Object d = disks.Get(i).As<Napi::Object>();
        config.disks.push_back({d.Get("path").ToString().Utf8Value(), d.Get("readOnly").ToBoolean(),
                                d.Has("serial") ? d.Get("serial").ToString().Utf8Value() : std::string()});
      }
    }
    if (c.Has("shares") && c.Get("shares").IsArray()) {
      Napi::Array shares = c.Get("shares").As<Napi::Array>();
      for (uint32_t i = 0; i < shares.Length(); i++) {
        Napi::Value v = shares.Get(i);
        if (!v.IsObject() || !v.As<Napi::Object>().Get("tag").IsString() ||
            !v.As<Napi::Object>().Get("hostPath").IsString()) {
          released_ = true;  // no thread-safe function exists yet
          ToJsError(env, VmmError(ErrorCode::kInvalidArgument,
                                  "shares[" + std::to_string(i) + "] must be {tag: string, hostPath: string, readOnly}"))
              .ThrowAsJavaScriptException();
          return;
        }
        Napi::Object s = v.As<Napi::Object>();
        config.shares.push_back({s.Get("tag").As<Napi::String>().Utf8Value(),
                                 s.Get("hostPath").As<Napi::String>().Utf8Value(), s.Get("readOnly").ToBoolean()});
      }
    }
    if (c.Has("vsock") && !c.Get("vsock").IsUndefined() && !c.Get("vsock").IsNull()) {
      // vsock: { guestCid, udsPath }; the Vm checks the CID's range, the device the path.
      Napi::Value v = c.Get("vsock");
      std::string bad;
      if (!v.IsObject())
        bad = "vsock must be an object {guestCid, udsPath}";
      else if (!v.As<Napi::Object>().Get("udsPath").IsString())
        bad = "vsock.udsPath must be a string";
      else
        config.vsock = VsockConfig{static_cast<uint32_t>(cid), v.As<Napi::Object>().Get("udsPath").As<Napi::String>().Utf8Value()};
      if (!bad.empty()) {
        released_ = true;  // no thread-safe function exists yet
        ToJsError(env, VmmError(ErrorCode::kInvalidArgument, bad)).ThrowAsJavaScriptException();
        return;
      }
    }

    CreateVm(env, info[1].As<Napi::Function>(), [&](VmCallbacks cb) { return std::make_unique<Vm>(config, std::move(cb)); });
  }

  ~NativeVm() override { DestroyVm(); }

 private:
  // Wires the event callbacks and builds the VM with `make`; a VmmError becomes a JS exception.
  template <typename Make>
  void CreateVm(Napi::Env env, Napi::Function on_event, Make make) {
    tsfn_ = Napi::ThreadSafeFunction::New(env, on_event, "stencil-vm-events", 0, 1, [](Napi::Env) {});
    VmCallbacks cb;
    cb.console = [this](const uint8_t* d, size_t n) {
      if (console_.Append(d, n)) Post(Event{EventType::kConsole, {}, {}});
    };
    cb.paused = [this] { Post(Event{EventType::kPaused, {}, {}}); };
    cb.exited = [this](ExitReason r, const std::string& detail) {
      Post(Event{EventType::kExited, ExitReasonName(r), detail});
    };
    try {
      vm_ = make(std::move(cb));
    } catch (const VmmError& e) {
      tsfn_.Release();
      released_ = true;
      ToJsError(env, e).ThrowAsJavaScriptException();
    }
  }

  void Post(Event ev) {
    auto* heap = new Event(std::move(ev));
    napi_status st = tsfn_.NonBlockingCall(heap, [this](Napi::Env env, Napi::Function fn, Event* e) {
      std::unique_ptr<Event> owned(e);
      switch (owned->type) {
        case EventType::kConsole: {
          std::string bytes = console_.Take();
          if (!bytes.empty()) fn.Call({Napi::String::New(env, "console"), Napi::Buffer<char>::Copy(env, bytes.data(), bytes.size())});
          break;
        }
        case EventType::kPaused: fn.Call({Napi::String::New(env, "paused")}); break;
        case EventType::kMigration: fn.Call({Napi::String::New(env, "migration"), Napi::String::New(env, owned->reason)}); break;
        case EventType::kExited:
          fn.Call({Napi::String::New(env, "exited"), Napi::String::New(env, owned->reason),
                   Napi::String::New(env, owned->detail)});
          break;
      }
    });
    if (st != napi_ok) delete heap;
  }

  template <typename F>
  Napi::Value Guard(const Napi::CallbackInfo& info, F f) {
    return GuardedCall(info, vm_ != nullptr, "VM has been destroyed", f);
  }

  // start({paused}): a paused start parks the vCPUs before their first instruction ('paused' fires).
  Napi::Value Start(const Napi::CallbackInfo& info) {
    bool paused = info.Length() > 0 && info[0].IsObject() && info[0].As<Napi::Object>().Get("paused").ToBoolean();
    return Guard(info, [&] {
      if (vm_->awaiting_state()) vm_->LoadArrivedState(ArrivingIncoming().TakeState().snapshot);
      vm_->Start(paused);
    });
  }
  // startOnArrival(autostart): an arriving VM whose source was running starts as its state is
  // received, before any JavaScript runs, and the source is told at once (arrival() says how it
  // went). Without autostart, or with a paused source, nothing starts by itself: start() does.
  Napi::Value StartOnArrival(const Napi::CallbackInfo& info) {
    return Guard(info, [&] {
      if (!arrival_ || !vm_->awaiting_state()) throw VmmError(ErrorCode::kState, "startOnArrival: this VM is not arriving by migration");
      if (!(info.Length() > 0 && info[0].ToBoolean())) {
        arrival_->start = nullptr;
        return;
      }
      arrival_->start = [this](MigrationIncoming& incoming) {
        if (!vm_ || !incoming.Stats().source_running) return;
        try {
          vm_->LoadArrivedState(incoming.TakeState().snapshot);
          vm_->Start(false);
          arrival_started_ = true;
          incoming.Complete();
        } catch (const std::exception& e) {
          arrival_error_ = std::string("starting the VM: ") + e.what();
          incoming.Fail(arrival_error_);
        }
      };
    });
  }
  // arrival(): {started, error} of a start on arrival.
  Napi::Value Arrival(const Napi::CallbackInfo& info) {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("started", arrival_started_);
    o.Set("error", arrival_error_);
    return o;
  }
  MigrationIncoming& ArrivingIncoming() {
    if (!arrival_) throw VmmError(ErrorCode::kState, "this VM is not arriving by migration");
    if (!arrival_->incoming) throw VmmError(ErrorCode::kState, "the incoming migration has been closed");
    return *arrival_->incoming;
  }
  // saveSnapshot(dir, {copyMemory}): template mode (RAM file linked), or copy mode (RAM copied).
  Napi::Value SaveSnapshot(const Napi::CallbackInfo& info) {
    return Guard(info, [&] {
      if (info.Length() < 1 || !info[0].IsString())
        throw VmmError(ErrorCode::kInvalidArgument, "saveSnapshot(dir) expects a directory path");
      bool copy = info.Length() > 1 && info[1].IsObject() && info[1].As<Napi::Object>().Get("copyMemory").ToBoolean();
      vm_->SaveSnapshot(info[0].As<Napi::String>().Utf8Value(), copy ? SnapshotMemory::kCopy : SnapshotMemory::kLinkTemplate);
    });
  }
  // saveState(): {state: Buffer, config: string} of a paused VM, without RAM.
  Napi::Value SaveState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Value result = env.Undefined();
    Guard(info, [&] {
      SnapshotBytes bytes = vm_->SaveState();
      Napi::Object o = Napi::Object::New(env);
      o.Set("state", Napi::Buffer<uint8_t>::Copy(env, bytes.state.data(), bytes.state.size()));
      o.Set("config", Napi::String::New(env, bytes.config));
      result = o;
    });
    return result;
  }
  Napi::Value Pause(const Napi::CallbackInfo& info) { return Guard(info, [&] { vm_->RequestPause(); }); }
  Napi::Value Resume(const Napi::CallbackInfo& info) { return Guard(info, [&] { vm_->Resume(); }); }
  Napi::Value Stop(const Napi::CallbackInfo& info) { return Guard(info, [&] { vm_->Stop(); }); }
  Napi::Value InjectNmi(const Napi::CallbackInfo& info) { return Guard(info, [&] { vm_->InjectNmi(); }); }
  Napi::Value SendConsoleInput(const Napi::CallbackInfo& info) {
    return Guard(info, [&] {
      auto buf = info[0].As<Napi::Buffer<uint8_t>>();
      vm_->SendConsoleInput(buf.Data(), buf.Length());
    });
  }
  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    if (!vm_) return o;
    o.Set("cmdline", vm_->cmdline());
    o.Set("memoryPath", vm_->memory().path());
    o.Set("memoryBytes", Napi::Number::New(env, static_cast<double>(vm_->memory().size())));
    return o;
  }
  // stats(topN): exit counts and boot timings (exit_stats.h); ports and addresses as numbers.
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    if (!vm_) return o;
    uint32_t top_n = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Uint32Value() : 10;
    ExitStatsReport r = vm_->Stats(top_n);
    auto named = [&](const auto& pairs) {
      Napi::Object m = Napi::Object::New(env);
      for (const auto& [name, value] : pairs) m.Set(name, Napi::Number::New(env, static_cast<double>(value)));
      return m;
    };
    auto by_address = [&](const AddressCounts& pairs, const char* key) {
      Napi::Array a = Napi::Array::New(env, pairs.size());
      for (size_t i = 0; i < pairs.size(); i++) {
        Napi::Object e = Napi::Object::New(env);
        e.Set(key, Napi::Number::New(env, static_cast<double>(pairs[i].first)));
        e.Set("exits", Napi::Number::New(env, static_cast<double>(pairs[i].second)));
        a.Set(static_cast<uint32_t>(i), e);
      }
      return a;
    };
    o.Set("exitsByReason", named(r.exits_by_reason));
    o.Set("topIoPorts", by_address(r.top_io_ports, "port"));
    o.Set("topMmio", by_address(r.top_mmio, "address"));
    o.Set("setupPhasesMs", named(r.setup_phases_ms));
    o.Set("firstConsoleMs", Napi::Number::New(env, r.first_console_ms));
    o.Set("kvmVcpuStats", named(r.kvm_vcpu_stats));
    if (!r.paused_vcpus.empty()) {
      Napi::Array vcpus = Napi::Array::New(env, r.paused_vcpus.size());
      for (size_t i = 0; i < r.paused_vcpus.size(); i++) vcpus.Set(static_cast<uint32_t>(i), r.paused_vcpus[i]);
      o.Set("pausedVcpus", vcpus);
    }
    return o;
  }
  // migrate(uri, parameters): a live migration to tcp:HOST:PORT or unix:PATH, in the background;
  // 'migration' events carry each status (setup, active, completed, failed, cancelled).
  Napi::Value Migrate(const Napi::CallbackInfo& info) {
    return Guard(info, [&] {
      if (info.Length() < 1 || !info[0].IsString()) throw VmmError(ErrorCode::kInvalidArgument, "migrate(uri, parameters) expects a URI");
      if (migration_ && !migration_->finished()) throw VmmError(ErrorCode::kState, "a migration of this VM is already running");
      MigrationEndpoint to = ParseMigrationEndpoint(info[0].As<Napi::String>().Utf8Value());
      MigrationParameters params = ParseMigrationParameters(info.Length() > 1 ? info[1] : info.Env().Undefined());
      if (!vm_->running()) throw VmmError(ErrorCode::kState, "the VM is not running: only a started VM migrates");
      migration_.reset();
      migration_ = std::make_unique<MigrationSource>(*vm_, to, params, [this](MigrationStatus status) {
        Post(Event{EventType::kMigration, MigrationStatusName(status), {}});
      });
      migration_->Start();
    });
  }
  // true if cancelled (or nothing runs); false once the final state is on its way.
  Napi::Value MigrateCancel(const Napi::CallbackInfo& info) {
    bool cancelled = !migration_ || migration_->finished() || migration_->Cancel();
    return Napi::Boolean::New(info.Env(), cancelled);
  }
  Napi::Value GetMigrationStats(const Napi::CallbackInfo& info) {
    if (!migration_) return info.Env().Undefined();
    return MigrationStatsToJs(info.Env(), migration_->Stats());
  }
  // setMigrationLimits({downtimeLimitMs, maxBandwidth}): for the running migration.
  Napi::Value SetMigrationLimits(const Napi::CallbackInfo& info) {
    return Guard(info, [&] {
      MigrationParameters p = ParseMigrationParameters(info.Length() > 0 ? info[0] : info.Env().Undefined());
      if (migration_) migration_->SetLimits(p.downtime_limit, p.max_bandwidth);
    });
  }
  // Stops the vCPUs, frees guest RAM (removing its tmpfs file) and closes every fd.
  Napi::Value Destroy(const Napi::CallbackInfo& info) {
    DestroyVm();
    return info.Env().Undefined();
  }

  void DestroyVm() {
    migration_.reset();  // cancels and joins a running migration before its VM goes
    if (vm_) {
      vm_->Stop();
      vm_.reset();
    }
    if (!released_) {
      tsfn_.Release();
      released_ = true;
    }
    if (arrival_) arrival_->start = nullptr;
  }

  std::unique_ptr<Vm> vm_;
  std::shared_ptr<ArrivalLink> arrival_;  // to the migration an arriving VM's state comes from
  bool arrival_started_ = false;
  std::string arrival_error_;
  std::unique_ptr<MigrationSource> migration_;
  Napi::ThreadSafeFunction tsfn_;
  bool released_ = false;
  ConsoleBuffer console_;
};

Napi::Value ProbeKvmJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  KvmProbe p = ProbeKvm();
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", p.available);
  o.Set("error", p.error);
  o.Set("apiVersion", p.api_version);
  o.Set("runsStockGuests", p.runs_stock_guests);
  o.Set("kernelModeMips", p.kernel_mode_mips);
  o.Set("detail", p.detail);
  return o;
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeVm", NativeVm::Init(env));
  Napi::Function shell = NativeVmShell::Init(env);
  auto* data = new AddonData;
  data->shell_constructor = Napi::Persistent(shell);
  env.SetInstanceData(data);
  exports.Set("NativeVmShell", shell);
  exports.Set("probeKvm", Napi::Function::New(env, ProbeKvmJs));
  exports.Set("NativeMigrationIncoming", InitMigrationIncoming(env));
  ExportHostCalls(env, exports);
  return exports;
}

}  // namespace
}  // namespace stencil

static Napi::Object InitStencilVmm(Napi::Env env, Napi::Object exports) {
  return stencil::InitModule(env, exports);
}
NODE_API_MODULE(stencil_vmm, InitStencilVmm)
