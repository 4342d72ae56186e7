// virtio-rng has no state beyond its queue (saved by the transport): only the statistics counter.
#include "rng.h"

namespace stencil {

void VirtioRng::SaveState(ByteWriter& out) { out.U64(bytes_served_); }
void VirtioRng::RestoreState(ByteReader& in) { bytes_served_ = in.U64(); }

}  // namespace stencil
