// Building a pod template: boot a pod VM exactly as a pod would (pod/vm-spec.ts) with its RAM in
// the template's build directory, wait until its agent answers, then pause it and save it. The
// template holds no pod's identity: no guest setup ran (clock, hostname, entropy and the 9p mount
// come per clone), its share points at an empty placeholder directory and no host connection is
// open when it is saved (a clone's vsock device resets the guest's connections anyway).
import fs from 'node:fs';
import path from 'node:path';
import { MicroVm } from '../hypervisor/microvm.js';
import { DEFAULT_AGENT_PORT } from '../agent/vsock.js';
import { AgentWaitError, waitForAgent } from '../pod/agent-wait.js';
import { podVmSpec, type PodVmShape } from '../pod/vm-spec.js';
import type { Logger } from '../util/log.js';
import type { CreateProgress } from './template-store.js';

/** The guest CID a template is saved with; every clone gets its own. */
export const TEMPLATE_GUEST_CID = 3;
const AGENT_TIMEOUT_MS = 300_000;
const CALL_TIMEOUT_MS = 60_000;

/** Steps reported through `progress`, in order (for progress bars). */
export const TEMPLATE_BUILD_STEPS = ['booting the template VM', 'waiting for the agent', 'pausing', 'saving'] as const;

/** Boots, pauses and saves a template into `workDir` (memory, state, config). Leaves no VM. */
export async function buildPodTemplate(shape: PodVmShape, workDir: string, progress: CreateProgress, logger?: Logger): Promise<void> {
  const placeholder = path.join(workDir, '.share');
  const vsockPath = path.join(workDir, '.vsock');
  fs.mkdirSync(placeholder, { mode: 0o700 });
  const spec = podVmSpec(shape, {
    name: `template-${path.basename(workDir).replace(/^\./, '')}`,
    memoryDir: workDir,
    memoryBacking: 'tmpfs',
    sharedDir: placeholder,
    vsockPath,
    guestCid: TEMPLATE_GUEST_CID,
  });
  progress(TEMPLATE_BUILD_STEPS[0]);
  const vm = MicroVm.create(spec);
  let consoleTail = '';
  vm.console.on('data', (chunk: Buffer) => (consoleTail = (consoleTail + chunk.toString('latin1')).slice(-4096)));
  let abandoned: Promise<void> = Promise.resolve();
  try {
    const started = Date.now();
    vm.start();
    progress(TEMPLATE_BUILD_STEPS[1]);
    let agent;
    try {
      agent = await waitForAgent(vm, { vsockPath, agentPort: shape.agentPort ?? DEFAULT_AGENT_PORT, timeoutMs: AGENT_TIMEOUT_MS, callTimeoutMs: CALL_TIMEOUT_MS, logger });
    } catch (err) {
      if (err instanceof AgentWaitError) abandoned = err.abandoned;
      throw new Error(`the template VM's agent did not come up: ${(err as Error).message}; guest console (last part):\n${consoleTail}`, { cause: err });
    }
    abandoned = agent.abandoned;
    try {
      const ping = await agent.client.ping();
      logger?.info('template VM ready', { ms: Date.now() - started, agentVersion: ping.agentVersion });
    } finally {
      agent.client.close('the template is being saved');
    }
    progress(TEMPLATE_BUILD_STEPS[2]);
    await vm.pause();
    progress(TEMPLATE_BUILD_STEPS[3]);
    vm.saveSnapshot(workDir);
  } finally {
    await vm.destroy();
    await abandoned;
    fs.rmSync(placeholder, { recursive: true, force: true });
    fs.rmSync(vsockPath, { force: true });
  }
}
