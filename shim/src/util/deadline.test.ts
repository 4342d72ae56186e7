import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { withDeadline } from './deadline.js';

describe('withDeadline', () => {
  it("gives the work's result or its error when it settles in time", async () => {
    assert.equal(await withDeadline(Promise.resolve(7), 1_000, () => new Error('late')), 7);
    await assert.rejects(withDeadline(Promise.reject(new Error('own')), 1_000, () => new Error('late')), /^Error: own$/);
  });

  it("rejects with the caller's error once the deadline passes", async () => {
    await assert.rejects(withDeadline(new Promise(() => undefined), 20, () => new Error('no answer within 20 ms')), /no answer within 20 ms/);
  });

  it('leaves no timer behind (the test process could not end otherwise)', async () => {
    assert.equal(await withDeadline(Promise.resolve('done'), 3_600_000, () => new Error('late')), 'done');
  });
});
