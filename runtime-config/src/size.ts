// Human-readable sizes ("256M", "1G", "512MiB", "4096") to bytes, binary units (config keys and the CLI).
const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

export function parseSize(text: string | number, what = 'size'): number {
  if (typeof text === 'number') {
    if (!Number.isSafeInteger(text) || text < 0) throw new RangeError(`${what} ${text} is not a non-negative integer`);
    return text;
  }
  const m = /^\s*(\d+)\s*([KMGT]?)(i?B)?\s*$/i.exec(text);
  if (!m) throw new RangeError(`${what} "${text}" is not a size like 256M, 1G or 4096`);
  const bytes = Number(m[1]) * UNITS[m[2].toUpperCase()];
  if (!Number.isSafeInteger(bytes)) throw new RangeError(`${what} "${text}" is too large`);
  return bytes;
}

export function formatSize(bytes: number): string {
  for (const unit of ['T', 'G', 'M', 'K'] as const) {
    if (bytes >= UNITS[unit] && bytes % UNITS[unit] === 0) return `${bytes / UNITS[unit]}${unit}`;
  }
  return String(bytes);
}

/** Bytes for people to read, rounded: "0 B", "812 K", "61.2 M", "3.9 G" (binary units, as parseSize). */
export function formatBytesApprox(bytes: number): string {
  if (bytes < UNITS.K) return `${bytes} B`;
  const unit = (['T', 'G', 'M', 'K'] as const).find((u) => bytes >= UNITS[u])!;
  const value = bytes / UNITS[unit];
  return `${value >= 100 ? Math.round(value) : value.toFixed(1).replace(/\.0$/, '')} ${unit}`;
}
