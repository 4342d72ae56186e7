// Stencil's shim under real containerd (1.6 over ttrpc, 2.1 over ttrpc and gRPC) driven by real
// ctr: every container runs in its own VM, cloned from a template made before the suites
// (on_miss = "fail", so a pod that was not cloned fails its scenario). After each scenario nothing
// may be left behind (leaks()). shim-1.6.test.ts and shim-2.1.test.ts (with gRPC) run them, one containerd
// version per file, so each gets an emulated host of its own: a host's nested faults grow with
// its age (integration-tests/README.md), and one session for both versions lasted ~10 minutes.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CONTAINERD_VERSIONS, ContainerdInstance, type ContainerdVersion } from '../lib/containerd.js';
import { updateTaskResources } from '../lib/containerd-api.js';
import { EventWatch } from '../lib/ctr-events.js';
import { leaksAfterDeadShim, logOffset, logSince, logWithFaults, podMigrate as migratePod, podStatus, removeTask, taskRow, taskStatus as taskStatusOf, useShimContainerd, vmmFaultScenario, waitWhile } from '../lib/ctr-tasks.js';
import { QmpClient } from '../lib/qmp-client.js';
import { ensureShimTemplate, SHIM_TEMPLATE_CONFIG, writeShimConfig } from '../lib/template.js';

export const RUNTIME = 'io.containerd.stencil.v2';
/**
 * The scenarios that exercise the VM and the VMM rather than containerd's side of the shim
 * protocol (a template miss, the OOM killer in the guest, a guest kernel panic, checkpoint/restore,
 * pod migrate; ~20 s to ~1 min each in the emulated host) behave the same under either containerd:
 * `make test` runs them on 2.1 only (STENCIL_SHIM_LONG_ON=2.1) to stay within CI's time;
 * `make shim-test` on both.
 */
const LONG_ON = process.env.STENCIL_SHIM_LONG_ON?.split(',').map((v) => v.trim());
const longSkip = (version: string) =>
  LONG_ON && !LONG_ON.includes(version) ? `VM-level scenario run on containerd ${LONG_ON.join(', ')} only (STENCIL_SHIM_LONG_ON; make shim-test runs it)` : false;

/** The shim's template, made (or found) before the file's suites. */
export function useShimTemplate(): void {
  before(async () => {
    const made = await ensureShimTemplate();
    process.stdout.write(`# shim template ${made.record.key}: ${made.built ? 'built' : 'reused'} in ${made.ms} ms\n`);
  });
}

/** The ctr scenarios on one containerd version, over ttrpc. */
export function shimScenarios(version: ContainerdVersion): void {
  describe(`containerd ${version} with the Stencil shim`, () => {
    let c: ContainerdInstance;
    let image: string;
    let events: EventWatch;

    useShimContainerd(version, SHIM_TEMPLATE_CONFIG, (started) => ({ c, image, events } = started));

    /** The container's task events as `topic` or `topic:exec id`, once its TaskDelete arrived. */
    async function taskTopics(id: string): Promise<string[]> {
      const list = await events.waitFor(id, '/tasks/delete');
      return list.map((e) => (e.body.exec_id || (e.body.id && e.body.id !== id) ? `${e.topic}:${String(e.body.exec_id ?? e.body.id)}` : e.topic));
    }

    async function noLeaks() {
      // The shim daemon exits right after its last Shutdown; give it a moment.
      assert.deepEqual(await c.waitNoLeaks(60_000), [], 'left behind');
    }

    /** After a failed assertion: take the task and container away so later tests start clean. */
    async function cleanupTask(id: string) {
      if ((await taskStatus(id)) === undefined && !(await c.ctr(['containers', 'ls', '-q'])).stdout.split('\n').includes(id)) return;
      await removeTask(c, id);
    }

    /** SIGKILL, `ctr task delete`, `ctr containers rm`; `ctr task ls` must follow at each step. */
    async function killAndRemove(id: string) {
      assert.equal((await c.ctr(['task', 'kill', '-s', 'SIGKILL', id])).code, 0);
      for (let i = 0; i < 50 && (await taskStatus(id)) !== 'STOPPED'; i++) await sleep(200);
      assert.equal(await taskStatus(id), 'STOPPED');
      const del = await c.ctr(['task', 'delete', id]);
      assert.equal(del.code, 0, del.stderr);
      assert.equal(await taskStatus(id), undefined);
      assert.equal((await c.ctr(['containers', 'rm', id])).code, 0);
    }

    // A container that ends 255 lost its pod VM: its stderr, which the scenarios' assertion
    // messages show, then carries any VMM fault report of that run from containerd's log.
    const run = async (args: string[], o: Parameters<ContainerdInstance['ctr']>[1] = {}) => {
      const since = logOffset(c);
      const r = await c.ctr(['run', '--runtime', RUNTIME, ...args], o);
      if (r.code !== 255) return r;
      await sleep(500); // the shim's lines reach containerd's log through its log FIFO, a moment later
      return { ...r, stderr: `${r.stderr}\n${logWithFaults(c, 30, since)}` };
    };
    const taskStatus = (id: string) => taskStatusOf(c, id);
    // A failed scenario's message gains the VMM fault reports containerd logged meanwhile: a pod
    // VM that ended under a detached container shows only as a wrong task status otherwise.
    const scenario = vmmFaultScenario(() => c);
    const taskPid = async (id: string) => (await taskRow(c, id))?.[1];

    scenario('ctr run --rm echo hi prints hi and exits 0, in a VM', async () => {
      const r = await run(['--rm', image, 't1', 'echo', 'hi']);
      assert.equal(r.stdout, 'hi\n', r.stderr + c.logTail());
      assert.equal(r.code, 0, r.stderr);
      const log = fs.readFileSync(c.logPath, 'utf8');
      assert.ok(log.includes('"protocol":"ttrpc"'), 'the shim did not choose ttrpc');
      assert.match(log, /pod VM cloned from a template/, 'the shim did not clone the pod VM');
      // What the shim published, as containerd republished it to its subscribers (ctr events).
      assert.deepEqual(await taskTopics('t1'), ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
      const [create, start, exit] = events.taskEvents('t1');
      assert.equal(create!.body.bundle, path.join(c.state, 'io.containerd.runtime.v2.task', c.namespace, 't1'));
      assert.ok(Number(start!.body.pid) > 0, JSON.stringify(start));
      assert.equal(exit!.body.id, 't1');
      assert.equal(exit!.body.exit_status ?? 0, 0);
      await noLeaks();
    });

    scenario('a pod no template matches: on_miss "fail" refuses it, saying why; "boot" cold-boots it with a warning', async () => {
      const fail = writeShimConfig(`miss-fail-${version}.toml`, { memory: '320M', onMiss: 'fail' });
      const refused = await run(['--rm', '--runtime-config-path', fail, image, 'tm1', 'echo', 'hi']);
      assert.notEqual(refused.code, 0, 'a pod with no template ran although on_miss = "fail"');
      assert.match(refused.stderr, /no template matches VM .*320 MiB.*on_miss = "fail"/, refused.stderr);
      await cleanupTask('tm1');
      if ((await c.ctr(['containers', 'ls', '-q'])).stdout.split('\n').includes('tm1')) await c.ctr(['containers', 'rm', 'tm1']);
      await noLeaks();
      if (version !== (LONG_ON?.[0] ?? CONTAINERD_VERSIONS[0])) return;  // one cold boot is enough (TCG makes it slow)
      const boot = writeShimConfig(`miss-boot-${version}.toml`, { memory: '320M', onMiss: 'boot' });
      const logBefore = logOffset(c);
      const booted = await run(['--rm', '--runtime-config-path', boot, image, 'tm2', 'echo', 'hi']);
      assert.equal(booted.stdout, 'hi\n', booted.stderr);
      assert.match(logSince(c, logBefore), /warn.*no template matches VM .*320 MiB.*booting it from scratch/);
      await noLeaks();
    }, { skip: longSkip(version) });

    scenario("sh -c 'exit 3' exits 3", async () => {
      const r = await run(['--rm', image, 't2', 'sh', '-c', 'exit 3']);
      assert.equal(r.code, 3, r.stderr);
      const exit = (await events.waitFor('t2', '/tasks/exit')).find((e) => e.topic === '/tasks/exit');
      assert.equal(exit!.body.exit_status, 3);
      await noLeaks();
    });

    scenario('stdin round-trips through cat', async () => {
      const r = await run(['--rm', image, 't3', 'cat'], { input: 'data\n', closeInputWhen: /data\n/ });
      assert.equal(r.stdout, 'data\n', r.stderr);
      assert.equal(r.code, 0, r.stderr);
      await noLeaks();
    });

    scenario('--log-uri file:// receives all of stdout and stderr before the exit is reported', async () => {
      const log = path.join(c.dir, 'file-log.txt');
      const r = await run(['--rm', '--log-uri', `file://${log}`, image, 'tf', 'sh', '-c', 'seq 1 20000; echo to-stderr >&2; exit 2']);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stdout, '', 'output went to the log file, not to ctr');
      // Both streams append to one file; the stderr line may land between two stdout chunks.
      const text = fs.readFileSync(log, 'utf8');
      assert.ok(text.includes('to-stderr\n'), `no stderr line in ${log}`);
      const numbers = text.replace('to-stderr\n', '');
      assert.equal(numbers, Array.from({ length: 20000 }, (_, i) => `${i + 1}\n`).join(''), `${log} is incomplete (${numbers.length} bytes)`);
      await noLeaks();
    });

    scenario('--log-uri binary:// runs the logging program with stdout on fd 3, stderr on fd 4', async () => {
      const dir = fs.mkdtempSync(path.join(c.dir, 'binary-log-'));
      const logger = path.join(dir, 'logger.sh');
      // containerd's logging-binary protocol: closing fd 5 says "ready"; CONTAINER_ID names the container.
      fs.writeFileSync(
        logger,
        '#!/bin/sh\nout="$2/$CONTAINER_NAMESPACE-$CONTAINER_ID"\ncat <&3 5>&- >"$out.out" &\ncat <&4 5>&- >"$out.err" &\nexec 5>&-\nwait\n',
        { mode: 0o755 },
      );
      const r = await run(['--rm', '--log-uri', `binary://${logger}?dir=${dir}`, image, 'tb', 'sh', '-c', 'echo out-line; echo err-line >&2']);
      assert.equal(r.code, 0, r.stderr);
      const base = path.join(dir, `${c.namespace}-tb`);
      const read = (f: string) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '');
      for (let i = 0; i < 50 && (read(`${base}.out`) === '' || read(`${base}.err`) === ''); i++) await sleep(200);
      assert.equal(read(`${base}.out`), 'out-line\n');
      assert.equal(read(`${base}.err`), 'err-line\n');
      await noLeaks();
    });

    scenario('over its memory limit a container is OOM-killed: TaskOOM, then TaskExit 137', async () => {
      const MiB = 1024 * 1024;
      const hog = `x=$(head -c ${48 * MiB} /dev/zero | tr "\\0" a); echo survived \${#x}`;
      const r = await run(['--rm', '--memory-limit', String(16 * MiB), image, 'oom', 'sh', '-c', hog]);
      assert.equal(r.code, 137, `exit ${r.code}: ${r.stdout}${r.stderr}`);
      assert.deepEqual(await taskTopics('oom'), ['/tasks/create', '/tasks/start', '/tasks/oom', '/tasks/exit', '/tasks/delete']);
      await noLeaks();
    }, { skip: longSkip(version) });

    scenario('containers with the same io.kubernetes.cri.sandbox-id share one shim and one VM', async () => {
      const pod = ['--annotation', 'io.kubernetes.cri.sandbox-id=pod-a'];
      const bootId = async (id: string) => {
        const r = await c.ctr(['task', 'exec', '--exec-id', `boot-${id}`, id, 'cat', '/proc/sys/kernel/random/boot_id']);
        assert.equal(r.code, 0, r.stderr);
        return r.stdout.trim();
      };
      try {
        for (const id of ['pa1', 'pa2']) {
          const r = await run(['-d', ...pod, image, id, 'sleep', '1000']);
          assert.equal(r.code, 0, `ctr run -d ${id}: ${r.stderr}`);
        }
        const shims = (await c.leaks()).filter((l) => l.startsWith('shim process'));
        assert.equal(shims.length, 1, `one shim daemon per pod, found:\n${shims.join('\n')}`);
        assert.equal(await taskPid('pa1'), await taskPid('pa2'));
        const vm = await bootId('pa1');
        assert.match(vm, /^[0-9a-f-]{36}$/);
        assert.notEqual(vm, fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), 'not in a VM');
        assert.equal(await bootId('pa2'), vm, 'the two containers run in different VMs');
        // The first container goes; the VM stays for the second.
        await killAndRemove('pa1');
        assert.equal(await taskStatus('pa2'), 'RUNNING', logWithFaults(c));
        assert.equal(await bootId('pa2'), vm);
        await killAndRemove('pa2');
      } finally {
        await cleanupTask('pa1');
        await cleanupTask('pa2');
      }
      await noLeaks();
    });

    scenario('detached: exec, update, pause/resume (a counter stops and continues), kill, delete; task ls right at each step', async () => {
      const id = 'bg';
      const since = logOffset(c);
      try {
        const r = await run(['-d', image, id, 'sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.1; done']);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(await taskStatus(id), 'RUNNING', logWithFaults(c));
        const exec = await c.ctr(['task', 'exec', '--exec-id', 'e1', id, 'ls', '/']);
        assert.equal(exec.code, 0, exec.stderr);
        assert.match(exec.stdout, /\bbin\b[\s\S]*\btmp\b/);
        // Stats: the guest cgroup's metrics as io.containerd.cgroups.v2.Metrics, decoded by ctr.
        const metrics = await c.ctr(['task', 'metrics', id]);
        // (containerd only logs why a task's Stats failed: ctr says "no metrics received".)
        assert.equal(metrics.code, 0, `${metrics.stderr}containerd's log:\n${c.logTail(30)}`);
        assert.match(metrics.stdout, /pids\.current\s+\d+/, `ctr task metrics:\n${metrics.stdout}`);
        // Update (containerd's Tasks API; ctr has no `task update`): the guest cgroup takes the limits.
        await updateTaskResources(c, id, { memory: { limit: 64 * 1024 * 1024 }, pids: { limit: 42 } });
        // Read back as ctr decodes our metrics: the guest kernel's memory.max and pids.max.
        const updated = await c.ctr(['task', 'metrics', '--format', 'json', id]);
        assert.equal(updated.code, 0, `${updated.stderr}containerd's log:\n${c.logTail(30)}`);
        type V2 = { memory?: { usage_limit?: number }; pids?: { limit?: number } };
        const json = JSON.parse(updated.stdout.slice(updated.stdout.indexOf('{'))) as V2 & { Data?: V2; data?: V2 };
        const data = json.memory ? json : (json.Data ?? json.data ?? {});
        assert.equal(data.memory?.usage_limit, 64 * 1024 * 1024, updated.stdout);
        assert.equal(data.pids?.limit, 42, updated.stdout);
        // The container's rootfs is the overlay the shim mounted on the bundle's rootfs, in the shim
        // daemon's own mount namespace (the task pid), and shared from there into the VM.
        const pid = await taskPid(id);
        const counter = `/proc/${pid}/root${path.join(c.state, 'io.containerd.runtime.v2.task', c.namespace, id, 'rootfs', 'tmp', 'count')}`;
        // The container replaces the file with a rename, so a read never sees it half-written
        // (`echo $i > file` truncates first: the host saw an empty file in ~2% of reads).
        const read = () => {
          let text: string;
          try {
            text = fs.readFileSync(counter, 'utf8');
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0; // not written yet
            throw err;
          }
          assert.match(text, /^\d+\n$/, `the counter file holds ${JSON.stringify(text)}`);
          return Number(text);
        };
        const moving = async () => {
          const a = read();
          await sleep(1500);
          return read() > a;
        };
        assert.ok(await moving(), 'the counter does not move');
        assert.equal((await c.ctr(['task', 'pause', id])).code, 0);
        assert.equal(await taskStatus(id), 'PAUSED');
        await sleep(500);
        assert.ok(!(await moving()), 'the counter moved while paused');
        assert.equal((await c.ctr(['task', 'resume', id])).code, 0);
        assert.equal(await taskStatus(id), 'RUNNING', logWithFaults(c));
        assert.ok(await moving(), 'the counter did not continue after resume');
        await killAndRemove(id);
        assert.deepEqual(await taskTopics(id), [
          '/tasks/create',
          '/tasks/start',
          '/tasks/exec-added:e1',
          '/tasks/exec-started:e1',
          '/tasks/exit:e1',
          '/tasks/paused',
          '/tasks/resumed',
          '/tasks/exit',
          '/tasks/delete',
        ]);
        // Anything but SIGKILL's 137 means the pod's VM ended first: say how.
        assert.equal(events.taskEvents(id).find((e) => e.topic === '/tasks/exit' && e.body.id === id)!.body.exit_status, 137, logWithFaults(c, 60, since));
      } finally {
        await cleanupTask(id);
      }
      await noLeaks();
    });

    scenario('checkpoint and restore (ctr c checkpoint --task, ctr c restore --live): the restored container counts on from its saved memory', async () => {
      const id = 'ckpt';
      const ref = `stencil.test/checkpoint-${version}:1`;
      const since = logOffset(c);
      try {
        // The count lives in the shell's memory; the file only shows it (replaced by a rename).
        const r = await run(['-d', image, id, 'sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/c; sleep 0.1; done']);
        assert.equal(r.code, 0, r.stderr);
        const counter = async () => {
          const file = `/proc/${await taskPid(id)}/root${path.join(c.state, 'io.containerd.runtime.v2.task', c.namespace, id, 'rootfs', 'tmp', 'c')}`;
          try {
            return Number(fs.readFileSync(file, 'utf8'));
          } catch {
            return 0;  // not written yet, or the task is between shims
          }
        };
        const countAbove = async (min: number) => {
          for (let i = 0; i < 300; i++) {
            const n = await counter();
            if (n > min) return n;
            await sleep(200);
          }
          // How the pod's VM stands, and what the VMM and the shim reported meanwhile (the emulated host's faults are retried on that evidence).
          const pod = await podStatus(c, id).then((st) => `its VM is ${st.vmState}`, (err: Error) => `no pod status: ${err.message}`);
          assert.fail(`the counter never went above ${min} (task ${await taskStatus(id).catch(() => 'unknown')}; ${pod})\n${logWithFaults(c, 40, since)}`);
        };
        await countAbove(5);
        const cp = await c.ctr(['containers', 'checkpoint', '--task', id, ref]);
        assert.equal(cp.code, 0, cp.stderr);
        const afterCheckpoint = await counter();
        // The checkpointed task runs on (no --exit), paused only while the VM was saved.
        await countAbove(afterCheckpoint);
        await killAndRemove(id);

        const restore = await c.ctr(['containers', 'restore', '--live', id, ref]);
        assert.equal(restore.code, 0, restore.stderr);
        assert.equal(await taskStatus(id), 'RUNNING', logWithFaults(c));
        // A fresh rootfs (no --rw): the first count the restored shell writes comes from its memory.
        const first = await countAbove(0);
        process.stdout.write(`# checkpoint at count ${afterCheckpoint}, the restored container's first count ${first}\n`);
        assert.ok(first > afterCheckpoint - 20 && first <= afterCheckpoint + 20, `the restored container wrote ${first} first; it was at ${afterCheckpoint} at the checkpoint`);
        await countAbove(first);
        await killAndRemove(id);
        assert.ok(events.taskEvents(id).some((e) => e.topic === '/tasks/checkpointed'), 'no TaskCheckpointed event');
        assert.equal((await c.ctr(['images', 'rm', ref])).code, 0);
      } finally {
        await cleanupTask(id);
        await c.ctr(['images', 'rm', ref]);
      }
      await noLeaks();
    }, { skip: longSkip(version) });

    scenario('stencil pod migrate: a refused move leaves the pod running; then the running container moves to a new shim daemon, its output goes on, Kill reaches it, its exit code arrives, nothing leaks', async () => {
      const id = 'mig';
      const dir = fs.mkdtempSync('/tmp/stencil-pod-migrate-');
      // ctr in the foreground, as a user runs it: its stdout FIFO and its Wait are what must survive.
      const ctr = c.ctrCommand(['run', '--runtime', RUNTIME, image, id, 'sh', '-c', "trap 'echo bye; exit 7' TERM; i=0; while true; do i=$((i+1)); echo n$i; sleep 0.2; done"]);
      const child = spawn(ctr.file, ctr.args, { env: ctr.env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      const lines = () => out.split('\n').filter((l) => /^n\d+$/.test(l)).map((l) => Number(l.slice(1)));
      const countAbove = async (min: number) => {
        for (let i = 0; i < 600; i++) {
          const n = lines().at(-1) ?? 0;
          if (n > min) return n;
          await sleep(100);
        }
        assert.fail(`the output never went above n${min}: ${JSON.stringify(out.slice(-300))} ${err}`);
      };
      try {
        await countAbove(3);
        const oldShim = Number(await taskPid(id));
        assert.ok(oldShim > 0 && fs.existsSync(`/proc/${oldShim}`), `no shim pid for ${id}`);
        const podMigrate = (to: string) => migratePod(c, id, to);
        // A move the pod cannot make: refused before a destination daemon is made, naming the reason.
        const early = await podMigrate(`file:${dir}`);
        assert.notEqual(early.code, 0, early.stdout);
        assert.match(early.stderr, /the pod cannot migrate: .*migrates over tcp: or unix:, not file:/);
        // A destination that cannot take the pod (it cannot listen there): refused with the
        // reason after the new daemon tried; the pod runs on where it was.
        const refused = await podMigrate(`unix:${path.join(dir, 'no-such-dir', 'vm.sock')}`);
        assert.notEqual(refused.code, 0, refused.stdout);
        assert.match(refused.stderr, /pod migration to unix:\S*no-such-dir\S*: /);
        assert.equal(Number(await taskPid(id)), oldShim);
        await countAbove((lines().at(-1) ?? 0) + 2);
        const migrate = await podMigrate(`unix:${path.join(dir, 'vm.sock')}`);
        assert.equal(migrate.code, 0, `stencil pod migrate failed: ${migrate.stderr}${c.logTail(60)}`);
        const moved = JSON.parse(migrate.stdout) as { pid: number; downtimeMs: number; totalTimeMs: number; transferredBytes: number; downtimePhases: Record<string, number> };
        process.stdout.write(`# pod migrate: ${migrate.stdout.trim()} (at n${lines().at(-1)})\n`);
        // The downtime's split, each phase measured and together within it (the downtime is whole ms).
        assert.deepEqual(Object.keys(moved.downtimePhases ?? {}).sort(), ['destinationMs', 'finalRamMs', 'pauseMs', 'saveStateMs'], migrate.stdout);
        const phasesMs = Object.values(moved.downtimePhases).reduce((a, b) => a + b, 0);
        assert.ok(phasesMs <= moved.downtimeMs + 1, `phases ${phasesMs} ms, downtime ${moved.downtimeMs} ms`);
        assert.notEqual(moved.pid, oldShim);
        for (let i = 0; i < 100 && fs.existsSync(`/proc/${oldShim}`); i++) await sleep(100);
        assert.equal(fs.existsSync(`/proc/${oldShim}`), false, 'the old shim daemon is still there');
        assert.ok(fs.existsSync(`/proc/${moved.pid}`), 'the new shim daemon is not running');
        assert.equal(await taskStatus(id), 'RUNNING', logWithFaults(c));
        assert.equal(Number(await taskPid(id)), moved.pid, "containerd's State is answered by the new daemon");
        // The output goes on through the new daemon, then a Kill through containerd reaches the container.
        await countAbove((lines().at(-1) ?? 0) + 5);
        assert.equal((await c.ctr(['task', 'kill', '-s', 'SIGTERM', id])).code, 0);
        assert.equal(await exited, 7, `ctr run's exit status; stderr: ${err}`);
        const seen = lines();
        assert.deepEqual(seen, seen.map((_, i) => i + 1), 'the output has gaps or repeats');
        assert.match(out, /bye\n$/);
        assert.deepEqual(
          (await taskTopics(id)).filter((t) => t !== '/tasks/delete'),
          ['/tasks/create', '/tasks/start', '/tasks/exit'],
          'one exit, the real one',
        );
        assert.equal((await c.ctr(['containers', 'rm', id])).code, 0);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
        await cleanupTask(id);
        fs.rmSync(dir, { recursive: true, force: true });
      }
      await noLeaks();
    }, { skip: longSkip(version) });

    scenario('ctr run -t gives a working terminal', async () => {
      // `script` gives ctr a pty; the shell in the VM answers through it.
      const ctr = c.ctrCommand(['run', '--rm', '-t', '--runtime', RUNTIME, image, 'tty1', 'sh']);
      const cmd = [ctr.file, ...ctr.args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
      const child = spawn('script', ['-qfec', cmd, '/dev/null'], { env: ctr.env, stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const waitFor = async (re: RegExp, ms = 120_000) => {
        for (const end = Date.now() + ms; Date.now() < end; await sleep(100)) if (re.test(out)) return;
        throw new Error(`terminal never showed ${re}; output: ${JSON.stringify(out)}`);
      };
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      try {
        // busybox's prompt (it may be followed by a cursor-position query, which needs no answer).
        await waitFor(/\/ # /);
        child.stdin.write('echo $((6*7)); tty\r');
        await waitFor(/42\r*\n\/dev\/pts\/\d+/); // \r\r\n: two ptys (script's and the container's)
        child.stdin.write('exit 5\r');
        assert.equal(await exited, 5, out);
      } finally {
        if (child.exitCode === null) {
          child.kill('SIGKILL');
          await c.ctr(['task', 'kill', '-s', 'SIGKILL', 'tty1']);
          await sleep(2000);
          await c.ctr(['task', 'delete', 'tty1']);
          await c.ctr(['containers', 'rm', 'tty1']);
        }
      }
      await noLeaks();
    });

    scenario('containerd killed and restarted while a container runs: the shim stays, containerd reconnects, the container counts on, stops and goes', async () => {
      const id = 'survivor';
      try {
        const r = await run(['-d', image, id, 'sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/c; sleep 0.1; done']);
        assert.equal(r.code, 0, r.stderr);
        const count = async () => {
          // A VM that died (the emulated host's nested fault) must fail here with containerd's log,
          // which names the fault, not in an exec of a task that has already ended.
          assert.equal(await taskStatus(id), 'RUNNING', logWithFaults(c));
          const e = await c.ctr(['task', 'exec', '--exec-id', `read-${Date.now()}`, id, 'cat', '/tmp/c']);
          assert.equal(e.code, 0, `exec after the restart: ${e.stderr}${logWithFaults(c)}`);
          return Number(e.stdout.trim());
        };
        const before = await count();
        const shims = c.shimPids();
        assert.equal(shims.length, 1, `one shim daemon: ${shims.join(', ')}`);
        events.stop();  // its connection goes with containerd
        const logBefore = logOffset(c);
        await c.restart();
        events = await EventWatch.start(c);
        assert.deepEqual(c.shimPids(), shims, 'the shim daemon did not survive containerd');
        assert.equal(await taskStatus(id), 'RUNNING', logWithFaults(c));
        const after = await count();
        assert.ok(after > before, `the container stopped counting across the restart (${before}, then ${after})`);
        await killAndRemove(id);
        // The shim's log FIFO lost its reader with the old containerd; its lines reach the new one.
        const logAfter = logSince(c, logBefore);
        const deleted = logAfter.split('\n').some((l) => l.includes('"message":"task deleted"') && l.includes(`"id":"${id}"`));
        assert.ok(deleted, `the shim's log after the restart is not in containerd's log:\n${c.logTail(30)}`);
      } finally {
        await cleanupTask(id);
      }
      await noLeaks();
    });

    scenario("a guest kernel panic (inject-nmi on the pod's QMP monitor, found by stencil pod status): the task exits 255, the shim says why, then goes with the task", async () => {
      const id = 'panicking';
      try {
        assert.equal((await run(['-d', image, id, 'sleep', '1000'])).code, 0);
        const pod = await podStatus(c, id);
        assert.equal(pod.vmState, 'running');
        assert.deepEqual(pod.containers, [id]);
        assert.ok(fs.existsSync(`/proc/${pod.pid}`), `no shim daemon ${pod.pid}`);
        const qmp = await QmpClient.connect(pod.monitor);
        try {
          assert.deepEqual(await qmp.execute('inject-nmi'), {});
        } finally {
          qmp.close();
        }
        for (let i = 0; i < 300 && (await taskStatus(id)) === 'RUNNING'; i++) await sleep(200);
        assert.equal(await taskStatus(id), 'STOPPED', `containerd's log:\n${c.logTail(40)}`);
        assert.ok(fs.existsSync(`/proc/${pod.pid}`), 'the shim daemon went with its VM (containerd still has to delete the task)');
        assert.match(c.logTail(200), /Kernel panic - not syncing: NMI/, "the guest's panic is not in containerd's log (the shim's)");
        const del = await c.ctr(['task', 'delete', id]);
        assert.equal(del.code, 0, del.stderr);
        const exit = (await events.waitFor(id, '/tasks/delete')).find((e) => e.topic === '/tasks/exit');
        assert.equal(exit?.body.exit_status, 255, JSON.stringify(exit));
        assert.equal((await c.ctr(['containers', 'rm', id])).code, 0);
      } finally {
        await cleanupTask(id);
      }
      await noLeaks();
    }, { skip: longSkip(version) });

    scenario('kill -9 of the shim: the task is reported gone, ctr task delete cleans up, nothing leaks', async () => {
      const id = 'victim';
      assert.equal((await run(['-d', image, id, 'sleep', '1000'])).code, 0);
      assert.equal(await taskStatus(id), 'RUNNING', logWithFaults(c));
      const shims = c.shimPids(id);
      assert.equal(shims.length, 1, `the shim daemon of ${id}: ${shims.join(', ')}`);
      process.kill(shims[0]!, 'SIGKILL');
      const status = await waitWhile(c, id, ['RUNNING'], 20_000);
      assert.notEqual(status, 'RUNNING', 'containerd still reports the task running');
      await c.ctr(['task', 'delete', id]);
      assert.equal(await taskStatus(id), undefined);
      assert.equal((await c.ctr(['containers', 'rm', id])).code, 0);
      assert.deepEqual(await leaksAfterDeadShim(c, id), [], 'left behind');
    });
  });
}
