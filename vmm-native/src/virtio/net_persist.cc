// virtio-net saved state (see VirtioNet::State): queue indexes and the MAC the guest saw. Packets
// the backend held at the snapshot are not part of it: the network dropped them.
#include "net.h"

namespace stencil {

void VirtioNet::SaveState(ByteWriter& out) {
  State s = SaveState();
  out.Bool(s.activated);
  s.Write(out);
  out.Raw(s.mac.data(), s.mac.size());
}

void VirtioNet::RestoreState(ByteReader& in) {
  State s;
  s.activated = in.Bool();
  s.Read(in);
  in.Raw(s.mac.data(), s.mac.size(), "virtio-net MAC");  // informational: this device's own MAC stays
  RestoreState(s);
}

}  // namespace stencil
