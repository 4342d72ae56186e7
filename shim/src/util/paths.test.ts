import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { commandOnPath } from './paths.js';

describe('commandOnPath', () => {
  it('finds an executable file as execvp would, in PATH order, and nothing that is not one', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'on-path-'));
    try {
      for (const d of ['a', 'b']) fs.mkdirSync(path.join(dir, d));
      fs.writeFileSync(path.join(dir, 'a', 'tool'), 'data', { mode: 0o644 }); // not executable
      fs.mkdirSync(path.join(dir, 'a', 'dirtool'), { mode: 0o755 }); // a directory
      fs.writeFileSync(path.join(dir, 'b', 'tool'), '#!/bin/sh\n', { mode: 0o755 });
      fs.writeFileSync(path.join(dir, 'b', 'dirtool'), '#!/bin/sh\n', { mode: 0o755 });
      const searchPath = `${path.join(dir, 'a')}:${path.join(dir, 'b')}`;
      assert.equal(commandOnPath('tool', searchPath), path.join(dir, 'b', 'tool'));
      assert.equal(commandOnPath('dirtool', searchPath), path.join(dir, 'b', 'dirtool'));
      assert.equal(commandOnPath('missing', searchPath), '');
      assert.equal(commandOnPath('sh', '/bin:/usr/bin').endsWith('/sh'), true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
