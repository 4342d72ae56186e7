// Progress of a template build on the terminal: a cli-progress bar over the builder's steps
// (TEMPLATE_BUILD_STEPS) with the elapsed time, or one plain line per step when stdout is not a
// terminal (CI logs, tests), where a redrawn bar would only be noise.
import cliProgress from 'cli-progress';
import { TEMPLATE_BUILD_STEPS } from '../factory/pod-template.js';

export interface BuildProgress {
  /** Reports a step (one of TEMPLATE_BUILD_STEPS, or any other note such as waiting for a lock). */
  step(name: string): void;
  /** Ends the display, full when the build `succeeded` (the bar stays drawn); safe to call twice. */
  stop(succeeded: boolean): void;
}

const seconds = (since: number) => `${((Date.now() - since) / 1000).toFixed(1)} s`;

export function buildProgress(label: string, out: NodeJS.WriteStream = process.stdout): BuildProgress {
  const started = Date.now();
  const total = TEMPLATE_BUILD_STEPS.length;
  const stepIndex = (name: string) => (TEMPLATE_BUILD_STEPS as readonly string[]).indexOf(name);
  if (!out.isTTY) {
    return {
      step: (name) => {
        const i = stepIndex(name);
        out.write(`${label}: ${i >= 0 ? `[${i + 1}/${total}] ` : ''}${name} (${seconds(started)})\n`);
      },
      stop: () => undefined,
    };
  }
  const bar = new cliProgress.SingleBar(
    { format: `${label} [{bar}] {value}/{total} {step} | {duration_formatted}`, stream: out, barsize: 20, fps: 5 },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { step: 'starting' });
  let stopped = false;
  return {
    step: (name) => {
      const i = stepIndex(name);
      // A step's number counts the steps finished before it: the bar fills as each one ends.
      if (i >= 0) bar.update(i, { step: name });
      else bar.update({ step: name });
    },
    stop: (succeeded) => {
      if (stopped) return;
      stopped = true;
      if (succeeded) bar.update(total, { step: 'saved' });
      bar.stop();
    },
  };
}
