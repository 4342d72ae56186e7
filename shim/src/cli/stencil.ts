// The `stencil` admin CLI.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { runChecks } from '../hypervisor/check.js';
import { ConfigError, defaultConfig } from '../../../runtime-config/src/config.js';
import { VmError } from '../hypervisor/errors.js';
import { CLEAN_EXITS, vmRun } from './vm-run.js';


/** `stencil check` exit codes, used by the Makefile to pick where VM tests run. */
export const CHECK_OK = 0;
export const CHECK_FAILED = 1;
export const CHECK_NEEDS_EMULATED_HOST = 2;

async function main(): Promise<number> {
  let code = 0;
  await yargs(hideBin(process.argv))
    .scriptName('stencil')
    .strict()
    .command(
      'check',
      'probe this host: can its /dev/kvm run stock guests, and what else is missing',
      (y) =>
        y
          .option('json', { type: 'boolean', default: false, describe: 'print the report as JSON' })
          .option('memory-dir', { type: 'string', default: defaultConfig().hypervisor.memoryDir }),
      (argv) => {
        const report = runChecks(argv.memoryDir);
        if (argv.json) {
          process.stdout.write(JSON.stringify(report) + '\n');
        } else {
          for (const item of report.items)
            process.stdout.write(`${item.ok ? 'ok  ' : 'FAIL'} ${item.name.padEnd(17)} ${item.detail}\n`);
          process.stdout.write(
            report.needsEmulatedHost
              ? 'result: /dev/kvm here cannot run stock guests; VM tests and the demo use the emulated host\n'
              : 'result: VMs run directly on this host\n',
          );
        }
        const hardFailures = report.items.filter((i) => !i.ok && i.name !== 'kvm-stock-guests');
        code = hardFailures.length ? CHECK_FAILED : report.needsEmulatedHost ? CHECK_NEEDS_EMULATED_HOST : CHECK_OK;
      },
    )
    .command('vm', 'run and inspect single VMs', (y) =>
      y
        .command(
          'run',
          'boot a VM with its serial console on stdout; exits when the guest powers off or reboots',
          (r) =>
            r
              .option('kernel', { type: 'string', describe: 'vmlinux or bzImage (default: the built guest kernel)' })
              .option('initrd', { type: 'string', describe: 'initramfs (default: the built guest initramfs)' })
              .option('cmdline', { type: 'string', describe: 'appended to the default kernel command line' })
              .option('config', { type: 'string', describe: 'configuration.toml (default: $STENCIL_CONFIG, /etc/stencil/configuration.toml)' })
              .option('memory', { type: 'string', describe: 'guest RAM, e.g. 256M or 1G (default: configuration, 256M)' })
              .option('vcpus', { type: 'number', describe: 'vCPU count (default: configuration, 1)' })
              .option('memory-dir', { type: 'string', describe: 'tmpfs directory for the RAM file (default: configuration, /dev/shm/stencil)' })
              .option('name', { type: 'string' }),
          async (argv) => {
            const exit = await vmRun(argv);
            process.stderr.write(`stencil: VM exited: ${exit.reason}${exit.detail ? ` (${exit.detail})` : ''}\n`);
            code = CLEAN_EXITS.has(exit.reason) ? 0 : 1;
          },
        )
        .demandCommand(1),
    )
    .demandCommand(1)
    .fail((msg, err, y) => {
      if (err) throw err;
      process.stderr.write(`${y.help()}\n\n${msg}\n`);
      process.exit(CHECK_FAILED);
    })
    .parseAsync();
  return code;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    const e = err as Error;
    const known = e instanceof VmError ? `${e.message} [${e.nativeCode}]` : e instanceof ConfigError ? e.message : undefined;
    process.stderr.write(`stencil: ${known ?? e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
