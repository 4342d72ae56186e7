#include "addon_migration.h"

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "addon_util.h"
#include "error.h"

namespace stencil {

namespace {

Napi::FunctionReference* incoming_constructor = nullptr;

class NativeMigrationIncoming : public Napi::ObjectWrap<NativeMigrationIncoming> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeMigrationIncoming",
                       {InstanceMethod("start", &NativeMigrationIncoming::Start),
                        InstanceMethod("cancel", &NativeMigrationIncoming::Cancel),
                        InstanceMethod("complete", &NativeMigrationIncoming::Complete),
                        InstanceMethod("fail", &NativeMigrationIncoming::Fail),
                        InstanceMethod("stats", &NativeMigrationIncoming::Stats),
                        InstanceMethod("port", &NativeMigrationIncoming::Port),
                        InstanceMethod("close", &NativeMigrationIncoming::Close)});
  }

  explicit NativeMigrationIncoming(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeMigrationIncoming>(info) {
    Napi::Env env = info.Env();
    try {
      if (info.Length() < 3 || !info[0].IsString() || !info[1].IsObject() || !info[2].IsFunction())
        throw VmmError(ErrorCode::kInvalidArgument, "NativeMigrationIncoming(uri, options, onEvent) expects a string, an object and a function");
      Napi::Object o = info[1].As<Napi::Object>();
      IncomingOptions options;
      if (o.Get("memoryDir").IsString()) options.memory_dir = o.Get("memoryDir").As<Napi::String>().Utf8Value();
      if (o.Get("memoryName").IsString()) options.memory_name = o.Get("memoryName").As<Napi::String>().Utf8Value();
      if (o.Has("useTemplate")) options.use_template = o.Get("useTemplate").ToBoolean();
      if (o.Get("restore").IsObject()) options.restore = ParseRestoreOptions(o.Get("restore").As<Napi::Object>());
      options.restore.origin = "migration stream";
      tsfn_ = Napi::ThreadSafeFunction::New(env, info[2].As<Napi::Function>(), "stencil-migration-incoming", 0, 1);
      have_tsfn_ = true;
      incoming_ = std::make_unique<MigrationIncoming>(ParseMigrationEndpoint(info[0].As<Napi::String>().Utf8Value()), options,
                                                      [this](MigrationIncoming::Event e) { Post(e); });
      link_->incoming = incoming_.get();
    } catch (const VmmError& e) {
      Release();
      ToJsError(env, e).ThrowAsJavaScriptException();
    }
  }
  ~NativeMigrationIncoming() override {
    link_->incoming = nullptr;
    incoming_.reset();
    Release();
  }

  MigrationIncoming* incoming() { return incoming_.get(); }

 private:
  void Post(MigrationIncoming::Event e) {
    const char* name = e == MigrationIncoming::Event::kAccepted ? "accepted" : e == MigrationIncoming::Event::kReceived ? "received" : "finished";
    const bool received = e == MigrationIncoming::Event::kReceived;
    std::shared_ptr<ArrivalLink> link = link_;
    tsfn_.NonBlockingCall([link, name, received](Napi::Env env, Napi::Function fn) {
      // The arriving VM starts here, before any JavaScript runs: all that is left of the downtime.
      if (received && link->start && link->incoming) std::exchange(link->start, nullptr)(*link->incoming);
      fn.Call({Napi::String::New(env, name)});
    });
  }
  void Release() {
    if (have_tsfn_) tsfn_.Release(), have_tsfn_ = false;
  }
  template <typename F>
  Napi::Value Guard(const Napi::CallbackInfo& info, F f) {
    return GuardedCall(info, incoming_ != nullptr, "the incoming migration has been closed", f);
  }
  Napi::Value Start(const Napi::CallbackInfo& info) { return Guard(info, [&] { incoming_->Start(); }); }
  Napi::Value Cancel(const Napi::CallbackInfo& info) { return Guard(info, [&] { incoming_->Cancel(); }); }
  Napi::Value Complete(const Napi::CallbackInfo& info) { return Guard(info, [&] { incoming_->Complete(); }); }
  Napi::Value Fail(const Napi::CallbackInfo& info) {
    return Guard(info, [&] { incoming_->Fail(info.Length() > 0 ? info[0].ToString().Utf8Value() : "the VM could not be started"); });
  }
  Napi::Value Port(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), incoming_ ? incoming_->listener().port() : 0);
  }
  // Stops listening and discards whatever was received but not taken; events stop.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    link_->incoming = nullptr;
    incoming_.reset();
    Release();
    return info.Env().Undefined();
  }
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    if (!incoming_) return o;
    IncomingStats s = incoming_->Stats();
    o.Set("status", MigrationStatusName(s.status));
    o.Set("error", s.error);
    o.Set("peer", s.peer);
    o.Set("received", Napi::Number::New(env, static_cast<double>(s.received)));
    o.Set("pages", Napi::Number::New(env, static_cast<double>(s.pages)));
    o.Set("zeroPages", Napi::Number::New(env, static_cast<double>(s.zero_pages)));
    o.Set("templateShared", s.template_shared);
    o.Set("stateReady", s.state_ready);
    o.Set("sourceRunning", s.source_running);
    return o;
  }

  std::unique_ptr<MigrationIncoming> incoming_;
  Napi::ThreadSafeFunction tsfn_;
  bool have_tsfn_ = false;

 public:
  std::shared_ptr<ArrivalLink> link_ = std::make_shared<ArrivalLink>();
};

double Number(uint64_t v) { return static_cast<double>(v); }

}  // namespace

MigrationParameters ParseMigrationParameters(const Napi::Value& v) {
  MigrationParameters p;
  if (v.IsUndefined() || v.IsNull()) return p;
  if (!v.IsObject()) throw VmmError(ErrorCode::kInvalidArgument, "migration parameters must be an object");
  Napi::Object o = v.As<Napi::Object>();
  uint64_t n = 0;
  if (o.Has("downtimeLimitMs") && !o.Get("downtimeLimitMs").IsUndefined()) {
    ReadWholeNumber(o.Get("downtimeLimitMs"), "downtimeLimitMs", 2000000.0, &n);
    p.downtime_limit = std::chrono::milliseconds(n);
  }
  if (o.Has("maxBandwidth") && !o.Get("maxBandwidth").IsUndefined()) ReadWholeNumber(o.Get("maxBandwidth"), "maxBandwidth", 9007199254740991.0, &p.max_bandwidth);
  if (o.Has("maxRounds") && !o.Get("maxRounds").IsUndefined()) {
    ReadWholeNumber(o.Get("maxRounds"), "maxRounds", 100000.0, &n);
    p.max_rounds = static_cast<uint32_t>(n);
  }
  if (o.Has("throttle")) p.throttle = o.Get("throttle").ToBoolean();
  if (o.Has("throttleInitial") && !o.Get("throttleInitial").IsUndefined()) {
    ReadWholeNumber(o.Get("throttleInitial"), "throttleInitial", 99.0, &n);
    p.throttle_initial = static_cast<uint32_t>(n);
  }
  if (o.Has("throttleIncrement") && !o.Get("throttleIncrement").IsUndefined()) {
    ReadWholeNumber(o.Get("throttleIncrement"), "throttleIncrement", 99.0, &n);
    p.throttle_increment = static_cast<uint32_t>(n);
  }
  return p;
}

Napi::Object MigrationStatsToJs(Napi::Env env, const MigrationStats& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("status", MigrationStatusName(s.status));
  o.Set("error", s.error);
  o.Set("ramTotal", Number(s.ram_total));
  o.Set("transferred", Number(s.transferred));
  o.Set("remaining", Number(s.remaining));
  o.Set("pagesSent", Number(s.pages_sent));
  o.Set("zeroPages", Number(s.zero_pages));
  o.Set("rounds", Number(s.rounds));
  o.Set("dirtyRate", Number(s.dirty_rate));
  o.Set("bandwidth", Number(s.bandwidth));
  o.Set("expectedDowntimeMs", static_cast<double>(s.expected_downtime_ms));
  o.Set("downtimeMs", static_cast<double>(s.downtime_ms));
  o.Set("setupTimeMs", static_cast<double>(s.setup_time_ms));
  o.Set("totalTimeMs", static_cast<double>(s.total_time_ms));
  o.Set("throttlePercent", s.throttle_percent);
  o.Set("templateShared", s.template_shared);
  if (s.downtime_phases.pause_us >= 0) {
    Napi::Object phases = Napi::Object::New(env);
    phases.Set("pause", s.downtime_phases.pause_us / 1000.0);
    phases.Set("finalRam", s.downtime_phases.final_ram_us / 1000.0);
    phases.Set("saveState", s.downtime_phases.save_state_us / 1000.0);
    phases.Set("destination", s.downtime_phases.destination_us / 1000.0);
    o.Set("downtimePhasesMs", phases);
  }
  return o;
}

Napi::Function InitMigrationIncoming(Napi::Env env) {
  Napi::Function f = NativeMigrationIncoming::Init(env);
  incoming_constructor = new Napi::FunctionReference(Napi::Persistent(f));
  return f;
}

ArrivingVm TakeArrivingVm(const Napi::Value& v, RestoreOptions* restore, std::shared_ptr<ArrivalLink>* link) {
  if (!incoming_constructor || !v.IsObject() || !v.As<Napi::Object>().InstanceOf(incoming_constructor->Value()))
    throw VmmError(ErrorCode::kInvalidArgument, "incoming must be a NativeMigrationIncoming");
  NativeMigrationIncoming* wrapper = NativeMigrationIncoming::Unwrap(v.As<Napi::Object>());
  MigrationIncoming* incoming = wrapper->incoming();
  if (!incoming) throw VmmError(ErrorCode::kState, "the incoming migration has been closed");
  *restore = incoming->options().restore;
  ArrivingVm arriving = incoming->TakeArriving();
  *link = wrapper->link_;
  return arriving;
}

}  // namespace stencil
