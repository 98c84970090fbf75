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
  /** Items per round trip. Default: 1024 at first, doubling up to 16384 while JS keeps
      waiting for batches (JS -> Python sources: 1024, async ones 1). A batch also ends
      once ~1 MiB of bytes/str items were gathered. */
  batch?: number;
  /** ctx.iterate: fetch the next batch while JS consumes the one in hand (default true), so
      Python runs up to one batch ahead of JS. false: Python advances only when JS pulls
      past the batch in hand (with batch 1: exactly one item per pull). */
  prefetch?: boolean;
}

/** What iterate needs from a Context or a Pool: its call, always reaching one context. */
export type StreamCall = (module: string, fn: string, args: readonly unknown[], kwargs?: Record<string, unknown>) => Promise<any>;

const DEFAULT_BATCH = 1024;
const MAX_BATCH = 16384;
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

type Batch = [unknown[], boolean];
const ignore = (): void => {};

/** A lazy async iterator over what module.fn(*args, **kwargs) returns in a context. */
export class PythonStream implements AsyncIterableIterator<unknown>, AsyncDisposable {
  private items: unknown[] = [];
  private pos = 0;
  private done = false;
  private started = false;
  private tail: Promise<unknown> | undefined;
  private pending = 0;
  private batch: number;
  /** The batch size grows while JS waits for batches (no batch size was given). */
  private readonly grow: boolean;
  private readonly prefetch: boolean;
  /** The next batch, asked for while JS consumes `items` (prefetch), with whether it had
      arrived when JS needed it. */
  private ahead: Promise<Batch> | undefined;
  private arrived = false;
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
    if (options?.prefetch !== undefined && typeof options.prefetch !== "boolean") throw new TypeError("iterate: options.prefetch must be a boolean");
    this.batch = batchOf(options, DEFAULT_BATCH);
    this.grow = options?.batch === undefined;
    this.prefetch = options?.prefetch !== false;
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
    this.tail = run.then(ignore, ignore);
    return run;
  }

  /** Asks Python for the next batch now; JS picks it up when it reaches the end of `items`. */
  private fetchAhead(): void {
    this.arrived = false;
    const p = this.call("bunpy._stream", "take", [this.held.sid, this.batch]) as Promise<Batch>;
    p.then(() => {
      this.arrived = true;
    }, ignore); // an error waits for JS to reach it
    this.ahead = p;
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
        } else if (this.ahead !== undefined) {
          const ahead = this.ahead;
          // JS waited for this batch: bigger batches take fewer round trips
          if (this.grow && !this.arrived && this.batch < MAX_BATCH) this.batch *= 2;
          this.ahead = undefined;
          [items, done] = await ahead;
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
      else if (this.prefetch) this.fetchAhead();
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
      // a batch asked for ahead is let go first: an async generator cannot be closed while
      // it runs; an error it raised no longer matters
      const ahead = this.ahead;
      this.ahead = undefined;
      if (ahead !== undefined) await ahead.then(ignore, ignore);
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
  // not guessable: any context may call a registered name, and this one reads the source
  const name = `__bunpy_iter_${nextStream++}_${crypto.randomUUID()}`;
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
