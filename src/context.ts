/**
 * Contexts: Python running on its own OS thread, with its own interpreter (owngil) or as
 * a thread of the main interpreter (worker). Calls are asynchronous: JS encodes the
 * request into its port buffer, the shim copies it onto the context's queue, and the
 * result comes back through the port's completion queue and doorbell.
 *
 * One ContextHub per JS thread owns the doorbell (a threadsafe JSCallback), the table of
 * pending requests, and a ref'd timer that keeps Bun alive only while calls are in flight.
 */
import { BunpyError, CallTimeoutError, ContextClosedError, ConversionError, errorFromRecord, Status } from "./errors.ts";
export { CallTimeoutError, ContextClosedError } from "./errors.ts";
import { Kwargs, type Wire, type WireHooks } from "./codec.ts";
import { makeDoorbell, type JSCallback } from "./ffi.ts";
import type { MainInterpreter } from "./main-interpreter.ts";
import { stateOf } from "./proxy.ts";
import { policyValue, type SandboxPolicy } from "./sandbox.ts";

export type ContextMode = "owngil" | "worker";
export type { SandboxPolicy } from "./sandbox.ts";

export interface ContextOptions {
  /** "owngil" (default on Python ≥ 3.12): a subinterpreter with its own GIL, truly parallel.
      "worker": a thread of the main interpreter, for extensions such as numpy. */
  mode?: ContextMode;
  /** What Python code in this context may do (a guard against accidents, not a security
      boundary). Forking without exec is refused everywhere, always. */
  sandbox?: SandboxPolicy;
}

export interface CallOptions {
  /** Milliseconds before the call is interrupted inside Python and rejected. */
  timeout?: number;
  /** Aborting it interrupts the call and rejects it with the signal's reason. */
  signal?: AbortSignal;
}

const enum Req {
  Call = 1,
  Eval = 2,
  Exec = 3,
  RefCall = 4,
  RefGetattr = 5,
  RefToJS = 6,
  RefDrop = 7,
}

/** Reads an error record (see shim/errors.c) at the wire's position. */
export function readError(w: Wire, status: number): Error {
  return errorFromRecord(status, () => w.readValue(), (message) => new ContextClosedError(message));
}

/** Receives bunpy.send(channel, value); `from` is the sending context (undefined: main). */
export type MessageListener = (value: any, from: Context | undefined) => void;

interface Pending {
  resolve(value: unknown): void;
  reject(error: unknown): void;
  context: Context | undefined;
  request: number;
  settled: boolean;
  timer?: ReturnType<typeof setTimeout>;
  signal?: AbortSignal;
  onAbort?: () => void;
}

/** The per-JS-thread side of all contexts. */
export class ContextHub {
  private readonly doorbell: JSCallback;
  /** Pending requests by id: ids are slot numbers, reused through a free list (no hashing). */
  private readonly slots: (Pending | undefined)[] = [undefined];
  private readonly free: number[] = [];
  private count = 0;
  private keepAlive: ReturnType<typeof setInterval> | undefined;
  private readonly dropped = new Map<Context, number[]>();
  private dropScheduled = false;
  /** Contexts of this thread by their C pointer (calls and messages name their origin). */
  readonly contexts = new Map<number, Context>();
  private readonly listeners = new Map<string, Set<MessageListener>>();
  readonly refs = new FinalizationRegistry<{ context: Context; handle: number }>((r) => this.dropRef(r.context, r.handle));

  constructor(readonly rt: MainInterpreter) {
    this.doorbell = makeDoorbell(() => this.drain());
    rt.lib.bp_port_set_doorbell(rt.io, this.doorbell.ptr as unknown as number);
    // Messages the main interpreter sent before there was a doorbell rang nothing: take
    // them now, or the queue would stay non-empty and no later push would ring.
    queueMicrotask(() => this.drain());
  }

  /** A request id: a free slot (0 is never used). Must be followed by track() or release(). */
  newId(): number {
    return this.free.length !== 0 ? this.free.pop()! : this.slots.push(undefined) - 1;
  }

  /** Gives back an id that was never tracked (the submit failed). */
  releaseId(id: number): void {
    this.free.push(id);
  }

  track(id: number, p: Pending): void {
    this.slots[id] = p;
    // Threadsafe callbacks do not keep Bun alive: a ref'd timer does while calls are out.
    if (this.count++ === 0 && this.keepAlive === undefined) this.keepAlive = setInterval(() => {}, 1 << 30);
  }

  private untrack(id: number): void {
    this.slots[id] = undefined;
    this.free.push(id);
    if (--this.count === 0 && this.keepAlive !== undefined) {
      clearInterval(this.keepAlive);
      this.keepAlive = undefined;
    }
  }

  /** Rejects a call now and interrupts it in its context; its completion is ignored later. */
  cancel(id: number, reason: unknown): void {
    const p = this.slots[id];
    if (p === undefined || p.settled) return;
    this.settle(p);
    p.context?.finished();
    if (p.context !== undefined && p.request !== 0) p.context.interrupt(p.request);
    p.reject(reason);
  }

  private settle(p: Pending): void {
    p.settled = true;
    if (p.timer !== undefined) clearTimeout(p.timer);
    if (p.signal !== undefined && p.onAbort !== undefined) p.signal.removeEventListener("abort", p.onAbort);
  }

  /** Rung by the doorbell: settles every completed call, delivers messages, answers calls. */
  drain(): void {
    this.settleCompleted();
    this.serveCalls(false);
  }

  /** drain() for a JS thread blocked in ctx.callSync: Promises cannot be awaited there. */
  drainBlocked(): void {
    this.settleCompleted();
    this.serveCalls(true);
  }

  /**
   * Settles every completed call and delivers messages. Everything is decoded before any
   * user code runs: a message listener may call Python, which reuses the buffer.
   */
  private settleCompleted(): void {
    const settled: (() => void)[] = [];
    // A few drains per wake-up, then the event loop gets a turn: senders that refill the
    // queue as fast as it empties must not freeze it (the rest is taken on the next turn).
    let more = false;
    for (let round = 0; round < 4; round++) {
      if (this.decodeCompleted(settled) === 0) break;
      more = round === 3;
    }
    for (const run of settled) run();
    if (more && !this.drainScheduled) {
      this.drainScheduled = true;
      setImmediate(() => {
        this.drainScheduled = false;
        this.drain();
      });
    }
  }

  private drainScheduled = false;

  /** Decodes one drain's worth of completions into `settled`; returns how many there were. */
  private decodeCompleted(settled: (() => void)[]): number {
    const { lib, io, wire } = this.rt;
    const count = lib.bp_port_drain(io);
    if (count <= 0) return 0;
    wire.refresh();
    let pos = 4;
    const saved = wire.hooks;
    try {
      for (let i = 0; i < count; i++) {
        wire.pos = pos;
        const id = wire.readU32();
        const status = wire.readI32();
        const len = wire.readU32();
        const start = wire.pos;
        pos = start + len;
        if (id === 0) {
          settled.push(this.decodeMessage(wire, start, saved));
          continue;
        }
        const p = this.slots[id];
        if (p === undefined) continue;
        this.untrack(id);
        const ctx = p.context;
        wire.hooks = ctx?.hooks ?? saved;
        wire.pos = start;
        let outcome: { ok: true; value: unknown } | { ok: false; error: unknown };
        try {
          outcome = status === Status.Ok ? { ok: true, value: wire.readValue() } : { ok: false, error: readError(wire, status) };
        } catch (e) {
          outcome = { ok: false, error: e };
        }
        // a call rejected earlier (timeout, abort) was decoded only so that any PyRef in
        // its result is released by the garbage collector
        if (p.settled) continue;
        this.settle(p);
        ctx?.finished();
        settled.push(() => {
          if (status === Status.Died) ctx?.died();
          if (outcome.ok) p.resolve(outcome.value);
          else p.reject(outcome.error);
        });
      }
    } finally {
      wire.hooks = saved;
    }
    return count;
  }

  /** Decodes a bunpy.send message (INT53 origin context, STR channel, value); returns its delivery. */
  private decodeMessage(wire: Wire, start: number, mainHooks: WireHooks): () => void {
    wire.pos = start;
    const from = this.contexts.get(wire.readValue() as number);
    wire.hooks = from?.hooks ?? mainHooks;
    const channel = wire.readValue() as string;
    const value = wire.readValue();
    return () => this.deliver(channel, value, from);
  }

  private deliver(channel: string, value: unknown, from: Context | undefined): void {
    const set = this.listeners.get(channel);
    if (set === undefined) return;
    for (const listener of set) {
      try {
        listener(value, from);
      } catch (e) {
        queueMicrotask(() => {
          throw e; // a listener's error is reported like any uncaught error, not swallowed
        });
      }
    }
  }

  on(channel: string, listener: MessageListener): () => void {
    let set = this.listeners.get(channel);
    if (set === undefined) this.listeners.set(channel, (set = new Set()));
    set.add(listener);
    this.drain(); // messages sent before anyone listened (the main interpreter queues them)
    return () => {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(channel);
    };
  }

  /**
   * Python -> JS calls from contexts: every call is decoded first (running one may reuse
   * the buffer), then run. `blocked`: the JS thread is inside ctx.callSync and cannot wait
   * for a Promise.
   */
  serveCalls(blocked: boolean): void {
    const { lib, io, wire } = this.rt;
    const count = lib.bp_port_take_calls(io);
    if (count <= 0) return;
    wire.refresh();
    const saved = wire.hooks;
    const calls: { call: number; context: Context; name: string; args: unknown[]; kwargs: unknown }[] = [];
    const orphans: number[] = [];
    const failed: { call: number; error: unknown }[] = [];
    try {
      let pos = 4;
      for (let i = 0; i < count; i++) {
        wire.pos = pos;
        const call = wire.readPointer();
        const context = this.contexts.get(wire.readPointer());
        const len = wire.readU32();
        pos = wire.pos + len;
        if (context === undefined) {
          // its context was closed meanwhile: nobody can use the answer, but the shim
          // must get one to free the call
          orphans.push(call);
          continue;
        }
        wire.hooks = context.hooks;
        try {
          const name = wire.readValue() as string;
          const args = wire.readValue() as unknown[];
          const kwargs = wire.readValue();
          calls.push({ call, context, name, args, kwargs });
        } catch (e) {
          failed.push({ call, error: e });
        }
      }
    } finally {
      wire.hooks = saved;
    }
    for (const call of orphans) this.replyError(call, new Error("the calling context was closed"), false);
    for (const f of failed) this.replyError(f.call, f.error, false);
    for (const c of calls) this.runCall(c.call, c.context, c.name, c.args, c.kwargs, blocked);
  }

  /** JS functions called by contexts that have not answered yet: py.close() must wait. */
  activeCalls = 0;

  private runCall(call: number, context: Context, name: string, args: unknown[], kwargs: unknown, blocked: boolean): void {
    this.activeCalls++;
    let value: unknown;
    try {
      const fn = this.rt.registered.get(name);
      if (fn === undefined) throw new ReferenceError(`no JS function is registered as "${name}" (use py.register)`);
      if (kwargs !== null) args.push(kwargs);
      value = fn(...args);
    } catch (e) {
      return this.replyError(call, e);
    }
    if (value instanceof Promise) {
      if (blocked) {
        value.catch(() => {});
        return this.replyError(
          call,
          new TypeError("the JS function returned a Promise while its JS thread is blocked in ctx.callSync; it cannot be awaited there"),
        );
      }
      value.then(
        (v) => this.reply(call, context, v),
        (e) => this.replyError(call, e),
      );
      return;
    }
    this.reply(call, context, value);
  }

  private reply(call: number, context: Context, value: unknown): void {
    this.activeCalls--;
    const { lib, io, wire } = this.rt;
    const saved = wire.hooks;
    wire.hooks = context.hooks;
    try {
      wire.begin();
      wire.writeTop(value);
    } catch (e) {
      wire.hooks = saved;
      this.activeCalls++; // replyError counts it down again
      return this.replyError(call, e);
    }
    wire.hooks = saved;
    lib.bp_call_reply(call, io, Status.Ok, wire.pos);
  }

  private replyError(call: number, e: unknown, counted = true): void {
    if (counted) this.activeCalls--;
    const status = this.rt.writeThrown(e);
    this.rt.lib.bp_call_reply(call, this.rt.io, status, this.rt.wire.pos);
  }

  dropRef(context: Context, handle: number): void {
    if (!context.isOpen) return;
    let list = this.dropped.get(context);
    if (list === undefined) this.dropped.set(context, (list = []));
    list.push(handle);
    if (!this.dropScheduled) {
      this.dropScheduled = true;
      queueMicrotask(() => this.flushDrops());
    }
  }

  private flushDrops(): void {
    this.dropScheduled = false;
    for (const [context, handles] of this.dropped) context.sendDrops(handles);
    this.dropped.clear();
  }
}

const hubs = new WeakMap<MainInterpreter, ContextHub>();
export function existingHub(rt: MainInterpreter): ContextHub | undefined {
  return hubs.get(rt);
}
export function hubOf(rt: MainInterpreter): ContextHub {
  let hub = hubs.get(rt);
  if (hub === undefined) hubs.set(rt, (hub = new ContextHub(rt)));
  return hub;
}

/** A Python object that stays in its context; use it through async calls. */
export class PyRef {
  #released = false;
  constructor(
    readonly context: Context,
    readonly handle: number,
  ) {}

  /** Calls the object: `await ref.call(1, 2, py.kw({ x: 3 }))`. */
  call(...args: unknown[]): Promise<any> {
    const last = args[args.length - 1];
    const kwargs = last instanceof Kwargs ? last.values : undefined;
    const positional = kwargs === undefined ? args : args.slice(0, -1);
    return this.context.request(Req.RefCall, (w) => {
      w.writeHandle(this.live());
      w.writeArgs(positional, kwargs);
    });
  }

  /** Reads an attribute: converted when it has a JS form, else another PyRef. */
  get(attr: string): Promise<any> {
    return this.context.request(Req.RefGetattr, (w) => {
      w.writeHandle(this.live());
      w.writeString(attr);
    });
  }

  /** Deep conversion to JS values. */
  toJS(): Promise<any> {
    return this.context.request(Req.RefToJS, (w) => w.writeHandle(this.live()));
  }

  private live(): number {
    if (this.#released) throw new BunpyError("this PyRef was released");
    return this.handle;
  }

  /** True once release() ran (or the PyRef was disposed). */
  get released(): boolean {
    return this.#released;
  }

  /** Releases the Python object now (it is also released when the PyRef is collected). */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    const hub = this.context.hub;
    hub.refs.unregister(this);
    hub.dropRef(this.context, this.handle);
  }

  [Symbol.dispose](): void {
    this.release();
  }

  toString(): string {
    return `PyRef(${this.context.mode} context, ${this.#released ? "released" : `0x${this.handle.toString(16)}`})`;
  }

  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return this.toString();
  }
}

/** bp_ctx_call_sync: a context called into JS while the call waited (shim/bunpy.h). */
const CALLS_PENDING = 1;

const DEAD_STATE = 5; // CTX_DEAD in shim/context.h

const STATE_NAMES = ["starting", "running", "closing", "ending", "closed", "dead"] as const;

export class Context {
  readonly mode: ContextMode;
  readonly hub: ContextHub;
  readonly hooks: WireHooks;
  #ptr: number;
  #closing: Promise<void> | undefined;
  #freed = false;
  #inFlight = 0;
  #errorListeners = new Set<(e: unknown) => void>();

  /** @internal use py.context() */
  constructor(hub: ContextHub, ptr: number, mode: ContextMode) {
    this.hub = hub;
    this.#ptr = ptr;
    this.mode = mode;
    const self = this;
    this.hooks = {
      handleOf(value: object): number | undefined {
        if (value instanceof PyRef) {
          if (value.context !== self) throw new ConversionError("a PyRef from another context cannot be passed here");
          if (value.released) throw new ConversionError("a released PyRef cannot be passed to Python");
          return value.handle;
        }
        if (stateOf(value) !== undefined)
          throw new ConversionError("a main-interpreter PyObject cannot be passed to a context (pass plain values)");
        return undefined;
      },
      functionId(): number {
        throw new ConversionError("JS functions cannot be passed to a context");
      },
      forgetFunctions(): void {},
      proxyFor(handle: number): unknown {
        const ref = new PyRef(self, handle);
        hub.refs.register(ref, { context: self, handle }, ref);
        return ref;
      },
    };
  }

  /** Starts a context; resolves once its interpreter is ready. */
  static start(rt: MainInterpreter, options: ContextOptions = {}): Promise<Context> {
    const hub = hubOf(rt);
    const mode = options.mode ?? (rt.info.minor >= 12 ? "owngil" : "worker");
    if (mode !== "owngil" && mode !== "worker")
      return Promise.reject(new TypeError(`py.context({ mode }): mode must be "owngil" or "worker", got ${String(mode)}`));
    if (mode === "owngil" && rt.info.minor < 12)
      return Promise.reject(
        new BunpyError(`owngil contexts need Python 3.12 or newer (this is ${rt.info.version}); use { mode: "worker" }`),
      );
    let policyLen: number;
    try {
      const policy = policyValue(options.sandbox);
      rt.wire.begin();
      rt.wire.writeTop(policy);
      policyLen = rt.wire.pos;
    } catch (e) {
      return Promise.reject(e);
    }
    const id = hub.newId();
    const ptr = rt.lib.bp_ctx_new(rt.io, mode === "owngil" ? 0 : 1, id, policyLen);
    if (!ptr) hub.releaseId(id);
    if (!ptr) return Promise.reject(new BunpyError("could not start a context (Python not running, or out of memory)"));
    const ctx = new Context(hub, ptr, mode);
    hub.contexts.set(ptr, ctx);
    return new Promise<Context>((resolve, reject) => {
      hub.track(id, {
        resolve: () => resolve(ctx),
        reject: (e) => {
          ctx.#free();
          reject(e);
        },
        context: undefined,
        request: 0,
        settled: false,
      });
    });
  }

  /** "starting" | "running" | "closing" | "ending" | "closed" | "dead" */
  get state(): (typeof STATE_NAMES)[number] {
    if (this.#freed) return "closed";
    return STATE_NAMES[this.hub.rt.lib.bp_ctx_state(this.#ptr)] ?? "dead";
  }

  get isOpen(): boolean {
    return this.#closing === undefined && !this.#freed;
  }

  /** Calls in flight on this context. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Requests this context has finished since it started. */
  get completed(): number {
    return this.#freed ? 0 : this.hub.rt.lib.bp_ctx_completed(this.#ptr);
  }

  /** @internal */
  finished(): void {
    this.#inFlight--;
  }

  #diedListeners = new Set<(ctx: Context) => void>();
  #reportedDeath = false;

  /** True once the context's thread died (a cheap check; `state` asks the shim). */
  get isDead(): boolean {
    return this.#reportedDeath;
  }

  /** @internal a completion said the thread ended: report it once. */
  died(): void {
    if (this.#reportedDeath) return;
    this.#reportedDeath = true;
    for (const l of this.#diedListeners) l(this);
    if (this.#diedListeners.size === 0) console.error("bunpy: a context's thread ended unexpectedly; it is dead");
  }

  /** Called once if the context's thread dies (a pool uses it to replace the context). */
  onDied(listener: (ctx: Context) => void): () => void {
    this.#diedListeners.add(listener);
    return () => this.#diedListeners.delete(listener);
  }

  /** Listens for errors of cast() calls. Without a listener they are printed. */
  onError(listener: (e: unknown) => void): () => void {
    this.#errorListeners.add(listener);
    return () => this.#errorListeners.delete(listener);
  }

  private encode(op: Req, write: (w: Wire) => void): number {
    if (!this.isOpen) throw new ContextClosedError("the context is closed");
    const w = this.hub.rt.wire;
    const saved = w.hooks;
    w.hooks = this.hooks;
    try {
      w.begin();
      write(w);
      return w.pos;
    } finally {
      w.hooks = saved;
    }
  }

  /** @internal sends a request and returns its promise. */
  request(op: Req, write: (w: Wire) => void, options: CallOptions = {}): Promise<any> {
    let len: number;
    try {
      if (options.signal?.aborted) throw options.signal.reason ?? new BunpyError("aborted");
      len = this.encode(op, write);
    } catch (e) {
      return Promise.reject(e);
    }
    const { lib, io } = this.hub.rt;
    const id = this.hub.newId();
    const req = lib.bp_ctx_submit(this.#ptr, io, id, op, len);
    if (!req) {
      this.hub.releaseId(id);
      if (lib.bp_ctx_state(this.#ptr) === DEAD_STATE) this.died();
      return Promise.reject(new ContextClosedError("the context is closed"));
    }
    this.#inFlight++;
    return new Promise((resolve, reject) => {
      const p: Pending = { resolve, reject, context: this, request: req, settled: false };
      this.hub.track(id, p);
      const { timeout, signal } = options;
      if (timeout !== undefined) {
        p.timer = setTimeout(
          () => this.hub.cancel(id, new CallTimeoutError(`the call did not finish within ${timeout} ms; it was interrupted`)),
          timeout,
        );
      }
      if (signal !== undefined) {
        p.signal = signal;
        p.onAbort = () => this.hub.cancel(id, signal.reason ?? new BunpyError("aborted"));
        signal.addEventListener("abort", p.onAbort, { once: true });
      }
    });
  }

  /** @internal */
  interrupt(request: number): void {
    if (!this.#freed) this.hub.rt.lib.bp_ctx_cancel(this.#ptr, request);
  }

  /** @internal */
  sendDrops(handles: number[]): void {
    if (!this.isOpen) return;
    try {
      const len = this.encode(Req.RefDrop, (w) => w.writeHandleList(handles));
      this.hub.rt.lib.bp_ctx_submit(this.#ptr, this.hub.rt.io, 0, Req.RefDrop, len);
    } catch {
      // the context is closing: its interpreter frees everything anyway
    }
  }

  /** Calls module.fn(*args, **kwargs) in this context. `"__main__"` is the context's own. */
  call(module: string, fn: string, args: readonly unknown[] = [], kwargs?: Record<string, unknown>, options?: CallOptions): Promise<any> {
    if (!Array.isArray(args)) return Promise.reject(new TypeError("ctx.call(module, fn, args): args must be an array"));
    return this.request(Req.Call, (w) => {
      w.writeString(module);
      w.writeString(fn);
      w.writeArgs(args, kwargs);
    }, options);
  }

  /** Evaluates an expression in this context's __main__. */
  eval(expression: string, options?: CallOptions): Promise<any> {
    return this.request(Req.Eval, (w) => w.writeString(expression), options);
  }

  /** Runs statements in this context's __main__. */
  async exec(code: string, options?: CallOptions): Promise<void> {
    await this.request(Req.Exec, (w) => w.writeString(code), options);
  }

  /** Fire and forget: errors go to onError listeners (or are printed), never lost. */
  cast(module: string, fn: string, args: readonly unknown[] = [], kwargs?: Record<string, unknown>): void {
    this.call(module, fn, args, kwargs).catch((e) => {
      if (this.#errorListeners.size === 0) console.error(`bunpy: ctx.cast(${module}.${fn}) failed:`, e);
      for (const l of this.#errorListeners) l(e);
    });
  }

  /** Blocks the JS thread until the call has finished in the context. */
  callSync(module: string, fn: string, args: readonly unknown[] = [], kwargs?: Record<string, unknown>): any {
    const len = this.encode(Req.Call, (w) => {
      w.writeString(module);
      w.writeString(fn);
      w.writeArgs(args, kwargs);
    });
    const { lib, io, wire } = this.hub.rt;
    let status = lib.bp_ctx_call_sync(this.#ptr, io, Req.Call, len);
    while (status === CALLS_PENDING) {
      // a context called JS while we wait: answer here, the JS thread is blocked anyway
      wire.refresh();
      wire.pos = 0;
      const request = wire.readPointer();
      this.hub.drainBlocked();
      status = lib.bp_ctx_sync_wait(this.#ptr, io, request);
    }
    if (status === Status.Died) this.died();
    const saved = wire.hooks;
    wire.hooks = this.hooks;
    try {
      wire.refresh();
      wire.pos = 0;
      if (status !== Status.Ok) throw readError(wire, status);
      return wire.readValue();
    } finally {
      wire.hooks = saved;
    }
  }

  /** Finishes what is queued (later requests are rejected), then ends the interpreter. */
  close(): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    if (this.#freed) return Promise.resolve();
    if (this.state === "dead") {
      this.#free(); // its thread is gone: nothing to end, just join it
      return (this.#closing = Promise.resolve());
    }
    const { lib, io } = this.hub.rt;
    const id = this.hub.newId();
    const rc = lib.bp_ctx_close(this.#ptr, io, id);
    if (rc !== 0) {
      this.hub.releaseId(id);
      this.#free();
      return (this.#closing = Promise.resolve());
    }
    this.#closing = new Promise<void>((resolve, reject) => {
      this.hub.track(id, {
        resolve: () => {
          this.#free();
          resolve();
        },
        reject: (e) => {
          this.#free();
          reject(e);
        },
        context: undefined,
        request: 0,
        settled: false,
      });
    });
    return this.#closing;
  }

  #free(): void {
    if (this.#freed) return;
    this.#freed = true;
    this.hub.contexts.delete(this.#ptr);
    this.hub.rt.lib.bp_ctx_free(this.#ptr);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
