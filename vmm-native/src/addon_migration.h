// Live migration in the Node-API binding: parameters and statistics as JavaScript objects, and
// NativeMigrationIncoming, the listening end a NativeVm is later built from ({incoming}).
#pragma once
#include <napi.h>

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
// Events: 'accepted', 'received' (build the VM: new NativeVm({incoming}, ...)), 'finished'.
Napi::Function InitMigrationIncoming(Napi::Env env);
// The received VM of a NativeMigrationIncoming object, with the options it was created with.
ReceivedVm TakeIncomingVm(const Napi::Value& incoming, RestoreOptions* restore);

}  // namespace stencil
