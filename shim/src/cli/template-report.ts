// What `stencil pool status` and `stencil template list|inspect` report about templates: plain data
// (the --json documents) and its text form. No I/O here: cli/pool.ts gathers the facts.
import { formatBytesApprox, formatSize } from '../../../runtime-config/src/size.js';
import type { MappingUsage } from '../factory/clone-usage.js';
import type { TemplateRecord } from '../factory/template-store.js';

/** Memory of the processes (clones) mapping a template's RAM file, summed. */
export interface CloneMemory {
  processes: number;
  rssBytes: number;
  pssBytes: number;
  /** Resident pages still the template's (page cache shared with it and the other clones). */
  sharedBytes: number;
  /** Pages the clones wrote: their own copies. */
  privateBytes: number;
}

export interface TemplateReport {
  key: string;
  vcpus: number;
  memoryBytes: number;
  kernel: string;
  initrd: string;
  cmdline: string;
  devices: string;
  createdAt: string;
  ageSeconds: number;
  /** Bytes the template occupies on its tmpfs. */
  sizeBytes: number;
  clonesServed: number;
  /** Why it can no longer be used, or null. */
  stale: string | null;
  liveClones: CloneMemory;
}

export interface TmpfsReport {
  /** The template directory is a mount point of its own. */
  mountPoint: boolean;
  /** It is on a tmpfs (its own or a parent directory's). */
  tmpfs: boolean;
  /** Mounted by Stencil (`pool init`), so `pool destroy` may unmount it. */
  mountedByStencil: boolean;
  sizeBytes: number;
  usedBytes: number;
  freeBytes: number;
}

export interface PoolStatus {
  templateDir: string;
  /** The configuration file, or "defaults". */
  config: string;
  /** null when the template directory does not exist. */
  tmpfs: TmpfsReport | null;
  /** Pods that found no template since the pool was made. */
  misses: number;
  templates: TemplateReport[];
}

export function sumCloneMemory(usages: MappingUsage[]): CloneMemory {
  const sum: CloneMemory = { processes: usages.length, rssBytes: 0, pssBytes: 0, sharedBytes: 0, privateBytes: 0 };
  for (const u of usages) {
    sum.rssBytes += u.rssBytes;
    sum.pssBytes += u.pssBytes;
    sum.sharedBytes += u.sharedBytes;
    sum.privateBytes += u.privateBytes;
  }
  return sum;
}

export function templateReport(record: TemplateRecord, clones: MappingUsage[], now = new Date()): TemplateReport {
  const { inputs } = record;
  return {
    key: record.key,
    vcpus: inputs.vcpus,
    memoryBytes: inputs.memoryBytes,
    kernel: inputs.kernel,
    initrd: inputs.initrd,
    cmdline: inputs.cmdline,
    devices: inputs.devices,
    createdAt: record.createdAt.toISOString(),
    ageSeconds: Math.max(0, Math.floor((now.getTime() - record.createdAt.getTime()) / 1000)),
    sizeBytes: record.sizeBytes,
    clonesServed: record.clonesServed,
    stale: record.stale ?? null,
    liveClones: sumCloneMemory(clones),
  };
}

/** "42s", "5m", "3h12m", "2d4h". */
export function formatAge(seconds: number): string {
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d${Math.floor((seconds % 86400) / 3600)}h`;
}

export const describeShape = (vcpus: number, memoryBytes: number) => `${vcpus} vCPU${vcpus === 1 ? '' : 's'}, ${formatSize(memoryBytes)}`;

function describeClones(t: TemplateReport): string {
  const live = t.liveClones;
  const running = live.processes
    ? `${live.processes} running: ${formatBytesApprox(live.sharedBytes)} shared with the template, ${formatBytesApprox(live.privateBytes)} private (PSS ${formatBytesApprox(live.pssBytes)})`
    : 'none running';
  return `${t.clonesServed} served; ${running}`;
}

function describeTmpfs(status: PoolStatus): string {
  const t = status.tmpfs;
  if (!t) return `${status.templateDir}: does not exist yet (\`stencil pool init\` makes it)`;
  const where = !t.tmpfs
    ? `NOT on a tmpfs`
    : t.mountPoint
      ? `tmpfs ${t.mountedByStencil ? 'mounted by Stencil' : 'mounted by someone else'}`
      : 'on the tmpfs of a parent directory (not mounted by Stencil)';
  return `${status.templateDir}: ${where}, ${formatBytesApprox(t.sizeBytes)}: ${formatBytesApprox(t.usedBytes)} used, ${formatBytesApprox(t.freeBytes)} free`;
}

/** The text of `stencil pool status`. */
export function formatStatus(status: PoolStatus): string {
  const lines = [
    `template directory ${describeTmpfs(status)}`,
    `configuration: ${status.config}`,
    `pods that found no template (booted from scratch or refused): ${status.misses}`,
    '',
  ];
  if (status.templates.length === 0) lines.push('no templates (`stencil pool init` makes them)');
  status.templates.forEach((t, i) => {
    if (i > 0) lines.push('');
    lines.push(
      `template ${t.key}  ${describeShape(t.vcpus, t.memoryBytes)}${t.stale ? '  STALE' : ''}`,
      `  kernel     ${t.kernel}`,
      `  initramfs  ${t.initrd}`,
      `  age        ${formatAge(t.ageSeconds)} (created ${t.createdAt})`,
      `  size       ${formatBytesApprox(t.sizeBytes)} on the tmpfs`,
      `  clones     ${describeClones(t)}`,
    );
    if (t.stale) lines.push(`  stale      ${t.stale}; it serves no pod (\`stencil template rm ${t.key}\`)`);
  });
  return lines.join('\n') + '\n';
}

/** The table of `stencil template list`. */
export function formatList(templates: TemplateReport[]): string {
  if (templates.length === 0) return 'no templates (`stencil pool init` makes them)\n';
  const rows = [
    ['KEY', 'VCPUS', 'MEMORY', 'AGE', 'SIZE', 'CLONES', 'RUNNING', 'STATUS'],
    ...templates.map((t) => [
      t.key,
      String(t.vcpus),
      formatSize(t.memoryBytes),
      formatAge(t.ageSeconds),
      formatBytesApprox(t.sizeBytes),
      String(t.clonesServed),
      String(t.liveClones.processes),
      t.stale ? `stale: ${t.stale}` : 'ready',
    ]),
  ];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]))).join('  ')).join('\n') + '\n';
}
