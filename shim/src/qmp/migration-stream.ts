// The byte stream `migrate "exec:CMD"` writes to the command's stdin and `migrate-incoming
// "exec:CMD"` reads from its stdout: a VM's state and configuration without its RAM (with
// x-ignore-shared, RAM stays in the shared memory file both sides map), plus the run state the
// source was in, so the destination resumes only a guest that was running.
//
//   "STNCMIG\n"                          8 bytes magic
//   u32 LE format version                (MIGRATION_STREAM_VERSION)
//   u32 LE section count
//   per section: u8 name length, name (ASCII), u32 LE payload length, payload
//   32-byte SHA-256 of every byte above
//
// Sections: "run-state" ("running" | "paused"), "vm-state" (the VMM's state file, itself
// versioned and checksummed), "vm-config" (the snapshot config JSON). A reader refuses a wrong
// magic, another version, a truncated or corrupt stream, and missing, duplicate or unknown sections,
// each with an error that says which.
import crypto from 'node:crypto';
import type { SavedVmState } from '../hypervisor/native.js';

export const MIGRATION_STREAM_MAGIC = Buffer.from('STNCMIG\n', 'latin1');
export const MIGRATION_STREAM_VERSION = 1;
const DIGEST_BYTES = 32;
const SECTIONS = ['run-state', 'vm-state', 'vm-config'] as const;

/** The run state the source VM was in when the migration began. */
export type SavedRunState = 'running' | 'paused';

export interface MigrationStreamContent {
  runState: SavedRunState;
  vm: SavedVmState;
}

export class MigrationStreamError extends Error {
  constructor(message: string) {
    super(`migration stream: ${message}`);
    this.name = 'MigrationStreamError';
  }
}

export function encodeMigrationStream(content: MigrationStreamContent): Buffer {
  const payloads: Record<(typeof SECTIONS)[number], Buffer> = {
    'run-state': Buffer.from(content.runState, 'latin1'),
    'vm-state': content.vm.state,
    'vm-config': Buffer.from(content.vm.config, 'utf8'),
  };
  const parts: Buffer[] = [MIGRATION_STREAM_MAGIC, u32(MIGRATION_STREAM_VERSION), u32(SECTIONS.length)];
  for (const name of SECTIONS) {
    const payload = payloads[name];
    parts.push(Buffer.from([name.length]), Buffer.from(name, 'latin1'), u32(payload.length), payload);
  }
  const body = Buffer.concat(parts);
  return Buffer.concat([body, crypto.createHash('sha256').update(body).digest()]);
}

export function decodeMigrationStream(bytes: Buffer): MigrationStreamContent {
  const headerBytes = MIGRATION_STREAM_MAGIC.length + 8;
  if (bytes.length >= MIGRATION_STREAM_MAGIC.length && !bytes.subarray(0, MIGRATION_STREAM_MAGIC.length).equals(MIGRATION_STREAM_MAGIC)) {
    throw new MigrationStreamError('not a Stencil migration stream (bad magic)');
  }
  if (bytes.length < headerBytes + DIGEST_BYTES) {
    throw new MigrationStreamError(`truncated: ${bytes.length} bytes, shorter than any valid stream`);
  }
  const version = bytes.readUInt32LE(MIGRATION_STREAM_MAGIC.length);
  if (version !== MIGRATION_STREAM_VERSION) {
    throw new MigrationStreamError(`format version ${version}, this Stencil reads version ${MIGRATION_STREAM_VERSION}`);
  }
  const body = bytes.subarray(0, bytes.length - DIGEST_BYTES);
  const digest = crypto.createHash('sha256').update(body).digest();
  if (!digest.equals(bytes.subarray(bytes.length - DIGEST_BYTES))) {
    throw new MigrationStreamError(`checksum mismatch (the ${bytes.length}-byte stream is corrupt or truncated)`);
  }

  const count = body.readUInt32LE(MIGRATION_STREAM_MAGIC.length + 4);
  const sections = new Map<string, Buffer>();
  let pos = headerBytes;
  const need = (n: number, what: string) => {
    if (pos + n > body.length) throw new MigrationStreamError(`truncated in ${what} (needs ${n} bytes at offset ${pos}, ${body.length - pos} left)`);
  };
  for (let i = 0; i < count; i++) {
    need(1, `section ${i}'s name length`);
    const nameLength = body[pos++];
    need(nameLength, `section ${i}'s name`);
    const name = body.toString('latin1', pos, pos + nameLength);
    pos += nameLength;
    if (!(SECTIONS as readonly string[]).includes(name)) throw new MigrationStreamError(`unknown section '${name}'`);
    if (sections.has(name)) throw new MigrationStreamError(`section '${name}' appears twice`);
    need(4, `section '${name}''s length`);
    const length = body.readUInt32LE(pos);
    pos += 4;
    need(length, `section '${name}'`);
    sections.set(name, body.subarray(pos, pos + length));
    pos += length;
  }
  if (pos !== body.length) throw new MigrationStreamError(`${body.length - pos} unexpected bytes after the last section`);
  for (const name of SECTIONS) if (!sections.has(name)) throw new MigrationStreamError(`missing section '${name}'`);
  const runState = sections.get('run-state')!.toString('latin1');
  if (runState !== 'running' && runState !== 'paused') throw new MigrationStreamError(`run state '${runState}' is neither running nor paused`);
  return {
    runState,
    vm: { state: Buffer.from(sections.get('vm-state')!), config: sections.get('vm-config')!.toString('utf8') },
  };
}

function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value);
  return b;
}
