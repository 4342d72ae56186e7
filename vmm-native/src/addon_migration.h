// Live migration in the Node-API binding: parameters and statistics as JavaScript objects, and
// NativeMigrationIncoming, the listening end a NativeVm is later built from ({incoming}).
#pragma once
#include <napi.h>

#include <functional>
#include <memory>
#include <string>

#include "migration/destination.h"
#include "migration/source.h"

namespace stencil {

// {downtimeLimitMs?, maxBandwidth?, maxRounds?, throttle?, throttleInitial?, throttleIncrement?}
MigrationParameters ParseMigrationParameters(const Napi::Value& v);
Napi::Object MigrationStatsToJs(Napi::Env env, const MigrationStats& stats);

// The parts of a restore a caller may set (addon.cc): {vcpus?, memoryBytes?, vsock?, shares?, net?, ...}.
RestoreOptions ParseRestoreOptions(const Napi::Object& c);

// new NativeMigrationIncoming(uri, {memoryDir, memoryName, useTemplate?, restore?}, onEvent(event)):
// listens at once (port() gives a tcp port chosen by the kernel); start() waits for the source.
// Events: 'accepted' (build the VM: new NativeVm({incoming}, ...), while RAM streams in),
// 'received' (its final state is here: start it), 'finished'.
Napi::Function InitMigrationIncoming(Napi::Env env);
// What a NativeVm built from an incoming migration shares with it (JavaScript thread only).
struct ArrivalLink {
  MigrationIncoming* incoming = nullptr;  // null once the NativeMigrationIncoming is closed
  // Runs as the state is received, before the 'received' event (empty: nothing starts by itself).
  std::function<void(MigrationIncoming&)> start;
};
// The arriving VM of a NativeMigrationIncoming object, with the options it was created with and
// the link through which the VM takes its state later.
ArrivingVm TakeArrivingVm(const Napi::Value& incoming, RestoreOptions* restore, std::shared_ptr<ArrivalLink>* link);

}  // namespace stencil
