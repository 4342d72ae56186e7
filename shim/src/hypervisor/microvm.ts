// Stencil's own VMM (the C++ addon) behind the VirtualMachine interface.
import { PassThrough } from 'node:stream';
import { fromNative, InvalidVmConfigError, VmStateError } from './errors.js';
import { loadAddon, type NativeEvent, type NativeVm, type VmExitStats } from './native.js';
import type { ExitReason, VirtualMachine, VmExit, VmSpec, VmState } from './types.js';

/** Defaults a Kata/Firecracker user would expect: serial console, keyboard-controller reset. */
export const DEFAULT_CMDLINE = 'console=ttyS0 quiet reboot=k panic=1 pci=off tsc=reliable no_timer_check';

export class MicroVm implements VirtualMachine {
  readonly console = new PassThrough();
  readonly memoryPath: string;
  readonly cmdline: string;
  private native: NativeVm | undefined;
  private current: VmState = 'created';
  private pauseWaiters: Array<() => void> = [];
  private readonly exited: Promise<VmExit>;
  private resolveExit!: (exit: VmExit) => void;

  private constructor(readonly name: string, spec: VmSpec) {
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
    validateSpec(spec);
    const { NativeVm } = loadAddon();
    try {
      this.native = new NativeVm(
        {
          vcpus: spec.vcpus,
          memoryBytes: spec.memoryBytes,
          memoryBacking: spec.memoryBacking,
          memoryDir: spec.memoryDir,
          memoryFileName: `${spec.name}.ram`,
          kernel: spec.kernel,
          initrd: spec.initrd ?? '',
          cmdline: spec.cmdline,
          virtioRng: spec.virtioRng,
          disks: (spec.disks ?? []).map((d) => ({ path: d.path, readOnly: d.readOnly, serial: d.serial ?? '' })),
          shares: (spec.shares ?? []).map((s) => ({ tag: s.tag, hostPath: s.hostPath, readOnly: s.readOnly })),
          vsock: spec.vsock ? { guestCid: spec.vsock.guestCid, udsPath: spec.vsock.udsPath } : undefined,
        },
        (type, a, b) => this.onEvent(type, a, b),
      );
    } catch (err) {
      throw fromNative(err);
    }
    const info = this.native.info();
    this.memoryPath = info.memoryPath;
    this.cmdline = info.cmdline;
  }

  static create(spec: VmSpec): MicroVm {
    return new MicroVm(spec.name, spec);
  }

  get state(): VmState {
    return this.current;
  }

  start(): void {
    this.expect('created', 'start');
    this.call((n) => n.start());
    this.current = 'running';
  }

  pause(): Promise<void> {
    this.expect('running', 'pause');
    this.current = 'pausing';
    const parked = new Promise<void>((resolve) => this.pauseWaiters.push(resolve));
    this.call((n) => n.pause());
    return parked;
  }

  resume(): void {
    if (this.current !== 'paused' && this.current !== 'pausing') this.expect('paused', 'resume');
    this.call((n) => n.resume());
    this.current = 'running';
  }

  writeConsole(data: Buffer | string): void {
    this.call((n) => n.sendConsoleInput(Buffer.from(data)));
  }

  /** VM exit counts and boot timings so far (read them before destroy()). */
  exitStats(topN = 10): VmExitStats {
    let stats: VmExitStats | undefined;
    this.call((n) => (stats = n.stats(topN)));
    return stats!;
  }

  waitExit(): Promise<VmExit> {
    return this.exited;
  }

  async destroy(): Promise<VmExit> {
    if (this.native) {
      const native = this.native;
      if (this.current === 'created') this.resolveExit({ reason: 'stopped', detail: 'never started' });
      native.stop();  // joins the vCPU threads; the exited event is queued for the JS thread
      const exit = await this.exited;
      native.destroy();  // frees RAM (and its tmpfs file) and closes every fd
      this.native = undefined;
      this.current = 'destroyed';
      this.console.end();
      return exit;
    }
    return this.exited;
  }

  private onEvent(type: NativeEvent, a?: unknown, b?: unknown): void {
    switch (type) {
      case 'console':
        this.console.write(a as Buffer);
        break;
      case 'paused':
        if (this.current === 'pausing') this.current = 'paused';
        for (const w of this.pauseWaiters.splice(0)) w();
        break;
      case 'exited':
        if (this.current !== 'destroyed') this.current = 'exited';
        for (const w of this.pauseWaiters.splice(0)) w();
        this.resolveExit({ reason: a as ExitReason, detail: String(b ?? '') });
        break;
    }
  }

  private expect(state: VmState, op: string): void {
    if (this.current !== state) throw new VmStateError(`cannot ${op} VM ${this.name}: it is ${this.current}`, 'ESTATE');
  }

  private call(f: (n: NativeVm) => void): void {
    if (!this.native) throw new VmStateError(`VM ${this.name} has been destroyed`, 'ESTATE');
    try {
      f(this.native);
    } catch (err) {
      throw fromNative(err);
    }
  }
}

const PAGE = 4096;

/** Checks done before touching KVM, so the messages name the option a user typed. */
export function validateSpec(spec: VmSpec): void {
  const bad = (msg: string) => new InvalidVmConfigError(msg, 'EINVALID_ARGUMENT');
  if (!Number.isInteger(spec.vcpus) || spec.vcpus < 1) throw bad(`vcpus must be an integer >= 1, got ${spec.vcpus}`);
  if (!Number.isSafeInteger(spec.memoryBytes) || spec.memoryBytes <= 0)
    throw bad(`memory must be a positive number of bytes, got ${spec.memoryBytes}`);
  if (spec.memoryBytes % PAGE !== 0) throw bad(`memory ${spec.memoryBytes} is not a multiple of the page size (4096)`);
  if (!spec.kernel) throw bad('no kernel image given');
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(spec.name)) throw bad(`VM name "${spec.name}" must be [A-Za-z0-9_.-]+`);
  if (spec.vsock) {
    const { guestCid, udsPath } = spec.vsock;
    if (!Number.isInteger(guestCid) || guestCid < 3 || guestCid > 0xfffffffe)
      throw bad(`vsock.guestCid must be an integer in 3..4294967294, got ${guestCid}`);
    if (typeof udsPath !== 'string' || !udsPath) throw bad('vsock.udsPath must be a non-empty path');
  }
}
