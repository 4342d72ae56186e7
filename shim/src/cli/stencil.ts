// The `stencil` admin CLI. A command line that names a subcommand with only its own options is
// parsed by node:util's parseArgs (built in: nothing to load); anything else (--help, a mistake,
// no subcommand) goes to yargs, loaded only then for its help and error messages. yargs alone
// took ~150 ms to load natively (more than Node's own start) and seconds under TCG. Both parsers
// are built from the one option table in commands.ts.
import { camelCase, CHECK_FAILED, CliError, COMMANDS, type CommandSpec, GROUPS, type ParsedOptions } from './commands.js';
import { parseFast, withDefaults } from './fast-parse.js';

export { CHECK_FAILED, CHECK_NEEDS_EMULATED_HOST, CHECK_OK } from './commands.js';

/** The slow path: yargs, for help, errors and anything parseFast would not decide. */
async function runWithYargs(args: string[]): Promise<number> {
  const { default: yargs } = await import('yargs');
  type Argv = ReturnType<typeof yargs>;
  const defaults = new Map<CommandSpec, Record<string, unknown>>();
  for (const c of COMMANDS) {
    const d: Record<string, unknown> = {};
    for (const [flag, o] of Object.entries(c.options)) if (o.defaultValue) d[flag] = await o.defaultValue();
    defaults.set(c, d);
  }
  let code = 0;
  const define = (y: Argv, c: CommandSpec, word: string): Argv =>
    y.command(
      [word, ...(c.positionals ?? []).map((p) => `<${p.name}>`)].join(' '),
      c.describe,
      (b) => {
        for (const p of c.positionals ?? []) b.positional(p.name, { type: 'string', describe: p.describe });
        for (const [flag, o] of Object.entries(c.options))
          b.option(flag, { type: o.type, describe: o.describe, default: defaults.get(c)?.[flag] });
        return b;
      },
      async (argv) => {
        const picked: ParsedOptions = {};
        for (const name of [...(c.positionals ?? []).map((p) => p.name), ...Object.keys(c.options)])
          picked[camelCase(name)] = argv[camelCase(name)] as ParsedOptions[string];
        code = await c.run(picked);
      },
    );
  let y: Argv = yargs(args).scriptName('stencil').strict();
  for (const c of COMMANDS.filter((x) => x.path.length === 1)) y = define(y, c, c.path[0]);
  for (const [group, describe] of Object.entries(GROUPS)) {
    y = y.command(group, describe, (g) => {
      for (const c of COMMANDS.filter((x) => x.path.length === 2 && x.path[0] === group)) define(g, c, c.path[1]);
      return g.demandCommand(1);
    });
  }
  await y
    .demandCommand(1)
    .fail((msg, err, parser) => {
      if (err) throw err;
      process.stderr.write(`${parser.help()}\n\n${msg}\n`);
      process.exit(CHECK_FAILED);
    })
    .parseAsync();
  return code;
}

async function main(args: string[]): Promise<number> {
  const command = COMMANDS.find((c) => c.path.every((word, i) => args[i] === word));
  const parsed = command && parseFast(command, args.slice(command.path.length));
  if (command && parsed) return command.run(await withDefaults(command, parsed));
  return runWithYargs(args);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  async (err: unknown) => {
    const e = err as Error;
    const [{ VmError }, { ConfigError }] = await Promise.all([
      import('../hypervisor/errors.js'),
      import('../../../runtime-config/src/config.js'),
    ]);
    const known =
      e instanceof VmError ? `${e.message} [${e.nativeCode}]` : e instanceof ConfigError || e instanceof CliError ? e.message : undefined;
    process.stderr.write(`stencil: ${known ?? e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
