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
  /** Daemon mode (private): the configuration file ("" = search), when not read from optionsFd. */
  config: string;
  /** Daemon mode (private): an inherited pipe with containerd's runtime options (-1: none; use -config/-protocol). */
  optionsFd: number;
  /** Daemon mode (private): an inherited pipe to tell the launcher the address or why not (daemon-report.ts). */
  reportFd: number;
}

export class FlagError extends Error {}

const STRINGS = ['namespace', 'address', 'publish-binary', 'id', 'bundle', 'socket', 'socket-fd', 'protocol', 'config', 'options-fd', 'report-fd'] as const;
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
  const fdFlag = (name: 'socket-fd' | 'options-fd' | 'report-fd') => {
    const fd = str(name) === '' ? -1 : Number(str(name));
    if (!Number.isInteger(fd) || fd < -1) throw new FlagError(`-${name} must be a file descriptor number, not ${JSON.stringify(str(name))}`);
    return fd;
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
    socketFd: fdFlag('socket-fd'),
    protocol,
    config: str('config'),
    optionsFd: fdFlag('options-fd'),
    reportFd: fdFlag('report-fd'),
  };
  for (const name of ['namespace', 'id'] as const) if (!flags[name]) throw new FlagError(`-${name} is required`);
  if (flags.action === 'serve' && !flags.socket) throw new FlagError('-socket is required in daemon mode');
  return flags;
}

/** The flags of a `serve` daemon with `flags` (pod-migration.ts spawns one): the inverse of parseFlags. */
export function daemonArgv(flags: ShimFlags): string[] {
  return [
    '-namespace', flags.namespace,
    '-id', flags.id,
    '-address', flags.address,
    '-publish-binary', flags.publishBinary,
    '-socket', flags.socket,
    '-socket-fd', String(flags.socketFd),
    '-protocol', flags.protocol,
    '-config', flags.config,
    '-options-fd', String(flags.optionsFd),
    '-report-fd', String(flags.reportFd),
    ...(flags.debug ? ['-debug'] : []),
    'serve',
  ];
}

function empty(): Omit<ShimFlags, 'action'> {
  return { namespace: '', address: '', publishBinary: '', id: '', bundle: '', debug: false, socket: '', socketFd: -1, protocol: 'ttrpc', config: '', optionsFd: -1, reportFd: -1 };
}
