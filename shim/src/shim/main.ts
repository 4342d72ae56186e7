// The Node side of containerd-shim-stencil-v2, run by the native launcher (shim/launcher/, which
// answers `start` itself): `delete`, `serve`, the daemon `start` spawns, and `spare`, a daemon
// loaded ahead of its pod (spare.ts). Each action's code is loaded only when needed.
import { FlagError, parseFlags, type ShimFlags } from './flags.js';

function fail(message: string): never {
  // Only on failure: containerd puts start's combined output into its error message.
  process.stderr.write(`containerd-shim-stencil-v2: ${message}\n`);
  process.exit(1);
}

async function main(): Promise<void> {
  if (process.argv.at(-1) === 'spare') {
    const { runSpare } = await import('./spare.js');
    return runSpare(process.argv.slice(2));
  }
  let flags: ShimFlags;
  try {
    flags = parseFlags(process.argv.slice(2));
  } catch (err) {
    fail(err instanceof FlagError ? err.message : String(err));
  }
  switch (flags.action) {
    case 'start':
      return fail('start is answered by the native launcher (build/bin/containerd-shim-stencil-v2, made by `make build`), which runs this only for other actions');
    case 'delete': {
      const { deleteTask, encodeDeleteResponse } = await import('./delete.js');
      const result = await deleteTask(flags, flags.bundle || process.cwd());
      for (const what of result.removed) process.stderr.write(`removed ${what}\n`);
      process.stdout.write(encodeDeleteResponse(result));
      process.exit(0);
      break;
    }
    case 'serve': {
      const { serve } = await import('./daemon.js');
      await serve(flags, process.cwd());
      break;
    }
    case 'info':
      fail('-info is not supported (Stencil reports no runtime features)');
  }
}

main().catch((err: unknown) => fail(err instanceof Error ? err.message : String(err)));
