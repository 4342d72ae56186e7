// serveQmp: a QMP monitor for one MicroVm on a Unix socket, the one entry point for anything that
// wants its VMs driven by QMP clients (`stencil vm run --qmp`, later pod VMs).
import fs from 'node:fs';
import type { MicroVm } from '../hypervisor/microvm.js';
import { createLogger } from '../util/log.js';
import { QmpServer } from './server.js';
import { vmCommands } from './vm-commands.js';
import { type MonitorEnd, type MonitorOptions, MicroVmMonitor } from './vm-monitor.js';

export interface QmpHandle {
  readonly monitor: MicroVmMonitor;
  /** Resolves when the VM is gone: by `quit` (destroyed) or on its own. */
  readonly ended: Promise<MonitorEnd>;
  /** Stops serving: clients are closed and the socket file removed. The VM is left as it is. */
  close(): Promise<void>;
}

/**
 * Serves QMP for `vm` on `socketPath` (0600; a stale socket is replaced). Without a VM
 * (`undefined`), the monitor waits for migrate-incoming and builds one with options.restore.
 */
export async function serveQmp(vm: MicroVm | undefined, socketPath: string, options: MonitorOptions = {}): Promise<QmpHandle> {
  const logger = options.logger ?? createLogger({ level: 'warn' });
  const monitor = new MicroVmMonitor(vm, { ...options, logger });
  const server = new QmpServer({ commands: vmCommands(monitor), logger });
  monitor.setEventSink((event, data) => server.emit(event, data));
  await server.listen(socketPath);
  let closed: Promise<void> | undefined;
  return {
    monitor,
    ended: monitor.ended,
    close: () =>
      (closed ??= server.close().then(() => {
        try {
          fs.unlinkSync(socketPath);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      })),
  };
}

/**
 * QEMU's `-qmp` chardev for a listening Unix socket: `unix:PATH,server,nowait` (or
 * `server=on,wait=off`). Only server sockets that do not wait for a client are served.
 */
export function parseQmpChardev(spec: string): { path: string } {
  const [address, ...flags] = spec.split(',');
  if (!address.startsWith('unix:') || address.length <= 'unix:'.length) {
    throw new Error(`--qmp ${spec}: expected unix:PATH,server,nowait (only Unix sockets are served)`);
  }
  let server = false;
  let wait = true;
  for (const flag of flags) {
    const [key, value = 'on'] = flag.split('=');
    const on = value === 'on' || value === 'yes' || value === 'true';
    if (!on && value !== 'off' && value !== 'no' && value !== 'false') throw new Error(`--qmp ${spec}: '${flag}' is not on or off`);
    if (key === 'server') server = on;
    else if (key === 'wait') wait = on;
    else if (key === 'nowait') wait = !on;
    else throw new Error(`--qmp ${spec}: unknown option '${key}' (expected server, nowait or wait=off)`);
  }
  if (!server) throw new Error(`--qmp ${spec}: add ',server': Stencil listens for QMP clients, it does not connect to one`);
  if (wait) throw new Error(`--qmp ${spec}: add ',nowait' (or wait=off): waiting for a client before the VM starts is not supported`);
  return { path: address.slice('unix:'.length) };
}
