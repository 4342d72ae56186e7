// What a private containerd's CRI plugin needs on the host, for ContainerdInstance (lib/containerd.ts)
// started with `cri`: the plugin's TOML for containerd 1.6 (config version 2) or 2.1 (version 3), and
// the pod network of that instance (CriNetwork): a CNI conflist (bridge + host-local + portmap) in
// a private conf dir with its own bridge name, /24 and network name, iptables-legacy for portmap
// through a private bin dir on containerd's PATH, and the leak report and cleanup of everything
// the network leaves on the host (veths, CNI cache entries, portmap's iptables rules and chains).
//
// Each instance claims a subnet index N (10.240.N.0/24, bridge stcri<N>, network stencil-cri-<N>)
// with an atomic mkdir under /run/stencil-cri-nets, released by stop(); a claim whose owner
// process is gone is taken over.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { processAlive } from '../../shim/src/util/process.js';
import type { ContainerdVersion } from './containerd.js';
import { walk } from './leaks.js';

/** Where Debian's containernetworking-plugins puts the plugins (bridge, host-local, loopback, portmap). */
export const CNI_BIN_DIR = '/usr/lib/cni';
/** libcni's result cache (containerd does not move it): <network>-<container id>-<ifname> files. */
const CNI_CACHE_DIR = '/var/lib/cni';
const CLAIM_DIR = '/run/stencil-cri-nets';
const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';
const IP_FORWARD_BEFORE = path.join(CLAIM_DIR, 'ip_forward.before');
const FIRST_INDEX = 1;
const LAST_INDEX = 254;

export interface CriOptions {
  /** More CRI runtime handlers beside `runc` (the default), e.g. {stencil: {runtimeType: 'io.containerd.stencil.v2'}}. */
  runtimes?: Record<string, CriRuntime>;
}

/** A CRI runtime handler: its shim, and the runtime's configuration file (runtimeoptions' ConfigPath). */
export interface CriRuntime {
  runtimeType: string;
  configPath?: string;
}

/** The CRI part of containerd's config for `version` (containerd's other settings are the caller's). */
export function criConfigToml(o: {
  version: ContainerdVersion;
  sandboxImage: string;
  snapshotter: string;
  confDir: string;
  streamPort: number;
  runtimes: Record<string, CriRuntime>;
}): string {
  const q = (s: string) => JSON.stringify(s);
  const runtimes = { runc: { runtimeType: 'io.containerd.runc.v2' }, ...o.runtimes };
  const runtimeTables = (prefix: string) =>
    Object.entries(runtimes).flatMap(([name, r]: [string, CriRuntime]) => [
      `[${prefix}.containerd.runtimes.${q(name)}]`,
      `  runtime_type = ${q(r.runtimeType)}`,
      ...(r.configPath ? [`[${prefix}.containerd.runtimes.${q(name)}.options]`, `  ConfigPath = ${q(r.configPath)}`] : []),
    ]);
  // Pods' network namespaces are bind-mounted under CRI's state dir (ours), not /run/netns.
  // restrict_oom_score_adj: CRI gives sandboxes -998, which needs CAP_SYS_RESOURCE (runc's
  // nsexec fails with EACCES without it, as on the build machine); restricted, CRI clamps the
  // value to containerd's own.
  const stream = ['  stream_server_address = "127.0.0.1"', `  stream_server_port = ${q(String(o.streamPort))}`, '  enable_tls_streaming = false'];
  if (o.version === '1.6') {
    const cri = '[plugins."io.containerd.grpc.v1.cri"]';
    const p = 'plugins."io.containerd.grpc.v1.cri"';
    return [
      cri,
      `  sandbox_image = ${q(o.sandboxImage)}`,
      '  netns_mounts_under_state_dir = true',
      '  restrict_oom_score_adj = true',
      ...stream,
      `[${p}.cni]`,
      `  bin_dir = ${q(CNI_BIN_DIR)}`,
      `  conf_dir = ${q(o.confDir)}`,
      '  max_conf_num = 1',
      `[${p}.containerd]`,
      `  snapshotter = ${q(o.snapshotter)}`,
      '  default_runtime_name = "runc"',
      ...runtimeTables(p),
      '',
    ].join('\n');
  }
  // 2.x splits CRI into an images plugin, a runtime plugin and the gRPC service (stream server).
  const images = 'plugins."io.containerd.cri.v1.images"';
  const runtime = 'plugins."io.containerd.cri.v1.runtime"';
  return [
    `[${images}]`,
    `  snapshotter = ${q(o.snapshotter)}`,
    `[${images}.pinned_images]`,
    `  sandbox = ${q(o.sandboxImage)}`,
    `[${runtime}]`,
    '  netns_mounts_under_state_dir = true',
    '  restrict_oom_score_adj = true',
    '  enable_cdi = false',
    `[${runtime}.cni]`,
    `  bin_dirs = [${q(CNI_BIN_DIR)}]`,
    `  conf_dir = ${q(o.confDir)}`,
    '  max_conf_num = 1',
    `[${runtime}.containerd]`,
    '  default_runtime_name = "runc"',
    ...runtimeTables(runtime),
    '[plugins."io.containerd.grpc.v1.cri"]',
    ...stream,
    '',
  ].join('\n');
}

/** A TCP port on 127.0.0.1 that was free a moment ago (for CRI's stream server). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * Why this host cannot run CRI pods at all (undefined: it can): a kernel without bridges or veth
 * pairs. Missing CNI plugins or iptables binaries are a setup error (thrown), not a reason.
 */
export function criHostProblem(): string | undefined {
  for (const p of ['bridge', 'host-local', 'loopback', 'portmap'])
    if (!fs.existsSync(path.join(CNI_BIN_DIR, p))) throw new Error(`${CNI_BIN_DIR}/${p} is missing: install Debian's containernetworking-plugins (make deps)`);
  if (!fs.existsSync('/usr/sbin/iptables-legacy')) throw new Error('/usr/sbin/iptables-legacy is missing: install Debian\'s iptables (make deps)');
  const probe = `stcriprobe${process.pid % 10000}`;
  for (const [kind, extra] of [['bridge', []], ['veth', ['peer', 'name', `${probe}p`]]] as const) {
    try {
      run('ip', ['link', 'add', probe, 'type', kind, ...extra]);
    } catch (err) {
      return `this kernel cannot make a ${kind} (ip link add ... type ${kind}: ${((err as { stderr?: string }).stderr ?? '').trim()})`;
    }
    run('ip', ['link', 'del', probe]);
  }
  return undefined;
}

/** Whether iptables' nat table works here (legacy backend): portmap (hostPort) needs it. */
export function natUsable(): boolean {
  try {
    run('iptables-legacy', ['-t', 'nat', '-S']);
    return true;
  } catch {
    return false;
  }
}

function run(file: string, args: string[], input?: string): string {
  return execFileSync(file, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], input });
}

function activeClaims(): number[] {
  let names: string[];
  try {
    names = fs.readdirSync(CLAIM_DIR);
  } catch {
    return [];
  }
  return names.filter((n) => /^\d+$/.test(n)).map(Number);
}

function claimOwner(index: number): number | undefined {
  try {
    return Number(fs.readFileSync(path.join(CLAIM_DIR, String(index), 'pid'), 'utf8'));
  } catch {
    return undefined;
  }
}

export class CriNetwork {
  readonly name: string;
  readonly bridge: string;
  readonly subnet: string;
  /** The bridge's address: the pods' gateway, and the host's address on the pod network. */
  readonly gateway: string;
  readonly confDir: string;
  readonly ipamDir: string;
  /** Put first on containerd's PATH: iptables* -> the legacy backend (portmap runs `iptables`). */
  readonly binDir: string;
  /** Whether the chain has portmap (hostPort): only where the kernel has iptables' nat table. */
  readonly portmap = natUsable();
  private released = false;

  private constructor(
    readonly index: number,
    dir: string,
  ) {
    this.name = `stencil-cri-${index}`;
    this.bridge = `stcri${index}`;
    this.subnet = `10.240.${index}.0/24`;
    this.gateway = `10.240.${index}.1`;
    this.confDir = path.join(dir, 'cni', 'net.d');
    this.ipamDir = path.join(dir, 'cni', 'ipam');
    this.binDir = path.join(dir, 'cni', 'bin');
  }

  /** Claims a free subnet index and writes the conflist and the iptables links under `dir`. */
  static create(dir: string): CriNetwork {
    fs.mkdirSync(CLAIM_DIR, { recursive: true });
    for (let i = FIRST_INDEX; i <= LAST_INDEX; i++) {
      const claim = path.join(CLAIM_DIR, String(i));
      const owner = claimOwner(i);
      const stale = owner !== undefined && !processAlive(owner); // its test process died without stop()
      if (stale) fs.rmSync(claim, { recursive: true, force: true });
      try {
        fs.mkdirSync(claim);
      } catch {
        continue;
      }
      fs.writeFileSync(path.join(claim, 'pid'), String(process.pid));
      const n = new CriNetwork(i, dir);
      if (stale) {
        const removed = n.removeLeftovers();
        if (removed.length > 0) process.stderr.write(`# CRI network ${n.name}: took over the claim of dead process ${owner}; removed ${removed.join(', ')}\n`);
      }
      if (n.bridgeExists()) {
        // Someone else's bridge by that name (not a claim of ours): leave the index alone.
        fs.rmSync(claim, { recursive: true, force: true });
        continue;
      }
      // The first claim notes ip_forward, which the bridge plugin turns on; the last release restores it.
      if (!fs.existsSync(IP_FORWARD_BEFORE)) fs.writeFileSync(IP_FORWARD_BEFORE, fs.readFileSync(IP_FORWARD, 'utf8').trim());
      n.writeFiles();
      return n;
    }
    throw new Error(`no free CRI test subnet: ${CLAIM_DIR} holds claims ${activeClaims().join(', ')}`);
  }

  private writeFiles(): void {
    fs.mkdirSync(this.confDir, { recursive: true });
    fs.mkdirSync(this.ipamDir, { recursive: true });
    fs.mkdirSync(this.binDir, { recursive: true });
    const conflist = {
      cniVersion: '1.0.0',
      name: this.name,
      plugins: [
        {
          type: 'bridge',
          bridge: this.bridge,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: { type: 'host-local', ranges: [[{ subnet: this.subnet, gateway: this.gateway }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: this.ipamDir },
        },
        // Without a nat table portmap fails every DEL (so every StopPodSandbox): left out then.
        ...(this.portmap ? [{ type: 'portmap', capabilities: { portMappings: true } }] : []),
      ],
    };
    // containerd adds the pods' loopback itself (its own "cni-loopback" network, CNI_BIN_DIR/loopback).
    fs.writeFileSync(path.join(this.confDir, '10-stencil-cri.conflist'), JSON.stringify(conflist, null, 2));
    for (const tool of ['iptables', 'iptables-save', 'iptables-restore', 'ip6tables', 'ip6tables-save', 'ip6tables-restore'])
      fs.symlinkSync(`/usr/sbin/${tool.replace(/^(ip6?tables)/, '$1-legacy')}`, path.join(this.binDir, tool));
  }

  bridgeExists(): boolean {
    return fs.existsSync(`/sys/class/net/${this.bridge}`);
  }

  /** The veths on this network's bridge (one per pod). */
  veths(): string[] {
    try {
      return fs.readdirSync(`/sys/class/net/${this.bridge}/brif`);
    } catch {
      return [];
    }
  }

  /** Whether an iptables-save line carries this network's name (portmap's comments: name: \"<network>\"). */
  private mentionsUs(line: string): boolean {
    return line.includes(`name: \\"${this.name}\\"`) || line.includes(`name: "${this.name}"`);
  }

  /** iptables-save lines (all tables) that mention this network (portmap's per-pod rules). */
  iptablesRules(): string[] {
    const out: string[] = [];
    for (const table of ['nat', 'filter']) {
      let lines: string[];
      try {
        lines = run('iptables-legacy-save', ['-t', table]).split('\n');
      } catch {
        continue; // no such table in this kernel
      }
      for (const l of lines) if (this.mentionsUs(l)) out.push(`${table}: ${l}`);
    }
    return out;
  }

  /** libcni's cache entries of this network's attachments. */
  cacheEntries(): string[] {
    return [...walk(CNI_CACHE_DIR)].filter(([p, kind]) => kind !== 'dir' && path.basename(p).startsWith(`${this.name}-`)).map(([p]) => p);
  }

  /** host-local's allocations (a file per IP) still held. */
  ipamAllocations(): string[] {
    try {
      return fs.readdirSync(path.join(this.ipamDir, this.name)).filter((f) => net.isIP(f) !== 0);
    } catch {
      return [];
    }
  }

  /** What the pods' network left behind ([] = nothing); the bridge itself only once released. */
  leaks(): string[] {
    return [
      ...this.veths().map((v) => `veth ${v} on bridge ${this.bridge}`),
      ...this.iptablesRules().map((r) => `iptables ${r}`),
      ...this.cacheEntries().map((p) => `CNI cache entry ${p}`),
      ...this.ipamAllocations().map((ip) => `IPAM allocation ${ip} in ${this.ipamDir}`),
      ...(this.released && this.bridgeExists() ? [`bridge ${this.bridge}`] : []),
    ];
  }

  /**
   * Removes what the network left (after containerd is gone): portmap's rules and per-pod chains,
   * the veths and the bridge, CNI cache entries; when no other instance holds a claim, portmap's
   * shared CNI-HOSTPORT-* chains (when empty) and ip_forward back to what it was (the bridge
   * plugin turns it on for a gateway). Releases the claim. Returns what it removed.
   */
  cleanup(): string[] {
    const removed = this.removeLeftovers();
    fs.rmSync(path.join(CLAIM_DIR, String(this.index)), { recursive: true, force: true });
    this.released = true;
    if (activeClaims().length === 0) removed.push(...this.removeShared());
    return removed;
  }

  /** This network's rules and chains, veths, bridge and cache entries. */
  private removeLeftovers(): string[] {
    const removed = this.removeIptables();
    for (const v of this.veths()) {
      run('ip', ['link', 'del', v]);
      removed.push(`veth ${v}`);
    }
    if (this.bridgeExists()) {
      run('ip', ['link', 'del', this.bridge]);
      removed.push(`bridge ${this.bridge}`);
    }
    for (const p of this.cacheEntries()) {
      fs.rmSync(p, { force: true });
      removed.push(p);
    }
    return removed;
  }

  /** What all instances share, once none holds a claim: portmap's chains, libcni's dirs, ip_forward. */
  private removeShared(): string[] {
    const removed = removeSharedPortmapChains();
    // libcni's cache dirs, once empty (it never removes them).
    for (const d of [path.join(CNI_CACHE_DIR, 'results'), CNI_CACHE_DIR]) {
      try {
        fs.rmdirSync(d);
        removed.push(d);
      } catch {
        // not there, or holds someone else's entries
      }
    }
    let before: string | undefined;
    try {
      before = fs.readFileSync(IP_FORWARD_BEFORE, 'utf8').trim();
    } catch {
      before = undefined;
    }
    if (before !== undefined && fs.readFileSync(IP_FORWARD, 'utf8').trim() !== before) {
      fs.writeFileSync(IP_FORWARD, before);
      removed.push(`ip_forward (back to ${before})`);
    }
    fs.rmSync(IP_FORWARD_BEFORE, { force: true });
    return removed;
  }

  /** Deletes, in one iptables-restore per table, our rules and the chains only they jump to. */
  private removeIptables(): string[] {
    const removed: string[] = [];
    for (const table of ['nat', 'filter']) {
      let save: string;
      try {
        save = run('iptables-legacy-save', ['-t', table]);
      } catch {
        continue;
      }
      const ours = save.split('\n').filter((l) => l.startsWith('-A ') && this.mentionsUs(l));
      if (ours.length === 0) continue;
      const chains = new Set<string>();
      for (const l of ours) {
        const jump = / -j (CNI-(?:DN|SN)-[0-9a-f]+)/.exec(l)?.[1];
        if (jump) chains.add(jump);
        const own = /^-A (CNI-(?:DN|SN)-[0-9a-f]+) /.exec(l)?.[1];
        if (own) chains.add(own);
      }
      const script = [`*${table}`, ...ours.map((l) => `-D${l.slice(2)}`), ...[...chains].flatMap((c) => [`-F ${c}`, `-X ${c}`]), 'COMMIT', ''].join('\n');
      run('iptables-legacy-restore', ['--noflush'], script);
      removed.push(...ours.map((l) => `iptables ${table}: ${l}`), ...[...chains].map((c) => `iptables chain ${table} ${c}`));
    }
    return removed;
  }
}

/** portmap's shared nat chains (CNI-HOSTPORT-*) and the built-in chains' jumps to them, when empty. */
function removeSharedPortmapChains(): string[] {
  let save: string;
  try {
    save = run('iptables-legacy-save', ['-t', 'nat']);
  } catch {
    return [];
  }
  const lines = save.split('\n');
  const shared = lines.map((l) => /^:(CNI-HOSTPORT-[A-Z]+) /.exec(l)?.[1]).filter((c): c is string => c !== undefined);
  if (shared.length === 0) return [];
  // Only if nothing but the chains' own plumbing is left in them (no other pod's rules).
  const busy = lines.some((l) => /^-A CNI-HOSTPORT-DNAT /.test(l) || (/^-A CNI-HOSTPORT-(SNAT|MASQ|SETMARK) /.test(l) && / -j CNI-/.test(l)));
  if (busy) return [];
  const jumps = lines.filter((l) => l.startsWith('-A ') && shared.some((c) => l.includes(` -j ${c}`)));
  const own = lines.filter((l) => shared.some((c) => l.startsWith(`-A ${c} `)));
  const script = ['*nat', ...jumps.map((l) => `-D${l.slice(2)}`), ...own.map((l) => `-D${l.slice(2)}`), ...shared.map((c) => `-X ${c}`), 'COMMIT', ''].join('\n');
  run('iptables-legacy-restore', ['--noflush'], script);
  return shared.map((c) => `iptables chain nat ${c}`);
}
