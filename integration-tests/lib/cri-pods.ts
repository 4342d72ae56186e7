// Building blocks of the CRI scenarios (containerd/cri.test.ts): pod and container configs as
// kubelet would send them, waiting for states, reading CRI-format logs, and the runtime handlers
// to run (runc; Stencil's "stencil" once it is added to STENCIL_CRI_HANDLERS).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { repoRoot } from '../../shim/src/util/paths.js';
import { CONTAINERD_VERSIONS, type ContainerdInstance, type ContainerdVersion } from './containerd.js';
import type { CriRuntime } from './cri-host.js';
import { type ContainerConfig, type ContainerState, type CriClient, CRI_TIMEOUT_SCALE, type LinuxResources, type PodSandboxConfig } from './cri.js';

/** What each known CRI runtime handler is in containerd's CRI runtimes table (runc is built in). */
const HANDLER_RUNTIMES: Record<string, string | undefined> = {
  runc: undefined,
  stencil: 'io.containerd.stencil.v2',
};

/** The handlers the CRI tests run: $STENCIL_CRI_HANDLERS (comma-separated), default "runc". */
export function criHandlers(): string[] {
  const list = (process.env.STENCIL_CRI_HANDLERS ?? 'runc').split(',').map((h) => h.trim()).filter((h) => h !== '');
  for (const h of list) if (!(h in HANDLER_RUNTIMES)) throw new Error(`STENCIL_CRI_HANDLERS: unknown handler ${JSON.stringify(h)} (known: ${Object.keys(HANDLER_RUNTIMES).join(', ')})`);
  return list;
}

/** The containerd versions the CRI tests run: $STENCIL_CRI_VERSIONS (comma-separated), default all. */
export function criVersions(): ContainerdVersion[] {
  const all: readonly string[] = CONTAINERD_VERSIONS;
  const list = (process.env.STENCIL_CRI_VERSIONS ?? all.join(',')).split(',').map((v) => v.trim()).filter((v) => v !== '');
  for (const v of list) if (!all.includes(v)) throw new Error(`STENCIL_CRI_VERSIONS: unknown containerd version ${JSON.stringify(v)} (known: ${all.join(', ')})`);
  return list as ContainerdVersion[];
}

/** ContainerdInstance.start() options that make `handlers` available through CRI. */
export function criStartOptions(handlers: string[], configPaths: Record<string, string> = {}): { cri: { runtimes: Record<string, CriRuntime> }; extraPath: string[] } {
  const runtimes: Record<string, CriRuntime> = {};
  for (const h of handlers) {
    const runtimeType = HANDLER_RUNTIMES[h];
    if (runtimeType) runtimes[h] = { runtimeType, configPath: configPaths[h] };
  }
  // Stencil's shim binary (containerd-shim-stencil-v2) is found on containerd's PATH.
  return { cri: { runtimes }, extraPath: handlers.includes('stencil') ? [path.join(repoRoot(), 'bin')] : [] };
}

export interface PodOptions {
  logRoot: string;
  hostname?: string;
  dnsConfig?: PodSandboxConfig['dnsConfig'];
  portMappings?: PodSandboxConfig['portMappings'];
  /** The pod's resources (kubelet's sum of its containers'). */
  resources?: LinuxResources;
}

/** A pod's config the way kubelet shapes it: metadata with a fresh uid, its log dir under logRoot. */
export function podConfig(name: string, o: PodOptions): PodSandboxConfig {
  const uid = crypto.randomUUID();
  const logDirectory = path.join(o.logRoot, `default_${name}_${uid}`);
  fs.mkdirSync(logDirectory, { recursive: true });
  return {
    metadata: { name, uid, namespace: 'default', attempt: 0 },
    hostname: o.hostname ?? name,
    logDirectory,
    dnsConfig: o.dnsConfig,
    portMappings: o.portMappings,
    labels: { 'io.kubernetes.pod.name': name, app: 'stencil-cri-test' },
    annotations: { 'stencil.test/pod': name },
    linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } }, resources: o.resources },
  };
}

/** A container config: its own PID namespace (as kubelet asks), log at <name>/0.log. */
export function containerConfig(name: string, image: string, command: string[], extra: Partial<ContainerConfig> = {}): ContainerConfig {
  return {
    metadata: { name, attempt: 0 },
    image: { image },
    command,
    logPath: `${name}/0.log`,
    labels: { 'io.kubernetes.container.name': name },
    linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
    ...extra,
  };
}

export interface RunningPod {
  id: string;
  config: PodSandboxConfig;
  /** Container ids by name. */
  containers: Record<string, string>;
}

/** RunPodSandbox, then CreateContainer + StartContainer of each container in order. */
export async function runPod(cri: CriClient, handler: string, config: PodSandboxConfig, containers: ContainerConfig[]): Promise<RunningPod> {
  const { podSandboxId } = await cri.runPodSandbox(config, handler);
  const pod: RunningPod = { id: podSandboxId, config, containers: {} };
  for (const cc of containers) {
    const id = await cri.createContainer(podSandboxId, cc, config);
    await cri.startContainer(id);
    pod.containers[cc.metadata.name] = id;
  }
  return pod;
}

/** StopPodSandbox + RemovePodSandbox (kubelet's order). */
export async function removePod(cri: CriClient, id: string): Promise<void> {
  await cri.stopPodSandbox(id);
  await cri.removePodSandbox(id);
}

/** Polls `probe` until it returns a value other than undefined; throws after timeoutMs (times CRI_TIMEOUT_SCALE) with `what`. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000, everyMs = 100): Promise<T> {
  timeoutMs *= CRI_TIMEOUT_SCALE;
  const t0 = Date.now();
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() - t0 > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? ` (last error: ${(lastErr as Error).message})` : ''}`);
    await sleep(everyMs);
  }
}

export function waitContainerState(cri: CriClient, id: string, state: ContainerState, timeoutMs = 20_000) {
  return waitFor(`container ${id.slice(0, 12)} ${state}`, async () => {
    const { status } = await cri.containerStatus(id);
    return status.state === state ? status : undefined;
  }, timeoutMs);
}

/** ExecSync of `sh -c script` until it exits 0 (e.g. a server in another container is listening); its stdout. */
export function execUntilOk(cri: CriClient, id: string, script: string, timeoutMs = 20_000): Promise<string> {
  return waitFor(`\`${script}\` to succeed in ${id.slice(0, 12)}`, async () => {
    const r = await cri.execSync(id, ['sh', '-c', script], 10);
    return r.exitCode === 0 ? r.stdout.toString() : undefined;
  }, timeoutMs, 200);
}

export interface CriLogLine {
  time: string;
  stream: 'stdout' | 'stderr';
  /** F: a full line; P: a partial one (continued by the next). */
  tag: 'F' | 'P';
  text: string;
}

/** Parses a CRI-format container log ("<RFC3339Nano> <stream> <tag> <text>" lines); throws on a malformed line. */
export function parseCriLog(text: string): CriLogLine[] {
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) (stdout|stderr) ([FP]) (.*)$/.exec(l);
      if (!m) throw new Error(`not a CRI log line: ${JSON.stringify(l)}`);
      return { time: m[1], stream: m[2] as 'stdout' | 'stderr', tag: m[3] as 'F' | 'P', text: m[4] };
    });
}

/** The OCI bundle's config.json of a CRI container or sandbox (the runtime's input). */
export function bundleSpec(c: ContainerdInstance, id: string): Record<string, unknown> {
  const p = path.join(c.state, 'io.containerd.runtime.v2.task', 'k8s.io', id, 'config.json');
  return JSON.parse(fs.readFileSync(p, 'utf8')) as Record<string, unknown>;
}
