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
  try {
    values = parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch {
    return undefined;
  }
  const out: ParsedOptions = {};
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
