// template-bench, figure `template_density`: COUNT idle pods cloned from a template vs COUNT
// cold-booted pods of the same shape (PodVm with the agent, all in this process), after they
// settle. Per VM: the memory only that VM holds, its Pss, and the drop of the host's MemAvailable
// from before the first VM to after the last, divided by COUNT.
// What "only that VM holds" is, from /proc/self/smaps (factory/clone-usage.ts parses it):
//   clone  the Anonymous pages in its mapping of the template's memory file: the pages it wrote,
//          copied on write (every other resident page is the template's page cache, shared).
//   cold   every resident page of its own RAM file (its Rss there): no other VM maps that file.
//          Cross-checked with the RAM file's allocated size on the tmpfs.
// smaps' Private_*/Shared_* are not used: they count mappings of a page, and with every VM in one
// process a template page touched by one clone only would count as private.
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { mappingUsage, mapsFileId } from '../../shim/src/factory/clone-usage.js';
import type { PodVm } from '../../shim/src/pod/pod-vm.js';
import { memAvailableBytes, median, MIB, note, round } from '../lib/bench-stats.js';
import { bootTestPod, printConsole } from '../lib/pod.js';
import { cloningProvider, ensureTestTemplate, testPodShape } from '../lib/template.js';

const GOAL_PRIVATE_RATIO = 0.2;
/** Headroom left to the rest of the host when deciding how many cold pods fit. */
const HEADROOM_BYTES = 1024 * MIB;

interface Phase {
  count: number;
  memAvailableDropPerVmMib: number;
  privatePerVmMib: number[];
  pssPerVmMib: number[];
  ramFileMib?: number[];
}

const mib = (bytes: number) => round(bytes / MIB, 1);

async function phase(kind: 'clone' | 'cold', count: number, memoryBytes: number, settleMs: number): Promise<Phase> {
  const pods: PodVm[] = [];
  const before = memAvailableBytes();
  try {
    for (let i = 0; i < count; i++) {
      pods.push(await bootTestPod(`density-${kind}${i}`, { memoryBytes, ...(kind === 'clone' ? { vmProvider: cloningProvider() } : {}) }));
    }
    note(`density: ${count} ${kind} pods up; settling ${settleMs / 1000} s`);
    await sleep(settleMs);
    const after = memAvailableBytes();
    const result: Phase = { count, memAvailableDropPerVmMib: mib((before - after) / count), privatePerVmMib: [], pssPerVmMib: [] };
    if (kind === 'clone') {
      // Every clone maps the same template file: the sums cover all of them.
      const files = new Set(pods.map((p) => p.memoryPath));
      if (files.size !== 1) throw new Error(`the clones map ${files.size} different memory files: ${[...files].join(', ')}`);
      const usage = mappingUsage(process.pid, mapsFileId([...files][0]) ?? 'gone');
      if (!usage) throw new Error(`this process does not map ${[...files][0]}`);
      result.privatePerVmMib.push(mib(usage.privateBytes / count));
      result.pssPerVmMib.push(mib(usage.pssBytes / count));
    } else {
      result.ramFileMib = [];
      for (const pod of pods) {
        const usage = mappingUsage(process.pid, mapsFileId(pod.memoryPath) ?? 'gone');
        if (!usage) throw new Error(`this process does not map pod ${pod.id}'s RAM file ${pod.memoryPath}`);
        result.privatePerVmMib.push(mib(usage.rssBytes));
        result.pssPerVmMib.push(mib(usage.pssBytes));
        result.ramFileMib.push(mib(fs.statSync(pod.memoryPath).blocks * 512));
      }
    }
    return result;
  } catch (err) {
    printConsole(pods.at(-1));
    throw err;
  } finally {
    for (const pod of pods) await pod.shutdown().catch((e: Error) => note(`density: shutting down ${pod.id} failed: ${e.message}`));
  }
}

export async function density(wanted: number, settleMs: number): Promise<Record<string, unknown>> {
  const memoryBytes = 256 * MIB;
  const made = await ensureTestTemplate(testPodShape({ memoryBytes }));
  note(`density: template ${made.record.key} ${made.built ? 'built' : 'reused'} (${mib(made.record.sizeBytes)} MiB on tmpfs)`);
  // A cold pod may touch all of its RAM: run only as many as fit with that, and say so.
  const available = memAvailableBytes();
  const fitting = Math.floor((available - HEADROOM_BYTES) / memoryBytes);
  const count = Math.min(wanted, Math.max(1, fitting));
  if (count < wanted) note(`density: only ${count} pods fit (MemAvailable ${mib(available)} MiB)`);
  const cold = await phase('cold', count, memoryBytes, settleMs);
  const clone = await phase('clone', count, memoryBytes, settleMs);
  const coldPrivate = median(cold.privatePerVmMib);
  const clonePrivate = median(clone.privatePerVmMib);
  const ratio = clonePrivate / coldPrivate;
  return {
    figure: 'template_density',
    unit: 'MiB per VM',
    vms_per_phase: count,
    vms_wanted: wanted,
    ...(count < wanted ? { reduced: `${count} instead of ${wanted}: MemAvailable ${mib(available)} MiB holds only ${fitting} pods of ${mib(memoryBytes)} MiB with ${mib(HEADROOM_BYTES)} MiB headroom` } : {}),
    memory_mib: mib(memoryBytes),
    vcpus: 1,
    settle_s: settleMs / 1000,
    what: 'idle pods (PodVm with the agent, guest set up), all in this process, measured after settling',
    clone_private_per_vm: clonePrivate,
    cold_private_per_vm: coldPrivate,
    ratio: round(ratio, 3),
    ratio_meaning: "clone / cold private memory per VM (lower is better)",
    goal: `a clone's private memory <= ${GOAL_PRIVATE_RATIO * 100}% of a cold pod's`,
    goal_met: ratio <= GOAL_PRIVATE_RATIO,
    clone_pss_per_vm: median(clone.pssPerVmMib),
    cold_pss_per_vm: median(cold.pssPerVmMib),
    clone_memavailable_drop_per_vm: clone.memAvailableDropPerVmMib,
    cold_memavailable_drop_per_vm: cold.memAvailableDropPerVmMib,
    memavailable_ratio: round(clone.memAvailableDropPerVmMib / cold.memAvailableDropPerVmMib, 3),
    template_mib: mib(made.record.sizeBytes),
    template_note: 'the template (built before both phases) is not in either MemAvailable drop; shared by all clones',
    private_definition: {
      clone: "Anonymous pages in the VM's mapping of the template memory file (its copy-on-write copies), /proc/self/smaps; all clones summed, / count",
      cold: "Rss of the VM's mapping of its own tmpfs RAM file (no other VM maps it), /proc/self/smaps; per VM, median",
    },
    cold_private_runs: cold.privatePerVmMib,
    cold_ram_file_allocated: cold.ramFileMib,
    cold_pss_runs: cold.pssPerVmMib,
  };
}
