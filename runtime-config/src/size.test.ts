import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatBytesApprox, formatSize, parseSize } from './size.js';

describe('parseSize', () => {
  it('accepts binary units with optional i/B suffixes', () => {
    assert.equal(parseSize('4096'), 4096);
    assert.equal(parseSize('256M'), 256 * 2 ** 20);
    assert.equal(parseSize('1G'), 2 ** 30);
    assert.equal(parseSize('512MiB'), 512 * 2 ** 20);
    assert.equal(parseSize('2gb'), 2 * 2 ** 30);
    assert.equal(parseSize(123), 123);
  });
  it('rejects garbage with a message naming the option', () => {
    assert.throws(() => parseSize('lots', '--memory'), /--memory "lots" is not a size/);
    assert.throws(() => parseSize('-1M'), /not a size/);
    assert.throws(() => parseSize('1.5G'), /not a size/);
    assert.throws(() => parseSize('99999999999T'), /too large/);
  });
  it('formats back to the largest exact unit', () => {
    assert.equal(formatSize(256 * 2 ** 20), '256M');
    assert.equal(formatSize(4097), '4097');
  });
  it('rounds sizes for people: one decimal below 100 of a unit, none from 100 on', () => {
    const cases: Array<[number, string]> = [[0, '0 B'], [1023, '1023 B'], [4096, '4 K'], [1536, '1.5 K'], [61.24 * 2 ** 20, '61.2 M'], [16 * 2 ** 20 - 4096, '16 M'], [812.4 * 2 ** 10, '812 K'], [3.94 * 2 ** 30, '3.9 G']];
    for (const [bytes, text] of cases) assert.equal(formatBytesApprox(bytes), text, String(bytes));
  });
});
