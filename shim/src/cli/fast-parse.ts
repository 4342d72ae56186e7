// The CLI's fast path: a subcommand's options parsed with node:util's parseArgs (built in, nothing
// to load) from the option table in commands.ts. It decides only what it can decide exactly like
// yargs would; for anything else it answers undefined and the caller falls back to yargs.
import { parseArgs } from 'node:util';
import { camelCase, type CommandSpec, type ParsedOptions } from './commands.js';

/** The options in `args` for `command`, or undefined when only yargs can tell what they mean. */
export function parseFast(command: CommandSpec, args: string[]): ParsedOptions | undefined {
  const options = Object.fromEntries(
    Object.entries(command.options).map(([flag, o]) => [flag, { type: o.type === 'boolean' ? ('boolean' as const) : ('string' as const) }]),
  );
  let values: Record<string, string | boolean | Array<string | boolean> | undefined>;
  let positionals: string[];
  let tokens: Array<{ kind: string; name?: string }>;
  const wanted = command.positionals ?? [];
  try {
    ({ values, positionals, tokens } = parseArgs({ args, options, strict: true, allowPositionals: wanted.length > 0, tokens: true }));
  } catch {
    return undefined;
  }
  // parseArgs keeps the last of a repeated option; yargs collects them (the handler decides).
  const flags = tokens.filter((t) => t.kind === 'option').map((t) => t.name);
  if (new Set(flags).size !== flags.length) return undefined;
  // A missing or extra operand, or one that looks like an option (`-x` after `--`), is for yargs to explain.
  if (positionals.length !== wanted.length || positionals.some((p) => p.startsWith('-'))) return undefined;
  const out: ParsedOptions = {};
  wanted.forEach((p, i) => (out[camelCase(p.name)] = positionals[i]));
  for (const [flag, value] of Object.entries(values)) {
    if (value === undefined || Array.isArray(value)) return undefined;
    if (command.options[flag].type === 'number') {
      const n = Number(value);
      if (value === '' || !Number.isFinite(n)) return undefined;
      out[camelCase(flag)] = n;
    } else {
      out[camelCase(flag)] = value;
    }
  }
  return out;
}

/** Fills in the defaults of options the command line left out. */
export async function withDefaults(command: CommandSpec, parsed: ParsedOptions): Promise<ParsedOptions> {
  for (const [flag, o] of Object.entries(command.options))
    if (parsed[camelCase(flag)] === undefined && o.defaultValue) parsed[camelCase(flag)] = await o.defaultValue();
  return parsed;
}
