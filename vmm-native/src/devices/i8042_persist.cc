// The i8042 model keeps no register state (reads return 0, only the reset command acts), so its
// saved state is empty; the section still exists so the device layout is checked on restore.
#include "i8042.h"

namespace stencil {

void I8042::SaveState(ByteWriter&) {}
void I8042::RestoreState(ByteReader&) {}

}  // namespace stencil
