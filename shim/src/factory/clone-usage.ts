// How much memory the live clones of a template share with it and how much each made private,
// read from /proc/<pid>/smaps: a clone maps the template's `memory` file MAP_PRIVATE, so the
// pages it has not written are the template's page cache and the pages it wrote are its own
// copy-on-write copies, which smaps counts as `Anonymous` within the file mapping. (smaps'
// Shared_*/Private_* say how many processes map a page, not who owns it: with a single clone,
// the template's pages would show as "private" too.)
// A mapping is the template's when its device and inode are the file's: the path /proc shows
// depends on the reader's root and mount namespace (a pod's daemon has its own), so it is not
// compared.
import fs from 'node:fs';

export interface MappingUsage {
  pid: number;
  rssBytes: number;
  pssBytes: number;
  /** Resident pages still the template's (page cache shared with the template and other clones). */
  sharedBytes: number;
  /** Pages this process wrote: its own copies. */
  privateBytes: number;
}

const FIELD = /^(Rss|Pss|Anonymous):\s+(\d+) kB$/;

/** How /proc/<pid>/maps names a file's device and inode ("08:01 1234"); undefined if it is gone. */
export function mapsFileId(file: string): string | undefined {
  let st: fs.BigIntStats;
  try {
    st = fs.statSync(file, { bigint: true });
  } catch {
    return undefined;
  }
  // The kernel's encoding of dev_t (huge majors/minors spread over both halves), as glibc's major()/minor().
  const major = ((st.dev >> 8n) & 0xfffn) | ((st.dev >> 32n) & ~0xfffn);
  const minor = (st.dev & 0xffn) | ((st.dev >> 12n) & ~0xffn);
  const hex = (n: bigint) => n.toString(16).padStart(2, '0');
  return `${hex(major)}:${hex(minor)} ${st.ino}`;
}

/** Sums the smaps entries of `pid` that map the file with maps identity `fileId` (mapsFileId); undefined when it does not map it. */
export function mappingUsage(pid: number, fileId: string, smapsText?: string): MappingUsage | undefined {
  let text: string;
  try {
    text = smapsText ?? fs.readFileSync(`/proc/${pid}/smaps`, 'utf8');
  } catch {
    return undefined; // the process went away or is not ours to read
  }
  const usage: MappingUsage = { pid, rssBytes: 0, pssBytes: 0, sharedBytes: 0, privateBytes: 0 };
  let inside = false;
  let found = false;
  for (const line of text.split('\n')) {
    // A mapping header: "start-end perms offset dev inode   path".
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ [0-9a-f]+ (\S+ \d+)/.exec(line);
    if (header) {
      inside = header[1] === fileId;
      found ||= inside;
      continue;
    }
    if (!inside) continue;
    const m = FIELD.exec(line);
    if (!m) continue;
    const bytes = Number(m[2]) * 1024;
    if (m[1] === 'Rss') usage.rssBytes += bytes;
    else if (m[1] === 'Pss') usage.pssBytes += bytes;
    else usage.privateBytes += bytes;
  }
  usage.sharedBytes = usage.rssBytes - usage.privateBytes;
  return found ? usage : undefined;
}

/** Each process's /proc/<pid>/maps text, as [pid, text]; processes gone meanwhile are skipped. */
export function* processMaps(): Generator<[number, string]> {
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let maps: string;
    try {
      maps = fs.readFileSync(`/proc/${name}/maps`, 'utf8');
    } catch {
      continue;
    }
    yield [Number(name), maps];
  }
}

/** Every process mapping `file`, by whatever path it reached it (cheap first pass over /proc/<pid>/maps, then its smaps). */
export function processesMapping(file: string): MappingUsage[] {
  const fileId = mapsFileId(file);
  if (!fileId) return [];
  const result: MappingUsage[] = [];
  for (const [pid, maps] of processMaps()) {
    if (!maps.includes(` ${fileId} `)) continue;
    const usage = mappingUsage(pid, fileId);
    if (usage) result.push(usage);
  }
  return result;
}
