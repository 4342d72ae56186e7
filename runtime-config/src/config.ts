// Stencil's runtime configuration (like Kata's configuration.toml): types, defaults, strict
// validation and the file search order. Every problem in a file is collected and reported at
// once, naming the key and the file, so an operator can fix a broken config in one pass.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { ErrorCode } from '../../common/src/errors.js';
import { parseSize } from './size.js';

export type LogLevel = 'error' | 'warn' | 'info' | 'http' | 'verbose' | 'debug' | 'silly';
export type MemoryBacking = 'tmpfs' | 'memfd';
export type Transport = 'auto' | 'ttrpc' | 'grpc';

export interface HypervisorConfig {
  /** Guest kernel image; "" means the kernel the build produced (build/guest.json). */
  kernel: string;
  /** Guest initramfs; "" means the initramfs the build produced. */
  initrd: string;
  /** Appended to Stencil's default kernel command line. */
  kernelParams: string;
  defaultVcpus: number;
  /** Guest RAM in bytes. */
  defaultMemory: number;
  /** Directory holding tmpfs-backed guest RAM files. */
  memoryDir: string;
  memoryBacking: MemoryBacking;
  /** Confine the VMM's threads to seccomp allow-lists (Firecracker's model); off only to debug. */
  seccomp: boolean;
}

export interface RuntimeConfig {
  logLevel: LogLevel;
  stateDir: string;
  /** How the shim talks to containerd. */
  transport: Transport;
  /** Honour io.stencil.failpoint.* annotations (fault injection in tests; never in production). */
  failpoints: boolean;
  /**
   * How long the shim waits for the guest agent's answer to a request (WaitProcess excepted).
   * When it times out, a ping that gets no answer either ends the pod: its guest is hung.
   */
  agentRequestTimeoutMs: number;
  /**
   * How long the shim daemon's own exit (pod shut down, sockets closed) may take before the daemon
   * forces itself out: it then removes its socket, the pod's RAM file and state directory and
   * exits 1, leaving nothing behind for containerd or the host to clean.
   */
  exitGraceMs: number;
  /**
   * Keep one spare shim daemon per containerd, loaded and waiting, so a new pod's `start` hands
   * it the pod instead of starting Node (shim/launcher/spare.c). Costs one idle daemon's memory.
   */
  spareDaemon: boolean;
  /**
   * What holds a CRI pod's namespaces: "agent" (default), the guest agent's own pause process (no
   * crun, no rootfs shared; used when the sandbox's spec asks for nothing else), or "image", crun
   * running the sandbox image's /pause.
   */
  sandboxPause: SandboxPause;
}

export type SandboxPause = 'agent' | 'image';

export type MissPolicy = 'boot' | 'fail';

/** VM templates (like Kata's [factory]): pods are cloned from paused template VMs. */
export interface FactoryConfig {
  /** Clone pod VMs from templates when one matches. */
  enabled: boolean;
  /** The template directory; made a tmpfs of templateDirSize when a template is first created. */
  templateDir: string;
  templateDirSize: number;
  /** When no template matches a pod's VM: cold-boot it (with a warning) or refuse the pod. */
  onMiss: MissPolicy;
}

export interface StencilConfig {
  hypervisor: HypervisorConfig;
  factory: FactoryConfig;
  runtime: RuntimeConfig;
}

export interface LoadConfigOptions {
  /** Explicit file, e.g. containerd's runtime option `config_path`; "" counts as unset. */
  path?: string;
  /** Environment to read STENCIL_CONFIG from; defaults to process.env. */
  env?: NodeJS.ProcessEnv;
  /** System-wide file, used only if it exists; overridable for tests. */
  systemPath?: string;
}

export interface LoadedConfig {
  config: StencilConfig;
  /** The file the configuration came from, or "defaults". */
  source: string;
}

/**
 * smol-toml, loaded (as its one-file CommonJS build) only when a file is parsed: the shim's
 * `start` and `delete` run on every container start and stop, mostly with no file to read.
 */
let tomlModule: typeof import('smol-toml') | undefined;
function toml(): typeof import('smol-toml') {
  tomlModule ??= createRequire(import.meta.url)('smol-toml') as typeof import('smol-toml');
  return tomlModule;
}

export const DEFAULT_CONFIG_PATH = '/etc/stencil/configuration.toml';
export const CONFIG_ENV_VAR = 'STENCIL_CONFIG';

export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly'];
export const MEMORY_BACKINGS: readonly MemoryBacking[] = ['tmpfs', 'memfd'];
export const TRANSPORTS: readonly Transport[] = ['auto', 'ttrpc', 'grpc'];
export const SANDBOX_PAUSES: readonly SandboxPause[] = ['agent', 'image'];
export const MISS_POLICIES: readonly MissPolicy[] = ['boot', 'fail'];

// The VM limits (vCPU count, memory size and granularity) are the VMM's to check, in one place:
// a value the VMM refuses fails the pod's boot with a message naming the limit, so only types
// and formats are checked here.

/** A fresh copy of the built-in defaults (callers may mutate it). */
export function defaultConfig(): StencilConfig {
  return {
    hypervisor: {
      kernel: '',
      initrd: '',
      kernelParams: '',
      defaultVcpus: 1,
      defaultMemory: 256 * 2 ** 20,
      memoryDir: '/dev/shm/stencil',
      memoryBacking: 'tmpfs',
      seccomp: true,
    },
    factory: { enabled: true, templateDir: '/run/stencil-templates', templateDirSize: 4 * 2 ** 30, onMiss: 'boot' },
    runtime: { logLevel: 'info', stateDir: '/run/stencil', transport: 'auto', failpoints: false, agentRequestTimeoutMs: 60_000, exitGraceMs: 10_000, spareDaemon: true, sandboxPause: 'agent' },
  };
}

/** One or more problems with a configuration; `message` lists them all, one per line. */
export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly code = ErrorCode.InvalidArgument;
  constructor(
    readonly source: string,
    readonly problems: string[],
    options?: ErrorOptions,
  ) {
    // Each problem already names the file, so the heading doesn't repeat it.
    super(
      problems.length === 1
        ? `invalid Stencil configuration: ${problems[0]}`
        : `invalid Stencil configuration (${problems.length} problems):\n${problems.map((p) => `  - ${p}`).join('\n')}`,
      options,
    );
  }
}

// --- schema -----------------------------------------------------------------------------------

type Check<T> = (value: unknown) => { value: T } | { error: string };

interface KeySpec<T = unknown> {
  /** What is accepted, in words; appended to every error for this key. */
  allowed: string;
  check: Check<T>;
}

// Integers are parsed as bigint so that `2.0` (a float) is distinguishable from `2`.
function describe(value: unknown): string {
  if (typeof value === 'bigint') return `the integer ${value}`;
  if (typeof value === 'number') return `the float ${value}`;
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`;
  if (typeof value === 'boolean') return `the boolean ${value}`;
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Date) return `the date-time ${value.toISOString()}`;
  return 'a table';
}

const wrongType = (expected: string, value: unknown) => ({ error: `expected ${expected}, got ${describe(value)}` });

function stringKey(): KeySpec<string> {
  return {
    allowed: 'any string',
    check: (v) => (typeof v === 'string' ? { value: v } : wrongType('a string', v)),
  };
}

function pathKey(emptyMeans?: string): KeySpec<string> {
  return {
    allowed: emptyMeans ? `an absolute path, or "" for ${emptyMeans}` : 'an absolute path',
    check: (v) => {
      if (typeof v !== 'string') return wrongType('a string', v);
      if (v === '' && emptyMeans) return { value: v };
      // Relative paths would depend on the shim's working directory, which containerd chooses.
      if (!path.isAbsolute(v) || v.includes('\0')) return { error: `${JSON.stringify(v)} is not an absolute path` };
      return { value: v };
    },
  };
}

function boolKey(): KeySpec<boolean> {
  return {
    allowed: 'true or false',
    check: (v) => (typeof v === 'boolean' ? { value: v } : wrongType('a boolean', v)),
  };
}

function intKey(min: number, max: number, allowed = `an integer from ${min} to ${max}`): KeySpec<number> {
  return {
    allowed,
    check: (v) => {
      if (typeof v !== 'bigint') return wrongType('an integer', v);
      if (v < BigInt(min) || v > BigInt(max)) return { error: `${v} is out of range` };
      return { value: Number(v) };
    },
  };
}

function sizeKey(): KeySpec<number> {
  return {
    allowed: 'a size like "256M" or "1G" (or an integer number of bytes)',
    check: (v) => {
      if (typeof v !== 'string' && typeof v !== 'bigint') return wrongType('a size string or an integer', v);
      let bytes: number;
      try {
        if (typeof v === 'bigint' && !Number.isSafeInteger(Number(v))) throw new RangeError(`${v} is too large`);
        bytes = parseSize(typeof v === 'bigint' ? Number(v) : v, typeof v === 'bigint' ? 'integer' : 'size');
      } catch (err) {
        return { error: (err as Error).message };
      }
      return { value: bytes };
    },
  };
}

function enumKey<T extends string>(values: readonly T[]): KeySpec<T> {
  return {
    allowed: values.map((s) => JSON.stringify(s)).join(', '),
    check: (v) => {
      if (typeof v !== 'string') return wrongType('a string', v);
      return (values as readonly string[]).includes(v) ? { value: v as T } : { error: `${JSON.stringify(v)} is not a valid choice` };
    },
  };
}

// Keyed by the camelCase field, so each check's result type must match the field's type; the
// TOML key is the snake_case form of the field name.
type SectionSpec<C> = { [F in keyof C]-?: KeySpec<C[F]> };

const SCHEMA: { [S in keyof StencilConfig]: SectionSpec<StencilConfig[S]> } = {
  hypervisor: {
    kernel: pathKey('the kernel the build produced'),
    initrd: pathKey('the initramfs the build produced'),
    kernelParams: stringKey(),
    defaultVcpus: intKey(1, 2 ** 32 - 1, 'a positive integer (the VMM has the maximum)'),
    defaultMemory: sizeKey(),
    memoryDir: pathKey(),
    memoryBacking: enumKey(MEMORY_BACKINGS),
    seccomp: boolKey(),
  },
  factory: {
    enabled: boolKey(),
    templateDir: pathKey(),
    templateDirSize: sizeKey(),
    onMiss: enumKey(MISS_POLICIES),
  },
  runtime: {
    logLevel: enumKey(LOG_LEVELS),
    stateDir: pathKey(),
    transport: enumKey(TRANSPORTS),
    failpoints: boolKey(),
    agentRequestTimeoutMs: intKey(1_000, 3_600_000, 'milliseconds, from 1000 to 3600000'),
    exitGraceMs: intKey(1, 600_000, 'milliseconds, from 1 to 600000'),
    spareDaemon: boolKey(),
    sandboxPause: enumKey(SANDBOX_PAUSES),
  },
};

const SECTIONS = Object.keys(SCHEMA) as (keyof StencilConfig)[];

const toSnake = (field: string) => field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** Per section: TOML key -> [camelCase field, spec], in schema order. */
const TOML_KEYS = Object.fromEntries(
  SECTIONS.map((section) => {
    const specs = SCHEMA[section] as Record<string, KeySpec>;
    return [section, new Map(Object.entries(specs).map(([field, spec]) => [toSnake(field), [field, spec] as const]))];
  }),
) as Record<keyof StencilConfig, Map<string, readonly [string, KeySpec]>>;

const isTable = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);

// Tolerates the usual slips (camelCase, dashes, wrong section) by comparing loosely.
function suggestion(key: string, exclude?: string): string {
  const loose = (s: string) => s.toLowerCase().replace(/[-_]/g, '');
  for (const section of SECTIONS) {
    for (const known of TOML_KEYS[section].keys()) {
      const full = `${section}.${known}`;
      if (full !== exclude && loose(known) === loose(key)) return `; did you mean ${full}?`;
    }
  }
  return '';
}

// --- parsing ----------------------------------------------------------------------------------

/** Parses and validates configuration text; `sourceName` (usually the file path) appears in errors. */
export function parseConfig(text: string, sourceName: string): StencilConfig {
  let doc: Record<string, unknown>;
  try {
    doc = toml().parse(text.replace(/^\uFEFF/, ''), { integersAsBigInt: true });
  } catch (err) {
    if (!(err instanceof toml().TomlError)) throw err;
    const reason = err.message.split('\n')[0].replace(/^Invalid TOML document:\s*/, '');
    throw new ConfigError(sourceName, [`${sourceName}:${err.line}:${err.column}: TOML syntax error: ${reason}`], { cause: err });
  }

  const config = defaultConfig();
  const problems: string[] = [];
  const sectionList = SECTIONS.map((s) => `[${s}]`).join(', ');

  for (const name of Object.keys(doc)) {
    const value = doc[name];
    if (!Object.hasOwn(SCHEMA, name)) {
      problems.push(
        isTable(value) || (Array.isArray(value) && value.length > 0 && value.every(isTable))
          ? `${sourceName}: [${name}]: unknown section; allowed sections: ${sectionList}`
          : `${sourceName}: ${name}: unknown top-level key; settings belong in one of ${sectionList}${suggestion(name)}`,
      );
      continue;
    }
    const section = name as keyof StencilConfig;
    if (!isTable(value)) {
      problems.push(`${sourceName}: ${section}: expected a table ([${section}]), got ${describe(value)}`);
      continue;
    }
    const known = TOML_KEYS[section];
    const target = config[section] as unknown as Record<string, unknown>;
    for (const key of Object.keys(value)) {
      const full = `${section}.${key}`;
      const entry = known.get(key);
      if (!entry) {
        const keys = [...known.keys()].join(', ');
        problems.push(`${sourceName}: ${full}: unknown key; allowed keys in [${section}]: ${keys}${suggestion(key, full)}`);
        continue;
      }
      const [field, spec] = entry;
      const result = spec.check(value[key]);
      if ('error' in result) problems.push(`${sourceName}: ${full}: ${result.error}; allowed: ${spec.allowed}`);
      else target[field] = result.value;
    }
  }

  if (problems.length > 0) throw new ConfigError(sourceName, problems);
  return config;
}

// `origin` says why this file was chosen; an `optional` file that is absent yields undefined.
function readConfigFile(file: string, origin: string, optional = false): LoadedConfig | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    // Only absence is tolerated; an unreadable file is a misconfiguration to report.
    if (missing && optional) return undefined;
    const reason = missing ? 'does not exist' : `cannot be read (${(err as Error).message})`;
    throw new ConfigError(file, [`${file}: configuration file ${reason} (${origin})`], { cause: err });
  }
  return { config: parseConfig(text, file), source: file };
}

/**
 * Finds and loads the configuration, in Kata's order: the explicit `path`, else $STENCIL_CONFIG,
 * else the system file if it exists, else the built-in defaults. A file that was asked for
 * explicitly (by `path` or the environment) must exist.
 */
export function loadConfig(options: LoadConfigOptions = {}): LoadedConfig {
  const env = options.env ?? process.env;
  if (options.path) return readConfigFile(path.resolve(options.path), 'given as config_path')!;
  const fromEnv = env[CONFIG_ENV_VAR];
  if (fromEnv) return readConfigFile(path.resolve(fromEnv), `named by $${CONFIG_ENV_VAR}`)!;
  const systemPath = options.systemPath ?? DEFAULT_CONFIG_PATH;
  return readConfigFile(systemPath, 'the system-wide file', true) ?? { config: defaultConfig(), source: 'defaults' };
}
