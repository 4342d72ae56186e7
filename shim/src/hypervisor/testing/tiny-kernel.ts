// Test support for the hypervisor layer (not used by the runtime): a minimal guest "kernel".

/** An ELF64 x86-64 vmlinux with one PT_LOAD segment at 16 MiB whose entry point runs `code` (64-bit mode). */
export function tinyElfKernel(code: number[] = []): Buffer {
  const elf = Buffer.alloc(0x1000 + 0x200);
  elf.write('\x7fELF', 0, 'latin1');
  elf[4] = 2; // 64-bit
  elf[5] = 1; // little endian
  elf[6] = 1;
  elf.writeUInt16LE(2, 16); // ET_EXEC
  elf.writeUInt16LE(62, 18); // EM_X86_64
  elf.writeBigUInt64LE(0x1000000n, 24); // entry
  elf.writeBigUInt64LE(64n, 32); // phoff
  elf.writeUInt16LE(56, 54); // phentsize
  elf.writeUInt16LE(1, 56); // phnum
  elf.writeUInt32LE(1, 64); // PT_LOAD
  elf.writeUInt32LE(5, 68); // R+X
  elf.writeBigUInt64LE(0x1000n, 64 + 8); // offset
  elf.writeBigUInt64LE(0x1000000n, 64 + 16); // vaddr
  elf.writeBigUInt64LE(0x1000000n, 64 + 24); // paddr
  elf.writeBigUInt64LE(0x200n, 64 + 32); // filesz
  elf.writeBigUInt64LE(0x200n, 64 + 40); // memsz
  Buffer.from(code).copy(elf, 0x1000);
  return elf;
}
