// `stencil pool ...` and `stencil template ...`: the template pool of a configuration ([factory]
// template_dir), made ahead of time like Kata's `kata-ctl factory init`. Templates are built for
// the pod shape the shim would boot (factory/pod-shape.ts), so the shim finds exactly these.
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig, type StencilConfig } from '../../../runtime-config/src/config.js';
import { formatBytesApprox, parseSize } from '../../../runtime-config/src/size.js';
import { processesMapping } from '../factory/clone-usage.js';
import { buildPodTemplate } from '../factory/pod-template.js';
import { type PodSize, podShapeFromConfig, templateSpecOfShape } from '../factory/pod-shape.js';
import type { TemplateSpec } from '../factory/template-spec.js';
import { TemplateError, type TemplateRecord, TemplateStore } from '../factory/template-store.js';
import { ensureTmpfs, onTmpfs, TEMPLATE_TMPFS_SOURCE } from '../factory/tmpfs.js';
import { confineVmmThreads } from '../hypervisor/native.js';
import type { PodVmShape } from '../pod/vm-spec.js';
import { mountAt, unmount } from '../util/mounts.js';
import { buildProgress } from './build-progress.js';
import { CliError, type ParsedOptions } from './commands.js';
import { describeShape, formatAge, type PoolStatus, templateReport, type TmpfsReport } from './template-report.js';

export interface Pool {
  config: StencilConfig;
  /** The configuration file, or "defaults". */
  source: string;
  dir: string;
  store: TemplateStore;
}

export function openPool(configPath: string | undefined): Pool {
  const { config, source } = loadConfig({ path: configPath });
  return { config, source, dir: config.factory.templateDir, store: new TemplateStore(config.factory.templateDir) };
}

/** Runs `f`, turning the store's errors (unknown key, not a key, failed build) into messages for the user. */
async function userErrors<T>(f: () => T | Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (err) {
    if (err instanceof TemplateError) throw new CliError(err.message, { cause: err });
    throw err;
  }
}

function single<T>(value: T | T[], flag: string): T {
  if (Array.isArray(value)) throw new CliError(`${flag} was given more than once; for several pod sizes use --shape, e.g. --shape 1x256M,2x512M`);
  return value;
}

function vcpuCount(value: unknown, what: string): number {
  const n = typeof value === 'string' ? Number(value) : (value as number);
  if (!Number.isInteger(n) || n < 1) throw new CliError(`${what} must be a positive whole number of vCPUs, got ${JSON.stringify(value)}`);
  return n;
}

function memorySize(value: unknown, what: string): number {
  let bytes: number;
  try {
    bytes = parseSize(String(value), what);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  if (bytes === 0) throw new CliError(`${what} must be more than 0`);
  return bytes;
}

/**
 * The pod sizes asked for: `--shape 1x256M,2x512M` (several), or `--vcpus`/`--memory` overriding
 * the configuration's default_vcpus/default_memory, or just the configuration's (one {}).
 */
export function podSizes(options: ParsedOptions): PodSize[] {
  const vcpus = options.vcpus === undefined ? undefined : single(options.vcpus, '--vcpus');
  const memory = options.memory === undefined ? undefined : single(options.memory, '--memory');
  const shape = options.shape === undefined ? undefined : single(options.shape, '--shape');
  if (shape === undefined) {
    return [{ vcpus: vcpus === undefined ? undefined : vcpuCount(vcpus, '--vcpus'), memoryBytes: memory === undefined ? undefined : memorySize(memory, '--memory') }];
  }
  if (vcpus !== undefined || memory !== undefined) throw new CliError('--shape already gives the vCPUs and memory: leave out --vcpus and --memory');
  const sizes = String(shape)
    .split(',')
    .map((item) => {
      const m = /^\s*([^x\s]+)x(\S+?)\s*$/i.exec(item);
      if (!m) throw new CliError(`--shape "${item}" is not VCPUSxMEMORY, e.g. 2x512M`);
      return { vcpus: vcpuCount(m[1], `--shape "${item}": the vCPU count`), memoryBytes: memorySize(m[2], `--shape "${item}": the memory`) };
    });
  return sizes.filter((s, i) => sizes.findIndex((o) => o.vcpus === s.vcpus && o.memoryBytes === s.memoryBytes) === i);
}

interface PlannedTemplate {
  shape: PodVmShape;
  spec: TemplateSpec;
  label: string;
}

/** The configuration's pod shapes at these sizes, checked before anything is mounted or built. */
function planTemplates(pool: Pool, sizes: PodSize[]): PlannedTemplate[] {
  return sizes.map((size) => {
    let shape: PodVmShape;
    try {
      shape = podShapeFromConfig(pool.config.hypervisor, size);
    } catch (err) {
      throw new CliError(`the configuration's guest (${pool.source}, [hypervisor] kernel/initrd): ${(err as Error).message}`, { cause: err });
    }
    for (const [key, file] of [['kernel', shape.kernel], ['initrd', shape.initrd]] as const) {
      if (!fs.statSync(file, { throwIfNoEntry: false })?.isFile())
        throw new CliError(`[hypervisor] ${key} ${file} (${pool.source}) is not a readable file`);
    }
    return { shape, spec: templateSpecOfShape(shape), label: describeShape(shape.vcpus, shape.memoryBytes) };
  });
}

async function mountPoolTmpfs(pool: Pool): Promise<void> {
  try {
    await ensureTmpfs(pool.dir, pool.config.factory.templateDirSize);
  } catch (err) {
    throw new CliError(`[factory] template_dir ${pool.dir} (${pool.source}) cannot hold templates: ${(err as Error).message}`, { cause: err });
  }
}

function tmpfsSpace(dir: string): string {
  const st = fs.statfsSync(dir);
  return `${formatBytesApprox(st.bavail * st.bsize)} free of ${formatBytesApprox(st.blocks * st.bsize)}`;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Builds the missing templates among `planned`, one at a time; returns how many it built. */
async function createTemplates(pool: Pool, planned: PlannedTemplate[], out: NodeJS.WriteStream): Promise<number> {
  let built = 0;
  for (const { shape, spec, label } of planned) {
    const existing = await userErrors(() => pool.store.find(spec));
    if (existing) {
      out.write(`template ${existing.key} (${label}): exists, made ${formatAge(ageSeconds(existing))} ago; nothing built\n`);
      continue;
    }
    const started = Date.now();
    const progress = buildProgress(`template ${label}`, out);
    let result: { record: TemplateRecord; built: boolean };
    try {
      confineVmmThreads(pool.config.hypervisor);  // the template's VM
      result = await pool.store.create(spec, (workDir, _inputs, step) => buildPodTemplate(shape, workDir, step), progress.step);
      progress.stop(true);
    } catch (err) {
      progress.stop(false);
      if (!(err instanceof TemplateError)) throw err;
      throw new CliError(`${err.message} (template directory ${pool.dir}: ${tmpfsSpace(pool.dir)})`, { cause: err });
    }
    const { record } = result;
    if (result.built) built++;
    out.write(
      `template ${record.key} (${label}): ${result.built ? 'built' : 'built meanwhile by another process'} in ${seconds(Date.now() - started)}, ${formatBytesApprox(record.sizeBytes)} on the tmpfs\n`,
    );
  }
  return built;
}

const ageSeconds = (record: TemplateRecord) => Math.max(0, Math.floor((Date.now() - record.createdAt.getTime()) / 1000));

/** `pool init` and `template create` (which has no --shape): mount the pool's tmpfs, then make what is missing. */
export async function initPool(options: ParsedOptions, out = process.stdout): Promise<number> {
  const started = Date.now();
  const pool = openPool(options.config as string | undefined);
  const planned = planTemplates(pool, podSizes(options));
  await mountPoolTmpfs(pool);
  const built = await createTemplates(pool, planned, out);
  out.write(`pool ${pool.dir}: ${built} built, ${planned.length - built} already there, in ${seconds(Date.now() - started)}\n`);
  if (!pool.config.factory.enabled) out.write(`note: [factory] enabled = false in ${pool.source}: pods do not use templates\n`);
  return 0;
}

const memoryFile = (record: TemplateRecord) => fs.realpathSync(path.join(record.dir, 'memory'));

function tmpfsReport(dir: string): TmpfsReport {
  const real = fs.realpathSync(dir);
  const st = fs.statfsSync(real);
  const mount = mountAt(real);
  return {
    mountPoint: mount !== undefined,
    tmpfs: onTmpfs(real),
    mountedByStencil: mount?.fstype === 'tmpfs' && mount.source === TEMPLATE_TMPFS_SOURCE,
    sizeBytes: st.blocks * st.bsize,
    usedBytes: (st.blocks - st.bfree) * st.bsize,
    freeBytes: st.bavail * st.bsize,
  };
}

export async function poolStatus(pool: Pool): Promise<PoolStatus> {
  const records = await userErrors(() => pool.store.list());
  return {
    templateDir: pool.dir,
    config: pool.source,
    tmpfs: fs.existsSync(pool.dir) ? tmpfsReport(pool.dir) : null,
    misses: pool.store.misses(),
    templates: records.map((r) => templateReport(r, processesMapping(memoryFile(r)))),
  };
}

/** `template inspect KEY`: what the template was made from, what the VMM saved, and its use. */
export async function inspectTemplate(pool: Pool, key: string): Promise<object> {
  const record = await userErrors(() => pool.store.get(key, { allowStale: true }));
  const clones = processesMapping(memoryFile(record));
  const report = templateReport(record, clones);
  let vmmConfig: unknown;
  try {
    vmmConfig = JSON.parse(fs.readFileSync(path.join(record.dir, 'config'), 'utf8'));
  } catch (err) {
    throw new CliError(`template ${key}: its VMM config ${path.join(record.dir, 'config')} is unreadable: ${(err as Error).message}`, { cause: err });
  }
  return {
    key,
    dir: record.dir,
    createdAt: report.createdAt,
    inputs: record.inputs,
    vmmConfig,
    stats: { ageSeconds: report.ageSeconds, sizeBytes: report.sizeBytes, clonesServed: report.clonesServed, stale: report.stale, liveClones: report.liveClones, clones },
  };
}

/** Removes one template; returns how many running clones still map its memory (they keep it). */
export async function removeTemplate(pool: Pool, key: string): Promise<number> {
  const record = await userErrors(() => pool.store.get(key, { allowStale: true }));
  const live = processesMapping(memoryFile(record)).length;
  await userErrors(() => pool.store.remove(key));
  return live;
}

export const keptBy = (live: number) => (live ? `; ${live} running clone${live === 1 ? '' : 's'} keep${live === 1 ? 's' : ''} its memory until ${live === 1 ? 'it exits' : 'they exit'}` : '');

/** Stencil's own files in the template directory besides templates. */
const BOOKKEEPING = ['.digests.json', 'misses.json'];

/**
 * `pool destroy`: removes every template and Stencil's bookkeeping, then unmounts the tmpfs, but
 * only if Stencil mounted it, nothing is left in it and no clone still maps memory there.
 */
export async function destroyPool(pool: Pool, out = process.stdout): Promise<number> {
  if (!fs.existsSync(pool.dir)) {
    out.write(`${pool.dir} does not exist: nothing to destroy\n`);
    return 0;
  }
  let live = 0;
  for (const record of await userErrors(() => pool.store.list())) {
    const clones = await removeTemplate(pool, record.key);
    live += clones;
    out.write(`removed template ${record.key} (${describeShape(record.inputs.vcpus, record.inputs.memoryBytes)})${keptBy(clones)}\n`);
  }
  for (const name of BOOKKEEPING) fs.rmSync(path.join(pool.dir, name), { force: true });
  try {
    fs.rmdirSync(path.join(pool.dir, '.locks')); // empty unless a build holds a lock
  } catch {
    // absent, or in use by a build: reported below as left over
  }
  const real = fs.realpathSync(pool.dir);
  const mount = mountAt(real);
  const left = fs.readdirSync(real);
  let outcome: string;
  if (!mount) outcome = 'not a mount point: nothing to unmount';
  else if (mount.fstype !== 'tmpfs' || mount.source !== TEMPLATE_TMPFS_SOURCE) outcome = `left mounted: Stencil did not mount it (${mount.fstype} ${mount.source})`;
  else if (left.length) outcome = `left mounted: it still holds ${left.join(', ')} (a build in progress?)`;
  else if (live) outcome = `left mounted: running clones still use memory on it; \`stencil pool destroy\` again once they have exited unmounts it`;
  else {
    try {
      await unmount(real);
      outcome = 'unmounted its tmpfs';
    } catch (err) {
      outcome = `left mounted: ${(err as Error).message} (clones of earlier removed templates may still run)`;
    }
  }
  out.write(`pool ${pool.dir}: ${outcome}\n`);
  return 0;
}
