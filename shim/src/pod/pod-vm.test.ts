// PodVm without a real guest: bad ids and options fail with errors naming the problem before
// anything is created; VM limits come back from the VMM with their code; the VM comes from the
// given VmProvider; a VM that dies or never runs an agent fails the boot with the console in
// the message; in every case nothing is left behind (state directory, RAM file, socket, fds).
// Tiny hand-made kernels stand in for the guest (the real one is in integration-tests/vm/pod*).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { InvalidVmConfigError, KernelImageError } from '../hypervisor/errors.js';
import { bootMicroVm } from '../hypervisor/microvm.js';
import type { VmProvider, VmSpec } from '../hypervisor/types.js';
import { mountsUnder } from '../util/mounts.js';
import { tinyElfKernel } from '../hypervisor/testing/tiny-kernel.js';
import { guestOciVersion, PodVm, PodVmError, type PodVmOptions, validateId } from './pod-vm.js';

const openFds = () => fs.readdirSync('/proc/self/fd').length;

describe('PodVm ids', () => {
  it('accepts containerd-style ids', () => {
    for (const id of ['a', 'pod-1', 'c_2.x', '0123456789abcdef'.repeat(4)]) validateId('container', id, 64);
  });

  it('rejects ids that are not a single safe path component, saying why', () => {
    const cases: Array<[unknown, RegExp]> = [
      ['', /is empty/],
      [undefined, /is empty/],
      ['a/b', /contains '\/'/],
      ['..', /contains '\.\.'/],
      ['a..b', /contains '\.\.'/],
      ['x'.repeat(65), /65 characters long; at most 64/],
      ['.hidden', /must start with a letter or digit/],
      ['-x', /must start with a letter or digit/],
      ['a b', /only \[A-Za-z0-9_.-\]/],
      ['a\0b', /only/],
    ];
    for (const [id, re] of cases) {
      assert.throws(
        () => validateId('container', id, 64),
        (err: unknown) => err instanceof PodVmError && err.code === 'INVALID_ARGUMENT' && /invalid container id/.test(err.message) && re.test(err.message),
        `id ${JSON.stringify(id)}`,
      );
    }
  });
});

describe('PodVm.boot without a guest agent', () => {
  let dir: string;
  let memDir: string;
  let initrd: string;
  let spin: string;
  let crash: string;
  let n = 0;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-podvm-test-'));
    memDir = fs.mkdtempSync('/dev/shm/stencil-podvm-test-');
    initrd = path.join(dir, 'initrd');
    fs.writeFileSync(initrd, Buffer.alloc(512));
    spin = path.join(dir, 'spin');
    fs.writeFileSync(spin, tinyElfKernel([0xeb, 0xfe])); // jmp .
    crash = path.join(dir, 'crash');
    fs.writeFileSync(crash, tinyElfKernel([0x0f, 0x0b])); // ud2 without an IDT: triple fault
  });
  after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(memDir, { recursive: true, force: true });
  });

  const options = (o: Partial<PodVmOptions> = {}): PodVmOptions => ({
    id: `pod${++n}`,
    stateDir: path.join(dir, `state${n}`),
    kernel: spin,
    initrd,
    vcpus: 1,
    memoryBytes: 64 * 2 ** 20,
    memoryDir: memDir,
    memoryBacking: 'tmpfs',
    ...o,
  });

  /** Boots, expects a failure matching `check`, and checks that nothing was left behind. */
  async function failsCleanly(o: PodVmOptions, check: (err: Error) => void): Promise<void> {
    const fds = openFds();
    const stateBefore = fs.existsSync(o.stateDir) ? fs.readdirSync(o.stateDir) : undefined;
    await assert.rejects(PodVm.boot(o), (err: Error) => {
      check(err);
      return true;
    });
    assert.equal(openFds(), fds, 'file descriptors leaked');
    assert.deepEqual(fs.readdirSync(memDir), [], 'a RAM file was left behind');
    assert.deepEqual(mountsUnder(dir), [], 'mounts were left behind');
    const stateAfter = fs.existsSync(o.stateDir) ? fs.readdirSync(o.stateDir) : undefined;
    if (stateBefore === undefined) assert.equal(stateAfter, undefined, `${o.stateDir} was left behind`);
    else assert.deepEqual(stateAfter, stateBefore, `${o.stateDir} was changed`);
  }

  const invalid = (re: RegExp) => (err: Error) => {
    assert.ok(err instanceof PodVmError, `expected a PodVmError, got ${err}`);
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.match(err.message, re);
  };

  it('rejects bad options, naming the option, before creating anything', async () => {
    await failsCleanly(options({ id: '../escape' }), invalid(/invalid pod id "\.\.\/escape"/));
    await failsCleanly(options({ id: 'p'.repeat(129) }), invalid(/at most 128/));
    await failsCleanly(options({ stateDir: 'relative/dir' }), invalid(/stateDir must be an absolute path/));
    await failsCleanly(options({ stateDir: path.join(dir, 'x'.repeat(120)) }), invalid(/socket path .* exceeds 107 bytes/));
    await failsCleanly(options({ kernel: path.join(dir, 'no-kernel') }), invalid(/kernel .*no-kernel cannot be read/));
    await failsCleanly(options({ initrd: dir }), invalid(/initrd .* is not a regular file/));
    await failsCleanly(options({ memoryBacking: 'hugepages' as 'tmpfs' }), invalid(/memoryBacking must be/));
    await failsCleanly(options({ memoryDir: 'shm' }), invalid(/memoryDir must be an absolute path/));
    await failsCleanly(options({ agentPort: 0 }), invalid(/agentPort/));
    await failsCleanly(options({ agentTimeoutMs: 0 }), invalid(/agentTimeoutMs must be a positive number/));
    await failsCleanly(options({ kernelParams: 'a\nb' }), invalid(/kernelParams must be a single-line string/));
  });

  it('refuses a state directory that is not empty, and leaves it alone', async () => {
    const o = options();
    fs.mkdirSync(o.stateDir);
    fs.writeFileSync(path.join(o.stateDir, 'someone-elses'), 'keep me');
    await failsCleanly(o, (err) => {
      assert.ok(err instanceof PodVmError);
      assert.equal(err.code, 'ALREADY_EXISTS');
      assert.match(err.message, /state directory .* is not empty/);
    });
    assert.equal(fs.readFileSync(path.join(o.stateDir, 'someone-elses'), 'utf8'), 'keep me');
  });

  it("passes the VMM's limit errors through with their code, and removes the state directory it made", async () => {
    const fromVmm = (re: RegExp) => (err: Error) => {
      assert.ok(err instanceof InvalidVmConfigError, `expected an InvalidVmConfigError, got ${err}`);
      assert.equal(err.code, 'INVALID_ARGUMENT');
      assert.match(err.message, re);
    };
    await failsCleanly(options({ vcpus: 0 }), fromVmm(/^vcpus must be 1\.\.254, got 0$/));
    await failsCleanly(options({ memoryBytes: 64 * 2 ** 20 + 1 }), fromVmm(/not a multiple of the page size/));
    await failsCleanly(options({ guestCid: 2 }), fromVmm(/vsock\.guestCid 2 is reserved or out of range: use 3\.\.4294967294/));
  });

  it('obtains its VM through the given VmProvider, and its failure passes through', async () => {
    const specs: VmSpec[] = [];
    const recording: VmProvider = (spec) => {
      specs.push(spec);
      return bootMicroVm(spec);
    };
    const o = options({ kernel: crash, agentTimeoutMs: 60_000, vmProvider: recording });
    await failsCleanly(o, (err) => assert.match(err.message, /the VM ended before the agent answered: triple-fault \(vCPU 0 triple-faulted/));
    assert.equal(specs.length, 1);
    assert.equal(specs[0].name, o.id);
    assert.match(specs[0].cmdline, /stencil_agent=1/);
    assert.equal(specs[0].vsock?.udsPath, path.join(fs.realpathSync(dir), path.basename(o.stateDir), 'vsock.sock'));
    const cid = specs[0].vsock!.guestCid;
    assert.ok(Number.isInteger(cid) && cid >= 3 && cid <= 0xfffffffe, `guest CID ${cid}`);

    const refusing: VmProvider = () => Promise.reject(new PodVmError('NOT_FOUND', 'no template named t1'));
    await failsCleanly(options({ vmProvider: refusing }), (err) => {
      assert.ok(err instanceof PodVmError, String(err));
      assert.equal(err.code, 'NOT_FOUND');
    });
  });

  it('reports a kernel the VMM cannot load, and removes the state directory it made', async () => {
    const corrupt = path.join(dir, 'corrupt');
    fs.writeFileSync(corrupt, Buffer.alloc(8192, 0x5a));
    await failsCleanly(options({ kernel: corrupt }), (err) => {
      assert.ok(err instanceof KernelImageError, `expected a KernelImageError, got ${err}`);
      assert.match(err.message, /neither an ELF vmlinux nor a bzImage/);
    });
  });

  it('fails the boot when the VM dies before an agent answers', async () => {
    await failsCleanly(options({ kernel: crash, agentTimeoutMs: 60_000 }), (err) => {
      assert.ok(err instanceof PodVmError, String(err));
      assert.equal(err.code, 'UNAVAILABLE');
      assert.match(err.message, /the VM ended before the agent answered: triple-fault \(vCPU 0 triple-faulted \(KVM_EXIT_SHUTDOWN\).*; VM exits: \{"exitsByReason":\{"shutdown":1\}.*; guest console/s);
    });
  });

  it('gives up after agentTimeoutMs when no agent answers, naming the last error', async () => {
    const t0 = Date.now();
    await failsCleanly(options({ kernel: spin, agentTimeoutMs: 1500 }), (err) => {
      assert.ok(err instanceof PodVmError, String(err));
      assert.equal(err.code, 'UNAVAILABLE');
      // The VM's exit stats, read while its vCPU still spins in KVM_RUN.
      assert.match(err.message, /the agent did not answer within 1500 ms \(\d+ attempts; last: .+\); VM exits: \{.*"kvmVcpuStats":\{.*\}; guest console/);
    });
    const took = Date.now() - t0;
    assert.ok(took >= 1500 && took < 15_000, `took ${took} ms`);
  });
});

describe('guestOciVersion', () => {
  it('hands runtime-spec 1.2+ specs to the guest crun as 1.1.0 and leaves others alone', () => {
    assert.equal(guestOciVersion('1.2.1'), '1.1.0');
    assert.equal(guestOciVersion('1.3.0'), '1.1.0');
    assert.equal(guestOciVersion('1.1.0'), '1.1.0');
    assert.equal(guestOciVersion('1.0.2-dev'), '1.0.2-dev');
    assert.equal(guestOciVersion(undefined), undefined);
  });
});
