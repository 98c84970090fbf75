/**
 * Contexts: Python running on its own OS thread, with its own interpreter (owngil) or as
 * a thread of the main interpreter (worker). Calls are asynchronous: JS encodes the
 * request into its port buffer, the shim copies it onto the context's queue, and the
 * result comes back through the port's completion queue and doorbell.
 *
 * What every context of a JS thread shares (doorbell, pending table, messages, answers to
 * Python -> JS calls) is the ContextHub in hub.ts.
 */
import { PythonStream, type IterateOptions } from "./stream.ts";
import { BunpyError, CallTimeoutError, ContextClosedError, ContextDiedError, ConversionError, Status } from "./errors.ts";
export { CallTimeoutError, ContextClosedError, ContextDiedError } from "./errors.ts";
import { Kwargs, type KwargsObject, type WireHooks } from "./wire-format.ts";
import type { MainInterpreter } from "./main-interpreter.ts";
import { stateOf } from "./proxy.ts";
import { hubOf, readError, type ContextHub, type Pending } from "./hub.ts";
export type { MessageListener } from "./hub.ts";
import { policyValue, processLimits, resolveStrict, type ProcessLimits, type SandboxOption, type SandboxPolicy } from "./sandbox.ts";
import { ensureShim, hostPath, packageRoot } from "./build.ts";
import { join } from "node:path";

export type ContextMode = "owngil" | "worker" | "process";

/** The bunpy-host command line of a process context (see shim/host.c). */
const hostOf = new WeakMap<MainInterpreter, string>();
function hostArgv(rt: MainInterpreter, limits: ProcessLimits, sandbox: SandboxPolicy | undefined): Buffer {
  let host = hostOf.get(rt);
  if (host === undefined) {
    const shim = ensureShim(rt.info);
    const found = hostPath(shim);
    if (found === undefined)
      throw new BunpyError(`process contexts need bunpy-host next to the shim (${shim}); this shim was built without it`);
    hostOf.set(rt, (host = `${found}\0${shim}`));
  }
  const [exe, shim] = host.split("\0") as [string, string];
  const args = [exe, "--libpython", rt.info.libpython, "--shim", shim, "--program", rt.info.executable];
  args.push("--python-dir", join(packageRoot, "python"), "--parent", String(process.pid));
  if (limits.memoryLimit !== undefined) args.push("--memory", String(limits.memoryLimit));
  if (limits.cpuTime !== undefined) args.push("--cpu", String(limits.cpuTime));
  if (limits.maxFiles !== undefined) args.push("--files", String(limits.maxFiles));
  // its own empty network namespace only when the policy refuses sockets
  if (sandbox?.sockets !== false) args.push("--network");
  // a private /tmp would hide what lives there: directories of `files`, and what the host
  // needs to run at all (bunpy installed in a project under /tmp, a Python or venv there)
  const underTmp = (f: string) => f === "/tmp" || f.startsWith("/tmp/");
  const needed = [packageRoot, exe, shim, rt.info.executable, rt.info.libpython, ...(sandbox?.files ?? []), ...(sandbox?.readFiles ?? [])];
  if (needed.some(underTmp)) args.push("--shared-tmp");
  return Buffer.from(args.join("\0") + "\0\0");
}
export type { SandboxOption, SandboxPolicy } from "./sandbox.ts";

export interface ContextOptions {
  /** "owngil" (default on Python ≥ 3.12): a subinterpreter with its own GIL, truly parallel.
      "worker": a thread of the main interpreter, for extensions such as numpy.
      "process": Python in a separate bunpy-host process (same API): a crash, `os._exit` or
      memory exhaustion there kills only the context (ContextDiedError); see docs/contexts.md. */
  mode?: ContextMode | undefined;
  /** What Python code in this context may do (a guard against accidents, not a security
      boundary). Forking without exec is refused everywhere, always. `"strict"`: every rule
      refuses unless listed (see SandboxPolicy.strict). */
  sandbox?: SandboxOption | undefined;
}

export interface CloseOptions {
  /** Milliseconds that code still running (and queued calls) get to finish before
      close() interrupts it; default 5000. See docs/contexts.md, "Closing". */
  timeout?: number | undefined;
}

/** close()'s default grace period (ms). */
export const CLOSE_GRACE_MS = 5000;
/** After the grace period, how long (ms) interrupts are repeated before the context is
    abandoned (BP_ABANDON_MS in shim/context.h). */
export const CLOSE_ABANDON_MS = 2000;

export interface CallOptions {
  /** Milliseconds before the call is interrupted inside Python and rejected. */
  timeout?: number | undefined;
  /** Aborting it interrupts the call and rejects it with the signal's reason. */
  signal?: AbortSignal | undefined;
}

/** Or'ed into bp_ctx_new's mode (BP_CTX_OWN_FDS): a sandboxed owngil context's threads
    get an fd table of their own (shim/fdtable.c). */
const OWN_FDS = 0x100;

/** Main interpreters (JS threads) that imported threading before their first worker context. */
const threadingImported = new WeakSet<MainInterpreter>();

/** setTimeout's longest delay: a longer one fires at once */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** What `what` (call options, or a pool's, which add key and context) must be. Pool calls
    check once when they pick, and the context's call again (a few comparisons). */
export function checkCallOptions(options: CallOptions, what = "call options", fields = "{ timeout?, signal? }"): { timeout: number | undefined; signal: AbortSignal | undefined } {
  if (typeof options !== "object" || options === null)
    throw new TypeError(`${what} must be an object (${fields}), got ${options === null ? "null" : typeof options}`);
  // read once: a getter may answer differently the next time (the values checked are used)
  const { timeout, signal } = options;
  if (timeout !== undefined && !(typeof timeout === "number" && timeout >= 0 && timeout <= MAX_TIMEOUT_MS))
    throw new TypeError(`call options: timeout must be a number of ms from 0 to ${MAX_TIMEOUT_MS}, got ${String(timeout)}`);
  if (signal !== undefined && !(signal instanceof AbortSignal))
    throw new TypeError("call options: signal must be an AbortSignal");
  return { timeout, signal };
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
    return this.context.request(Req.RefCall, undefined, this, positional, kwargs);
  }

  /** Reads an attribute: converted when it has a JS form, else another PyRef. */
  get(attr: string): Promise<any> {
    return this.context.request(Req.RefGetattr, undefined, this, attr);
  }

  /** Deep conversion to JS values. */
  toJS(): Promise<any> {
    return this.context.request(Req.RefToJS, undefined, this);
  }

  /** @internal the handle, or a BunpyError once released */
  live(): number {
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

/** bp_ctx_state's answers (shim/context.h), then "abandoned", which only JS reports. */
const STATE_NAMES = ["starting", "running", "closing", "ending", "closed", "dead", "abandoned"] as const;

export class Context {
  readonly mode: ContextMode;
  readonly hub: ContextHub;
  readonly hooks: WireHooks;
  #ptr: number;
  #closing: Promise<void> | undefined;
  #freed = false;
  #inFlight = 0;
  /** @internal JS functions this context called that have not answered (hub.ts) */
  jsCalls = 0;
  /** @internal The sandbox's `jsFunctions`: the registered JS functions this context may
      call (bunpy's own `__bunpy_*` ones check their caller themselves); undefined: any. */
  jsFunctions: ReadonlySet<string> | undefined;
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
      otherProcess: mode === "process",
    };
  }

  /** Starts a context; resolves once its interpreter is ready. */
  static start(rt: MainInterpreter, options: ContextOptions = {}): Promise<Context> {
    const hub = hubOf(rt);
    const mode = options.mode ?? (rt.info.minor >= 12 ? "owngil" : "worker");
    if (mode !== "owngil" && mode !== "worker" && mode !== "process")
      return Promise.reject(
        new TypeError(`py.context({ mode }): mode must be "owngil", "worker" or "process", got ${String(mode)}`),
      );
    if (mode === "owngil" && rt.info.minor < 12)
      return Promise.reject(
        new BunpyError(`owngil contexts need Python 3.12 or newer (this is ${rt.info.version}); use { mode: "worker" }`),
      );
    // from a getter or Proxy trap while a message is written: keep that message intact
    if (rt.wire.writing !== 0) return rt.wire.nested(() => Context.start(rt, options));
    // threading.main_thread() is whichever thread imports threading first: a worker
    // context's thread (which imports it at start) must not become the main interpreter's
    // main thread, so this JS thread imports it first
    if (mode === "worker" && !threadingImported.has(rt)) {
      rt.exec("import threading");
      threadingImported.add(rt);
    }
    let policyLen: number;
    let argv: Buffer | undefined;
    let sandboxed = false;
    let sandbox: SandboxPolicy | undefined;
    try {
      sandbox = resolveStrict(options.sandbox, mode);
      const limits = processLimits(sandbox, mode);
      if (mode === "process") argv = hostArgv(rt, limits, sandbox);
      const policy = policyValue(sandbox, mode);
      sandboxed = policy !== null;
      // an owngil context counts its own memory (shim/memcap.c); a host has RLIMIT_AS
      if (mode === "owngil" && limits.memoryLimit !== undefined && policy !== null) policy["memory_limit"] = limits.memoryLimit;
      rt.wire.begin();
      rt.wire.writeTop(policy);
      policyLen = rt.wire.pos;
    } catch (e) {
      return Promise.reject(e);
    }
    const id = hub.newId();
    const ptr =
      argv !== undefined
        ? rt.lib.bp_ctx_new_process(rt.io, id, policyLen, argv)
        : rt.lib.bp_ctx_new(rt.io, mode === "owngil" ? (sandboxed ? OWN_FDS : 0) : 1, id, policyLen);
    if (!ptr) hub.releaseId(id);
    if (!ptr) return Promise.reject(new BunpyError("could not start a context (Python not running, or out of memory)"));
    const ctx = new Context(hub, ptr, mode);
    if (sandbox?.jsFunctions !== undefined) ctx.jsFunctions = new Set(sandbox.jsFunctions);
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

  /** "starting" | "running" | "closing" | "ending" | "closed" | "dead" | "abandoned" (see close()) */
  get state(): (typeof STATE_NAMES)[number] {
    if (this.#abandoned) return "abandoned";
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
  #deathMessage: string | undefined;

  /** What later calls of a dead context reject with. */
  #deathError(): ContextDiedError {
    return new ContextDiedError(this.#deathMessage ?? "the context died");
  }

  /** True once the context's thread died (a cheap check; `state` asks the shim). */
  get isDead(): boolean {
    return this.#reportedDeath;
  }

  /** @internal a completion said the thread (or host process) ended: report it once. */
  died(error?: unknown): void {
    if (this.#reportedDeath) return;
    this.#reportedDeath = true;
    if (error instanceof Error) this.#deathMessage = error.message;
    for (const l of this.#diedListeners) l(this);
    if (this.#diedListeners.size === 0)
      console.error(
        this.mode === "process"
          ? `bunpy: a process context died (${this.#deathMessage ?? "its host process ended"})`
          : "bunpy: a context's thread ended unexpectedly; it is dead",
      );
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

  /**
   * Encodes a request's payload (see BP_REQ_* in shim/bunpy.h) with this context's value
   * rules; returns its length. The arguments depend on `op` — no closure per call:
   *   Call: module, fn, args, kwargs   Eval/Exec: source
   *   RefCall: ref, args, kwargs       RefGetattr: ref, name   RefToJS: ref   RefDrop: handles
   */
  private encode(op: Req, a?: unknown, b?: unknown, c?: unknown, d?: unknown): number {
    if (!this.isOpen) throw new ContextClosedError("the context is closed");
    const w = this.hub.rt.wire;
    // The context's value rules hold for this message only: a bunpy call made by a getter
    // meanwhile goes through wire.nested(), which restores the main interpreter's hooks.
    // Names are checked first: writeString of a non-string would run its getters outside
    // the `writing` count.
    if (op === Req.Call && (typeof a !== "string" || typeof b !== "string"))
      throw new TypeError("ctx.call(module, fn, args): module and fn must be strings");
    if ((op === Req.Eval || op === Req.Exec) && typeof a !== "string")
      throw new TypeError(`Python source must be a string, got ${typeof a}`);
    if (op === Req.RefGetattr && typeof b !== "string") throw new TypeError("PyRef.get(attr): attr must be a string");
    const saved = w.hooks;
    w.hooks = this.hooks;
    w.begin();
    w.writing++;
    try {
      switch (op) {
        case Req.Call:
          w.writeString(a as string);
          w.writeString(b as string);
          w.writeArgs(c as unknown[], d as Record<string, unknown> | undefined);
          break;
        case Req.Eval:
        case Req.Exec:
          w.writeString(a as string);
          break;
        case Req.RefCall:
          w.writeHandle((a as PyRef).live());
          w.writeArgs(b as unknown[], c as Record<string, unknown> | undefined);
          break;
        case Req.RefGetattr:
          w.writeHandle((a as PyRef).live());
          w.writeString(b as string);
          break;
        case Req.RefToJS:
          w.writeHandle((a as PyRef).live());
          break;
        case Req.RefDrop:
          w.writeHandleList(a as number[]);
          break;
      }
      return w.pos;
    } finally {
      w.writing--;
      w.hooks = saved;
    }
  }

  /** @internal sends a request (payload as for encode) and returns its promise. */
  request(op: Req, options: CallOptions | undefined, a?: unknown, b?: unknown, c?: unknown, d?: unknown): Promise<any> {
    // from a getter or Proxy trap while a message is written: keep that message intact
    const wire = this.hub.rt.wire;
    if (wire.writing !== 0) return wire.nested(() => this.request(op, options, a, b, c, d));
    let len: number;
    let timeout: number | undefined, signal: AbortSignal | undefined;
    try {
      if (options !== undefined) ({ timeout, signal } = checkCallOptions(options));
      if (signal?.aborted) throw signal.reason ?? new BunpyError("aborted");
      len = this.encode(op, a, b, c, d);
      // encoding ran user code (getters, toJSON): one of them may have aborted the signal,
      // and a listener added after the abort never runs
      if (signal?.aborted) throw signal.reason ?? new BunpyError("aborted");
    } catch (e) {
      return Promise.reject(e);
    }
    const { lib, io } = this.hub.rt;
    const id = this.hub.newId();
    const req = lib.bp_ctx_submit(this.#ptr, io, id, op, len);
    if (!req) {
      this.hub.releaseId(id);
      if (lib.bp_ctx_state(this.#ptr) === DEAD_STATE) {
        this.died();
        return Promise.reject(this.#deathError());
      }
      return Promise.reject(new ContextClosedError("the context is closed"));
    }
    this.#inFlight++;
    return new Promise((resolve, reject) => {
      const p: Pending = { resolve, reject, context: this, request: req, settled: false };
      this.hub.track(id, p);
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
    const wire = this.hub.rt.wire;
    if (wire.writing !== 0) return wire.nested(() => this.sendDrops(handles));
    try {
      const len = this.encode(Req.RefDrop, handles);
      this.hub.rt.lib.bp_ctx_submit(this.#ptr, this.hub.rt.io, 0, Req.RefDrop, len);
    } catch {
      // the context is closing: its interpreter frees everything anyway
    }
  }

  /** Calls module.fn(*args, **kwargs) in this context. `"__main__"` is the context's own. */
  call(module: string, fn: string, args: readonly unknown[] = [], kwargs?: KwargsObject, options?: CallOptions): Promise<any> {
    if (!Array.isArray(args)) return Promise.reject(new TypeError("ctx.call(module, fn, args): args must be an array"));
    return this.request(Req.Call, options, module, fn, args, kwargs);
  }

  /** Evaluates an expression in this context's __main__. */
  eval(expression: string, options?: CallOptions): Promise<any> {
    return this.request(Req.Eval, options, expression);
  }

  /** Runs statements in this context's __main__. */
  async exec(code: string, options?: CallOptions): Promise<void> {
    await this.request(Req.Exec, options, code);
  }

  /** Fire and forget: errors go to onError listeners (or are printed), never lost. */
  /** Calls module.fn in this context and streams what it returns (a generator, iterator
      or async generator) as a lazy async iterator, pulled in batches (docs/data.md). */
  iterate(module: string, fn: string, args: readonly unknown[] = [], kwargs?: KwargsObject, options?: IterateOptions): PythonStream {
    return new PythonStream((m, f, a, k) => this.call(m, f, a, k as KwargsObject | undefined), module, fn, args, kwargs, options);
  }

  cast(module: string, fn: string, args: readonly unknown[] = [], kwargs?: KwargsObject): void {
    this.call(module, fn, args, kwargs).catch((e) => {
      if (this.#errorListeners.size === 0) console.error(`bunpy: ctx.cast(${module}.${fn}) failed:`, e);
      for (const l of this.#errorListeners) l(e);
    });
  }

  /** Blocks the JS thread until the call has finished in the context. */
  callSync(module: string, fn: string, args: readonly unknown[] = [], kwargs?: KwargsObject): any {
    const w = this.hub.rt.wire;
    if (w.writing !== 0) return w.nested(() => this.callSync(module, fn, args, kwargs));
    if (this.#reportedDeath || (!this.#freed && this.state === "dead")) {
      this.died();
      throw this.#deathError();
    }
    const len = this.encode(Req.Call, module, fn, args, kwargs);
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
    // decoding runs no user code: the context's hooks are set for this one read only
    const saved = wire.hooks;
    wire.hooks = this.hooks;
    try {
      wire.refresh();
      wire.pos = 0;
      if (status !== Status.Ok) {
        const error = readError(wire, status);
        if (status === Status.Died) this.died(error);
        throw error;
      }
      return wire.readValue();
    } finally {
      wire.hooks = saved;
    }
  }

  /**
   * Ends the context, like interpreter shutdown, within a bounded time:
   * calls made after it reject with ContextClosedError; queued and running calls finish,
   * but their Python code can no longer wait: bunpy.call waiting for JS, bunpy.sleep and
   * send back-pressure raise bunpy.Interrupted from then on; then the loop's tasks are
   * cancelled, its transports and servers closed, the context's threads joined, executors
   * shut down, atexit handlers run (owngil) and the interpreter ended. If that is not done
   * `timeout` ms (default 5000) after close(), whatever runs is interrupted (repeatedly) and
   * queued calls are rejected; if the thread still has not stopped 2 s later, the context
   * is abandoned: its thread is left running detached, its calls reject, `state` becomes
   * "abandoned", a warning is printed and the Promise resolves.
   */
  close(options?: CloseOptions): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    if (this.#freed) return Promise.resolve();
    const grace = options?.timeout ?? CLOSE_GRACE_MS;
    if (typeof grace !== "number" || !(grace >= 0))
      return Promise.reject(new TypeError(`ctx.close({ timeout }): timeout must be a number of ms >= 0, got ${String(grace)}`));
    if (this.state === "dead") {
      this.#free(); // its thread is gone: nothing to end, just join it
      return (this.#closing = Promise.resolve());
    }
    const { lib, io } = this.hub.rt;
    const id = this.hub.newId();
    const rc = lib.bp_ctx_close(this.#ptr, io, id, Math.min(Math.round(grace), 0xffffffff));
    if (rc !== 0) {
      this.hub.releaseId(id);
      this.#free();
      return (this.#closing = Promise.resolve());
    }
    this.#closing = new Promise<void>((resolve, reject) => {
      this.hub.track(id, {
        resolve: (abandoned) => {
          if (abandoned === true) this.#abandon(grace);
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

  #abandoned = false;

  #abandon(grace: number): void {
    this.#abandoned = true;
    const message = `the context did not stop within ${grace + CLOSE_ABANDON_MS} ms of close(); it was abandoned`;
    this.hub.abandon(this, () => new ContextClosedError(message));
    console.warn(
      `bunpy: a ${this.mode} context did not stop within ${grace} ms of close() and ${CLOSE_ABANDON_MS} ms of ` +
        "interrupts (Python code that catches BaseException, or is blocked in C); it was abandoned: its thread " +
        "runs on detached and its interpreter is never ended (Python is not finalized at py.close())",
    );
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
