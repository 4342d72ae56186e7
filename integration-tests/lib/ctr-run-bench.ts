// `ctr run --rm <busybox> true` timed on a private real containerd, per runtime, runs interleaved
// (bench/ctr-bench.ts's figure; bench/template-bench.ts runs it with templates). With `templates`,
// the Stencil shim gets a configuration ([factory] enabled, on_miss = "fail") whose template
// directory holds a template for exactly the pod shape the shim will ask for, built before any
// timed run; every timed Stencil run must then have been cloned (the shim's log says so, and the
// template's clonesServed grows by one), and the shim's log gives where the time went.
import fs from 'node:fs';
import path from 'node:path';
import { parseConfig } from '../../runtime-config/src/config.js';
import { TemplateStore, type TemplateRecord } from '../../shim/src/factory/template-store.js';
import { podShapeFromConfig } from '../../shim/src/factory/pod-shape.js';
import { repoRoot } from '../../shim/src/util/paths.js';
import { median, note, round } from './bench-stats.js';
import { type ContainerdInstance, ContainerdInstance as Containerd, type ContainerdVersion } from './containerd.js';
import { ensureTemplate } from './template.js';

export const RUNC = 'io.containerd.runc.v2';
export const STENCIL = 'io.containerd.stencil.v2';

export interface CtrBenchOptions {
  version: ContainerdVersion;
  runtimes: string[];
  runs: number;
  /** Clone Stencil's pods from a template made before timing. */
  templates?: boolean;
}

interface TimedRun {
  ms: number;
  startWall: number;
  endWall: number;
}

async function timedRun(c: ContainerdInstance, runtime: string, id: string): Promise<TimedRun> {
  const startWall = Date.now();
  const t0 = performance.now();
  const r = await c.ctr(['run', '--rm', '--runtime', runtime, c.image, id, 'true']);
  const ms = performance.now() - t0;
  if (r.code !== 0 || r.stdout !== '')
    throw new Error(`ctr run --rm --runtime ${runtime} ${c.image} ${id} true on containerd ${c.version}: exit ${r.code}, stdout ${JSON.stringify(r.stdout)}, stderr ${r.stderr}\ncontainerd log:\n${c.logTail()}`);
  return { ms, startWall, endWall: Date.now() };
}


/** A shim configuration cloning from a fresh template directory, and its template. */
class ShimTemplates {
  readonly configPath: string;
  readonly store: TemplateStore;
  record!: TemplateRecord;
  buildMs = 0;

  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const templateDir = path.join(dir, 'templates');
    this.configPath = path.join(dir, 'configuration.toml');
    const toml = `[factory]\nenabled = true\ntemplate_dir = ${JSON.stringify(templateDir)}\non_miss = "fail"\n`;
    fs.writeFileSync(this.configPath, toml);
    this.store = new TemplateStore(templateDir);
  }

  async build(): Promise<void> {
    const config = parseConfig(fs.readFileSync(this.configPath, 'utf8'), this.configPath);
    const made = await ensureTemplate(this.store, podShapeFromConfig(config.hypervisor));
    this.record = made.record;
    this.buildMs = made.ms;
  }

  served(): number {
    return this.store.get(this.record.key).clonesServed;
  }
}

interface ShimLogLine {
  at: number;
  message: string;
  meta: Record<string, unknown>;
}

/** The Stencil shim's JSON log lines in containerd's log between two wall-clock instants. */
function shimLog(c: ContainerdInstance, from: number, to: number): ShimLogLine[] {
  const lines: ShimLogLine[] = [];
  for (const raw of fs.readFileSync(c.logPath, 'utf8').split('\n')) {
    const brace = raw.indexOf('{"');
    if (brace < 0 || !raw.includes('"shim":"stencil"')) continue;
    let meta: Record<string, unknown>;
    try {
      meta = JSON.parse(raw.slice(brace)) as Record<string, unknown>;
    } catch {
      continue;
    }
    const at = Date.parse(String(meta.timestamp));
    if (at >= from && at <= to) lines.push({ at, message: String(meta.message), meta });
  }
  return lines;
}

const PHASES = ['shim_start', 'to_restore', 'restore', 'agent_and_guest_setup', 'task_create', 'run_true', 'exit_to_ctr_return'] as const;

/** Where one cloned `ctr run` went, from the shim's log; throws unless the pod was cloned. */
function breakdown(run: TimedRun, log: ShimLogLine[]): Record<(typeof PHASES)[number], number> {
  const at = (message: string) => {
    const line = log.find((l) => l.message === message);
    if (!line) throw new Error(`the shim's log of this run has no '${message}' line; its lines: ${log.map((l) => l.message).join(' | ')}`);
    return line;
  };
  const started = at('shim daemon starting').at;
  const cloned = at('pod VM cloned from a template');
  const restoreMs = Number(cloned.meta.restoreMs);
  const ready = at('pod VM ready').at;
  const created = at('task created').at;
  const exited = at('process exited').at;
  return {
    shim_start: started - run.startWall,
    to_restore: cloned.at - restoreMs - started,
    restore: restoreMs,
    agent_and_guest_setup: ready - cloned.at,
    task_create: created - ready,
    run_true: exited - created,
    exit_to_ctr_return: run.endWall - exited,
  };
}

export async function benchCtrVersion(o: CtrBenchOptions): Promise<Record<string, unknown>> {
  const templates = o.templates && o.runtimes.includes(STENCIL) ? new ShimTemplates(`/dev/shm/ctr-bench-${process.pid}`) : undefined;
  let c: ContainerdInstance | undefined;
  try {
    if (templates) {
      note(`ctr bench: building the template for the shim's pod shape (${templates.configPath})`);
      await templates.build();
      note(`ctr bench: template ${templates.record.key} ready in ${templates.buildMs} ms`);
    }
    c = await Containerd.start({
      version: o.version,
      extraPath: [path.join(repoRoot(), 'bin')],
      env: templates ? { STENCIL_CONFIG: templates.configPath } : undefined,
    });
    await c.importBusybox();
    const samples: Record<string, TimedRun[]> = Object.fromEntries(o.runtimes.map((r) => [r, []]));
    for (const runtime of o.runtimes) await timedRun(c, runtime, 'warmup'); // page cache, first shim start
    const servedBefore = templates?.served();
    for (let i = 0; i < o.runs; i++) for (const runtime of o.runtimes) samples[runtime].push(await timedRun(c, runtime, `bench-${i}`));
    const leaks = await c.leaks();
    if (leaks.length > 0) throw new Error(`containerd ${o.version}: left behind after the runs:\n${leaks.join('\n')}`);
    const ms = (r: string) => samples[r].map((s) => s.ms);
    const line: Record<string, unknown> = {
      figure: templates ? 'ctr_run_rm_true_templates' : 'ctr_run_rm_true',
      unit: 'ms',
      containerd: o.version,
      containerd_package: c.packageVersion,
      snapshotter: c.snapshotter,
      runs: o.runs,
      command: `ctr run --rm --runtime <runtime> ${c.image} bench-N true`,
      medians: Object.fromEntries(o.runtimes.map((r) => [r, Math.round(median(ms(r)))])),
    };
    if (o.runtimes.includes(RUNC) && o.runtimes.includes(STENCIL))
      line.ratio_stencil_runc = Number((median(ms(STENCIL)) / median(ms(RUNC))).toFixed(3));
    if (templates) {
      const served = templates.served() - servedBefore!;
      if (served !== o.runs) throw new Error(`the template served ${served} clones during ${o.runs} Stencil runs: not every pod was cloned`);
      const parts = samples[STENCIL].map((run) => breakdown(run, shimLog(c!, run.startWall, run.endWall)));
      line.stencil_config = fs.readFileSync(templates.configPath, 'utf8');
      line.template = { key: templates.record.key, build_ms: templates.buildMs, clones_served_in_timed_runs: served, shape: templates.record.inputs };
      line.stencil_breakdown_median_ms = Object.fromEntries(PHASES.map((p) => [p, round(median(parts.map((x) => x[p])))]));
      line.stencil_breakdown_meaning = {
        shim_start: 'ctr spawn -> the shim daemon logs its start (ctr, containerd, `shim start`, daemon module loading)',
        to_restore: "daemon start -> restore begins (containerd's Create, rootfs, template lookup)",
        restore: 'MicroVm.restore (restoreMs in the shim log)',
        agent_and_guest_setup: 'restored -> the pod VM is ready (agent connected, guest set up)',
        task_create: 'pod ready -> task created (bind mount, crun create in the guest)',
        run_true: 'task created -> its process exited (start, true, exit)',
        exit_to_ctr_return: 'exit -> ctr returns (delete, shim shutdown, ctr)',
      };
    }
    if (o.runs < 10) line.warning = `only ${o.runs} runs; ctr-bench reports at least 10`;
    line.samples = Object.fromEntries(o.runtimes.map((r) => [r, ms(r).map(Math.round)]));
    return line;
  } finally {
    await c?.stop();
    if (templates) fs.rmSync(templates.dir, { recursive: true, force: true });
  }
}
