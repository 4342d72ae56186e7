// Small helpers the template benchmarks share: medians, rounding, one JSON line per figure, and
// the host's MemAvailable.
import fs from 'node:fs';

export const median = (xs: number[]): number => {
  if (xs.length === 0) throw new Error('median of no samples');
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

export const round = (x: number, digits = 0): number => Number(x.toFixed(digits));

export const MIB = 2 ** 20;

/** Prints one figure as a JSON line on stdout. */
export function emit(figure: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(figure) + '\n');
}

/** A progress note on stderr (stdout carries only the JSON figures). */
export function note(text: string): void {
  process.stderr.write(`# ${text}\n`);
}

/** /proc/meminfo's MemAvailable, in bytes. */
export function memAvailableBytes(): number {
  const m = /^MemAvailable:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  if (!m) throw new Error('/proc/meminfo has no MemAvailable line');
  return Number(m[1]) * 1024;
}
