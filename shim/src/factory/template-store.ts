// The template directory: one subdirectory per template, named by its key (template-spec.ts),
// holding what the VMM saved (`memory`, `state`, `config`) and Stencil's `template.json`.
// A template is built in a private `.build-*` directory under a per-key lock and appears under its
// key only by an atomic rename once complete, so two builders never build the same template twice
// and a reader never sees a half-built one. Removing a template does not disturb running clones:
// they map the memory file's inode, which lives on until the last clone unmaps it.
import fs from 'node:fs';
import path from 'node:path';
import lockfile from 'proper-lockfile';
import { FileDigests, type TemplateInputs, type TemplateSpec, TEMPLATE_FORMAT, templateInputs, templateKey } from './template-spec.js';
import { processAlive } from '../util/process.js';

export const TEMPLATE_FILES = ['memory', 'state', 'config'] as const;
const META = 'template.json';
const SERVED = 'served';
/** The miss counter and the last few missed shapes (bounded: one small JSON file, replaced whole). */
const MISSES = 'misses.json';
const RECENT_MISSES = 20;
/** A lock not refreshed for this long belongs to a dead process (a build under TCG can stall the loop for seconds). */
const LOCK_STALE_MS = 60_000;

export class TemplateError extends Error {
  override name = 'TemplateError';
  constructor(
    message: string,
    readonly code: 'not-found' | 'stale' | 'invalid' | 'build-failed',
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export interface TemplateRecord {
  key: string;
  dir: string;
  inputs: TemplateInputs;
  createdAt: Date;
  /** Bytes the template occupies on its tmpfs (allocated blocks, not the sparse size). */
  sizeBytes: number;
  clonesServed: number;
  /** Why the template can no longer be used (its kernel or initramfs changed), if so. */
  stale?: string;
}

export interface CreateProgress {
  (step: string): void;
}

/** Builds a template's VMM files into `workDir` (the RAM file must end up as `workDir/memory`). */
export type TemplateBuilder = (workDir: string, inputs: TemplateInputs, progress: CreateProgress) => Promise<void>;

export class TemplateStore {
  readonly digests: FileDigests;

  constructor(readonly root: string) {
    this.digests = new FileDigests(root);
  }

  /** The ready template for this spec, if one exists (never a stale or half-built one). */
  find(spec: TemplateSpec): TemplateRecord | undefined {
    if (!fs.existsSync(this.root)) return undefined;
    const key = templateKey(templateInputs(spec, this.digests));
    const dir = path.join(this.root, key);
    return fs.existsSync(path.join(dir, META)) ? this.read(key) : undefined;
  }

  /** The template with this key; stale ones are refused unless `allowStale` (inspect, rm). */
  get(key: string, options: { allowStale?: boolean } = {}): TemplateRecord {
    if (!/^[0-9a-f]{20}$/.test(key)) throw new TemplateError(`'${key}' is not a template key (20 hex digits)`, 'invalid');
    if (!fs.existsSync(path.join(this.root, key, META))) throw new TemplateError(`no template ${key} in ${this.root}`, 'not-found');
    const record = this.read(key);
    if (record.stale && !options.allowStale) throw new TemplateError(`template ${key} is stale: ${record.stale}`, 'stale');
    return record;
  }

  list(): TemplateRecord[] {
    if (!fs.existsSync(this.root)) return [];
    return fs
      .readdirSync(this.root)
      .filter((name) => /^[0-9a-f]{20}$/.test(name) && fs.existsSync(path.join(this.root, name, META)))
      .map((key) => this.read(key))
      .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
  }

  /**
   * Returns the template for `spec`, building it first if needed. Concurrent callers for the same
   * spec (other shims, `pool init`) wait for one build. A failed build leaves nothing behind.
   */
  async create(spec: TemplateSpec, build: TemplateBuilder, progress: CreateProgress = () => undefined): Promise<{ record: TemplateRecord; built: boolean }> {
    fs.mkdirSync(this.root, { recursive: true, mode: 0o700 });
    this.removeAbandonedBuilds();
    const inputs = templateInputs(spec, this.digests);
    const key = templateKey(inputs);
    const finalDir = path.join(this.root, key);
    progress('waiting for the template lock');
    const release = await this.lock(key);
    try {
      if (fs.existsSync(path.join(finalDir, META))) return { record: this.read(key), built: false };
      const workDir = path.join(this.root, `.build-${key}-${process.pid}`);
      fs.rmSync(workDir, { recursive: true, force: true });
      fs.mkdirSync(workDir, { mode: 0o700 });
      try {
        await build(workDir, inputs, progress);
        for (const name of TEMPLATE_FILES) {
          const file = path.join(workDir, name);
          if (!fs.existsSync(file)) throw new Error(`the VMM did not write ${name}`);
          fs.chmodSync(file, 0o600);
        }
        writeFileAtomic(path.join(workDir, META), JSON.stringify({ inputs, createdAt: new Date().toISOString() }, null, 2) + '\n');
        fs.renameSync(workDir, finalDir);
      } catch (err) {
        fs.rmSync(workDir, { recursive: true, force: true });
        throw new TemplateError(`building template ${key} failed: ${(err as Error).message}`, 'build-failed', { cause: err });
      }
      return { record: this.read(key), built: true };
    } finally {
      await release();
    }
  }

  /** Deletes a template. Running clones keep their memory (the inode outlives the name). */
  async remove(key: string): Promise<void> {
    this.get(key, { allowStale: true });
    const release = await this.lock(key);
    try {
      // Renamed away first, so a concurrent find() sees it either whole or not at all.
      const doomed = path.join(this.root, `.removing-${key}-${process.pid}`);
      fs.renameSync(path.join(this.root, key), doomed);
      fs.rmSync(doomed, { recursive: true, force: true });
    } finally {
      await release();
    }
  }

  /** Counts a clone served from the template (one byte appended: atomic across processes). */
  recordClone(key: string): void {
    fs.appendFileSync(path.join(this.root, key, SERVED), '.', { mode: 0o600 });
  }

  /**
   * Records a pod that no template matched (the count and the last few shapes, replaced whole by
   * a rename; two shims missing at the same instant may count once) and returns how many misses
   * are on record. Best effort: a store that does not exist yet (it is
   * made by the first template) or cannot be written still lets the pod boot.
   */
  recordMiss(spec: TemplateSpec): number {
    const record = this.readMisses();
    record.count++;
    record.recent = [...record.recent, { at: new Date().toISOString(), vcpus: spec.vcpus, memoryBytes: spec.memoryBytes, kernel: spec.kernel, initrd: spec.initrd }].slice(-RECENT_MISSES);
    try {
      const file = path.join(this.root, MISSES);
      const temp = `${file}.${process.pid}.tmp`;
      fs.writeFileSync(temp, JSON.stringify(record), { mode: 0o600 });
      fs.renameSync(temp, file);
    } catch {
      // counted in the pod's warning only
    }
    return record.count;
  }

  /** Pods that found no template, ever (until the store is destroyed). */
  misses(): number {
    return this.readMisses().count;
  }

  private readMisses(): { count: number; recent: Array<Record<string, unknown>> } {
    try {
      const parsed = JSON.parse(fs.readFileSync(path.join(this.root, MISSES), 'utf8')) as { count?: unknown; recent?: unknown };
      if (typeof parsed.count === 'number' && Array.isArray(parsed.recent)) return { count: parsed.count, recent: parsed.recent as Array<Record<string, unknown>> };
    } catch {
      // none recorded yet, or unreadable: start over
    }
    return { count: 0, recent: [] };
  }

  private read(key: string): TemplateRecord {
    const dir = path.join(this.root, key);
    let meta: { inputs: TemplateInputs; createdAt: string };
    try {
      meta = JSON.parse(fs.readFileSync(path.join(dir, META), 'utf8')) as typeof meta;
    } catch (err) {
      throw new TemplateError(`template ${key}: unreadable ${META}: ${(err as Error).message}`, 'invalid', { cause: err });
    }
    let served = 0;
    try {
      served = fs.statSync(path.join(dir, SERVED)).size;
    } catch {
      // never cloned
    }
    let sizeBytes = 0;
    for (const name of fs.readdirSync(dir)) sizeBytes += fs.statSync(path.join(dir, name)).blocks * 512;
    return { key, dir, inputs: meta.inputs, createdAt: new Date(meta.createdAt), sizeBytes, clonesServed: served, stale: this.staleness(meta.inputs) };
  }

  private staleness(inputs: TemplateInputs): string | undefined {
    if (inputs.format !== TEMPLATE_FORMAT) return `template format ${inputs.format}, this Stencil uses ${TEMPLATE_FORMAT}`;
    for (const [what, file, sha] of [
      ['kernel', inputs.kernel, inputs.kernelSha256],
      ['initramfs', inputs.initrd, inputs.initrdSha256],
    ] as const) {
      let now: string;
      try {
        now = this.digests.sha256(file);
      } catch (err) {
        return `its ${what} ${file} is gone (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
      }
      if (now !== sha) return `its ${what} ${file} changed since the template was made`;
    }
    return undefined;
  }

  private async lock(key: string): Promise<() => Promise<void>> {
    const locks = path.join(this.root, '.locks');
    fs.mkdirSync(locks, { recursive: true, mode: 0o700 });
    return lockfile.lock(path.join(locks, key), {
      realpath: false,
      stale: LOCK_STALE_MS,
      retries: { retries: 600, factor: 1, minTimeout: 500, maxTimeout: 500 },
      lockfilePath: path.join(locks, `${key}.lock`),
      // The default throws from a timer (killing the process) when the lock could not be
      // refreshed in time; a second builder then at worst loses the final rename and fails cleanly.
      onCompromised: () => undefined,
    });
  }

  /** Build directories of processes that died mid-build. */
  private removeAbandonedBuilds(): void {
    for (const name of fs.readdirSync(this.root)) {
      const match = /^\.(?:build|removing)-[0-9a-f]{20}-(\d+)$/.exec(name);
      if (match && !processAlive(Number(match[1]))) fs.rmSync(path.join(this.root, name), { recursive: true, force: true });
    }
  }
}

function writeFileAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, text, { mode: 0o600 });
  fs.renameSync(tmp, file);
}
