// `make demo` (after scripts/demo.sh's `stencil pool init`): a private containerd (Debian's 1.6)
// runs a busybox container with `ctr run --runtime io.containerd.stencil.v2`: the shim clones the
// pod's microVM from the template and the guest agent runs the container in it. Exits 1 when the
// container fails, its VM was not cloned, or anything is left behind (leaks()).
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../shim/src/util/paths.js';
import { ContainerdInstance, type ContainerdVersion } from './lib/containerd.js';

const version = (process.env.STENCIL_DEMO_CONTAINERD ?? '1.6') as ContainerdVersion;
const say = (s: string) => process.stdout.write(`${s}\n`);

const c = await ContainerdInstance.start({ version, extraPath: [path.join(repoRoot(), 'bin')] });
let failed: boolean;
try {
  const image = await c.importBusybox();
  say(`demo: containerd ${c.packageVersion}, image ${image}`);
  const script = 'echo "Hello from a container in a Stencil VM"; echo "kernel: $(uname -r), vCPUs: $(nproc), $(grep MemTotal /proc/meminfo)"';
  const cmd = ['run', '--rm', '--runtime', 'io.containerd.stencil.v2', image, 'demo', 'sh', '-c', script];
  say(`demo: ctr ${cmd.join(' ')}`);
  const started = Date.now();
  const r = await c.ctr(cmd, { timeoutMs: 300_000 });
  process.stdout.write(r.stdout);
  if (r.stderr) process.stdout.write(r.stderr);
  say(`demo: exit status ${r.code} after ${((Date.now() - started) / 1000).toFixed(1)} s (host kernel: ${(await import('node:os')).release()})`);
  // The shim's log (containerd copies it into its own): how the pod's VM came to be.
  const log = fs.readFileSync(c.logPath, 'utf8');
  // The shim logs one JSON object per line, which containerd passes through.
  const entries = log.split('\n').flatMap((line) => {
    try {
      return [JSON.parse(line.slice(line.indexOf('{'))) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
  const cloned = entries.find((e) => e.message === 'pod VM cloned from a template');
  const ready = entries.find((e) => e.message === 'pod VM ready' && e.startMs !== undefined);
  if (cloned) say(`demo: the pod VM was cloned from template ${cloned.template} (restore ${cloned.restoreMs} ms${ready ? `, VM ready with its agent after ${ready.startMs} ms` : ''})`);
  else say(`demo: FAILED: the pod VM was not cloned from a template; the containerd log says:\n${log.split('\n').filter((l) => /template|pod VM/.test(l)).join('\n')}`);
  // The shim daemon exits right after containerd's Shutdown: give it a few seconds to go.
  let left = await c.leaks();
  for (let i = 0; i < 50 && left.length; i++) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    left = await c.leaks();
  }
  if (left.length) say(`demo: FAILED: left behind:\n  ${left.join('\n  ')}`);
  failed = r.code !== 0 || !r.stdout.includes('Hello from a container in a Stencil VM') || left.length > 0 || !cloned;
} finally {
  await c.stop();
}
process.exit(failed ? 1 : 0);
