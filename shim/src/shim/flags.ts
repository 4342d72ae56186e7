// containerd runs the shim with Go `flag` syntax: single-dash long flags before the action
// (`-namespace ns -address a -id x start`). They are parsed by yargs' own parser (yargs-parser)
// configured for that: no short-option groups, so `-namespace` is one flag. The full yargs
// (used by the `stencil` CLI) would add ~90 ms of module loading to every container start.
import parse from 'yargs-parser';

export type Action = 'start' | 'delete' | 'serve' | 'info';

/** Set for a `serve` daemon spawned as a pod migration's destination: where its VM arrives (pod-migration.ts). */
export const INCOMING_ENV = 'STENCIL_SHIM_INCOMING';

export interface ShimFlags {
  action: Action;
  namespace: string;
  /** containerd's gRPC socket (also the input of the socket-name hash). */
  address: string;
  publishBinary: string;
  id: string;
  bundle: string;
  debug: boolean;
  /** Daemon mode (private): the socket to serve and its protocol. */
  socket: string;
  /** Daemon mode (private): an inherited fd already listening on `socket` (-1: bind it). */
  socketFd: number;
  protocol: 'ttrpc' | 'grpc';
  /** Daemon mode (private): the configuration file chosen by `start` ("" = search). */
  config: string;
}

export class FlagError extends Error {}

const STRINGS = ['namespace', 'address', 'publish-binary', 'id', 'bundle', 'socket', 'socket-fd', 'protocol', 'config'] as const;
const BOOLEANS = ['debug', 'v', 'info'] as const;

export function parseFlags(argv: string[]): ShimFlags {
  const parsed = parse(argv, {
    string: [...STRINGS],
    boolean: [...BOOLEANS],
    configuration: { 'short-option-groups': false, 'camel-case-expansion': false, 'boolean-negation': false, 'dot-notation': false },
  });
  // `-info` comes alone (containerd 2.x), before any other validation.
  if (parsed.info || parsed.v) return { ...empty(), action: 'info' };
  const known = new Set<string>([...STRINGS, ...BOOLEANS, '_', '--']);
  for (const key of Object.keys(parsed)) if (!known.has(key)) throw new FlagError(`unknown flag -${key}`);
  const str = (name: (typeof STRINGS)[number]) => {
    const v: unknown = parsed[name];
    if (Array.isArray(v)) throw new FlagError(`-${name} is given more than once`);
    return v === undefined ? '' : String(v);
  };
  const action = String(parsed._[0] ?? 'serve');
  if (!['start', 'delete', 'serve'].includes(action)) throw new FlagError(`unknown action ${JSON.stringify(action)} (start, delete)`);
  const protocol = str('protocol') || 'ttrpc';
  if (protocol !== 'ttrpc' && protocol !== 'grpc') throw new FlagError(`-protocol must be ttrpc or grpc, not ${JSON.stringify(protocol)}`);
  const flags: ShimFlags = {
    action: action as Action,
    namespace: str('namespace'),
    address: str('address'),
    publishBinary: str('publish-binary'),
    id: str('id'),
    bundle: str('bundle'),
    debug: Boolean(parsed.debug),
    socket: str('socket'),
    socketFd: str('socket-fd') === '' ? -1 : Number(str('socket-fd')),
    protocol,
    config: str('config'),
  };
  for (const name of ['namespace', 'id'] as const) if (!flags[name]) throw new FlagError(`-${name} is required`);
  if (flags.action === 'serve' && !flags.socket) throw new FlagError('-socket is required in daemon mode');
  if (!Number.isInteger(flags.socketFd) || flags.socketFd < -1) throw new FlagError(`-socket-fd must be a file descriptor number, not ${JSON.stringify(str('socket-fd'))}`);
  return flags;
}

function empty(): Omit<ShimFlags, 'action'> {
  return { namespace: '', address: '', publishBinary: '', id: '', bundle: '', debug: false, socket: '', socketFd: -1, protocol: 'ttrpc', config: '' };
}
