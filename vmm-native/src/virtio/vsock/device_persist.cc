// virtio-vsock saved state (see VirtioVsock::State): connections are not part of it; a restored
// device sends the guest a transport reset once active.
#include "device.h"

namespace stencil {

void VirtioVsock::SaveState(ByteWriter& out) {
  State s = SaveState();
  out.U64(s.guest_cid);
  out.Bool(s.activated);
  s.Write(out);
  out.U32(s.next_local_port);
}

void VirtioVsock::RestoreState(ByteReader& in) {
  State s;
  s.guest_cid = in.U64();  // informational: the restoring VM's configured CID wins
  s.activated = in.Bool();
  s.Read(in);
  s.next_local_port = in.U32();
  RestoreState(s);
}

}  // namespace stencil
