// virtio-blk keeps nothing between requests (a quiesced worker has none in flight): its saved
// state is the disk geometry the guest saw, checked against the file the restored VM opened.
#include "blk.h"

#include "../error.h"

namespace stencil {

void VirtioBlk::SaveState(ByteWriter& out) {
  out.U64(capacity_sectors_);
  out.Bool(config_.read_only);
  out.String(config_.serial);
}

void VirtioBlk::RestoreState(ByteReader& in) {
  uint64_t capacity = in.U64();
  bool read_only = in.Bool();
  std::string serial = in.String();
  auto differs = [&](const std::string& what, const std::string& saved, const std::string& now) {
    throw VmmError(ErrorCode::kSnapshot, "block device " + config_.path + ": " + what + " is " + now +
                                             ", the snapshot's guest saw " + saved);
  };
  if (capacity != capacity_sectors_)
    differs("size", std::to_string(capacity) + " sectors", std::to_string(capacity_sectors_) + " sectors");
  if (read_only != config_.read_only)
    differs("mode", read_only ? "read-only" : "read-write", config_.read_only ? "read-only" : "read-write");
  if (serial != config_.serial) differs("serial", "'" + serial + "'", "'" + config_.serial + "'");
}

}  // namespace stencil
