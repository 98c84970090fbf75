/**
 * A pool of contexts and the router that picks one per call:
 *   1. an explicit `context`,
 *   2. else a `key`: a stable hash picks the same context every time (per-key state stays put),
 *   3. else the calling JS thread's home context (scheduler affinity), spilling to the
 *      least-loaded context when the home one has more than `spillAt` calls in flight.
 */
import { PythonStream, type IterateOptions } from "./stream.ts";
import { BunpyError } from "./errors.ts";
import type { KwargsObject } from "./wire-format.ts";
import { checkCallOptions, Context, type CallOptions, type CloseOptions, type ContextMode, type SandboxOption } from "./context.ts";
import type { MainInterpreter } from "./main-interpreter.ts";
import { threadId } from "node:worker_threads";
import { listen, type ListenOptions, type Listener } from "./listen.ts";

export interface PoolOptions {
  /** Number of contexts; defaults to the number of cores. */
  size?: number | undefined;
  /** As py.context's; with "process" a context whose host process died is replaced too. */
  mode?: ContextMode | undefined;
  /** The sandbox policy of every context of the pool. */
  sandbox?: SandboxOption | undefined;
  /** In-flight calls on the home context before calls spill to the least-loaded one
      (default 1: the home context is used while it is idle). */
  spillAt?: number | undefined;
}

export interface PoolCallOptions extends CallOptions {
  /** Calls with the same key always run on the same context. */
  key?: string | number | undefined;
  /** Run on this context of the pool. */
  context?: Context | undefined;
}

export interface PoolStats {
  inFlight: number;
  completed: number;
  /** Contexts started in place of dead ones. */
  replaced: number;
  contexts: { state: string; inFlight: number; completed: number }[];
}

/** FNV-1a over the key's UTF-16 code units: stable across runs and processes. */
function hashKey(key: string | number): number {
  const s = typeof key === "number" ? `#${key}` : key;
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** More contexts than this is never faster, and a typo such as 1e6 must not start a million
    interpreters. */
const MAX_POOL_SIZE = 1024;

export class Pool {
  /** The pool's contexts; a dead one is replaced in place. */
  readonly contexts: Context[];
  readonly mode: ContextMode;
  private readonly home: number;
  private readonly spillAt: number;
  private closed = false;
  private readonly rt: MainInterpreter;
  private readonly options: PoolOptions;
  /** Code run with execAll, run again in a replacement context. */
  private readonly setup: string[] = [];
  /** What else a replacement context needs after that (a listener's socket, say). */
  private readonly preparers = new Set<(ctx: Context) => Promise<void>>();
  /** Run once the pool's contexts are closed (onClose). */
  private readonly closeHooks = new Set<() => void>();
  private replacements = 0;

  private constructor(rt: MainInterpreter, contexts: Context[], options: PoolOptions) {
    this.rt = rt;
    this.options = options;
    const spillAt = options.spillAt ?? 1;
    this.contexts = contexts;
    this.mode = contexts[0]!.mode;
    this.spillAt = spillAt;
    // Each JS thread (main thread, Bun Workers) has its own pool objects; spread homes by thread.
    this.home = threadId % contexts.length;
    for (const c of contexts) c.onDied((dead) => void this.replace(dead));
  }

  /** Replacements under way (close() waits for them), and their contexts once started
      (close() closes them: their execAll code may run for long). */
  private readonly replacing = new Set<Promise<void>>();
  private readonly starting = new Set<Context>();

  private replace(dead: Context): Promise<void> {
    const p = this.replaceNow(dead).finally(() => this.replacing.delete(p));
    this.replacing.add(p);
    return p;
  }

  /** Starts a context in place of a dead one and runs the pool's execAll code in it. */
  private async replaceNow(dead: Context): Promise<void> {
    const i = this.contexts.indexOf(dead);
    if (i < 0 || this.closed) return;
    await dead.close().catch(() => {}); // it is dead: closing only joins its thread
    if (this.closed) return;
    let fresh: Context | undefined;
    try {
      fresh = await Context.start(this.rt, { mode: this.options.mode, sandbox: this.options.sandbox });
      this.starting.add(fresh);
      if (this.closed) throw new BunpyError("the pool is closed");
      // execAll code added while this one starts runs too: the catch-up after the
      // preparers ends with no await before the context takes its place below
      let ran = 0;
      while (ran < this.setup.length) await fresh.exec(this.setup[ran++]!);
      for (const prepare of this.preparers) await prepare(fresh);
      while (ran < this.setup.length) await fresh.exec(this.setup[ran++]!);
    } catch (e) {
      await fresh?.close().catch(() => {});
      if (!this.closed) console.error("bunpy: a pool could not replace a dead context:", e);
      return;
    } finally {
      if (fresh !== undefined) this.starting.delete(fresh);
    }
    if (this.closed) return void (await fresh.close().catch(() => {}));
    fresh.onDied((d) => void this.replace(d));
    this.contexts[i] = fresh;
    this.replacements++;
  }

  static async start(rt: MainInterpreter, options: PoolOptions = {}): Promise<Pool> {
    const size = options.size ?? navigator.hardwareConcurrency ?? 1;
    if (!Number.isInteger(size) || size < 1) throw new TypeError(`py.pool({ size }): size must be a positive integer, got ${size}`);
    if (size > MAX_POOL_SIZE)
      throw new RangeError(`py.pool({ size }): size must be at most ${MAX_POOL_SIZE} (each context is an interpreter with its own thread), got ${size}`);
    const started = await Promise.allSettled(Array.from({ length: size }, () => Context.start(rt, { mode: options.mode, sandbox: options.sandbox })));
    const contexts = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const failed = started.find((r) => r.status === "rejected") as PromiseRejectedResult | undefined;
    if (failed) {
      await Promise.all(contexts.map((c) => c.close()));
      throw failed.reason;
    }
    return new Pool(rt, contexts, options);
  }

  /** The context a call with these options goes to. */
  pick(options: PoolCallOptions = {}): Context {
    if (this.closed) throw new BunpyError("the pool is closed");
    checkCallOptions(options, "pool call options", "{ key?, context?, timeout?, signal? }");
    if (options.context !== undefined) {
      if (!this.contexts.includes(options.context)) throw new BunpyError("that context does not belong to this pool");
      return options.context;
    }
    const n = this.contexts.length;
    if (options.key !== undefined) return this.contexts[hashKey(options.key) % n]!; // a dead one is replaced in place
    const home = this.contexts[this.home]!;
    if (home.inFlight < this.spillAt && !home.isDead) return home;
    let best: Context | undefined;
    for (const c of this.contexts) if (!c.isDead && (best === undefined || c.inFlight < best.inFlight)) best = c;
    return best ?? home;
  }

  /** ctx.iterate on one context of the pool (options.key picks it, as for call): every
      pull of the stream goes to that context. */
  iterate(module: string, fn: string, args: readonly unknown[] = [], kwargs?: KwargsObject, options?: IterateOptions & { key?: string | number }): PythonStream {
    const key = options?.key ?? `bunpy-stream-${++this.streams}`;
    return new PythonStream((m, f, a, k) => this.call(m, f, a, k as KwargsObject | undefined, { key }), module, fn, args, kwargs, options);
  }
  private streams = 0;

  call(module: string, fn: string, args: readonly unknown[] = [], kwargs?: KwargsObject, options?: PoolCallOptions): Promise<any> {
    let ctx: Context;
    try {
      ctx = this.pick(options);
    } catch (e) {
      return Promise.reject(e);
    }
    return ctx.call(module, fn, args, kwargs, options);
  }

  /** Runs statements in every context (e.g. to define functions everywhere). */
  async execAll(code: string): Promise<void> {
    this.setup.push(code);
    await Promise.all(this.contexts.map((c) => c.exec(code)));
  }

  /**
   * A listening socket in every context, all on one port (SO_REUSEPORT): the kernel spreads
   * connections over the contexts, each served by `protocol` ("module:Factory", an asyncio
   * protocol factory) on its context's loop. See docs/contexts.md "Listeners".
   */
  listen(options: ListenOptions): Promise<Listener> {
    if (this.closed) return Promise.reject(new BunpyError("the pool is closed"));
    // a hand-off passes fds through JS, and a dead context's fd is shut down from the Bun
    // process: neither means anything for fds that live in a host process
    if (this.mode === "process")
      return Promise.reject(new BunpyError('pool.listen() does not support mode "process" pools yet (their sockets live in other processes)'));
    if (this.mode === "owngil" && this.options.sandbox !== undefined)
      return Promise.reject(
        new BunpyError("pool.listen() does not support sandboxed owngil pools: their contexts have fd tables of their own (see docs/sandbox.md)"),
      );
    return listen(this.rt, this, options);
  }

  /** Runs `prepare` in every context that replaces a dead one, after the execAll code;
      returns the function that stops it. */
  onReplace(prepare: (ctx: Context) => Promise<void>): () => void {
    this.preparers.add(prepare);
    return () => void this.preparers.delete(prepare);
  }

  stats(): PoolStats {
    const contexts = this.contexts.map((c) => ({ state: c.state, inFlight: c.inFlight, completed: c.completed }));
    return {
      replaced: this.replacements,
      inFlight: contexts.reduce((a, c) => a + c.inFlight, 0),
      completed: contexts.reduce((a, c) => a + c.completed, 0),
      contexts,
    };
  }

  /** Closes every context (see Context.close: `timeout` is each one's grace period). */
  async close(options?: CloseOptions): Promise<void> {
    this.closed = true;
    // with the contexts replacing dead ones: none may outlive the pool's close
    await Promise.all([...this.contexts, ...this.starting].map((c) => c.close(options)));
    await Promise.all(this.replacing);
    for (const hook of [...this.closeHooks]) hook();
    this.closeHooks.clear();
  }

  /** Runs `hook` once the pool's contexts are closed (pool.listen lets go of its relay
      there: a listener not closed itself would keep the pool alive); returns the function
      that unregisters it. */
  onClose(hook: () => void): () => void {
    this.closeHooks.add(hook);
    return () => void this.closeHooks.delete(hook);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
