// containerd's checkpoint options: `ctr` sends runc's CheckpointOptions (containerd.runc.v1)
// whatever the runtime; of its fields only `exit` (1, bool: stop the task after the checkpoint)
// means anything for a VM. Read without the runc proto: a field scan of the Any's bytes.
import type { AnyMessage } from '../containerd/protos.js';

export function checkpointExitRequested(options: AnyMessage | null | undefined): boolean {
  if (!options?.value?.length || !options.typeUrl.endsWith('CheckpointOptions')) return false;
  const bytes = options.value;
  let i = 0;
  const varint = (): number => {
    let value = 0;
    for (let shift = 0; i < bytes.length && shift < 64; shift += 7) {
      const b = bytes[i++];
      value += (b & 0x7f) * 2 ** shift;
      if (!(b & 0x80)) return value;
    }
    throw new Error('truncated varint');
  };
  try {
    while (i < bytes.length) {
      const key = varint();
      const field = Math.floor(key / 8);
      const wire = key % 8;
      if (wire === 0) {
        const value = varint();
        if (field === 1) return value !== 0;
      } else if (wire === 2) {
        i += varint();
      } else if (wire === 1) {
        i += 8;
      } else if (wire === 5) {
        i += 4;
      } else {
        return false;  // groups or garbage: nothing we can read
      }
    }
  } catch {
    return false;
  }
  return false;
}
