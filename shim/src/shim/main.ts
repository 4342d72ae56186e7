// Entry point of containerd-shim-stencil-v2. containerd runs `start` and `delete`; `serve` is the
// daemon `start` spawns. Each action's code is loaded only when needed, so `start` (on the
// critical path of every container start) stays quick.
import { FlagError, parseFlags, type ShimFlags } from './flags.js';

async function readStdin(): Promise<Buffer> {
  if (process.stdin.isTTY) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function fail(message: string): never {
  // Only on failure: containerd puts start's combined output into its error message.
  process.stderr.write(`containerd-shim-stencil-v2: ${message}\n`);
  process.exit(1);
}

async function main(): Promise<void> {
  let flags: ShimFlags;
  try {
    flags = parseFlags(process.argv.slice(2));
  } catch (err) {
    fail(err instanceof FlagError ? err.message : String(err));
  }
  switch (flags.action) {
    case 'start': {
      const { start } = await import('./start.js');
      const address = await start(flags, process.cwd(), await readStdin());
      process.stdout.write(address);
      process.exit(0);
      break;
    }
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
