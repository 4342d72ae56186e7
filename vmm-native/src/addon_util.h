// Helpers shared by the addon's binding files (addon.cc: VMs; addon_host.cc: host calls).
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "error.h"
#include "vm_config.h"

namespace stencil {

Napi::Error ToJsError(Napi::Env env, const VmmError& e);

// A JavaScript number that must be a whole number in 0..max before it is converted (2.5, -1 or
// NaN would otherwise be truncated or wrap silently). The VMM core checks each field's real
// limits (vCPU count, memory size, guest CID) and names them in its errors.
void ReadWholeNumber(const Napi::Value& v, const char* field, double max, uint64_t* out);

std::vector<std::string> StringArray(const Napi::Value& v, const char* what);

// net: {mac?: "02:..:..", backendFd?: number} -> an enabled NetworkConfig (a random locally
// administered MAC when none is given). Throws VmmError naming the bad field.
NetworkConfig ParseNetwork(const Napi::Value& v);

// Runs f for a JS method of an object that may already be gone (`alive` false: throws `gone`);
// a VmmError from f becomes a JS exception carrying its code.
template <typename F>
Napi::Value GuardedCall(const Napi::CallbackInfo& info, bool alive, const char* gone, F f) {
  if (!alive) {
    Napi::Error::New(info.Env(), gone).ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  try {
    f();
  } catch (const VmmError& e) {
    ToJsError(info.Env(), e).ThrowAsJavaScriptException();
  }
  return info.Env().Undefined();
}

// mount, unmount, openTap (addon_host.cc).
void ExportHostCalls(Napi::Env env, Napi::Object exports);

}  // namespace stencil
