/**
 * bunpy.send messages as an async iterator. Values that arrive while nobody awaits are
 * queued here in JS memory, without limit: the shim's back-pressure bounds what waits for
 * the JS thread, not what a slow consumer of this iterator leaves unread.
 */
export function messageIterator(subscribe: (listener: (value: unknown) => void) => () => void): AsyncIterableIterator<unknown> {
  const queued: unknown[] = [];
  const waiting: ((r: IteratorResult<unknown>) => void)[] = [];
  let done = false;
  const stop = subscribe((value) => {
    const w = waiting.shift();
    if (w) w({ value, done: false });
    else queued.push(value);
  });
  const finish = (): IteratorResult<unknown> => {
    if (!done) {
      done = true;
      stop();
      for (const w of waiting.splice(0)) w({ value: undefined, done: true });
    }
    return { value: undefined, done: true };
  };
  return {
    next(): Promise<IteratorResult<unknown>> {
      if (queued.length) return Promise.resolve({ value: queued.shift(), done: false });
      if (done) return Promise.resolve({ value: undefined, done: true });
      return new Promise((resolve) => waiting.push(resolve));
    },
    return(): Promise<IteratorResult<unknown>> {
      return Promise.resolve(finish());
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}
