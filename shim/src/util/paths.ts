// Where Stencil's own files are: the repository (or install) root and the build cache.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The directory holding package.json: dist/shim/src/util -> four levels up. */
export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('cannot find the Stencil installation (no package.json above the code)');
    dir = parent;
  }
  return dir;
}

export function cacheDir(): string {
  return process.env.STENCIL_CACHE ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'stencil');
}

export interface GuestArtifacts {
  kernel: string;
  initrd: string;
}

/** The guest kernel and initramfs that `make` built (recorded in build/guest.json). */
export function builtGuestArtifacts(): GuestArtifacts {
  const file = path.join(repoRoot(), 'build', 'guest.json');
  let parsed: Partial<GuestArtifacts>;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<GuestArtifacts>;
  } catch (err) {
    throw new Error(`no built guest kernel/initramfs recorded in ${file} (run 'make guest'): ${(err as Error).message}`, { cause: err });
  }
  if (!parsed.kernel || !parsed.initrd) throw new Error(`${file} lacks "kernel" or "initrd"`);
  return { kernel: parsed.kernel, initrd: parsed.initrd };
}

/** Where `name` would be run from through `searchPath` (a PATH value), as execvp looks; '' if nowhere. */
export function commandOnPath(name: string, searchPath = process.env.PATH ?? ''): string {
  for (const dir of searchPath.split(':')) {
    const candidate = path.join(dir || '.', name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return '';
}
