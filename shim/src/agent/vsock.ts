// Ways to reach the agent: the VMM's hybrid vsock (a Unix socket plus a CONNECT handshake), or a
// plain Unix socket (an agent started with --unix, in tests).
import net from 'node:net';

export const DEFAULT_AGENT_PORT = 1024;
const MAX_HANDSHAKE_LINE = 64;

export class VsockConnectError extends Error {
  override name = 'VsockConnectError';
  constructor(message: string, readonly udsPath: string, readonly port: number, options?: ErrorOptions) {
    super(message, options);
  }
}

/** Connects to a Unix socket; resolves once connected. */
export function connectUnix(socketPath: string, timeoutMs = 10_000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ path: socketPath });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connecting to ${socketPath} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * Opens a stream to guest vsock port `port` through the VMM's hybrid-vsock Unix socket: sends
 * `CONNECT <port>\n` and expects `OK <hostport>\n`. Resolves with the socket, paused, with any
 * bytes that followed the OK line put back in front of its data.
 */
export function connectVsock(udsPath: string, port: number, timeoutMs = 10_000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    if (!Number.isInteger(port) || port < 0 || port > 0xffffffff) {
      reject(new VsockConnectError(`invalid vsock port ${port}`, udsPath, port));
      return;
    }
    const socket = net.createConnection({ path: udsPath });
    let line = Buffer.alloc(0);
    let settled = false;
    const fail = (message: string, cause?: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(new VsockConnectError(`vsock connect to port ${port} via ${udsPath}: ${message}`, udsPath, port, { cause }));
    };
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
    const onData = (chunk: Buffer) => {
      line = Buffer.concat([line, chunk]);
      const nl = line.indexOf(0x0a);
      if (nl < 0) {
        if (line.length > MAX_HANDSHAKE_LINE) fail(`unexpected answer ${JSON.stringify(line.toString('latin1'))}`);
        return;
      }
      const answer = line.subarray(0, nl).toString('latin1');
      if (!/^OK \d+$/.test(answer)) {
        fail(`refused: ${JSON.stringify(answer)}`);
        return;
      }
      settled = true;
      clearTimeout(timer);
      socket.pause();
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      const rest = line.subarray(nl + 1);
      if (rest.length) socket.unshift(rest);
      resolve(socket);
    };
    const onError = (err: Error) => fail(err.message, err);
    const onClose = () => fail('the connection closed during the handshake (is anything listening on that port?)');
    socket.once('connect', () => socket.write(`CONNECT ${port}\n`));
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
  });
}
