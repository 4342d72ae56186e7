// What a containerd scenario can leave behind on the host, as human-readable lines: processes
// (shims, their children, ctr), mounts, and new entries (sockets, FIFOs, RAM files, state) under
// watched directories. Used by ContainerdInstance.leaks() (integration-tests/lib/containerd.ts).
import fs from 'node:fs';
import path from 'node:path';
import { processMaps } from '../../shim/src/factory/clone-usage.js';

export interface ProcInfo {
  pid: number;
  ppid: number;
  /** argv, NUL-separated in /proc; joined with spaces here. */
  cmdline: string;
  argv: string[];
}

function readProc(pid: number): ProcInfo | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses, so split after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').filter((a) => a !== '');
    return { pid, ppid, argv, cmdline: argv.join(' ') };
  } catch {
    return undefined; // gone meanwhile, or a kernel thread we may not read
  }
}

export function listProcesses(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const p = readProc(Number(name));
    if (p && p.argv.length > 0) out.push(p);
  }
  return out;
}

/** Whether the process's environment holds NAME=VALUE (exactly). */
export function hasEnv(pid: number, name: string, value: string): boolean {
  try {
    const env = fs.readFileSync(`/proc/${pid}/environ`, 'latin1');
    return env.split('\0').includes(`${name}=${value}`);
  } catch {
    return false;
  }
}

/** Processes that carry the marker NAME=VALUE in their environment, plus all their descendants. */
export function markedProcesses(name: string, value: string, exclude: Set<number>): ProcInfo[] {
  const all = listProcesses().filter((p) => p.pid !== process.pid && !exclude.has(p.pid));
  const marked = new Set(all.filter((p) => hasEnv(p.pid, name, value)).map((p) => p.pid));
  // Descendants: containers and helpers may have a clean environment.
  let grew = true;
  while (grew) {
    grew = false;
    for (const p of all) {
      if (!marked.has(p.pid) && marked.has(p.ppid)) {
        marked.add(p.pid);
        grew = true;
      }
    }
  }
  return all.filter((p) => marked.has(p.pid));
}

/** A shim binary, also when a launcher (node) runs it: any of the first two argv words. */
export function isShim(p: ProcInfo): boolean {
  return p.argv.slice(0, 2).some((a) => path.basename(a).startsWith('containerd-shim'));
}

/** A Stencil spare daemon still waiting for a pod (shim/src/shim/spare.ts): one per containerd, on purpose. */
export function isIdleSpare(p: ProcInfo): boolean {
  return isShim(p) && p.argv.at(-1) === 'spare';
}

/**
 * Whether `p` is a shim started for task `id`: `-id ID` in its argv, or in the title of a pod
 * daemon that was a spare (one string: "containerd-shim-stencil-v2 -namespace NS -id ID serve").
 */
export function isShimOf(p: ProcInfo, id: string): boolean {
  const words = p.argv.flatMap((a) => a.split(' '));
  return isShim(p) && words.some((w, i) => w === '-id' && words[i + 1] === id);
}

export interface MountInfo {
  mountPoint: string;
  fsType: string;
  source: string;
}

/** Mounts of this process's mount namespace, in /proc/self/mountinfo order (parents first). */
export function listMounts(): MountInfo[] {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((line) => {
      const fields = line.split(' ');
      const sep = fields.indexOf('-');
      return { mountPoint: unescape(fields[4]), fsType: fields[sep + 1], source: unescape(fields[sep + 2]) };
    });
}

export function isUnder(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir.endsWith('/') ? dir : dir + '/');
}

/** Every path under `dir` (not following symlinks), with its kind; [] if `dir` does not exist. */
export function walk(dir: string, maxDepth = 8): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (d: string, depth: number) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      const kind = e.isSocket() ? 'socket' : e.isFIFO() ? 'fifo' : e.isDirectory() ? 'dir' : e.isSymbolicLink() ? 'symlink' : 'file';
      out.set(p, kind);
      if (e.isDirectory() && depth < maxDepth) visit(p, depth + 1);
    }
  };
  visit(dir, 0);
  return out;
}

/** Paths matching `pattern` directly under `parent` (e.g. /dev/shm + /^stencil/), each walked. */
export function walkMatching(parent: string, pattern: RegExp): Map<string, string> {
  const out = new Map<string, string>();
  let names: string[];
  try {
    names = fs.readdirSync(parent);
  } catch {
    return out;
  }
  for (const name of names.filter((n) => pattern.test(n))) {
    const p = path.join(parent, name);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(p);
    } catch {
      continue;
    }
    out.set(p, st.isDirectory() ? 'dir' : st.isSocket() ? 'socket' : st.isFIFO() ? 'fifo' : 'file');
    if (st.isDirectory()) for (const [q, k] of walk(p)) out.set(q, k);
  }
  return out;
}

/** Every fd target of every process (readlink of /proc/PID/fd/N: a path, or socket:[inode]) -> pids. */
export function openFiles(): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${name}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = fs.readlinkSync(`/proc/${name}/fd/${fd}`);
      } catch {
        continue;
      }
      const pids = out.get(target) ?? [];
      if (!pids.includes(Number(name))) pids.push(Number(name));
      out.set(target, pids);
    }
  }
  return out;
}

/** Pids that have each of `paths` mapped (/proc/PID/maps), e.g. a VM's RAM file. */
function mappers(paths: Set<string>): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const [pid, maps] of processMaps()) {
    for (const line of maps.split('\n')) {
      const file = line.slice(line.indexOf('/'));
      if (line.includes('/') && paths.has(file)) out.set(file, [...new Set([...(out.get(file) ?? []), pid])]);
    }
  }
  return out;
}

/**
 * Pids holding each path open: FIFOs and files by path, bound Unix sockets through
 * /proc/net/unix; with `mapped`, also processes that have a file mapped.
 */
export function openers(paths: string[], o: { mapped?: boolean } = {}): Map<string, number[]> {
  const result = new Map<string, number[]>(paths.map((p) => [p, []]));
  if (paths.length === 0) return result;
  const inodeToPath = new Map<string, string>();
  for (const line of fs.readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && result.has(f[7])) inodeToPath.set(f[6], f[7]);
  }
  for (const [target, pids] of openFiles()) {
    const m = /^socket:\[(\d+)\]$/.exec(target);
    const p = m ? inodeToPath.get(m[1]) : result.has(target) ? target : undefined;
    if (p) result.set(p, [...new Set([...result.get(p)!, ...pids])]);
  }
  if (o.mapped) for (const [p, pids] of mappers(new Set(paths))) result.set(p, [...new Set([...result.get(p)!, ...pids])]);
  return result;
}
