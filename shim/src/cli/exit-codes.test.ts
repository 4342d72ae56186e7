// The exit codes of `stencil check` and `stencil vm run`, which scripts rely on (run-vm picks where
// VM tests run from check's code):
//   check    0  VMs run directly on this host
//            2  this /dev/kvm cannot run stock guests (e.g. kvm_pvm): VMs run in the emulated host
//            1  something is missing: a usable /dev/kvm, a tmpfs memory dir, the guest image, or
//               QEMU where the emulated host is needed; also bad arguments
//   vm run   0  the guest powered off or rebooted;  1  it crashed (triple fault, ...) or an error
// Runs the real CLI (bin/stencil) on this host; the guests here are tiny hand-made kernels, which
// even kvm_pvm runs. integration-tests/vm/cli.test.ts boots the real guest.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { repoRoot } from '../util/paths.js';
import { tinyElfKernel } from '../hypervisor/testing/tiny-kernel.js';

const STENCIL = path.join(repoRoot(), 'bin', 'stencil');

function stencil(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [STENCIL, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, all: `${r.stdout}${r.stderr}` };
}

describe('stencil check exit codes', () => {
  it('exits as its own report says: 1 on a hard failure, else 2 when only the emulated host runs VMs, else 0', () => {
    const json = stencil(['check', '--json']);
    const report = JSON.parse(json.stdout) as { items: Array<{ name: string; ok: boolean }>; needsEmulatedHost: boolean };
    const hardFailure = report.items.some((i) => !i.ok && i.name !== 'kvm-stock-guests');
    const expected = hardFailure ? 1 : report.needsEmulatedHost ? 2 : 0;
    assert.equal(json.code, expected, json.stdout);
    const text = stencil(['check']);
    assert.equal(text.code, expected, text.all);
    assert.match(text.stdout, report.needsEmulatedHost ? /result: \/dev\/kvm here cannot run stock guests/ : /result: VMs run directly on this host/);
  });

  it('exits 1 without a /dev/kvm', () => {
    const r = stencil(['check'], { STENCIL_KVM_DEVICE: '/nonexistent/kvm' });
    assert.equal(r.code, 1, r.all);
    assert.match(r.stdout, /^FAIL kvm +\/nonexistent\/kvm does not exist/m);
  });

  it('exits 1 when the memory directory is not on tmpfs', () => {
    const r = stencil(['check', '--memory-dir', '/proc']);
    assert.equal(r.code, 1, r.all);
    assert.match(r.stdout, /^FAIL memory-dir +\/proc: NOT tmpfs/m);
  });

  it('exits 1 where the emulated host is needed but QEMU is not on PATH (else QEMU does not matter)', () => {
    const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-path-'));
    try {
      fs.symlinkSync('/bin/sh', path.join(bin, 'sh')); // check looks QEMU up through sh's `command -v`
      const needsEmulatedHost = (JSON.parse(stencil(['check', '--json']).stdout) as { needsEmulatedHost: boolean }).needsEmulatedHost;
      const r = stencil(['check'], { PATH: bin });
      if (needsEmulatedHost) {
        assert.equal(r.code, 1, r.all);
        assert.match(r.stdout, /^FAIL emulated-host +qemu-system-x86_64 is missing/m);
      } else {
        assert.equal(r.code, 0, r.all);
      }
    } finally {
      fs.rmSync(bin, { recursive: true, force: true });
    }
  });

  it('exits 1 on an unknown argument', () => {
    const r = stencil(['check', '--no-such-flag']);
    assert.equal(r.code, 1, r.all);
    assert.match(r.stderr, /Unknown argument/);
  });
});

describe('stencil vm run exit codes', () => {
  let dir: string;
  let memoryDir: string;
  let initrd: string;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-vm-run-'));
    memoryDir = fs.mkdtempSync('/dev/shm/stencil-vm-run-');
    initrd = path.join(dir, 'initrd');
    fs.writeFileSync(initrd, 'not an archive: these kernels never read it');
  });
  after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(memoryDir, { recursive: true, force: true });
  });

  // 64-bit code: print "A" on COM1 (so we know the guest ran), then `ending`, then halt forever.
  const PRINT_A = [0x66, 0xba, 0xf8, 0x03, 0xb0, 0x41, 0xee]; // mov dx, 0x3f8; mov al, 'A'; out dx, al
  const HALT = [0xf4, 0xeb, 0xfd]; // hlt; jmp hlt
  function run(name: string, ending: number[]) {
    const kernel = path.join(dir, name);
    fs.writeFileSync(kernel, tinyElfKernel([...PRINT_A, ...ending, ...HALT]));
    return stencil(['vm', 'run', '--kernel', kernel, '--initrd', initrd, '--memory', '64M', '--memory-dir', memoryDir]);
  }

  it('exits 0 when the guest reboots (i8042 reset)', () => {
    const r = run('reboot', [0xb0, 0xfe, 0xe6, 0x64]); // mov al, 0xfe; out 0x64, al
    assert.equal(r.code, 0, r.all);
    assert.equal(r.stdout, 'A');
    assert.match(r.stderr, /VM exited: reboot/);
  });

  it('exits 0 when the guest powers off (ACPI S5)', () => {
    // mov dx, 0x604 (PM1a control); mov ax, SLP_EN | SLP_TYP 5; out dx, ax
    const r = run('poweroff', [0x66, 0xba, 0x04, 0x06, 0x66, 0xb8, 0x00, 0x34, 0x66, 0xef]);
    assert.equal(r.code, 0, r.all);
    assert.equal(r.stdout, 'A');
    assert.match(r.stderr, /VM exited: poweroff/);
  });

  it('exits 1 when the guest triple-faults, reporting the vCPU state and its last exits', () => {
    const r = run('triple-fault', [0x0f, 0x0b]); // ud2, with no IDT entry to deliver #UD through
    assert.equal(r.code, 1, r.all);
    assert.equal(r.stdout, 'A');
    assert.match(r.stderr, /VM exited: triple-fault \(vCPU 0 triple-faulted .*vCPU state: rip=0x[0-9a-f]+ .*cr0=0x[0-9a-f]+ .*efer=0x[0-9a-f]+ .*idt=0x[0-9a-f]+\/0x[0-9a-f]+ .*\d+ exits; last \d+, oldest first: io out 0x3f8\/1/);
  });

  it('exits 1 with a clear message for a kernel that does not exist', () => {
    const r = stencil(['vm', 'run', '--kernel', path.join(dir, 'missing-vmlinux'), '--initrd', initrd, '--memory-dir', memoryDir]);
    assert.equal(r.code, 1, r.all);
    assert.match(r.stderr, /^stencil: kernel image .*missing-vmlinux cannot be opened: No such file or directory \[EKERNEL_IMAGE\]$/m);
  });

  it('exits 1 on a bad --memory value', () => {
    const r = stencil(['vm', 'run', '--kernel', path.join(dir, 'reboot'), '--initrd', initrd, '--memory', 'lots', '--memory-dir', memoryDir]);
    assert.equal(r.code, 1, r.all);
    assert.match(r.stderr, /--memory/);
  });
});

describe('stencil pod exit codes', () => {
  it('exits 1 naming the pod, namespace and socket when no shim daemon serves the pod', () => {
    for (const sub of [['status'], ['migrate', '--to', 'unix:/tmp/stencil-nowhere.sock']]) {
      const r = stencil(['pod', sub[0]!, 'no-such-pod', ...sub.slice(1), '--namespace', 'ns1', '--address', '/run/stencil-test-nothing.sock']);
      assert.equal(r.code, 1, r.all);
      assert.match(r.stderr, /^stencil: no shim daemon for pod no-such-pod in namespace ns1 of containerd \/run\/stencil-test-nothing\.sock \(no socket \/\S+\)$/m);
    }
  });
});
