// Bad input at every layer that ends in the VMM, as one table: the runtime configuration (TOML),
// a pod's annotations, migration URIs, QMP requests and arguments, and the VM configuration the
// addon checks. Each row
// is refused with the layer's own error, and the message names what is wrong (the field, key or
// value), so a user can fix it without reading the code. Each layer's own tests cover more.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigError, type HypervisorConfig, parseConfig } from '../../runtime-config/src/config.js';
import { podSizeForSandbox, SANDBOX_CPU_QUOTA, SANDBOX_MEMORY, TEMPLATE_ANNOTATION, templatesAllowed } from './factory/pod-shape.js';
import { InvalidVmConfigError, KernelImageError, MemoryBackingError } from './hypervisor/errors.js';
import { MicroVm } from './hypervisor/microvm.js';
import { PodVmError } from './pod/pod-vm.js';
import { RpcError } from './rpc/errors.js';
import { failpointsOf } from './shim/failpoints.js';
import { tinyElfKernel } from './hypervisor/testing/tiny-kernel.js';
import type { VmSpec } from './hypervisor/types.js';
import { checkArguments, parseRequest, QmpError } from './qmp/protocol.js';
import { RecordingVm } from './qmp/testing/recording-vm.js';
import { parseMigrationUri, vmCommands } from './qmp/vm-commands.js';

interface BadInput {
  /** What is fed in, as the user would write it. */
  input: string;
  run: () => unknown;
  error: new (...args: never[]) => Error;
  /** What the message must say. */
  names: RegExp;
}

const config = (toml: string, names: RegExp): BadInput => ({ input: toml.replace(/\n/g, ' | '), run: () => parseConfig(toml, 'bad.toml'), error: ConfigError, names });

const failpoints = (a: Record<string, unknown>, enabled: boolean, names: RegExp): BadInput => ({
  input: `container annotations ${JSON.stringify(a)}${enabled ? ' (failpoints on)' : ''}`,
  run: () => failpointsOf('c1', a, enabled),
  error: RpcError,
  names,
});

const annotations = (a: Record<string, string>, names: RegExp): BadInput => ({
  input: `pod annotations ${JSON.stringify(a)}`,
  run: () => {
    templatesAllowed(a);
    return podSizeForSandbox({ defaultVcpus: 1, defaultMemory: 256 << 20 } as HypervisorConfig, a);
  },
  error: PodVmError,
  names,
});

const uri = (text: string, names: RegExp): BadInput => ({ input: `migration URI ${JSON.stringify(text)}`, run: () => parseMigrationUri(text), error: QmpError, names });

/** A QMP command as the server runs it: the arguments checked against its schema, then run. */
function qmp(execute: string, args: Record<string, unknown>, names: RegExp, state: RecordingVm['state'] = 'running'): BadInput {
  return {
    input: JSON.stringify({ execute, arguments: args }) + (state === 'running' ? '' : ` (VM ${state})`),
    run: () => {
      const vm = new RecordingVm();
      vm.state = state;
      const command = vmCommands(vm)[execute];
      checkArguments(args, command.args ?? {});
      return command.run(args);
    },
    error: QmpError,
    names,
  };
}

const request = (value: unknown, names: RegExp): BadInput => ({ input: `QMP request ${JSON.stringify(value)}`, run: () => parseRequest(value), error: QmpError, names });

describe('bad input is refused, naming what is wrong', () => {
  let dir: string;
  let memDir: string;
  let kernel: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-bad-input-'));
    memDir = fs.mkdtempSync('/dev/shm/stencil-bad-input-');
    kernel = path.join(dir, 'vmlinux');
    fs.writeFileSync(kernel, tinyElfKernel());
    fs.writeFileSync(path.join(dir, 'corrupt'), Buffer.alloc(8192, 0x5a));
    fs.writeFileSync(path.join(dir, 'plain-file'), '');
  });
  after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(memDir, { recursive: true, force: true });
  });

  const vm = (o: Partial<VmSpec> | ((d: string) => Partial<VmSpec>), error: BadInput['error'], names: RegExp): BadInput => ({
    input: `VM spec ${JSON.stringify(typeof o === 'function' ? o('<dir>') : o)}`,
    run: () => {
      const extra = typeof o === 'function' ? o(dir) : o;
      return MicroVm.create({ name: 'bad-input', vcpus: 1, memoryBytes: 64 << 20, kernel, cmdline: 'console=ttyS0', memoryDir: memDir, memoryBacking: 'tmpfs', virtioRng: true, ...extra });
    },
    error,
    names,
  });

  const table = (): BadInput[] => [
    // The runtime configuration (configuration.toml).
    config('[hypervisor]\ndefault_vcpus = 0', /default_vcpus/),
    config('[hypervisor]\ndefault_vcpus = -2', /default_vcpus/),
    config('[hypervisor]\ndefault_vcpus = "two"', /default_vcpus/),
    config('[hypervisor]\ndefault_vcpus = 1.5', /default_vcpus/),
    config('[hypervisor]\ndefault_memory = "lots"', /default_memory/),
    config('[hypervisor]\nseccomp = "on"', /hypervisor\.seccomp: expected a boolean/),
    config('[hypervisor]\ndefault_memory = true', /default_memory/),
    config('[hypervisor]\nmemory_backing = "disk"', /memory_backing.*disk/),
    config('[hypervisor]\nmemory_dir = "relative/dir"', /memory_dir/),
    config('[hypervisor]\nkernel = "vmlinux"', /kernel/),
    config('[hypervisor]\ninitrd = "initrd.img"', /initrd/),
    config('[hypervisor]\nkernel_params = 5', /kernel_params/),
    config('[hypervisor]\ndefault_cpus = 1', /default_cpus/),
    config('[factory]\non_miss = "maybe"', /on_miss.*maybe/),
    config('[factory]\nenabled = "yes"', /enabled/),
    config('[factory]\ntemplate_dir = "templates"', /template_dir/),
    config('[factory]\ntemplate_dir_size = "big"', /template_dir_size/),
    config('[runtime]\nlog_level = "loud"', /log_level.*loud/),
    config('[runtime]\ntransport = "http"', /transport.*http/),
    config('[runtime]\nstate_dir = "run/stencil"', /state_dir/),
    config('[nope]\nx = 1', /nope/),
    config('hypervisor = 3', /hypervisor/),
    config('debug = true', /debug/),
    config('[hypervisor\ndefault_vcpus = 1', /bad\.toml:1:/),
    // A pod's annotations (CRI's sandbox sizing, Stencil's template opt-out).
    annotations({ [TEMPLATE_ANNOTATION]: 'maybe' }, /io\.stencil\.template must be "on" or "off", got "maybe"/),
    annotations({ [SANDBOX_MEMORY]: '1Gi' }, /io\.kubernetes\.cri\.sandbox-memory must be an integer/),
    annotations({ [SANDBOX_CPU_QUOTA]: '1.5' }, /io\.kubernetes\.cri\.sandbox-cpu-quota must be an integer/),
    failpoints({ 'io.stencil.failpoint.create.vm-ready': 'kill-shim' }, false, /annotation io\.stencil\.failpoint\.create\.vm-ready: failpoints are off/),
    failpoints({ 'io.stencil.failpoint.boot': 'kill-shim' }, true, /io\.stencil\.failpoint\.boot: unknown step "boot"/),
    failpoints({ 'io.stencil.failpoint.start.container-running': 'kill-vm' }, true, /start\.container-running: unknown action "kill-vm"/),
    // Migration URIs (QMP migrate / migrate-incoming, `stencil vm run --incoming`, `stencil migrate`).
    uri('file:relative/dir', /file: needs an absolute directory/),
    uri('exec:', /exec: needs a command/),
    uri('exec:   ', /exec: needs a command/),
    uri('unix:', /unix: needs a socket path/),
    uri('tcp:localhost', /'tcp:localhost'.*tcp:HOST:PORT/),
    uri('tcp:localhost:0', /tcp:HOST:PORT/),
    uri('tcp:localhost:70000', /tcp:HOST:PORT/),
    uri('tcp:[::1:5', /tcp:HOST:PORT/),
    uri('rdma:10.0.0.1:4444', /unknown migration protocol: rdma/),
    uri('', /unknown migration protocol/),
    // QMP requests and arguments.
    request('migrate', /object|JSON/i),
    request({ arguments: {} }, /execute/),
    request({ execute: 5 }, /execute/),
    request({ execute: 'query-status', arguments: [] }, /arguments/),
    qmp('migrate', {}, /'uri' is missing/),
    qmp('migrate', { uri: 5 }, /'uri'.*string/),
    qmp('migrate', { uri: 'tcp:h:1', speed: 10 }, /'speed' is unexpected/),
    qmp('migrate', { uri: 'tcp:h:1', blk: true }, /block migration/),
    qmp('migrate', { uri: 'tcp:h:1', resume: true }, /postcopy resume/),
    qmp('migrate', { uri: 'nfs:/x' }, /unknown migration protocol: nfs/),
    qmp('migrate', { uri: 'tcp:h:1' }, /waiting for an incoming migration/, 'inmigrate'),
    qmp('migrate-incoming', { uri: 'tcp:0:4444' }, /-incoming/),
    qmp('migrate-set-parameters', { 'downtime-limit': -1 }, /downtime-limit/),
    qmp('migrate-set-parameters', { 'downtime-limit': 'fast' }, /downtime-limit/),
    qmp('migrate-set-parameters', { 'downtime-limit': 3_000_000 }, /downtime-limit.*2000000/),
    qmp('migrate-set-parameters', { 'max-bandwidth': 1.5 }, /max-bandwidth/),
    qmp('migrate-set-parameters', { 'cpu-throttle-initial': 100 }, /cpu-throttle-initial.*99/),
    qmp('migrate-set-parameters', { 'x-max-rounds': 200_000 }, /x-max-rounds/),
    qmp('migrate-set-parameters', { compression: 1 }, /'compression' is unexpected/),
    qmp('migrate-set-capabilities', { capabilities: [{ capability: 'postcopy-ram', state: true }] }, /postcopy-ram/),
    qmp('migrate-set-capabilities', { capabilities: [5] }, /capabilities\[0\]/),
    qmp('migrate-set-capabilities', { capabilities: 'all' }, /'capabilities'.*array/),
    qmp('cont', {}, /waiting for an incoming migration/, 'inmigrate'),
    qmp('cont', {}, /state 'shutdown'/, 'shutdown'),
    qmp('stop', { now: true }, /'now' is unexpected/),
    // The VM configuration, checked by the addon before anything is created.
    vm({ vcpus: 0 }, InvalidVmConfigError, /^vcpus must be 1\.\.254, got 0$/),
    vm({ vcpus: 255 }, InvalidVmConfigError, /vcpus must be 1\.\.254, got 255/),
    vm({ vcpus: 2.5 }, InvalidVmConfigError, /^vcpus must be a non-negative integer/),
    vm({ memoryBytes: (64 << 20) + 512 }, InvalidVmConfigError, /multiple of the page size/),
    vm({ memoryBytes: Math.ceil((os.totalmem() * 2) / 4096) * 4096 }, InvalidVmConfigError, /exceeds this host's RAM/),
    vm({ memoryDir: '/nonexistent/stencil' }, MemoryBackingError, /\/nonexistent\/stencil does not exist/),
    vm((d) => ({ kernel: path.join(d, 'nope') }), KernelImageError, /nope.*cannot be opened/),
    vm((d) => ({ kernel: path.join(d, 'corrupt') }), KernelImageError, /neither an ELF vmlinux nor a bzImage/),
    vm((d) => ({ vsock: { guestCid: 2, udsPath: path.join(d, 'v.sock') } }), InvalidVmConfigError, /vsock\.guestCid/),
    vm((d) => ({ vsock: { guestCid: 2 ** 32 - 1, udsPath: path.join(d, 'v.sock') } }), InvalidVmConfigError, /vsock\.guestCid/),
    vm({ vsock: { guestCid: 3, udsPath: '' } }, InvalidVmConfigError, /vsock\.udsPath/),
    vm((d) => ({ vsock: { guestCid: 3, udsPath: path.join(d, 'missing', 'v.sock') } }), InvalidVmConfigError, /vsock\.udsPath .*missing/),
    vm((d) => ({ vsock: { guestCid: 3, udsPath: path.join(d, 'plain-file') } }), InvalidVmConfigError, /not a socket/),
  ];

  it('has at least 50 cases', () => {
    assert.ok(table().length >= 50, `${table().length} cases`);
  });

  for (const [i, row] of table().entries()) {
    it(`#${i + 1} ${row.input}`, async () => {
      await assert.rejects(
        async () => row.run(),
        (err: unknown) => {
          assert.ok(err instanceof row.error, `expected ${row.error.name}, got ${(err as Error)?.constructor?.name}: ${String(err)}`);
          assert.match((err as Error).message, row.names);
          return true;
        },
      );
    });
  }
});
