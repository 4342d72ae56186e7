// Node-API binding of the host calls the shim makes without a VM: mount(2)/umount2(2) for its
// host-side mounts, tap creation and rtnetlink (links, routes, tc redirects) in a pod's network
// namespace, the sockets of port forwarding, and a spare daemon's handoff.
#include <fcntl.h>
#include <napi.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "addon_util.h"
#include "host/handoff.h"
#include "host/mount.h"
#include "host/netlink.h"
#include "host/port_forward.h"
#include "host/seccomp.h"
#include "host/tap.h"

namespace stencil {

Napi::Error ToJsError(Napi::Env env, const VmmError& e) {
  Napi::Error err = Napi::Error::New(env, e.what());
  err.Set("code", Napi::String::New(env, ErrorCodeName(e.code())));
  return err;
}

void ReadWholeNumber(const Napi::Value& v, const char* field, double max, uint64_t* out) {
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0 && d <= max) || d != std::floor(d))  // NaN fails the first test
    throw VmmError(ErrorCode::kInvalidArgument,
                   std::string(field) + " must be a non-negative integer, got " + v.ToString().Utf8Value());
  *out = static_cast<uint64_t>(d);
}

std::vector<std::string> StringArray(const Napi::Value& v, const char* what) {
  std::vector<std::string> out;
  if (v.IsUndefined()) return out;
  if (!v.IsArray()) throw VmmError(ErrorCode::kInvalidArgument, std::string(what) + " must be an array of strings");
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value item = a.Get(i);
    if (!item.IsString()) throw VmmError(ErrorCode::kInvalidArgument, std::string(what) + " must be an array of strings");
    out.push_back(item.As<Napi::String>().Utf8Value());
  }
  return out;
}

NetworkConfig ParseNetwork(const Napi::Value& v) {
  if (!v.IsObject()) throw VmmError(ErrorCode::kInvalidArgument, "net must be an object {mac?, backendFd?}");
  Napi::Object o = v.As<Napi::Object>();
  NetworkConfig net;
  net.enabled = true;
  if (o.Has("mac") && !o.Get("mac").IsUndefined()) {
    std::string text = o.Get("mac").IsString() ? o.Get("mac").As<Napi::String>().Utf8Value() : "";
    unsigned b[6];
    char tail;
    if (std::sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6 ||
        text.size() != 17 || (b[0] & 1))
      throw VmmError(ErrorCode::kInvalidArgument, "net.mac must be a unicast MAC address like 02:00:00:aa:bb:cc, got '" +
                                                      o.Get("mac").ToString().Utf8Value() + "'");
    for (int i = 0; i < 6; i++) net.mac[i] = static_cast<uint8_t>(b[i]);
  } else {
    std::random_device rd;
    for (auto& byte : net.mac) byte = static_cast<uint8_t>(rd());
    net.mac[0] = (net.mac[0] & 0xfe) | 0x02;  // unicast, locally administered
  }
  if (o.Has("backendFd") && !o.Get("backendFd").IsUndefined()) {
    uint64_t fd = 0;
    ReadWholeNumber(o.Get("backendFd"), "net.backendFd", 2147483647.0, &fd);
    net.backend_fd = static_cast<int>(fd);
  }
  return net;
}

namespace {

// o[key] as a string, "" when absent; `call` names the binding in the error.
std::string OptionalString(const Napi::Object& o, const char* call, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return "";
  if (!v.IsString()) throw VmmError(ErrorCode::kInvalidArgument, std::string(call) + ": " + key + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

// mount({source?, target, fstype?, flags?: string[], data?}) and unmount(target, flags?): one
// system call each, synchronous (they take microseconds, no fork).
Napi::Value MountJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    if (!info[0].IsObject()) throw VmmError(ErrorCode::kInvalidArgument, "mount: expected {source, target, fstype, flags, data}");
    Napi::Object o = info[0].As<Napi::Object>();
    MountRequest r;
    r.source = OptionalString(o, "mount", "source");
    r.target = OptionalString(o, "mount", "target");
    r.fstype = OptionalString(o, "mount", "fstype");
    r.flags = StringArray(o.Get("flags"), "mount: flags");
    r.data = OptionalString(o, "mount", "data");
    Mount(r);
  } catch (const VmmError& e) {
    ToJsError(env, e).ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

Napi::Value UnmountJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    if (!info[0].IsString()) throw VmmError(ErrorCode::kInvalidArgument, "unmount: the target must be a string");
    Unmount(info[0].As<Napi::String>().Utf8Value(), StringArray(info[1], "unmount: flags"));
  } catch (const VmmError& e) {
    ToJsError(env, e).ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

// openTap({name, netns?, mtu?, joinDetached?}) -> fd: a queue of a tap for a virtio-net backend
// (host/tap.h), up, in the pod's network namespace: a new tap, or with joinDetached a detached
// queue of an existing one. The fd is the caller's to close (a VM given it takes a duplicate).
Napi::Value OpenTapJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    if (!info[0].IsObject()) throw VmmError(ErrorCode::kInvalidArgument, "openTap: expected {name, netns?, mtu?}");
    Napi::Object o = info[0].As<Napi::Object>();
    TapOptions t;
    if (!o.Get("name").IsString()) throw VmmError(ErrorCode::kInvalidArgument, "openTap: name must be a string");
    t.name = o.Get("name").As<Napi::String>().Utf8Value();
    t.netns_path = OptionalString(o, "openTap", "netns");
    if (o.Has("mtu") && !o.Get("mtu").IsUndefined()) {
      uint64_t mtu = 0;
      ReadWholeNumber(o.Get("mtu"), "openTap: mtu", 65535.0, &mtu);
      t.mtu = static_cast<uint32_t>(mtu);
    }
    if (o.Has("joinDetached") && !o.Get("joinDetached").IsUndefined()) {
      if (!o.Get("joinDetached").IsBoolean()) throw VmmError(ErrorCode::kInvalidArgument, "openTap: joinDetached must be a boolean");
      t.join_detached = o.Get("joinDetached").As<Napi::Boolean>().Value();
    }
    return Napi::Number::New(env, OpenTap(t).release());
  } catch (const VmmError& e) {
    ToJsError(env, e).ThrowAsJavaScriptException();
    return env.Undefined();
  }
}

// setTapQueue(fd, attached): attaches or detaches a queue openTap returned (host/tap.h).
Napi::Value SetTapQueueJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    uint64_t fd = 0;
    ReadWholeNumber(info[0], "setTapQueue: fd", 2147483647.0, &fd);
    if (!info[1].IsBoolean()) throw VmmError(ErrorCode::kInvalidArgument, "setTapQueue: attached must be a boolean");
    SetTapQueueAttached(static_cast<int>(fd), info[1].As<Napi::Boolean>().Value());
  } catch (const VmmError& e) {
    ToJsError(env, e).ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

// The string argument `index` of `call`, e.g. a namespace path or a device name.
std::string StringArg(const Napi::CallbackInfo& info, size_t index, const char* call, const char* name) {
  if (!info[index].IsString()) throw VmmError(ErrorCode::kInvalidArgument, std::string(call) + ": " + name + " must be a string");
  return info[index].As<Napi::String>().Utf8Value();
}

const char* LinkTypeName(LinkType type) {
  switch (type) {
    case LinkType::kEther: return "ether";
    case LinkType::kLoopback: return "loopback";
    default: return "other";
  }
}

// readNetState(netns) -> {links: [{index, name, linkType, mac, mtu, up, addresses: [{address,
// prefixLength}]}], routes: [{destination, gateway, device, protocol}]}: a pod namespace's links
// with their IPv4 addresses and its IPv4 main-table routes, through rtnetlink (host/netlink.h).
Napi::Value ReadNetStateJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    NetState state = ReadNetState(StringArg(info, 0, "readNetState", "netns"));
    Napi::Array links = Napi::Array::New(env, state.links.size());
    for (uint32_t i = 0; i < state.links.size(); i++) {
      const NetInterface& l = state.links[i];
      Napi::Object link = Napi::Object::New(env);
      link.Set("index", Napi::Number::New(env, l.index));
      link.Set("name", Napi::String::New(env, l.name));
      link.Set("linkType", Napi::String::New(env, LinkTypeName(l.type)));
      link.Set("mac", Napi::String::New(env, l.mac));
      link.Set("mtu", Napi::Number::New(env, l.mtu));
      link.Set("up", Napi::Boolean::New(env, l.up));
      Napi::Array addresses = Napi::Array::New(env, l.addresses.size());
      for (uint32_t j = 0; j < l.addresses.size(); j++) {
        Napi::Object a = Napi::Object::New(env);
        a.Set("address", Napi::String::New(env, l.addresses[j].address));
        a.Set("prefixLength", Napi::Number::New(env, l.addresses[j].prefix_length));
        addresses.Set(j, a);
      }
      link.Set("addresses", addresses);
      links.Set(i, link);
    }
    Napi::Array routes = Napi::Array::New(env, state.routes.size());
    for (uint32_t i = 0; i < state.routes.size(); i++) {
      const NetRoute& r = state.routes[i];
      Napi::Object route = Napi::Object::New(env);
      route.Set("destination", Napi::String::New(env, r.destination));
      route.Set("gateway", Napi::String::New(env, r.gateway));
      route.Set("device", Napi::String::New(env, r.device));
      route.Set("protocol", Napi::String::New(env, r.protocol));
      routes.Set(i, route);
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("links", links);
    out.Set("routes", routes);
    return out;
  } catch (const VmmError& e) {
    ToJsError(env, e).ThrowAsJavaScriptException();
    return env.Undefined();
  }
}

// addIngressRedirect(netns, from, to): every frame arriving on `from` leaves through `to` (an
// ingress qdisc and a matchall filter with a mirred redirect, host/netlink.h).
Napi::Value AddIngressRedirectJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    AddIngressRedirect(StringArg(info, 0, "addIngressRedirect", "netns"), StringArg(info, 1, "addIngressRedirect", "from"),
                       StringArg(info, 2, "addIngressRedirect", "to"));
  } catch (const VmmError& e) {
    ToJsError(env, e).ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

// deleteIngress(netns, dev): removes dev's ingress qdisc and its filters; none, or no such
// device, is no error.
Napi::Value DeleteIngressJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    DeleteIngress(StringArg(info, 0, "deleteIngress", "netns"), StringArg(info, 1, "deleteIngress", "dev"));
  } catch (const VmmError& e) {
    ToJsError(env, e).ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

// listenOnLoopback({netns?, port?}) -> {fd, port}: a listening TCP socket on 127.0.0.1 in the
// pod's network namespace (host/port_forward.h). The fd is the caller's (Node's server takes it).
Napi::Value ListenOnLoopbackJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    if (!info[0].IsObject()) throw VmmError(ErrorCode::kInvalidArgument, "listenOnLoopback: expected {netns?, port?}");
    Napi::Object o = info[0].As<Napi::Object>();
    std::string netns = OptionalString(o, "listenOnLoopback", "netns");
    uint64_t port = 0;
    if (o.Has("port") && !o.Get("port").IsUndefined()) ReadWholeNumber(o.Get("port"), "listenOnLoopback: port", 65535.0, &port);
    LoopbackListener l = ListenOnLoopback(netns, static_cast<uint16_t>(port));
    Napi::Object out = Napi::Object::New(env);
    out.Set("port", Napi::Number::New(env, l.port));
    out.Set("fd", Napi::Number::New(env, l.fd.release()));
    return out;
  } catch (const VmmError& e) {
    ToJsError(env, e).ThrowAsJavaScriptException();
    return env.Undefined();
  }
}

// originalDestination(fd) -> {address, port}: where a redirected connection was headed.
Napi::Value OriginalDestinationJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    uint64_t fd = 0;
    ReadWholeNumber(info[0], "originalDestination: fd", 2147483647.0, &fd);
    Ipv4Endpoint e = OriginalDestination(static_cast<int>(fd));
    Napi::Object out = Napi::Object::New(env);
    out.Set("address", Napi::String::New(env, e.address));
    out.Set("port", Napi::Number::New(env, e.port));
    return out;
  } catch (const VmmError& e) {
    ToJsError(env, e).ThrowAsJavaScriptException();
    return env.Undefined();
  }
}

// enableSeccomp(): every VMM thread started from now on confines itself to its allow-list.
Napi::Value EnableSeccompJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    seccomp::Enable();
  } catch (const VmmError& e) {
    ToJsError(env, e).ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

// listenForHandoff(path) -> fd: a spare daemon's handoff socket (host/handoff.h).
Napi::Value ListenForHandoffJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    if (!info[0].IsString()) throw VmmError(ErrorCode::kInvalidArgument, "listenForHandoff: the path must be a string");
    return Napi::Number::New(env, ListenForHandoff(info[0].As<Napi::String>().Utf8Value()).release());
  } catch (const VmmError& e) {
    ToJsError(env, e).ThrowAsJavaScriptException();
    return env.Undefined();
  }
}

// acceptHandoff(fd, timeoutMs) -> {fds, strings, peerPid} | null: blocks (a spare has nothing
// else to do) until a launcher hands over a pod or the time is up. The fds are the caller's.
Napi::Value AcceptHandoffJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    uint64_t fd = 0, timeout = 0;
    ReadWholeNumber(info[0], "acceptHandoff: fd", 2147483647.0, &fd);
    ReadWholeNumber(info[1], "acceptHandoff: timeoutMs", 2147483647.0, &timeout);
    std::optional<Handoff> h = AcceptHandoff(static_cast<int>(fd), static_cast<int>(timeout));
    if (!h) return env.Null();
    Napi::Object out = Napi::Object::New(env);
    Napi::Array strings = Napi::Array::New(env, h->strings.size());
    for (uint32_t i = 0; i < h->strings.size(); i++) strings.Set(i, Napi::String::New(env, h->strings[i]));
    Napi::Array fds = Napi::Array::New(env, h->fds.size());
    for (uint32_t i = 0; i < h->fds.size(); i++) fds.Set(i, Napi::Number::New(env, h->fds[i].release()));
    out.Set("strings", strings);
    out.Set("fds", fds);
    out.Set("peerPid", Napi::Number::New(env, h->peer_pid));
    return out;
  } catch (const VmmError& e) {
    ToJsError(env, e).ThrowAsJavaScriptException();
    return env.Undefined();
  }
}

// redirectStdio(fd): makes fd this process's stdout and stderr (dup2) and closes it.
Napi::Value RedirectStdioJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    uint64_t fd = 0;
    ReadWholeNumber(info[0], "redirectStdio: fd", 2147483647.0, &fd);
    int from = static_cast<int>(fd);
    if (from != STDOUT_FILENO && dup2(from, STDOUT_FILENO) < 0) throw VmmError(ErrorCode::kHostCall, std::string("redirectStdio: dup2 to stdout: ") + strerror(errno));
    if (from != STDERR_FILENO && dup2(from, STDERR_FILENO) < 0) throw VmmError(ErrorCode::kHostCall, std::string("redirectStdio: dup2 to stderr: ") + strerror(errno));
    if (from > STDERR_FILENO) close(from);
  } catch (const VmmError& e) {
    ToJsError(env, e).ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

}  // namespace

void ExportHostCalls(Napi::Env env, Napi::Object exports) {
  exports.Set("mount", Napi::Function::New(env, MountJs));
  exports.Set("unmount", Napi::Function::New(env, UnmountJs));
  exports.Set("openTap", Napi::Function::New(env, OpenTapJs));
  exports.Set("setTapQueue", Napi::Function::New(env, SetTapQueueJs));
  exports.Set("readNetState", Napi::Function::New(env, ReadNetStateJs));
  exports.Set("addIngressRedirect", Napi::Function::New(env, AddIngressRedirectJs));
  exports.Set("deleteIngress", Napi::Function::New(env, DeleteIngressJs));
  exports.Set("listenOnLoopback", Napi::Function::New(env, ListenOnLoopbackJs));
  exports.Set("originalDestination", Napi::Function::New(env, OriginalDestinationJs));
  exports.Set("enableSeccomp", Napi::Function::New(env, EnableSeccompJs));
  exports.Set("listenForHandoff", Napi::Function::New(env, ListenForHandoffJs));
  exports.Set("acceptHandoff", Napi::Function::New(env, AcceptHandoffJs));
  exports.Set("redirectStdio", Napi::Function::New(env, RedirectStdioJs));
}

}  // namespace stencil
