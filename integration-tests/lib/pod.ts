// Helpers for the pod VM tests and the agent benchmark: boot a PodVm with the built guest, make
// busybox root filesystems, run a container to completion and collect its output.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeBusyboxRootfs, ociSpec, type OciProcessOptions } from '../../shim/src/agent/testing/busybox-oci.js';
import { PodVm, type PodVmOptions } from '../../shim/src/pod/pod-vm.js';
import type { ProcessExit, StdioMode } from '../../shim/src/pod/types.js';
import { createLogger } from '../../shim/src/util/log.js';
import { builtGuestArtifacts } from '../../shim/src/util/paths.js';
import { BOOT_TIMEOUT_MS, MEMORY_DIR, withTimeout } from './guest.js';
import { readAll } from '../../shim/src/agent/testing/agent-harness.js';

/** Agent calls inside a nested (emulated-host) guest can be slow. */
export const CALL_TIMEOUT_MS = 120_000;

let counter = 0;

/** Boots a pod with the built guest kernel and initramfs; STENCIL_TEST_CONSOLE=1 logs its console. */
export async function bootTestPod(name: string, overrides: Partial<PodVmOptions> = {}): Promise<PodVm> {
  const { kernel, initrd } = builtGuestArtifacts();
  fs.mkdirSync(MEMORY_DIR, { recursive: true, mode: 0o700 });
  const id = `${name}-${process.pid}-${++counter}`;
  return PodVm.boot({
    id,
    stateDir: path.join(os.tmpdir(), `stencil-pod-${id}`),
    kernel,
    initrd,
    vcpus: 1,
    memoryBytes: 512 * 2 ** 20,
    memoryDir: MEMORY_DIR,
    memoryBacking: 'tmpfs',
    agentTimeoutMs: BOOT_TIMEOUT_MS,
    callTimeoutMs: CALL_TIMEOUT_MS,
    // Errors (a VM that died, with the VMM's crash dump; a teardown that left something) always show.
    logger: createLogger({ level: process.env.STENCIL_TEST_CONSOLE ? 'debug' : 'error' }),
    ...overrides,
  });
}

/** The pod's console as test-output comments: evidence of what the guest did. */
export function printConsole(pod: PodVm | undefined): void {
  if (!pod) return;
  process.stdout.write(`# --- guest console of pod ${pod.id} (last 64 KiB) ---\n${pod.consoleTail().replace(/^/gm, '# ')}\n`);
}

export { readAll };

/** Busybox root filesystems in one scratch directory (under `base`), removed together. */
export class Rootfses {
  readonly dir: string;
  private n = 0;
  constructor(base = os.tmpdir()) {
    this.dir = fs.mkdtempSync(path.join(base, 'stencil-rootfs-'));
  }
  /** A fresh busybox rootfs (world-readable, like an image's). */
  make(): string {
    const dir = path.join(this.dir, `r${++this.n}`);
    fs.mkdirSync(dir, { mode: 0o755 });
    return makeBusyboxRootfs(dir);
  }
  /** An empty directory: a rootfs without any program in it. */
  empty(): string {
    const dir = path.join(this.dir, `empty${++this.n}`);
    fs.mkdirSync(dir, { mode: 0o755 });
    return dir;
  }
  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface RunResult {
  exit: ProcessExit;
  stdout: Buffer;
  stderr: Buffer;
}

/**
 * Runs `proc` as a container's init on a fresh rootfs: create, attach, start, feed stdin (then
 * EOF), wait, delete. Output is collected in full. `editSpec` may change the OCI spec first.
 */
export async function runContainer(
  pod: PodVm,
  id: string,
  rootfs: string,
  proc: OciProcessOptions,
  stdin?: Buffer,
  editSpec?: (spec: Record<string, unknown>) => void,
): Promise<RunResult> {
  const stdio: StdioMode = { stdin: !!stdin, stdout: true, stderr: true };
  const spec = ociSpec(rootfs, proc);
  editSpec?.(spec);
  await pod.createContainer({ id, spec, rootfs, stdio });
  try {
    const io = await pod.attachStdio(id, '', stdio);
    const out = readAll(io.stdout!);
    const err = readAll(io.stderr!);
    await pod.startContainer(id);
    if (stdin) io.stdin!.end(stdin);
    const exit = await withTimeout(pod.waitProcess(id, ''), CALL_TIMEOUT_MS, `${proc.args.join(' ')} did not exit`);
    return { exit, stdout: await out, stderr: await err };
  } finally {
    await pod.deleteContainer(id);
  }
}
