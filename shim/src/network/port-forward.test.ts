// forwardPodPorts in a real network namespace with a real iptables DNAT (root only): a client
// in the namespace dials 127.0.0.1:<port> as containerd's PortForward does; the "guest" is a
// server of this test, reached through the opener the shim would give the agent's openPort.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import net from 'node:net';
import { Writable, type Duplex } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { createLogger } from '../util/log.js';
import { forwardPodPorts, type PortForwarder } from './port-forward.js';

const isRoot = process.getuid?.() === 0;
const NAME = `stencil-pf-${process.pid}`;
const NETNS = `/run/netns/${NAME}`;

/** Dials 127.0.0.1:port inside the namespace, sends `text`, half-closes, prints the reply (or the error code). */
function dialInNetns(port: number, text: string): Promise<string> {
  const script = `
    const s = require('net').connect(${port}, '127.0.0.1');
    let out = '';
    s.on('data', (d) => (out += d));
    s.on('end', () => process.stdout.write('reply:' + out));
    s.on('error', (e) => process.stdout.write('error:' + e.code));
    s.end(${JSON.stringify(text)});`;
  return new Promise((resolve, reject) =>
    execFile('nsenter', [`--net=${NETNS}`, process.execPath, '-e', script], { timeout: 20_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout))),
  );
}

function natRules(): string {
  return execFileSync('nsenter', [`--net=${NETNS}`, 'iptables', '-w', '5', '-t', 'nat', '-S', 'OUTPUT'], { encoding: 'utf8' });
}

describe('port forwarding into a VM pod', { skip: !isRoot && 'needs root (network namespaces, iptables)' }, () => {
  let guestServer: net.Server;
  let forwarder: PortForwarder | undefined;
  const asked: number[] = [];

  before(async () => {
    execFileSync('ip', ['netns', 'add', NAME]);
    execFileSync('ip', ['-n', NAME, 'link', 'set', 'lo', 'up']);
    guestServer = net.createServer({ allowHalfOpen: true }, (s) => {
      let got = '';
      s.on('data', (d) => (got += d));
      s.on('end', () => s.end(`guest saw ${JSON.stringify(got)}`));
    });
    await new Promise<void>((resolve) => guestServer.listen(0, '127.0.0.1', resolve));
    const guestPort = (guestServer.address() as net.AddressInfo).port;
    // The "guest": port 8080 is served, every other port refused (as the agent's NOT_FOUND).
    // Not async: port 8082 throws at once, as the pod's agent() does before the agent is up.
    const opener = (port: number): Promise<Duplex> => {
      asked.push(port);
      if (port === 8082) throw new Error('pod p: the agent is not connected yet');
      return openServed(port);
    };
    const openServed = async (port: number): Promise<Duplex> => {
      if (port !== 8080) throw new Error(`connect to 127.0.0.1:${port} in the guest: Connection refused`);
      const s = net.connect({ port: guestPort, host: '127.0.0.1', allowHalfOpen: true });
      await new Promise((resolve, reject) => s.once('connect', resolve).once('error', reject));
      return s;
    };
    forwarder = await forwardPodPorts(NETNS, opener);
  });

  after(async () => {
    await forwarder?.close();
    guestServer?.close();
    execFileSync('ip', ['netns', 'del', NAME]);
  });

  it('carries a connection to 127.0.0.1:8080 in the namespace to the guest port 8080, both halves', async () => {
    assert.ok(forwarder, 'the redirect was set up');
    assert.match(natRules(), new RegExp(`DNAT --to-destination 127.0.0.1:${forwarder.listenPort}`));
    assert.equal(await dialInNetns(8080, 'ping'), 'reply:guest saw "ping"');
    assert.deepEqual(asked, [8080]);
  });

  it('resets a connection to a port nothing serves in the guest, as a refused connect would fail', async () => {
    assert.match(await dialInNetns(8081, 'x'), /^error:ECONNRESET$/);
    assert.equal(asked.at(-1), 8081);
  });

  it('resets a connection whose opener throws at once, and goes on serving', async () => {
    assert.match(await dialInNetns(8082, 'x'), /^error:ECONNRESET$/);
    assert.equal(await dialInNetns(8080, 'again'), 'reply:guest saw "again"');
  });

  it('close() removes the rule and the listener', async () => {
    await forwarder!.close();
    assert.doesNotMatch(natRules(), /DNAT/);
    assert.match(await dialInNetns(8080, 'x'), /^error:ECONNREFUSED$/);
    forwarder = undefined;
  });
});

describe('port forwarding where it cannot be set up', { skip: !isRoot && 'needs root (network namespaces)' }, () => {
  it('resolves to undefined with one warning naming the namespace, never rejects', async () => {
    const lines: string[] = [];
    const log = createLogger({
      stream: new Writable({
        write(chunk: Buffer, _enc, done) {
          lines.push(chunk.toString());
          done();
        },
      }),
    });
    const missing = `/run/netns/stencil-pf-missing-${process.pid}`;
    const forwarder = await forwardPodPorts(missing, () => Promise.reject(new Error('never asked')), log);
    assert.equal(forwarder, undefined);
    const warnings = lines.filter((l) => l.includes('warn'));
    assert.equal(warnings.length, 1, lines.join(''));
    assert.match(warnings[0], /PortForward will not reach this pod/);
    assert.ok(warnings[0].includes(missing), warnings[0]);
  });
});
