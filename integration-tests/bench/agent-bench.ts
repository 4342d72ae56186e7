// `make bench` (agent figures): a container started through a pod VM, and the pod's 9p rootfs,
// each against the same work done directly on the same (real or emulated) host, runs interleaved.
// Prints one JSON line per figure with both medians and their ratio.
//   create_to_first_stdout_byte  PodVm.createContainer (bind mount, crun create in the guest),
//                                attach, start -> first stdout byte of `echo`, in a booted pod;
//                                anchor: `crun run` of the same busybox bundle on this host.
//   p9_seq_write / p9_seq_read   dd of a file in 1 MiB blocks (write with fsync, then read back)
//                                inside a container, i.e. over the 9p rootfs; anchor: the same
//                                busybox dd on this host, in the same directory of that rootfs.
// The rootfs lives on a disk, never tmpfs, so fsync means a flush on both sides: STENCIL_BENCH_DIR,
// else the emulated host's scratch disk (EMULATED_HOST_SCRATCH, ext4 on virtio-blk), else the cache.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BUSYBOX_STATIC, ociSpec } from '../../shim/src/agent/testing/busybox-oci.js';
import { type PodVm, SHARE_MOUNT_OPTIONS } from '../../shim/src/pod/pod-vm.js';
import { cacheDir } from '../../shim/src/util/paths.js';
import { withTimeout } from '../lib/guest.js';
import { bootTestPod, CALL_TIMEOUT_MS, readAll, Rootfses } from '../lib/pod.js';

const RUNS = Number(process.env.STENCIL_BENCH_RUNS ?? 7);
const IO_RUNS = Math.max(5, Number(process.env.STENCIL_BENCH_IO_RUNS ?? 5));
const IO_MIB = Number(process.env.STENCIL_BENCH_IO_MIB ?? 64);
const CRUN = '/usr/bin/crun';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (x: number, digits = 1) => Number(x.toFixed(digits));

function emit(figure: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(figure) + '\n');
}

let seq = 0;

// statfs(2) f_type values of the file systems a bench directory may be on.
const FS_TYPES: Record<number, string> = {
  0xef53: 'ext4', 0x01021994: 'tmpfs', 0x858458f6: 'ramfs', 0x01021997: '9p', 0x794c7630: 'overlayfs',
  0x9123683e: 'btrfs', 0x58465342: 'xfs',
};

/** Where the rootfs (and so both sides' dd) lives: a disk, because fsync on tmpfs does nothing. */
function benchDir(): { dir: string; filesystem: string } {
  const dir = process.env.STENCIL_BENCH_DIR ?? process.env.EMULATED_HOST_SCRATCH ?? path.join(cacheDir(), 'bench');
  fs.mkdirSync(dir, { recursive: true });
  const type = Number(fs.statfsSync(dir).type);
  const filesystem = FS_TYPES[type] ?? `0x${type.toString(16)}`;
  if (filesystem === 'tmpfs' || filesystem === 'ramfs')
    throw new Error(`bench directory ${dir} is on ${filesystem}, where fsync does nothing: set STENCIL_BENCH_DIR to a directory on a disk`);
  return { dir, filesystem };
}

/** createContainer -> first stdout byte of `echo`, in ms (the container is deleted afterwards). */
async function podEcho(pod: PodVm, rootfs: string): Promise<number> {
  const id = `echo-${++seq}`;
  const stdio = { stdout: true };
  const t0 = performance.now();
  await pod.createContainer({ id, spec: ociSpec(rootfs, { args: ['echo', 'hello'] }), rootfs, stdio });
  try {
    const { stdout } = await pod.attachStdio(id, '', stdio);
    const first = new Promise<number>((resolve, reject) => {
      stdout!.once('data', () => resolve(performance.now() - t0));
      stdout!.once('error', reject);
      stdout!.once('end', () => reject(new Error('echo printed nothing')));
    });
    await pod.startContainer(id);
    const ms = await withTimeout(first, CALL_TIMEOUT_MS, 'no output from echo');
    stdout!.resume();
    await pod.waitProcess(id, '');
    return ms;
  } finally {
    await pod.deleteContainer(id);
  }
}

/** `crun run` of the same spec on this host: spawn -> first stdout byte, in ms. */
async function crunEcho(rootfs: string, scratch: string): Promise<number> {
  const id = `stencil-bench-${process.pid}-${++seq}`;
  const bundle = path.join(scratch, id);
  fs.mkdirSync(bundle);
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(ociSpec(rootfs, { args: ['echo', 'hello'] })));
  const root = path.join(scratch, 'crun-state');
  try {
    const t0 = performance.now();
    const child = spawn(CRUN, ['--root', root, 'run', '--bundle', bundle, id], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const ms = await withTimeout(
      new Promise<number>((resolve, reject) => {
        child.stdout.once('data', () => resolve(performance.now() - t0));
        child.once('exit', (code) => reject(new Error(`crun run exited (${code}) without output: ${stderr}`)));
      }),
      CALL_TIMEOUT_MS,
      'no output from crun run',
    );
    await new Promise((resolve) => (child.exitCode === null ? child.once('exit', resolve) : resolve(undefined)));
    return ms;
  } finally {
    fs.rmSync(bundle, { recursive: true, force: true });
  }
}

/**
 * The dd script both sides run with busybox: write IO_MIB MiB (fsync), read it back (from whatever
 * page cache each side kept after the write), remove it. Prints "<t0> <t1> <t2>": wall-clock
 * seconds with microseconds from busybox ts (busybox date has no %N; /proc/uptime ticks in 10 ms).
 */
function ddScript(dir: string, busybox = 'busybox'): string {
  const f = `${dir}/stencil-bench.bin`;
  const now = `$(echo | ${busybox} ts '%.s')`;
  return [
    `t0=${now}`,
    `${busybox} dd if=/dev/zero of=${f} bs=1048576 count=${IO_MIB} conv=fsync 2>/dev/null || exit 1`,
    `t1=${now}`,
    `${busybox} dd if=${f} of=/dev/null bs=1048576 2>/dev/null || exit 1`,
    `t2=${now}`,
    `rm -f ${f}`,
    `echo $t0 $t1 $t2`,
  ].join('\n');
}

function parseDd(out: string): { write: number; read: number } {
  const [t0, t1, t2] = out.trim().split(/\s+/).map(Number);
  if (![t0, t1, t2].every(Number.isFinite) || !(t1 > t0 && t2 > t1))
    throw new Error(`unexpected dd script output ${JSON.stringify(out)}`);
  return { write: IO_MIB / (t1 - t0), read: IO_MIB / (t2 - t1) };
}

async function podDd(pod: PodVm, rootfs: string): Promise<{ write: number; read: number }> {
  const id = `dd-${++seq}`;
  const stdio = { stdout: true, stderr: true };
  await pod.createContainer({ id, spec: ociSpec(rootfs, { args: ['sh', '-c', ddScript('/tmp')] }), rootfs, stdio });
  try {
    const io = await pod.attachStdio(id, '', stdio);
    const out = readAll(io.stdout!);
    const err = readAll(io.stderr!);
    await pod.startContainer(id);
    const exit = await withTimeout(pod.waitProcess(id, ''), CALL_TIMEOUT_MS * 5, 'dd in the container did not finish');
    if (exit.exitStatus !== 0) throw new Error(`dd in the container failed (${exit.exitStatus}): ${(await err).toString()}`);
    return parseDd((await out).toString());
  } finally {
    await pod.deleteContainer(id);
  }
}

async function hostDd(dir: string): Promise<{ write: number; read: number }> {
  const child = spawn(BUSYBOX_STATIC, ['sh', '-c', ddScript(dir, BUSYBOX_STATIC)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const out = readAll(child.stdout);
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  if (code !== 0) throw new Error(`dd on the host failed (${code})`);
  return parseDd((await out).toString());
}

async function main() {
  const bench = benchDir();
  const rootfses = new Rootfses(bench.dir);
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-agent-bench-'));
  let pod: PodVm | undefined;
  try {
    const t0 = performance.now();
    pod = await bootTestPod('bench');
    process.stderr.write(`agent bench: pod booted in ${Math.round(performance.now() - t0)} ms\n`);
    const rootfs = rootfses.make();

    // Warm-up: page cache, crun's first run, the guest's first container.
    await podEcho(pod, rootfs);
    await crunEcho(rootfs, scratch);
    const stencil: number[] = [];
    const anchor: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      stencil.push(await podEcho(pod, rootfs));
      anchor.push(await crunEcho(rootfs, scratch));
    }
    const s = median(stencil);
    const a = median(anchor);
    emit({
      figure: 'create_to_first_stdout_byte',
      unit: 'ms',
      runs: RUNS,
      stencil_median: Math.round(s),
      anchor_median: Math.round(a),
      ratio: round(s / a, 2),
      ratio_meaning: 'stencil / anchor (lower is better)',
      anchor:
        'crun run of the same busybox bundle (echo hello) directly on this host, spawn to first stdout byte; ' +
        'stencil: PodVm.createContainer to the first stdout byte in an already booted pod (host bind mount, ' +
        'crun create + start in the guest through the agent, rootfs over 9p, stdout over vsock)',
      stencil_runs: stencil.map(Math.round),
      anchor_runs: anchor.map(Math.round),
    });

    const io = { stencil: { write: [] as number[], read: [] as number[] }, host: { write: [] as number[], read: [] as number[] } };
    const hostDir = path.join(rootfs, 'tmp');  // the directory the container's dd writes to
    await podDd(pod, rootfs);  // warm-up of both sides, not counted
    await hostDd(hostDir);
    for (let i = 0; i < IO_RUNS; i++) {
      const g = await podDd(pod, rootfs);
      const h = await hostDd(hostDir);
      io.stencil.write.push(g.write);
      io.stencil.read.push(g.read);
      io.host.write.push(h.write);
      io.host.read.push(h.read);
    }
    for (const op of ['write', 'read'] as const) {
      const g = median(io.stencil[op]);
      const h = median(io.host[op]);
      emit({
        figure: `p9_seq_${op}`,
        unit: 'MiB/s',
        runs: IO_RUNS,
        size_mib: IO_MIB,
        directory: hostDir,
        filesystem: bench.filesystem,
        timer: 'busybox ts %.s (microseconds) around each dd, on each side',
        stencil_median: round(g),
        anchor_median: round(h),
        ratio: round(g / h, 3),
        ratio_meaning: 'stencil / anchor throughput (higher is better, 1 = native)',
        anchor: `busybox dd ${op === 'write' ? 'if=/dev/zero bs=1M conv=fsync' : 'of=/dev/null bs=1M'} on this host in the container rootfs's /tmp (${hostDir}); ` +
          `stencil: the same dd in a container, on its rootfs over virtio-9p (${SHARE_MOUNT_OPTIONS.join(',')})`,
        stencil_runs: io.stencil[op].map((x) => round(x)),
        anchor_runs: io.host[op].map((x) => round(x)),
      });
    }
  } finally {
    await pod?.shutdown();
    rootfses.remove();
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`agent bench failed: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
