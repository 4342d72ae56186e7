// One socket, two protocols: a shim daemon serving containerd over gRPC still answers Stencil's own
// ttrpc callers (`stencil pod ...`) on the same socket. Each connection is told apart by its first
// byte: gRPC opens with the HTTP/2 client preface ("PRI * HTTP/2.0..."), a ttrpc frame with a
// big-endian length whose top byte is 0 for any message under 16 MiB.
import type net from 'node:net';
import { Duplex, PassThrough } from 'node:stream';

/** The HTTP/2 client preface's first byte ('P'). */
const HTTP2_PREFACE_FIRST_BYTE = 0x50;

export interface ProtocolAcceptors {
  /** Takes a connection that speaks HTTP/2 (gRPC). */
  grpc(connection: Duplex): void;
  /** Takes a connection that speaks ttrpc, paused; the caller resumes it. */
  ttrpc(socket: net.Socket): void;
}

/**
 * Returns the function to hand each accepted (paused) connection to: it resumes the connection,
 * reads its first bytes and passes it on to the acceptor of its protocol, those bytes included.
 */
export function acceptByProtocol(acceptors: ProtocolAcceptors): (socket: net.Socket) => void {
  return (socket) => {
    // Until the connection has an owner, its errors (a caller gone at once) are this code's.
    const ignore = () => undefined;
    socket.on('error', ignore);
    socket.once('data', (first: Buffer) => {
      socket.pause();
      socket.off('error', ignore);
      if (first[0] === HTTP2_PREFACE_FIRST_BYTE) {
        // Node's HTTP/2 reads the socket's handle directly and would never see bytes given back
        // with unshift(), so grpc-js gets a stream that replays them and then carries the socket.
        acceptors.grpc(replaying(first, socket));
      } else {
        socket.unshift(first);
        acceptors.ttrpc(socket);
      }
      socket.resume();
    });
    socket.resume();
  };
}

/** A duplex stream reading `first`, then whatever `socket` reads; writes go to the socket. */
function replaying(first: Buffer, socket: net.Socket): Duplex {
  const readable = new PassThrough();
  readable.write(first);
  socket.pipe(readable);
  const duplex = Duplex.from({ readable, writable: socket });
  // Whoever ends the duplex (grpc-js closing the session) ends the connection.
  duplex.once('close', () => socket.destroy());
  return duplex;
}
