// Clone soak: COUNT pods cloned from the test template, all kept alive together for SECONDS
// (long enough for the guests' once-a-minute hwrng refill), each pinged every few seconds.
// One line per clone that died (with its VMM crash detail and console tail), then
// "N passed, M failed". With STENCIL_SOAK_SPAWN_MS set, the process also spawns `true` that
// often, as the shim does (mount(8), crun helpers): forks of a process that maps clone RAM.
//   integration-tests/run-vm node dist/integration-tests/bench/clone-soak.js [COUNT] [SECONDS]
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PodVm } from '../../shim/src/pod/pod-vm.js';
import { bootTestPod } from '../lib/pod.js';
import { cloningProvider, ensureTestTemplate } from '../lib/template.js';

const COUNT = Number(process.argv[2] ?? 10);
const SECONDS = Number(process.argv[3] ?? 150);
const SPAWN_MS = Number(process.env.STENCIL_SOAK_SPAWN_MS ?? 0);
const PING_EVERY_MS = 5_000;

async function main() {
  const made = await ensureTestTemplate();
  process.stdout.write(`template ${made.record.key}: ${made.built ? 'built' : 'reused'} in ${made.ms} ms\n`);
  const clones: PodVm[] = [];
  const dead = new Map<PodVm, string>();
  for (let i = 0; i < COUNT; i++) clones.push(await bootTestPod(`soak${i}`, { vmProvider: cloningProvider() }));
  process.stdout.write(`${COUNT} clones ready; keeping them for ${SECONDS} s${SPAWN_MS ? `, spawning every ${SPAWN_MS} ms` : ''}\n`);

  const spawner = SPAWN_MS ? setInterval(() => spawn('true', { stdio: 'ignore' }), SPAWN_MS) : undefined;
  const end = Date.now() + SECONDS * 1000;
  const start = Date.now();
  while (Date.now() < end) {
    await sleep(PING_EVERY_MS);
    await Promise.all(
      clones
        .filter((pod) => !dead.has(pod))
        .map(async (pod) => {
          try {
            await pod.ping();
          } catch (err) {
            const at = Math.round((Date.now() - start) / 1000);
            dead.set(pod, `${at} s: ${(err as Error).message}`);
            process.stdout.write(`clone ${pod.id} died after ${at} s: ${(err as Error).message}\n${pod.consoleTail().slice(-1500)}\n`);
          }
        }),
    );
  }
  if (spawner) clearInterval(spawner);
  for (const pod of clones) await pod.shutdown().catch(() => undefined);
  process.stdout.write(`${COUNT - dead.size} passed, ${dead.size} failed\n`);
  process.exitCode = dead.size ? 1 : 0;
}

main().catch((err) => {
  process.stderr.write(`clone-soak: ${(err as Error).stack}\n`);
  process.exitCode = 1;
});
