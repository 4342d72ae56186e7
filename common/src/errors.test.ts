import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, isCodedError } from './errors.js';

describe('isCodedError', () => {
  it('recognizes errors carrying a shared code, and nothing else', () => {
    const coded = Object.assign(new Error('bad'), { code: ErrorCode.NotFound });
    assert.equal(isCodedError(coded), true);
    assert.equal(isCodedError(Object.assign(new Error('x'), { code: 'ENOENT' })), false);
    assert.equal(isCodedError(Object.assign(new Error('x'), { code: 5 })), false);
    assert.equal(isCodedError({ message: 'not an Error', code: ErrorCode.NotFound }), false);
    assert.equal(isCodedError(new Error('no code')), false);
  });
});
