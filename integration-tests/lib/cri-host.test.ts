// The CRI config criConfigToml writes, read back by each containerd itself (`config dump` prints
// the plugins' decoded settings, so a key containerd does not know would be missing there).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { CONTAINERD_VERSIONS, harnessInfo } from './containerd.js';
import { criConfigToml } from './cri-host.js';

/** The body of the TOML table whose header ends with `suffix` (up to the next header). */
function table(toml: string, suffix: string): string {
  const lines = toml.split('\n');
  const start = lines.findIndex((l) => l.trim().startsWith('[') && l.trim().endsWith(`${suffix}]`));
  assert.ok(start >= 0, `no table ...${suffix} in:\n${toml}`);
  const end = lines.findIndex((l, i) => i > start && l.trim().startsWith('['));
  return lines.slice(start + 1, end < 0 ? undefined : end).join('\n');
}

for (const version of CONTAINERD_VERSIONS) {
  test(`containerd ${version} reads every CRI setting criConfigToml writes`, () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-cri-config-'));
    try {
      const file = path.join(dir, 'config.toml');
      const toml = criConfigToml({
        version,
        sandboxImage: 'test.local/pause:7',
        snapshotter: 'native',
        confDir: path.join(dir, 'net.d'),
        streamPort: 40123,
        runtimes: { extra: { runtimeType: 'io.containerd.extra.v2' } },
      });
      fs.writeFileSync(file, `version = ${version === '1.6' ? 2 : 3}\n${toml}`);
      const dump = execFileSync(harnessInfo().containerd[version].containerd, ['--config', file, 'config', 'dump'], { encoding: 'utf8' });
      const has = (re: RegExp) => assert.match(dump, re);
      has(/sandbox(_image)? = ["']test\.local\/pause:7["']/);
      has(new RegExp(`conf_dir = ["']${path.join(dir, 'net.d').replace(/[.]/g, '\\.')}["']`));
      has(version === '1.6' ? /bin_dir = "\/usr\/lib\/cni"/ : /bin_dirs = \['\/usr\/lib\/cni'\]/);
      has(/stream_server_address = ["']127\.0\.0\.1["']/);
      has(/stream_server_port = ["']40123["']/);
      has(/netns_mounts_under_state_dir = true/);
      has(/restrict_oom_score_adj = true/);
      has(/default_runtime_name = ["']runc["']/);
      assert.match(table(dump, '.runtimes.runc'), /runtime_type = ["']io\.containerd\.runc\.v2["']/);
      assert.match(table(dump, '.runtimes.extra'), /runtime_type = ["']io\.containerd\.extra\.v2["']/);
      // The CRI image snapshotter (1.6: containerd.snapshotter; 2.1: cri.v1.images).
      has(/^\s+snapshotter = ["']native["']/m);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
