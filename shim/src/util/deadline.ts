// One way to bound a wait: the work's result, or the caller's error once the deadline passes. The
// timer goes as soon as either happens, so it never holds the process open.

/** `work`'s outcome, or a rejection with `late()` if it has not settled within `ms`. */
export async function withDeadline<T>(work: Promise<T>, ms: number, late: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(late()), ms)));
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
