import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ConfigError, defaultConfig, loadConfig, parseConfig } from './config.js';

const SRC = '/test/stencil.toml';

/** Parses `text` expecting failure; returns the problems. */
function problemsOf(text: string): string[] {
  try {
    parseConfig(text, SRC);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
    return err.problems;
  }
  assert.fail(`expected ${JSON.stringify(text)} to be rejected`);
}

/** Asserts exactly one problem, which names the file and matches every pattern. */
function assertOneProblem(text: string, ...patterns: RegExp[]): void {
  const problems = problemsOf(text);
  assert.equal(problems.length, 1, problems.join('\n'));
  assert.ok(problems[0].startsWith(SRC), problems[0]);
  for (const pattern of patterns) assert.match(problems[0], pattern);
}

describe('defaults', () => {
  it('has the documented values', () => {
    assert.deepEqual(defaultConfig(), {
      hypervisor: {
        kernel: '',
        initrd: '',
        kernelParams: '',
        defaultVcpus: 1,
        defaultMemory: 256 * 2 ** 20,
        memoryDir: '/dev/shm/stencil',
        memoryBacking: 'tmpfs',
        seccomp: true,
      },
      factory: { enabled: true, templateDir: '/run/stencil-templates', templateDirSize: 4 * 2 ** 30, onMiss: 'boot' },
      runtime: { logLevel: 'info', stateDir: '/run/stencil', transport: 'auto', failpoints: false, agentRequestTimeoutMs: 60_000, exitGraceMs: 10_000, spareDaemon: true, sandboxPause: 'agent' },
    });
  });

  it('reads [factory] and names each bad key', () => {
    const config = parseConfig('[factory]\nenabled = false\ntemplate_dir = "/t"\ntemplate_dir_size = "1G"\non_miss = "fail"\n', SRC);
    assert.deepEqual(config.factory, { enabled: false, templateDir: '/t', templateDirSize: 2 ** 30, onMiss: 'fail' });
    assert.throws(
      () => parseConfig('[factory]\nenabled = "yes"\non_miss = "build"\ntemplate_dir = "rel"\n', SRC),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /factory\.enabled: expected a boolean, got the string "yes"/);
        assert.match(err.message, /factory\.on_miss: "build" is not a valid choice; allowed: "boot", "fail"/);
        assert.match(err.message, /factory\.template_dir: "rel" is not an absolute path/);
        return true;
      },
    );
  });

  it('returns a fresh object each time', () => {
    defaultConfig().hypervisor.defaultVcpus = 8;
    assert.equal(defaultConfig().hypervisor.defaultVcpus, 1);
  });

  it('applies to an empty file and to omitted keys', () => {
    assert.deepEqual(parseConfig('', SRC), defaultConfig());
    const config = parseConfig('[hypervisor]\ndefault_vcpus = 4\n', SRC);
    assert.deepEqual(config, { ...defaultConfig(), hypervisor: { ...defaultConfig().hypervisor, defaultVcpus: 4 } });
  });

  it('the shipped configuration.toml parses to exactly the defaults, with every key present', () => {
    // The compiled test runs from <out>/runtime-config/src; the shipped file is beside src/ in the repo.
    const file = fileURLToPath(new URL('../../../runtime-config/configuration.toml', import.meta.url));
    const text = fs.readFileSync(file, 'utf8');
    assert.deepEqual(parseConfig(text, file), defaultConfig());
    for (const key of ['kernel', 'initrd', 'kernel_params', 'default_vcpus', 'default_memory', 'memory_dir', 'memory_backing', 'log_level', 'state_dir', 'transport', 'failpoints', 'agent_request_timeout_ms', 'exit_grace_ms', 'spare_daemon', 'sandbox_pause']) {
      assert.match(text, new RegExp(`^${key} = `, 'm'), `${key} missing from ${file}`);
    }
  });
});

describe('parseConfig accepts', () => {
  it('every key, mapped to camelCase', () => {
    const config = parseConfig(
      `[hypervisor]
kernel = "/boot/vmlinux"
initrd = "/boot/initrd.img"
kernel_params = "quiet loglevel=3"
default_vcpus = 254
default_memory = "1G"
memory_dir = "/mnt/ram"
memory_backing = "memfd"
seccomp = false
[runtime]
log_level = "debug"
state_dir = "/var/run/stencil"
transport = "ttrpc"
failpoints = true
agent_request_timeout_ms = 5000
exit_grace_ms = 2500
spare_daemon = false
sandbox_pause = "image"
`,
      SRC,
    );
    assert.deepEqual(config, {
      hypervisor: {
        kernel: '/boot/vmlinux',
        initrd: '/boot/initrd.img',
        kernelParams: 'quiet loglevel=3',
        defaultVcpus: 254,
        defaultMemory: 2 ** 30,
        memoryDir: '/mnt/ram',
        memoryBacking: 'memfd',
        seccomp: false,
      },
      factory: defaultConfig().factory,
      runtime: { logLevel: 'debug', stateDir: '/var/run/stencil', transport: 'ttrpc', failpoints: true, agentRequestTimeoutMs: 5000, exitGraceMs: 2500, spareDaemon: false, sandboxPause: 'image' },
    });
  });

  it('memory as an integer number of bytes', () => {
    assert.equal(parseConfig('[hypervisor]\ndefault_memory = 536870912', SRC).hypervisor.defaultMemory, 512 * 2 ** 20);
    assert.equal(parseConfig('[hypervisor]\ndefault_memory = "16MiB"', SRC).hypervisor.defaultMemory, 16 * 2 ** 20);
  });

  it('values only the VMM can judge (its limits live there, and its error names them at boot)', () => {
    const { hypervisor } = parseConfig('[hypervisor]\ndefault_vcpus = 255\ndefault_memory = 268435457', SRC);
    assert.equal(hypervisor.defaultVcpus, 255);
    assert.equal(hypervisor.defaultMemory, 268435457);
  });
});

describe('parseConfig rejects', () => {
  it('an unknown key, listing the allowed ones and suggesting the right spelling', () => {
    assertOneProblem('[hypervisor]\nvcpus = 2', /hypervisor\.vcpus: unknown key/, /allowed keys in \[hypervisor\]: kernel, initrd/);
    assertOneProblem('[hypervisor]\ndefaultVcpus = 2', /did you mean hypervisor\.default_vcpus\?/);
    assertOneProblem('[runtime]\nkernel = "/k"', /runtime\.kernel: unknown key/, /did you mean hypervisor\.kernel\?/);
  });

  it('an unknown section, and keys outside any section', () => {
    assertOneProblem('[agent]\ndebug = true', /\[agent\]: unknown section/, /allowed sections: \[hypervisor\], \[factory\], \[runtime\]/);
    assertOneProblem('[hypervisor.extra]\nx = 1', /hypervisor\.extra: unknown key/);
    assertOneProblem('[[plugins]]\nname = "x"', /\[plugins\]: unknown section/);
    assertOneProblem('log_level = "debug"', /log_level: unknown top-level key/, /did you mean runtime\.log_level\?/);
  });

  it('a section that is not a table', () => {
    assertOneProblem('runtime = 3', /runtime: expected a table/);
    assertOneProblem('[[runtime]]\nlog_level = "info"', /runtime: expected a table.*got an array/);
  });

  it('wrong types, saying what was given and what is allowed', () => {
    assertOneProblem('[hypervisor]\ndefault_vcpus = "2"', /hypervisor\.default_vcpus: expected an integer, got the string "2"; allowed: a positive integer/);
    assertOneProblem('[hypervisor]\ndefault_vcpus = 2.0', /expected an integer, got the float 2/);
    assertOneProblem('[hypervisor]\nkernel = 1', /hypervisor\.kernel: expected a string, got the integer 1/);
    assertOneProblem('[hypervisor]\ndefault_memory = true', /hypervisor\.default_memory: expected a size string or an integer, got the boolean true/);
    assertOneProblem('[runtime]\nlog_level = ["info"]', /runtime\.log_level: expected a string, got an array/);
    assertOneProblem('[runtime]\nstate_dir = 1979-05-27', /runtime\.state_dir: expected a string, got the date-time/);
  });

  it('vcpus that are not a positive 32-bit integer', () => {
    assertOneProblem('[hypervisor]\ndefault_vcpus = 0', /hypervisor\.default_vcpus: 0 is out of range; allowed: a positive integer/);
    assertOneProblem('[hypervisor]\ndefault_vcpus = 99999999999999999999', /out of range/);
  });

  it('an agent request timeout under a second', () => {
    assertOneProblem('[runtime]\nagent_request_timeout_ms = 10', /runtime\.agent_request_timeout_ms: 10 is out of range; allowed: milliseconds, from 1000 to 3600000/);
    assertOneProblem('[runtime]\nexit_grace_ms = 0', /runtime\.exit_grace_ms: 0 is out of range; allowed: milliseconds, from 1 to 600000/);
  });

  it('sizes that are not sizes, or too large', () => {
    assertOneProblem('[hypervisor]\ndefault_memory = "lots"', /hypervisor\.default_memory: size "lots" is not a size/, /allowed: a size like "256M"/);
    assertOneProblem('[hypervisor]\ndefault_memory = "1.5G"', /is not a size/);
    assertOneProblem('[hypervisor]\ndefault_memory = -4096', /-4096 is not a non-negative integer/);
    assertOneProblem('[hypervisor]\ndefault_memory = "99999999999T"', /too large/);
  });

  it('relative paths, but "" for the kernel and initrd', () => {
    assertOneProblem('[runtime]\nstate_dir = "run/stencil"', /runtime\.state_dir: "run\/stencil" is not an absolute path; allowed: an absolute path$/);
    assertOneProblem('[hypervisor]\nmemory_dir = ""', /hypervisor\.memory_dir: "" is not an absolute path/);
    assertOneProblem('[hypervisor]\nkernel = "vmlinux"', /allowed: an absolute path, or "" for the kernel the build produced/);
    assert.equal(parseConfig('[hypervisor]\ninitrd = ""', SRC).hypervisor.initrd, '');
  });

  it('bad enum values, listing the choices', () => {
    assertOneProblem('[hypervisor]\nmemory_backing = "hugetlb"', /hypervisor\.memory_backing: "hugetlb" is not a valid choice; allowed: "tmpfs", "memfd"/);
    assertOneProblem('[runtime]\nlog_level = "trace"', /runtime\.log_level: "trace" is not a valid choice; allowed: "error", "warn", "info", "http", "verbose", "debug", "silly"/);
    assertOneProblem('[runtime]\ntransport = "http"', /allowed: "auto", "ttrpc", "grpc"/);
    assertOneProblem('[runtime]\nsandbox_pause = "crun"', /runtime\.sandbox_pause: "crun" is not a valid choice; allowed: "agent", "image"/);
  });

  it('TOML syntax errors, with file, line and column', () => {
    assertOneProblem('[hypervisor]\ndefault_vcpus = 2\nkernel = \n', /^\/test\/stencil\.toml:3:\d+: TOML syntax error: /);
    assertOneProblem('[runtime]\nlog_level = "info"\nlog_level = "debug"\n', /^\/test\/stencil\.toml:3:\d+: TOML syntax error/);
    assertOneProblem('[hypervisor\n', /^\/test\/stencil\.toml:1:\d+: TOML syntax error/);
  });

  it('several problems at once, all listed in one error', () => {
    const text = `[hypervisor]
default_vcpus = 0
default_memory = "1.5K"
bogus = 1
[runtime]
log_level = "loud"
state_dir = "relative"
[extra]
`;
    let caught: unknown;
    try {
      parseConfig(text, SRC);
    } catch (err) {
      caught = err;
    }
    assert.ok(caught instanceof ConfigError);
    assert.equal(caught.source, SRC);
    const keys = ['hypervisor.default_vcpus', 'hypervisor.default_memory', 'hypervisor.bogus', 'runtime.log_level', 'runtime.state_dir', '[extra]'];
    assert.equal(caught.problems.length, keys.length, caught.problems.join('\n'));
    for (const [i, key] of keys.entries()) {
      assert.ok(caught.problems[i].includes(`${SRC}: ${key}:`), caught.problems[i]);
      assert.ok(caught.message.includes(caught.problems[i]), 'the message lists every problem');
    }
    assert.match(caught.message, /^invalid Stencil configuration \(6 problems\):\n {2}- /);
  });
});

describe('loadConfig', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stencil-config-test-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, vcpus: number) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, `[hypervisor]\ndefault_vcpus = ${vcpus}\n`);
    return file;
  };
  const explicit = write('explicit.toml', 2);
  const fromEnv = write('env.toml', 3);
  const system = write('system.toml', 4);
  const missing = path.join(dir, 'missing.toml');
  const env = { STENCIL_CONFIG: fromEnv };
  const vcpusOf = (loaded: { config: { hypervisor: { defaultVcpus: number } } }) => loaded.config.hypervisor.defaultVcpus;

  it('prefers an explicit path over the environment and the system file', () => {
    const loaded = loadConfig({ path: explicit, env, systemPath: system });
    assert.equal(loaded.source, explicit);
    assert.equal(vcpusOf(loaded), 2);
  });

  it('then STENCIL_CONFIG, treating an empty explicit path as unset', () => {
    const loaded = loadConfig({ path: '', env, systemPath: system });
    assert.equal(loaded.source, fromEnv);
    assert.equal(vcpusOf(loaded), 3);
  });

  it('then the system file, treating an empty STENCIL_CONFIG as unset', () => {
    const loaded = loadConfig({ env: { STENCIL_CONFIG: '' }, systemPath: system });
    assert.equal(loaded.source, system);
    assert.equal(vcpusOf(loaded), 4);
  });

  it('then the built-in defaults when the system file does not exist', () => {
    assert.deepEqual(loadConfig({ env: {}, systemPath: missing }), { config: defaultConfig(), source: 'defaults' });
  });

  it('fails, naming the file, when an explicit or STENCIL_CONFIG file is missing', () => {
    assert.throws(() => loadConfig({ path: missing, env, systemPath: system }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.source, missing);
      assert.match(err.message, new RegExp(`${missing}: configuration file does not exist \\(given as config_path\\)`));
      return true;
    });
    assert.throws(() => loadConfig({ env: { STENCIL_CONFIG: missing }, systemPath: system }), /does not exist \(named by \$STENCIL_CONFIG\)/);
  });

  it('fails when the system file exists but cannot be read', () => {
    assert.throws(() => loadConfig({ env: {}, systemPath: dir }), (err: unknown) => err instanceof ConfigError && /cannot be read/.test(err.message));
  });

  it('reports problems in the loaded file with its path', () => {
    const bad = path.join(dir, 'bad.toml');
    fs.writeFileSync(bad, '[runtime]\ntransport = "udp"\n');
    assert.throws(() => loadConfig({ path: bad, env: {} }), (err: unknown) => err instanceof ConfigError && err.problems[0].startsWith(`${bad}: runtime.transport:`));
  });
});
