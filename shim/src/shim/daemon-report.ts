// A new daemon's first words, to the launcher that spawned it for `start` (shim/launcher/
// launcher.c): it reads containerd's runtime options from an inherited pipe, loads the
// configuration they name (so a broken file fails `ctr run` with its message), records the
// bootstrap address beside its socket (a later `start` of the same pod answers from it) and
// reports it as one line, "ok ADDRESS" (then "\tspare" when a spare daemon is wanted) or
// "error MESSAGE", on another pipe. The launcher prints
// the address and exits while Node loads the rest; containerd's connections wait in the backlog.
import fs from 'node:fs';
import { loadConfig, type StencilConfig, type Transport } from '../../../runtime-config/src/config.js';
import { decodeRuntimeOptions } from '../containerd/runtime-options.js';
import { writeDaemonAddress } from './address.js';
import type { ShimFlags } from './flags.js';

export interface DaemonConfig {
  config: StencilConfig;
  /** The file it came from, or "defaults". */
  source: string;
  protocol: 'ttrpc' | 'grpc';
}

/**
 * `auto` is ttrpc with a plain address, which every containerd (1.6 to 2.x) understands. gRPC
 * (bootstrap JSON version 3) must be asked for with transport = "grpc", and only for containerd
 * 2.x: 1.6 cannot parse JSON and 1.7 rejects version 3, and containerd's environment cannot tell
 * 1.7 from 2.x (MAX_SHIM_VERSION is 2 on both). containerd 2.1.9 also has a race with gRPC shims:
 * it watches the new connection's state starting from "ready", so a still-idle connection can be
 * taken for a dead shim (README: Transport).
 */
export function chooseProtocol(transport: Transport): 'ttrpc' | 'grpc' {
  return transport === 'grpc' ? 'grpc' : 'ttrpc';
}

/** What `start` prints for a daemon serving `protocol` on `sock`. */
export function bootstrapAddress(protocol: 'ttrpc' | 'grpc', sock: string): string {
  return protocol === 'grpc' ? JSON.stringify({ version: 3, address: sock, protocol: 'grpc' }) : `unix://${sock}`;
}

/**
 * The daemon's configuration: from the runtime options on flags.optionsFd, reported to the
 * launcher on flags.reportFd; or, for a daemon run otherwise (by hand, for a pod migration), from
 * -config and -protocol. A daemon that cannot serve reports why and exits 1.
 */
export function daemonConfig(flags: ShimFlags): DaemonConfig {
  if (flags.reportFd < 0) {
    const { config, source } = loadConfig({ path: flags.config });
    return { config, source, protocol: flags.protocol };
  }
  let result: DaemonConfig;
  try {
    const options = flags.optionsFd >= 0 ? fs.readFileSync(flags.optionsFd) : Buffer.alloc(0);
    if (flags.optionsFd >= 0) retire(flags.optionsFd);
    const configPath = decodeRuntimeOptions(options)?.configPath ?? '';
    const { config, source } = loadConfig({ path: configPath });
    result = { config, source, protocol: chooseProtocol(config.runtime.transport) };
    const address = bootstrapAddress(result.protocol, flags.socket);
    writeDaemonAddress(flags.socket, address);
    // "\tspare": keep a spare daemon waiting for the next pod (shim/launcher/spare.h).
    report(flags.reportFd, `ok ${address}${config.runtime.spareDaemon ? '\tspare' : ''}`);
  } catch (err) {
    report(flags.reportFd, `error ${(err as Error).message}`);
    process.exit(1);
  }
  return result;
}

function report(fd: number, line: string): void {
  try {
    fs.writeSync(fd, `${line.replace(/\n/g, '; ')}\n`);
  } catch {
    // The launcher is gone (killed, or gave up waiting): containerd's connections tell the rest.
  }
  retire(fd);
}

/**
 * Closes a launcher pipe and puts /dev/null at its number (open takes the lowest free one), so the
 * daemon's descriptors are laid out as before the launcher (the VM's right after Node's own). With
 * 4 and 5 left free, the guest of shim.test's containerd-restart scenario triple-faulted or hung in
 * 4 of 5 runs in the emulated host, and in 0 of 6 with them held; the emulated host's nested-paging
 * fault (integration-tests/README.md) struck elsewhere since, so the link is not established.
 */
function retire(fd: number): void {
  fs.closeSync(fd);
  const held = fs.openSync('/dev/null', 'r');
  if (held !== fd) fs.closeSync(held);
}
