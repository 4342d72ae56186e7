// A spare shim daemon (shim/launcher/spare.h): started by one pod's `start`, at the lowest CPU
// priority, it loads everything a pod's daemon loads and waits on its handoff socket. The next new
// pod's `start` hands it that pod; it then becomes that pod's daemon exactly as a spawned one
// would be (its socket, containerd's options, the report pipe, stdout/stderr on the bundle's log,
// the bundle as working directory, containerd's environment), and gives up its place, so the
// `start` after it starts the next spare.
//
// It leaves, without a pod, once its containerd stops answering or its build is replaced: a
// spare runs the code of the build it was started from, and serves only the containerd it was
// started for.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { loadAddon } from '../hypervisor/native.js';
import { parseFlags, type ShimFlags } from './flags.js';

/** Where spares listen and hold their locks (shim/launcher/spare.h SPARE_DIR). */
export const SPARE_DIR = '/run/stencil/spare';
/** The first string of a handoff (shim/launcher/spare.c HANDOFF_MAGIC). */
export const HANDOFF_MAGIC = 'stencil-handoff-1';
/** Where the launcher puts the spare's lock (spare.h SPARE_LOCK_FD): held until a pod is taken. */
const SPARE_LOCK_FD = 3;
/** How often a waiting spare checks that it is still wanted. */
const CHECK_EVERY_MS = 10_000;
/** The daemon flags a launcher may hand over (the rest are the spare's own). */
const POD_FLAGS = new Set(['-namespace', '-id', '-address', '-publish-binary', '-socket', '-debug']);

export interface SpareFlags {
  /** containerd's address: the spare serves its pods, and leaves when it stops answering. */
  address: string;
  /** The handoff socket. */
  socket: string;
  /** The build identity the launcher saw (buildIdentity of the script). */
  build: string;
}

/** The spare's flags as the launcher writes them: -address A -spare-socket S -spare-build B spare. */
export function parseSpareFlags(argv: string[]): SpareFlags {
  const values = new Map<string, string>();
  const names = ['-address', '-spare-socket', '-spare-build'];
  let i = 0;
  for (; i + 1 < argv.length && names.includes(argv[i]!); i += 2) {
    if (values.has(argv[i]!)) throw new Error(`${argv[i]} is given more than once`);
    values.set(argv[i]!, argv[i + 1]!);
  }
  if (i !== argv.length - 1 || argv[i] !== 'spare') throw new Error(`a spare takes ${names.join(' X ')} X spare, not ${JSON.stringify(argv)}`);
  for (const n of names.slice(1)) if (!values.get(n)) throw new Error(`${n} is required`);
  return { address: values.get('-address') ?? '', socket: values.get('-spare-socket')!, build: values.get('-spare-build')! };
}

/** What shim/launcher/launcher.c build_identity() writes for `file`: device, inode, mtime and size. */
export function buildIdentity(file: string): string {
  const st = fs.statSync(file, { bigint: true });
  const ns = st.mtimeNs % 1_000_000_000n;
  return `${st.dev}:${st.ino}:${st.mtimeNs / 1_000_000_000n}.${String(ns).padStart(9, '0')}:${st.size}`;
}

/** Where the spare of containerd `address` for the build whose daemon is `script` listens (launcher.c spare_paths_for). */
export function spareSocketPath(address: string, script: string): string {
  const key = crypto.createHash('sha256').update(`${address}\n${script}\n${buildIdentity(script)}`).digest('hex').slice(0, 32);
  return path.join(SPARE_DIR, `${key}.sock`);
}

export interface PodHandoff {
  cwd: string;
  /** The daemon's flags, those giving its descriptors included, and the action (serve). */
  flags: ShimFlags;
  env: Record<string, string>;
  logFd: number;
}

/**
 * A handoff's strings (magic, working directory, flag count, flags, environment) and descriptors
 * (the pod's socket, the options pipe, the report pipe, the log) as the daemon they make; an error
 * naming what is wrong otherwise.
 */
export function decodeHandoff(strings: string[], fds: number[], containerdAddress: string): PodHandoff {
  const [magic, cwd, count, ...rest] = strings;
  if (magic !== HANDOFF_MAGIC) throw new Error(`a handoff of another format (${JSON.stringify(magic ?? '')}, this spare takes ${HANDOFF_MAGIC})`);
  if (fds.length !== 4) throw new Error(`a handoff with ${fds.length} descriptors (4 expected: socket, options, report, log)`);
  if (!cwd?.startsWith('/')) throw new Error(`a handoff whose working directory ${JSON.stringify(cwd ?? '')} is not absolute`);
  const n = Number(count);
  if (!Number.isInteger(n) || n < 0 || n > rest.length) throw new Error(`a handoff flag count ${JSON.stringify(count ?? '')} that is not a number of the strings sent`);
  const args = rest.slice(0, n);
  for (let i = 0; i < args.length; i++) {
    if (!POD_FLAGS.has(args[i]!)) throw new Error(`a handoff flag ${JSON.stringify(args[i])} a spare does not take`);
    if (args[i] === '-debug') continue;
    // A value that looks like a flag would be parsed as one (`-id -config=/x` sets -config).
    const value = args[++i];
    if (value === undefined || value.startsWith('-')) throw new Error(`a handoff flag ${args[i - 1]} without a value (${JSON.stringify(value ?? '')})`);
  }
  const env: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const entry of rest.slice(n)) {
    const eq = entry.indexOf('=');
    if (eq <= 0) throw new Error(`a handoff environment entry ${JSON.stringify(entry)} that is not NAME=value`);
    env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  const [socketFd, optionsFd, reportFd, logFd] = fds as [number, number, number, number];
  const flags = parseFlags([...args, '-socket-fd', String(socketFd), '-options-fd', String(optionsFd), '-report-fd', String(reportFd), 'serve']);
  if (flags.address !== containerdAddress) throw new Error(`a pod of containerd ${JSON.stringify(flags.address)}, not of this spare's ${JSON.stringify(containerdAddress)}`);
  return { cwd, flags, env: { ...env }, logFd };
}

export async function runSpare(argv: string[]): Promise<void> {
  const spare = parseSpareFlags(argv);
  const script = process.argv[1]!;
  const { preloadDaemon, serve } = await import('./daemon.js');
  await preloadDaemon();
  const native = loadAddon();
  const listenFd = native.listenForHandoff(spare.socket);
  const ready = performance.now();
  for (;;) {
    let handoff: { strings: string[]; fds: number[] } | null;
    try {
      handoff = native.acceptHandoff(listenFd, CHECK_EVERY_MS);
    } catch {
      continue; // a launcher cut off or sending garbage got no acknowledgement: it spawns a daemon itself
    }
    if (!handoff) {
      if (!(await stillWanted(spare, script))) {
        fs.rmSync(spare.socket, { force: true });
        process.exit(0);
      }
      continue;
    }
    let pod: PodHandoff;
    try {
      pod = decodeHandoff(handoff.strings, handoff.fds, spare.address);
    } catch (err) {
      // Acknowledged, so `start` waits for a report: it fails with this message.
      const reportFd = handoff.fds[2];
      try {
        if (reportFd !== undefined) fs.writeSync(reportFd, `error the spare shim daemon refused the pod: ${(err as Error).message.replace(/\n/g, '; ')}\n`);
      } catch {
        // that `start` is gone
      }
      for (const fd of handoff.fds) fs.closeSync(fd);
      continue;
    }
    // The place goes to the next spare: first the socket, then the lock that says one exists.
    fs.rmSync(spare.socket, { force: true });
    fs.closeSync(listenFd);
    fs.closeSync(SPARE_LOCK_FD);
    becomePodDaemon(pod);
    return serve(pod.flags, pod.cwd, { waitedMs: Math.round(performance.now() - ready) });
  }
}

/** The process a launcher would have spawned for `pod`, but for what was loaded already. */
function becomePodDaemon(pod: PodHandoff): void {
  loadAddon().redirectStdio(pod.logFd);
  for (const name of Object.keys(process.env)) delete process.env[name];
  Object.assign(process.env, pod.env);
  process.chdir(pod.cwd);
  // Back from the lowest priority it loaded at, every thread (Node's own were started then).
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      os.setPriority(Number(tid), 0);
    } catch {
      // a thread that just ended
    }
  }
  // ps (and a leak check) shows the pod's daemon as it shows a spawned one, without the paths.
  process.title = `containerd-shim-stencil-v2 -namespace ${pod.flags.namespace} -id ${pod.flags.id} serve`;
}

async function stillWanted(spare: SpareFlags, script: string): Promise<boolean> {
  try {
    if (buildIdentity(script) !== spare.build) return false;
  } catch {
    return false;
  }
  return new Promise((resolve) => {
    const c = net.connect(spare.address);
    const done = (ok: boolean) => {
      c.destroy();
      resolve(ok);
    };
    c.setTimeout(5_000, () => done(true)); // a busy containerd is still there
    c.once('connect', () => done(true));
    c.once('error', () => done(false));
  });
}
