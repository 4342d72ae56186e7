import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { processAlive } from './process.js';

test('processAlive: this process is, an exited child is not', () => {
  assert.equal(processAlive(process.pid), true);
  const child = spawnSync('true');
  assert.equal(child.status, 0);
  assert.equal(processAlive(child.pid!), false);
});
