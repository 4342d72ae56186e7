// The ctr scenarios (shim-scenarios.ts) on containerd 2.1 over ttrpc, then `ctr run` over gRPC
// (2.1's alone), in an emulated host of their own.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { repoRoot } from '../../shim/src/util/paths.js';
import { ContainerdInstance } from '../lib/containerd.js';
import { SLOW_HOST_TIMEOUTS } from '../lib/containerd-config.js';
import { logOffset, logSince } from '../lib/ctr-tasks.js';
import { lostGrpcRace } from '../lib/grpc-race.js';
import { writeShimConfig } from '../lib/template.js';
import { RUNTIME, shimScenarios, useShimTemplate } from './shim-scenarios.js';

useShimTemplate();
shimScenarios('2.1');

// gRPC (bootstrap JSON version 3) on containerd 2.1. containerd 2.1.9 takes the new, still idle gRPC
// connection for a dead shim unless its first call starts before the connection's watcher goroutine
// looks (README, Transport). It lost every attempt here (2026-12-02: 35 of 35 on the build machine,
// 21 of 21 in the emulated host); with GOMAXPROCS=1 the watcher mostly runs only once the call has
// begun: 5 of 8 attempts got through in one emulated-host session, 0 of 6 in another (this test),
// 6 of 35 on the build machine; a lost attempt costs ~30 s in the emulated host. Only
// attempts with the race's evidence (lib/grpc-race.ts) are retried, at most MAX_RACE_RETRIES times,
// each loudly; if all of them lose it, the test is skipped saying so, and any other failure fails.
const MAX_RACE_RETRIES = 5;
const ONE_GO_THREAD = { GOMAXPROCS: '1' };

describe('containerd 2.1 with the Stencil shim over gRPC', () => {
  let c: ContainerdInstance;
  let image: string;
  let attempt = 0;

  before(async () => {
    const config = writeShimConfig('grpc-templates.toml', { transport: 'grpc' });
    c = await ContainerdInstance.start({ version: '2.1', extraPath: [path.join(repoRoot(), 'bin')], env: { STENCIL_CONFIG: config, ...ONE_GO_THREAD }, configExtra: SLOW_HOST_TIMEOUTS });
    image = await c.importBusybox();
  });
  after(async () => {
    if (c) process.stdout.write(`# --- containerd 2.1 (gRPC) log tail ---\n${c.logTail(60).replace(/^/gm, '# ')}\n`);
    await c?.stop();
  });

  /** The ctr result of the first attempt that got past the race, or undefined when every allowed attempt lost it. */
  async function runPastTheRace(args: string[]) {
    for (let retries = 0; ; retries++) {
      const id = `g${++attempt}`;
      const logBefore = logOffset(c);
      const r = await c.ctr(['run', '--rm', '--runtime', RUNTIME, image, id, ...args]);
      const log = logSince(c, logBefore);
      const bundle = path.join(c.state, 'io.containerd.runtime.v2.task', c.namespace, id);
      const race = lostGrpcRace({ id, bundle, code: r.code, stderr: r.stderr, log });
      if (!race || retries === MAX_RACE_RETRIES) {
        process.stdout.write(`# GRPC RACE RETRIES: ${retries} (${retries + (race ? 1 : 0)} of ${retries + 1} attempts lost containerd 2.1.9's idle-connection race)\n`);
        if (race) return undefined;
        assert.ok(log.includes('protocol=grpc'), 'containerd did not connect over gRPC');
        return r;
      }
      // The lost attempt's shim daemon was stopped, or exits once idle; "leaves nothing behind" waits for it.
      process.stdout.write(`# GRPC RACE RETRY ${retries + 1}/${MAX_RACE_RETRIES}: attempt ${id} lost containerd 2.1.9's idle-connection race: ${race}\n`);
    }
  }

  it('ctr run --rm echo hi over gRPC prints hi and exits 0', async (t) => {
    const r = await runPastTheRace(['echo', 'hi']);
    if (!r) {
      // Every attempt failed in exactly the way containerd's bug makes it fail, none otherwise.
      t.skip(`containerd 2.1.9 lost its gRPC idle-connection race ${MAX_RACE_RETRIES + 1} times in a row (README, Transport)`);
      return;
    }
    assert.equal(r.stdout, 'hi\n', r.stderr);
    assert.equal(r.code, 0, r.stderr);
  });

  it('leaves nothing behind', async () => {
    assert.deepEqual(await c.waitNoLeaks(120_000), []);
  });
});
