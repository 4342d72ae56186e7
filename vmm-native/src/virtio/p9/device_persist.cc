// virtio-9p saved state: the queue indexes the device holds and the 9P session (fids as
// share-relative paths). A restored device reopens each fid under its *own* share root, so a
// clone only ever sees the directory it was given.
#include "device.h"

namespace stencil {

namespace {
constexpr uint32_t kMaxFids = 1u << 20;
}

void VirtioP9::SaveState(ByteWriter& out) {
  State s = SaveState();
  out.Bool(s.active);
  out.U16(s.next_avail);
  out.U16(s.next_used);
  out.Bool(s.server.negotiated);
  out.U32(s.server.msize);
  out.U32(static_cast<uint32_t>(s.server.fids.size()));
  for (const auto& f : s.server.fids) {
    out.U32(f.fid);
    out.String(f.path);
    out.U32(f.uid);
    out.Bool(f.open);
    out.U32(f.open_flags);
  }
}

void VirtioP9::RestoreState(ByteReader& in) {
  State s;
  s.active = in.Bool();
  s.next_avail = in.U16();
  s.next_used = in.U16();
  s.server.negotiated = in.Bool();
  s.server.msize = in.U32();
  s.server.fids.resize(in.Count(kMaxFids, "fids"));
  for (auto& f : s.server.fids) {
    f.fid = in.U32();
    f.path = in.String();
    f.uid = in.U32();
    f.open = in.Bool();
    f.open_flags = in.U32();
  }
  RestoreState(s);
}

}  // namespace stencil
