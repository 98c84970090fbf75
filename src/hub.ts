/**
 * The per-JS-thread side of all contexts: the doorbell (a threadsafe JSCallback the shim
 * rings from context threads), the table of pending requests, delivery of bunpy.send
 * messages, answers to Python -> JS calls from contexts, and a ref'd timer that keeps Bun
 * alive only while calls are in flight.
 */
import { ContextClosedError, errorFromRecord, Status } from "./errors.ts";
import type { Wire } from "./codec.ts";
import type { WireHooks } from "./wire-format.ts";
import { makeDoorbell, napiEnv, type JSCallback } from "./ffi.ts";
import { packageRoot } from "./build.ts";
import { join } from "node:path";
import { isMainThread } from "node:worker_threads";
import type { MainInterpreter } from "./main-interpreter.ts";
import type { Context } from "./context.ts";

/** Reads an error record (see shim/errors.c) at the wire's position. */
export function readError(w: Wire, status: number): Error {
  return errorFromRecord(status, () => w.readValue(), (message) => new ContextClosedError(message));
}

/** Receives bunpy.send(channel, value); `from` is the sending context (undefined: main). */
export type MessageListener = (value: any, from: Context | undefined) => void;

export interface Pending {
  resolve(value: unknown): void;
  reject(error: unknown): void;
  context: Context | undefined;
  request: number;
  settled: boolean;
  timer?: ReturnType<typeof setTimeout>;
  signal?: AbortSignal;
  onAbort?: () => void;
  /** its context was abandoned: rejected, no longer keeping Bun alive, the slot kept until
      the (unlikely) completion comes */
  detached?: boolean;
}

/** How long (ms) the JS thread looks for completions before it waits for the doorbell. */
const POLL_MS = 0.03;

const noop = (): void => {};

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
    // A Bun Worker's doorbell is code Bun frees with the Worker's VM, before its OS thread
    // ends, and a terminated Worker runs no JS that could say so: its port is closed from
    // the VM's cleanup hooks instead (shim/io.c). Without an env (no TinyCC) the end of the
    // OS thread still closes it, later.
    if (!isMainThread) {
      const env = napiEnv(join(packageRoot, "shim", "napi-env.c"));
      if (env !== 0) rt.lib.bp_port_watch_env(rt.io, env);
    }
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
    this.pollBriefly();
  }

  /**
   * Right after a call is sent, or a context's call into JS is taken, look for completions
   * and calls from setImmediate for a few tens of µs instead of letting Bun's event loop go
   * to sleep: waking it through the doorbell costs ~15 µs, more than a short call takes.
   * The doorbell still rings for anything that comes later.
   */
  private pollBriefly(): void {
    this.pollUntil = performance.now() + POLL_MS;
    if (this.polling) return;
    this.polling = true;
    setImmediate(this.poll);
  }

  /**
   * While JS polls, completions ring no doorbell (bp_port_poll tells the shim), and a poll
   * that finds nothing yields the core first. Stopping tells the shim again and looks one
   * last time: what completes after that rings the doorbell.
   */
  private readonly poll = (): void => {
    const { lib, io } = this.rt;
    try {
      if (lib.bp_port_poll(io, 1) !== 0) this.drain();
    } finally {
      // whatever happened, either the poll goes on or the shim hears that it stopped
      if (this.count > 0 && performance.now() < this.pollUntil) setImmediate(this.poll);
      else {
        this.polling = false;
        if (lib.bp_port_poll(io, 0) !== 0) this.drain();
      }
    }
  };

  private polling = false;
  private pollUntil = 0;

  private untrack(id: number): void {
    const detached = this.slots[id]?.detached === true;
    this.slots[id] = undefined;
    this.free.push(id);
    if (!detached) this.uncount();
  }

  private uncount(): void {
    if (--this.count === 0 && this.keepAlive !== undefined) {
      clearInterval(this.keepAlive);
      this.keepAlive = undefined;
    }
  }

  /**
   * A context was abandoned at close (its thread would not stop): its calls still pending
   * reject with `error` and stop keeping Bun alive. Their slots stay reserved: the stuck
   * thread might still complete them one day, and a reused id must not receive that.
   */
  abandon(context: Context, error: () => unknown): void {
    for (const p of this.slots) {
      if (p === undefined || p.context !== context || p.detached) continue;
      p.detached = true;
      this.uncount();
      if (p.settled) continue;
      this.settle(p);
      context.finished();
      p.reject(error());
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
    // called from a getter while a message is written (py.on() drains): the buffer is taken
    if (this.rt.wire.writing !== 0) return void queueMicrotask(() => this.drain());
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
    // A few drains per wake-up, then the event loop gets a turn: senders that refill the
    // queue as fast as it empties must not freeze it (the rest is taken on the next turn).
    let more = false;
    for (let round = 0; round < 4; round++) {
      if (this.decodeCompleted() === 0) break;
      more = round === 3;
    }
    this.runDeliveries();
    if (more && !this.drainScheduled) {
      this.drainScheduled = true;
      setImmediate(() => {
        this.drainScheduled = false;
        this.drain();
      });
    }
  }

  private drainScheduled = false;

  /** Decoded settlements and messages not yet run, in arrival order. One queue for every
      drain: a listener that calls ctx.callSync drains again inside itself, and that inner
      drain must run what the outer one decoded before its own (else messages reorder). */
  private deliveries: (() => void)[] = [];
  private delivered = 0;

  private runDeliveries(): void {
    const queue = this.deliveries;
    while (this.delivered < queue.length) {
      const run = queue[this.delivered]!;
      queue[this.delivered++] = noop; // taken: a nested drain will not run it again
      run();
    }
    queue.length = 0;
    this.delivered = 0;
  }

  /** Decodes one drain's worth of completions into `deliveries`; returns how many there were. */
  private decodeCompleted(): number {
    const settled = this.deliveries;
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
          // a message a process context's host forged (its bytes are the host's) may not
          // decode: dropped, and the rest of this drain (other contexts' results) goes on
          try {
            settled.push(this.decodeMessage(wire, start, saved));
          } catch (e) {
            settled.push(() => console.error(`bunpy: a bunpy.send message was dropped: it could not be decoded (${(e as Error).message})`));
          }
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
          if (status === Status.Died) ctx?.died(outcome.ok ? undefined : outcome.error);
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
    // the listeners of this moment: a Set's iteration visits what is added meanwhile, so a
    // listener that re-subscribed itself (off, then on) was called again for this message,
    // without end; one removed meanwhile is not called
    if (set.size === 1) {
      for (const listener of set) return this.run(listener, value, from); // the first only
    }
    for (const listener of [...set]) if (this.listeners.get(channel)?.has(listener)) this.run(listener, value, from);
  }

  private run(listener: MessageListener, value: unknown, from: Context | undefined): void {
    try {
      listener(value, from);
    } catch (e) {
      queueMicrotask(() => {
        throw e; // a listener's error is reported like any uncaught error, not swallowed
      });
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
    // a context calling JS often calls again right after the answer: look for it briefly
    if (!blocked) this.pollBriefly();
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
    for (const call of orphans) this.replyError(call, new Error("the calling context was closed"), undefined);
    for (const f of failed) this.replyError(f.call, f.error, undefined);
    for (const c of calls) this.runCall(c.call, c.context, c.name, c.args, c.kwargs, blocked);
  }

  /**
   * JS functions called by open contexts that have not answered yet: py.close() must wait.
   * Those of closed contexts do not count: nothing waits for their answers any more (a
   * context's close ends its waits for JS).
   */
  get activeCalls(): number {
    let n = 0;
    for (const c of this.contexts.values()) n += c.jsCalls;
    return n;
  }

  private runCall(call: number, context: Context, name: string, args: unknown[], kwargs: unknown, blocked: boolean): void {
    context.jsCalls++;
    let value: unknown;
    try {
      value = this.rt.callbacks.callRegistered(name, args, kwargs, context);
    } catch (e) {
      return this.replyError(call, e, context);
    }
    // what the function returned is user code too: `instanceof` runs a Proxy's
    // getPrototypeOf trap (a revoked Proxy throws), and a Promise's own `then` may throw or
    // call both of its callbacks. A throw here would leave the call unanswered (Python
    // waits for good, py.close() too) and be reported uncaught: it is the call's error.
    let isPromise: boolean;
    try {
      isPromise = value instanceof Promise;
    } catch (e) {
      return this.replyError(call, e, context);
    }
    if (isPromise) {
      // a Promise of our own, resolved with it: its `then` is looked up and called in a
      // job of their own (a throw rejects), and only the first settlement counts
      const settled = new Promise<unknown>((resolve) => resolve(value));
      if (blocked) {
        settled.catch(() => {});
        return this.replyError(
          call,
          new TypeError("the JS function returned a Promise while its JS thread is blocked in ctx.callSync; it cannot be awaited there"),
          context,
        );
      }
      settled.then(
        (v) => this.reply(call, context, v),
        (e) => this.replyError(call, e, context),
      );
      return;
    }
    this.reply(call, context, value);
  }

  /** Answers a call with its value (or, if the value cannot cross, with that error); the
      call counts as active until the answer is sent. */
  private reply(call: number, context: Context, value: unknown): void {
    const { lib, io, wire } = this.rt;
    const saved = wire.hooks;
    wire.hooks = context.hooks;
    let failed = false, error: unknown;
    try {
      wire.begin();
      wire.writeTop(value);
    } catch (e) {
      failed = true;
      error = e;
    } finally {
      wire.hooks = saved;
    }
    if (failed) return this.replyError(call, error, context);
    context.jsCalls--;
    lib.bp_call_reply(call, io, Status.Ok, wire.pos);
  }

  private replyError(call: number, e: unknown, context: Context | undefined): void {
    if (context !== undefined) context.jsCalls--;
    const status = this.rt.callbacks.writeThrown(e);
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

