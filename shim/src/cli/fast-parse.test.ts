// The CLI's two parsers: parseFast takes only what it can decide exactly; bin/stencil sends the rest
// (help, mistakes) to yargs, built from the same option table.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot } from '../util/paths.js';
import { COMMANDS } from './commands.js';
import { parseFast, withDefaults } from './fast-parse.js';

const command = (...words: string[]) => COMMANDS.find((c) => c.path.join(' ') === words.join(' '))!;
const stencil = (...args: string[]) =>
  spawnSync(path.join(repoRoot(), 'bin', 'stencil'), args, { encoding: 'utf8', timeout: 60_000 });

describe('parseFast', () => {
  it('parses a subcommand’s own options, camelCased, numbers as numbers', () => {
    assert.deepEqual(
      parseFast(command('vm', 'run'), ['--kernel', '/k', '--vcpus=2', '--memory', '256M', '--memory-dir', '/m']),
      { kernel: '/k', vcpus: 2, memory: '256M', memoryDir: '/m' },
    );
    assert.deepEqual(parseFast(command('check'), ['--json']), { json: true });
    assert.deepEqual(parseFast(command('check'), []), {});
  });

  it('leaves to yargs what it cannot decide: help, unknown flags, positionals, bad numbers', () => {
    const run = command('vm', 'run');
    for (const args of [['--help'], ['-h'], ['--bogus'], ['extra'], ['--vcpus', 'two'], ['--vcpus', ''], ['--kernel'], ['--json']])
      assert.equal(parseFast(run, args), undefined, args.join(' '));
    assert.equal(parseFast(command('check'), ['--no-json']), undefined);
  });

  it('takes a command’s operands by name; leaves a missing or extra one, or a repeated option, to yargs', () => {
    const rm = command('template', 'rm');
    assert.deepEqual(parseFast(rm, ['0123456789abcdef0123', '--config', '/c']), { key: '0123456789abcdef0123', config: '/c' });
    for (const args of [[], ['a', 'b'], ['--', '-a']]) assert.equal(parseFast(rm, args), undefined, args.join(' '));
    assert.equal(parseFast(command('pool', 'init'), ['--vcpus', '1', '--vcpus', '2']), undefined);
  });

  it('fills in defaults only for options left out', async () => {
    const check = command('check');
    const filled = await withDefaults(check, {});
    assert.equal(filled.json, false);
    assert.equal(typeof filled.memoryDir, 'string');
    assert.ok((filled.memoryDir as string).length > 0);
    assert.deepEqual(await withDefaults(check, { json: true, memoryDir: '/x' }), { json: true, memoryDir: '/x' });
  });
});

describe('bin/stencil on the yargs path', () => {
  it('prints help naming every subcommand from the table', () => {
    const top = stencil('--help');
    assert.equal(top.status, 0, top.stderr);
    assert.match(top.stdout, /stencil check/);
    assert.match(top.stdout, /stencil vm/);
    const run = stencil('vm', 'run', '--help');
    assert.equal(run.status, 0, run.stderr);
    for (const flag of Object.keys(command('vm', 'run').options)) assert.match(run.stdout, new RegExp(`--${flag}\\b`));
  });

  it('refuses an unknown option with exit code 1 and the help', () => {
    const r = stencil('vm', 'run', '--bogus');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /Unknown argument: bogus/);
  });
});
