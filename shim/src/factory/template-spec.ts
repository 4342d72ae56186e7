// What a VM template is made of, and the key that names it. Two VMs may share a template only if
// they would have booted identically: same kernel and initramfs *contents* (the agent lives in the
// initramfs), vCPUs, memory, command line and device set. The key hashes exactly that, so a
// changed kernel or agent can never match an old template: it is stale, not reused.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/** Bumped whenever the template directory's layout or meaning changes. */
export const TEMPLATE_FORMAT = 1;

export interface TemplateSpec {
  kernel: string;
  initrd: string;
  vcpus: number;
  memoryBytes: number;
  /** The kernel command line without the per-VM device declarations. */
  cmdline: string;
  /** The guest-visible device set, e.g. "rng,vsock,9p:pod": clones must see the same devices. */
  devices: string;
}

export interface TemplateInputs extends TemplateSpec {
  format: number;
  kernelSha256: string;
  initrdSha256: string;
}

export function templateKey(inputs: TemplateInputs): string {
  const canonical = JSON.stringify([
    inputs.format,
    inputs.kernelSha256,
    inputs.initrdSha256,
    inputs.vcpus,
    inputs.memoryBytes,
    inputs.cmdline,
    inputs.devices,
  ]);
  return crypto.createHash('sha256').update(canonical).digest('hex').slice(0, 20);
}

interface CachedDigest {
  dev: number;
  ino: number;
  size: number;
  mtimeNs: string;
  ctimeNs: string;
  sha256: string;
}

/**
 * SHA-256 of files, remembered in a small JSON file under `cacheDir` by device, inode, size and
 * both timestamps, so a pod start does not re-read a kernel that has not changed. Any change to
 * the file (even with the same size) changes ctime, so a stale digest is never served.
 */
export class FileDigests {
  private readonly cacheFile: string;
  private cache: Record<string, CachedDigest> | undefined;

  constructor(cacheDir: string) {
    this.cacheFile = path.join(cacheDir, '.digests.json');
  }

  sha256(file: string): string {
    const st = fs.statSync(file, { bigint: true });
    if (!st.isFile()) throw new Error(`${file} is not a regular file`);
    const id = { dev: Number(st.dev), ino: Number(st.ino), size: Number(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs) };
    this.cache ??= this.load();
    const hit = this.cache[file];
    if (hit && hit.dev === id.dev && hit.ino === id.ino && hit.size === id.size && hit.mtimeNs === id.mtimeNs && hit.ctimeNs === id.ctimeNs) {
      return hit.sha256;
    }
    const sha256 = crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
    this.cache[file] = { ...id, sha256 };
    this.save();
    return sha256;
  }

  private load(): Record<string, CachedDigest> {
    try {
      const parsed = JSON.parse(fs.readFileSync(this.cacheFile, 'utf8')) as unknown;
      return typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, CachedDigest>) : {};
    } catch {
      return {}; // absent or damaged: digests are recomputed
    }
  }

  private save(): void {
    const tmp = `${this.cacheFile}.${process.pid}.tmp`;
    try {
      fs.writeFileSync(tmp, JSON.stringify(this.cache), { mode: 0o600 });
      fs.renameSync(tmp, this.cacheFile);
    } catch {
      fs.rmSync(tmp, { force: true }); // a cache that cannot be written only costs a re-hash
    }
  }
}

export function templateInputs(spec: TemplateSpec, digests: FileDigests): TemplateInputs {
  return { ...spec, format: TEMPLATE_FORMAT, kernelSha256: digests.sha256(spec.kernel), initrdSha256: digests.sha256(spec.initrd) };
}
