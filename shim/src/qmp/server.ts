// A QMP server on a Unix socket: greeting, capabilities negotiation, requests run one at a time
// across all clients (like QEMU's monitor, so `stop` and `cont` from two clients cannot
// interleave), and events broadcast to every client past negotiation. The commands themselves
// come from the caller (see vm-commands.ts); this file knows only the protocol.
import fs from 'node:fs';
import net from 'node:net';
import { JSONParser } from '@streamparser/json';
import type { Logger } from '../util/log.js';
import {
  type ArgSpec,
  QmpError,
  checkArguments,
  errorReply,
  eventMessage,
  greeting,
  parseRequest,
  returnReply,
} from './protocol.js';

export interface QmpCommand {
  args?: Record<string, ArgSpec>;
  /** The reply's `return` value ({} when undefined); a QmpError becomes an error reply. */
  run(args: Record<string, unknown>): unknown;
}

export interface QmpServerOptions {
  commands: Record<string, QmpCommand>;
  logger: Logger;
  /** Shown as the greeting's version.package. */
  packageName?: string;
}

/** One request's JSON may not grow past this before it parses (a client streaming an endless string). */
export const MAX_REQUEST_BYTES = 1 << 20;

export class QmpServer {
  private server?: net.Server;
  private readonly sessions = new Set<Session>();
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly options: QmpServerOptions) {}

  /** Listens on `path` (0600). A stale socket left by a dead process is replaced; a live one is not. */
  async listen(path: string): Promise<void> {
    await removeStaleSocket(path);
    const server = net.createServer((socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new Error(`QMP: cannot listen on ${path}: ${err.message}`)));
      server.listen(path, () => resolve());
    });
    fs.chmodSync(path, 0o600);
    server.on('error', (err) => this.options.logger.warn('QMP server error', { path, error: err.message }));
    this.server = server;
  }

  /** Sends an event to every client that finished negotiation. */
  emit(event: string, data?: object): void {
    const message = eventMessage(event, data);
    for (const session of this.sessions) if (session.negotiated) session.send(message);
  }

  /**
   * Stops listening (the socket file goes) and closes every client: ended first so what was
   * written (a last reply, SHUTDOWN) reaches them, destroyed if they do not close within lingerMs.
   */
  async close(lingerMs = 500): Promise<void> {
    const sessions = [...this.sessions];
    this.sessions.clear();
    const server = this.server;
    this.server = undefined;
    const closing = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    await Promise.all(
      sessions.map(
        (session) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(() => {
              session.socket.destroy();
              resolve();
            }, lingerMs);
            session.socket.once('close', () => {
              clearTimeout(timer);
              resolve();
            });
            session.socket.end();
          }),
      ),
    );
    await closing;
  }

  private accept(socket: net.Socket): void {
    const session = new Session(socket, (value) => this.enqueue(session, value), this.options.logger);
    this.sessions.add(session);
    socket.on('close', () => this.sessions.delete(session));
    session.send(greeting(this.options.packageName ?? 'stencil'));
  }

  private enqueue(session: Session, value: unknown): void {
    this.queue = this.queue.then(() => this.handle(session, value));
  }

  private async handle(session: Session, value: unknown): Promise<void> {
    let id: unknown;
    try {
      const request = parseRequest(value);
      id = request.id;
      if (request.execute === 'qmp_capabilities') {
        if (session.negotiated) {
          throw new QmpError('CommandNotFound', 'Capabilities negotiation is already complete, command ignored');
        }
        checkArguments(request.arguments, { enable: { type: 'array', optional: true } });
        if (Array.isArray(request.arguments.enable) && request.arguments.enable.length > 0) {
          throw new QmpError('GenericError', `Capability '${String(request.arguments.enable[0])}' not available`);
        }
        session.negotiated = true;
        session.send(returnReply({}, id));
        return;
      }
      if (!session.negotiated) {
        throw new QmpError('CommandNotFound', "Expecting capabilities negotiation with 'qmp_capabilities'");
      }
      if (request.execute === 'query-commands') {
        checkArguments(request.arguments, {});
        const names = ['qmp_capabilities', 'query-commands', ...Object.keys(this.options.commands)];
        session.send(returnReply(names.map((name) => ({ name })), id));
        return;
      }
      const command = Object.hasOwn(this.options.commands, request.execute) ? this.options.commands[request.execute] : undefined;
      if (!command) throw new QmpError('CommandNotFound', `The command ${request.execute} has not been found`);
      checkArguments(request.arguments, command.args ?? {});
      const result = await command.run(request.arguments);
      session.send(returnReply(result, id));
    } catch (err) {
      if (!(err instanceof QmpError)) {
        this.options.logger.warn('QMP command failed', { error: (err as Error).message });
      }
      const qmpError = err instanceof QmpError ? err : new QmpError('GenericError', (err as Error).message);
      session.send(errorReply(qmpError, id));
    }
  }
}

/** One client connection: a streaming JSON parser that survives malformed input. */
class Session {
  negotiated = false;
  private parser!: JSONParser;
  private pendingBytes = 0;

  constructor(
    readonly socket: net.Socket,
    private readonly onRequest: (value: unknown) => void,
    private readonly logger: Logger,
  ) {
    this.resetParser();
    socket.on('data', (chunk) => this.receive(chunk));
    socket.on('error', (err) => this.logger.debug('QMP client error', { error: err.message }));
  }

  send(message: object): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(JSON.stringify(message) + '\r\n');
  }

  private resetParser(): void {
    // separator '' = a stream of concatenated JSON values; paths ['$'] = only whole top-level values.
    const parser = new JSONParser({ separator: '', paths: ['$'] });
    this.parser = parser;
    parser.onValue = ({ value }) => {
      this.pendingBytes = 0;
      this.onRequest(value);
    };
    // A failed parser may report the rest of its chunk too: one error reply per bad input, from the live parser.
    parser.onError = (err) => {
      if (parser === this.parser) this.malformed(`JSON parse error, ${err.message}`);
    };
  }

  private malformed(desc: string): void {
    this.send(errorReply(new QmpError('GenericError', desc), undefined));
    this.pendingBytes = 0;
    // The parser stops at its first error; what followed in the same chunk is dropped with it.
    this.resetParser();
  }

  private receive(chunk: Buffer): void {
    this.pendingBytes += chunk.length;
    if (this.pendingBytes > MAX_REQUEST_BYTES) {
      this.malformed(`QMP request longer than ${MAX_REQUEST_BYTES} bytes`);
      return;
    }
    const parser = this.parser;
    try {
      parser.write(chunk);
    } catch (err) {
      if (parser === this.parser) this.malformed(`JSON parse error, ${(err as Error).message}`);
    }
  }
}

async function removeStaleSocket(path: string): Promise<void> {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(path);
  } catch {
    return;
  }
  if (!stat.isSocket()) throw new Error(`QMP: ${path} exists and is not a socket`);
  if (await socketAcceptsConnections(path)) throw new Error(`QMP: ${path} is in use by a running process`);
  fs.unlinkSync(path);
}

/** True when a process is listening on the Unix socket `path` (a connection is made and dropped). */
export function socketAcceptsConnections(path: string): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}
