/**
 * Streams both ways (see docs/data.md):
 *  - ctx.iterate / pool.iterate: a Python generator, iterator or async generator run in a
 *    context, pulled by JS in batches (python/bunpy/_stream.py: start, take, close).
 *  - py.iter(x): a JS iterable, async iterable or ReadableStream passed to Python, which
 *    pulls batches from a JS function registered under a private name.
 */
import { ConversionError } from "./errors.ts";
import { PyRef } from "./context.ts";

export interface IterateOptions {
  /** Items per round trip (default 1024). A batch also ends once ~1 MiB of bytes/str items
      were gathered. 1: Python advances exactly one item per pull. */
  batch?: number;
}

/** What iterate needs from a Context or a Pool: its call, always reaching one context. */
export type StreamCall = (module: string, fn: string, args: readonly unknown[], kwargs?: Record<string, unknown>) => Promise<any>;

const DEFAULT_BATCH = 1024;
const DONE: IteratorResult<unknown> = Object.freeze({ done: true, value: undefined }) as IteratorResult<unknown>;

/** Streams JS let go of without finishing: their generators are closed in Python. */
const abandoned = new FinalizationRegistry<{ call: StreamCall; sid: number }>((s) => {
  if (s.sid !== 0) s.call("bunpy._stream", "close", [s.sid]).catch(() => {});
});

function batchOf(options: IterateOptions | undefined, fallback: number): number {
  const n = options?.batch ?? fallback;
  if (!Number.isInteger(n) || n < 1 || n > 1 << 24) throw new TypeError("iterate: options.batch must be an integer from 1 to 16777216");
  return n;
}

/** A lazy async iterator over what module.fn(*args, **kwargs) returns in a context. */
export class PythonStream implements AsyncIterableIterator<unknown>, AsyncDisposable {
  private items: unknown[] = [];
  private pos = 0;
  private done = false;
  private started = false;
  private tail: Promise<unknown> | undefined;
  private pending = 0;
  private readonly batch: number;
  private readonly held: { call: StreamCall; sid: number };

  constructor(
    private readonly call: StreamCall,
    private readonly module: string,
    private readonly fn: string,
    private readonly args: readonly unknown[],
    private readonly kwargs: Record<string, unknown> | undefined,
    options?: IterateOptions,
  ) {
    if (typeof module !== "string" || typeof fn !== "string") throw new TypeError("iterate(module, fn, args, kwargs): module and fn must be strings");
    if (!Array.isArray(args)) throw new TypeError("iterate(module, fn, args, kwargs): args must be an array");
    this.batch = batchOf(options, DEFAULT_BATCH);
    this.held = { call, sid: 0 };
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private take(): IteratorResult<unknown> {
    const value = this.items[this.pos];
    this.items[this.pos++] = undefined; // the batch does not keep what was handed out
    return { done: false, value };
  }

  next(): Promise<IteratorResult<unknown>> {
    if (this.pending === 0 && this.pos < this.items.length) return Promise.resolve(this.take());
    // pulls run one after another: a next() called before the last one settled waits for
    // it. `pending` drops inside the chain, before the caller's await resumes, so the next
    // call takes the fast path above again.
    this.pending++;
    const run = (this.tail ?? Promise.resolve()).then(() => this.step()).then(
      (r) => {
        this.pending--;
        return r;
      },
      (e) => {
        this.pending--;
        throw e;
      },
    );
    this.tail = run.then(
      () => {},
      () => {},
    );
    return run;
  }

  private async step(): Promise<IteratorResult<unknown>> {
    for (;;) {
      if (this.pos < this.items.length) return this.take();
      if (this.done) return DONE;
      let items: unknown[], done: boolean;
      try {
        if (!this.started) {
          this.started = true;
          abandoned.register(this, this.held, this.held);
          // the call itself goes the usual way (the context resolves module and fn); what it
          // returned comes back as a PyRef unless it was a plain value
          const result = await this.call(this.module, this.fn, this.args, this.kwargs);
          if (!(result instanceof PyRef)) {
            if (!Array.isArray(result))
              throw new TypeError(`iterate: ${this.module}.${this.fn}() returned ${result === null ? "None" : typeof result}, not an iterable`);
            [items, done] = [result, true];
          } else {
            let sid: number;
            try {
              [sid, items, done] = await this.call("bunpy._stream", "begin", [result, this.batch]);
            } finally {
              result.release();
            }
            this.held.sid = sid;
          }
        } else {
          [items, done] = await this.call("bunpy._stream", "take", [this.held.sid, this.batch]);
        }
      } catch (e) {
        this.finish(); // Python dropped the stream when it raised
        throw e;
      }
      this.items = items;
      this.pos = 0;
      if (done) this.finish();
    }
  }

  private finish(): void {
    this.done = true;
    this.held.sid = 0;
    abandoned.unregister(this.held);
  }

  /** Ends the stream early: the generator is closed in Python (its finally blocks run). */
  async return(value?: unknown): Promise<IteratorResult<unknown>> {
    if (this.pending !== 0) await this.tail;
    const sid = this.held.sid;
    this.items = [];
    this.pos = 0;
    if (!this.done) {
      this.finish();
      if (sid !== 0) await this.call("bunpy._stream", "close", [sid]);
    }
    return { done: true, value };
  }

  async throw(error?: unknown): Promise<IteratorResult<unknown>> {
    await this.return();
    throw error;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.return();
  }
}

// ------------------------------------------------------------------ JS -> Python --

/** An argument marked with py.iter(x): Python gets an iterator pulling from x on demand. */
export class IterArg {
  readonly isAsync: boolean;
  readonly batch: number;
  constructor(
    readonly source: Iterable<unknown> | AsyncIterable<unknown> | ReadableStream<unknown>,
    options?: IterateOptions,
  ) {
    const s = source as { [Symbol.iterator]?: unknown; [Symbol.asyncIterator]?: unknown };
    if (source === null || (typeof source !== "object" && typeof source !== "function"))
      throw new TypeError("py.iter(x): x must be an iterable, an async iterable or a ReadableStream");
    if (typeof s[Symbol.asyncIterator] === "function" || source instanceof ReadableStream) this.isAsync = true;
    else if (typeof s[Symbol.iterator] === "function") this.isAsync = false;
    else throw new TypeError("py.iter(x): x must be an iterable, an async iterable or a ReadableStream");
    // async sources: one item per pull unless asked (a batch waits until it is full)
    this.batch = batchOf(options, this.isAsync ? 1 : DEFAULT_BATCH);
  }
}

let nextStream = 1;

/**
 * The function Python pulls from (registered as `name`): cmd 0 gives [items, done], cmd 1
 * ends the source (its return() runs). Unregisters itself when the source ends.
 */
export function registerSource(arg: IterArg, registered: Map<string, Function>, toMain: boolean): string {
  if (arg.isAsync && toMain)
    throw new ConversionError(
      "py.iter(x): an async iterable or ReadableStream can only be passed to a context (the main interpreter calls JS synchronously)",
    );
  const name = `__bunpy_iter_${nextStream++}`;
  const n = arg.batch;
  const source = arg.source as AsyncIterable<unknown> & Iterable<unknown>;
  let it: (Iterator<unknown> & AsyncIterator<unknown>) | undefined;
  const end = () => registered.delete(name);
  const pull = arg.isAsync
    ? async (cmd: number) => {
        it ??= source[Symbol.asyncIterator]() as any;
        if (cmd === 1) {
          end();
          await it!.return?.();
          return null;
        }
        const items: unknown[] = [];
        try {
          while (items.length < n) {
            const r = await it!.next();
            if (r.done) {
              end();
              return [items, true];
            }
            items.push(r.value);
          }
        } catch (e) {
          end();
          throw e;
        }
        return [items, false];
      }
    : (cmd: number) => {
        it ??= source[Symbol.iterator]() as any;
        if (cmd === 1) {
          end();
          it!.return?.();
          return null;
        }
        const items: unknown[] = [];
        try {
          while (items.length < n) {
            const r = it!.next();
            if (r.done) {
              end();
              return [items, true];
            }
            items.push(r.value);
          }
        } catch (e) {
          end();
          throw e;
        }
        return [items, false];
      };
  registered.set(name, pull);
  return name;
}
