/**
 * The main interpreter as seen from one JS thread: starting Python, the call paths behind
 * `py.*` and proxies, and calls coming back from Python into JS.
 *
 * Each JS thread (the main thread, each Bun Worker) has its own MainInterpreter with its
 * own io port; the Python runtime itself is started once per process.
 */
import { join } from "node:path";
import { openShim, packageRoot } from "./build.ts";
import { Wire } from "./codec.ts";
import { Kwargs, Tag, type WireHooks } from "./wire-format.ts";
import { findPython, type PythonInfo } from "./discover.ts";
import { HandleTable } from "./handle-table.ts";
import {
  BunpyError,
  ConversionError,
  errorFromRecord,
  PythonClosedError,
  PythonError,
  Status,
  type KeptTraceback,
} from "./errors.ts";
import { cstring, loadShim, makeDispatch, type JSCallback, type Shim } from "./ffi.ts";
import { registerSource, type IterArg } from "./stream.ts";
import { hubOf } from "./hub.ts";
import { MethodCacheCheck, readMethodRecord, sameRecord } from "./method-cache.ts";
import { ThrownErrors } from "./thrown-errors.ts";
import { functionProxy, makeProxy, methodCaller, Op, stateOf, type ProxyOwner, type ProxyState, type PyObject } from "./proxy.ts";

const enum Mode {
  Eval = 0,
  Exec = 1,
}

/** Source strings up to this length keep their compiled code for the next eval/exec. */
const CODE_CACHE_MAX_SOURCE = 4096;
const CODE_CACHE_MAX_ENTRIES = 512;
/** Interned attribute names kept; past this, names are still interned but not remembered. */
const NAME_CACHE_MAX = 8192;
/** Released ids (JS functions, py.buffer pins, kept thrown errors) taken at the next call
    once this many wait; fewer are taken by a microtask. */
const RELEASE_BATCH = 64;

/** What invoke() returns when the function threw (the thrown value is in `threw`). */
const THREW = Symbol("threw");

export class MainInterpreter implements ProxyOwner, WireHooks {
  readonly info: PythonInfo;
  readonly lib: Shim;
  readonly io: number;
  readonly wire: Wire;
  private readonly dispatchCallback: JSCallback;
  private closed = false;

  private readonly modules = new Map<string, number>();
  private readonly names = new Map<string, number>();
  private readonly code = new Map<string, number>();
  /** Live proxies by handle, so one Python object keeps one proxy. Not a Map: JSC's Map
      slows down linearly when the same key is set and deleted again and again while many
      entries are live (Python reuses a freed object's address for the next one), which made
      create+dispose cost grow from 1 to 200+ µs with ~100k proxies alive. */
  private readonly proxies = new HandleTable<WeakRef<PyObject>>();
  /** A microtask that hands queued drops to the shim is scheduled (see drop()). */
  private flushScheduled = false;
  private readonly finalizer = new FinalizationRegistry<ProxyState>((st) => this.collected(st));
  /** Handles to drop that did not fit the shim's drop queue while a result was decoded. */
  private readonly overflow: number[] = [];

  private readonly functions = new Map<number, Function>();
  /** Memory lent to Python with py.buffer, by pin id (ids shared with JS functions). */
  private readonly pinned = new Map<number, object>();
  private deallocator = 0;
  private nextFunctionId = 1;
  /** Errors thrown into Python by this thread's callbacks, kept for a lazy `js_stack`. */
  private readonly thrown = new ThrownErrors();
  /** A microtask that takes the released ids is scheduled (see begin()). */
  private releaseScheduled = false;
  readonly registered = new Map<string, Function>();
  private builtinsProxy: PyObject | undefined;
  private readonly methodCheck: MethodCacheCheck;

  constructor() {
    this.info = findPython();
    this.lib = openShim(this.info, loadShim);
    const err = Buffer.alloc(1024);
    const rc = this.lib.bp_init(cstring(this.info.executable), cstring(join(packageRoot, "python")), err, err.length);
    if (rc < 0) {
      const text = err.toString("utf8", 0, err.indexOf(0));
      throw new PythonClosedError(`Python could not be started: ${text || "unknown error"}`);
    }
    this.dispatchCallback = makeDispatch((target) => this.dispatch(target));
    const io = this.lib.bp_io_new(this.dispatchCallback.ptr) as number | null;
    if (!io) throw new PythonClosedError("Python is not running (it was closed)");
    this.io = io;
    this.wire = new Wire(this.lib, io, this);
    this.methodCheck = new MethodCacheCheck(this.lib);
  }

  // ------------------------------------------------------------------ results --

  private fail(rc: number): never {
    const w = this.wire;
    w.refresh();
    w.pos = 0;
    const e = errorFromRecord(rc, () => w.readValue(), (message) => new PythonClosedError(message), this.keep);
    if (e instanceof PythonError) {
      const kept = PythonError.kept(e);
      if (kept !== undefined) this.errorFinalizer.register(e, kept as KeptException, kept);
    }
    throw e;
  }

  // ------------------------------------------------------- kept tracebacks --

  /** Exceptions whose traceback JS has not read yet (formatted at close for errors still alive). */
  private readonly keptErrors = new Set<KeptException>();
  private readonly errorFinalizer = new FinalizationRegistry<KeptException>((k) => this.releaseKept(k));
  private readonly keep = (handle: number): KeptTraceback => {
    const k = new KeptException(this, handle);
    this.keptErrors.add(k);
    return k;
  };

  /** @internal the traceback of a kept exception, formatted now; releases the exception. */
  formatKept(k: KeptException): string {
    if (k.text !== undefined) return k.text;
    if (this.closed) return (k.text = "");
    if (this.reentered()) return this.wire.nested(() => this.formatKept(k));
    const rc = this.lib.bp_format_exception(this.io, k.handle);
    k.text = rc === 0 ? String(this.wire.result()) : "";
    this.errorFinalizer.unregister(k);
    this.releaseKept(k);
    return k.text;
  }

  private releaseKept(k: KeptException): void {
    if (k.handle === 0) return;
    this.keptErrors.delete(k);
    if (!this.closed) this.drop(k.handle);
    k.handle = 0;
  }

  /** Number of exceptions kept for errors whose traceback was not read (for leak tests). */
  get keptExceptions(): number {
    return this.keptErrors.size;
  }

  /** The decoded result of the last call, or the error it reported. */
  private result(rc: number): unknown {
    if (rc !== 0) this.fail(rc);
    return this.wire.result();
  }

  private handle(rc: number): number {
    if (rc !== 0) this.fail(rc);
    return this.wire.handleResult();
  }

  /**
   * The first thing every entry point that uses the io buffer does. True: a message is
   * being written right now (this call comes from a getter or Proxy trap inside it), so
   * the caller must run itself again through wire.nested(). Otherwise hands the drops that
   * did not fit the shim's queue to the shim. One branch when there is nothing to do.
   */
  private reentered(): boolean {
    if (this.wire.writing !== 0) return true;
    if (this.overflow.length !== 0 && this.wire.suspended === 0) this.flushOverflow();
    if (this.enterHook !== undefined) this.runEnterHook();
    return false;
  }

  /** @internal Runs once before the next call into Python from JS (then forgotten): inline
      serving (src/inline.ts) puts the thread's running asyncio loop back with it. */
  enterHook: (() => void) | undefined = undefined;

  private runEnterHook(): void {
    const f = this.enterHook!;
    this.enterHook = undefined;
    f();
  }

  /** Starts a message (after reentered()): forgets released JS functions first, in
      batches: a caught JS error gives one back per throw, and an FFI call to take each
      would cost a crossing per throw. Fewer than RELEASE_BATCH wait for a microtask. */
  private begin(): Wire {
    const released = this.wire.header[5]!;
    if (released !== 0) {
      if (released >= RELEASE_BATCH) this.takeReleased();
      else if (!this.releaseScheduled) {
        this.releaseScheduled = true;
        queueMicrotask(this.releaseSoon);
      }
    }
    this.wire.begin();
    return this.wire;
  }

  private readonly releaseSoon = (): void => {
    this.releaseScheduled = false;
    if (this.closed || this.wire.writing !== 0 || this.wire.suspended !== 0 || this.dispatching !== 0) return;
    if (this.wire.header[5] !== 0) this.takeReleased();
  };

  // ------------------------------------------------------------------ handles --

  proxyFor(handle: number, isFunction: boolean): unknown {
    const known = this.proxies.get(handle)?.deref();
    if (known !== undefined) {
      this.drop(handle); // we already hold a reference through `known`
      return known;
    }
    const p = isFunction ? functionProxy(this, handle) : makeProxy(this, handle);
    const st = stateOf(p)!;
    this.proxies.set(handle, new WeakRef(p));
    this.finalizer.register(p, st, st);
    return p;
  }

  handleOf(value: object): number | undefined {
    const st = stateOf(value);
    if (st === undefined) return undefined;
    if (st.disposed) throw new ConversionError("a disposed Python object cannot be passed to Python");
    if (st.owner !== this) throw new ConversionError("a Python object from another JS thread cannot be passed here");
    return st.handle;
  }

  /** Queues a reference for the shim to drop at its next call (no FFI call now). While a
      message is being written (or set aside by a nested call) the drop waits in JS: the
      message may hold this very handle, and the next call would drop it before reading it. */
  private drop(handle: number): void {
    const h = this.wire.header;
    const n = h[8]!;
    if (n < h[9]! && this.wire.writing === 0 && this.wire.suspended === 0) {
      this.wire.drops[n] = handle;
      h[8] = n + 1;
    } else {
      this.overflow.push(handle);
    }
    // Released without waiting for an unrelated call: a microtask flushes the batch.
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(this.flushSoon);
    }
  }

  private readonly flushSoon = (): void => {
    this.flushScheduled = false;
    if (this.closed || this.wire.writing !== 0 || this.wire.suspended !== 0 || this.dispatching !== 0) return;
    if (this.overflow.length !== 0) this.flushOverflow();
    else if (this.wire.header[8] !== 0) this.lib.bp_flush(this.io);
  };

  private flushOverflow(): void {
    while (this.overflow.length) {
      this.lib.bp_flush(this.io);
      const h = this.wire.header;
      while (this.overflow.length && h[8]! < h[9]!) this.wire.drops[h[8]!++] = this.overflow.pop()!;
    }
  }

  private collected(st: ProxyState): void {
    if (st.disposed || this.closed) return;
    st.disposed = true;
    this.forgetMethods(st);
    const cached = this.proxies.get(st.handle);
    if (cached !== undefined && cached.deref() === undefined) this.proxies.delete(st.handle);
    this.drop(st.handle);
  }

  release(st: ProxyState): void {
    if (st.disposed) return;
    st.disposed = true;
    this.forgetMethods(st);
    this.finalizer.unregister(st);
    if (this.proxies.get(st.handle)?.deref() !== undefined) this.proxies.delete(st.handle);
    if (!this.closed) this.drop(st.handle);
  }

  // ------------------------------------------------------------ JS functions --

  functionId(fn: Function): number {
    const id = this.nextFunctionId++;
    if (this.nextFunctionId > 0x7fffffff) this.nextFunctionId = 1;
    this.functions.set(id, fn);
    return id;
  }

  forgetFunctions(ids: readonly number[]): void {
    for (const id of ids) if (!this.functions.delete(id)) this.pinned.delete(id);
  }

  pin(target: object): number {
    const id = this.nextFunctionId++;
    if (this.nextFunctionId > 0x7fffffff) this.nextFunctionId = 1;
    this.pinned.set(id, target);
    return id;
  }

  private takeReleased(): void {
    if (this.lib.bp_take_released(this.io) !== 0) return;
    const ids = this.wire.result() as number[];
    for (const id of ids) {
      if (id < 0) this.thrown.release(-1 - id);
      else if (!this.functions.delete(id)) this.pinned.delete(id);
    }
  }

  registerSource(arg: IterArg, toMain: boolean): string {
    if (!this.watchingSources) {
      // a JS(Async)Iterator Python dropped before its end says so with bunpy.send
      this.watchingSources = true;
      hubOf(this).on("bunpy.iter.close", (name) => {
        const pull = typeof name === "string" && name.startsWith("__bunpy_iter_") ? this.registered.get(name) : undefined;
        if (pull === undefined) return;
        try {
          const r = pull(1) as unknown;
          if (r instanceof Promise) r.catch(() => {});
        } catch {
          // the source's return() threw: nobody is left to tell
        }
      });
    }
    return registerSource(arg, this.registered, toMain);
  }
  private watchingSources = false;

  /** Buffers lent to Python (py.buffer) that Python still holds; forgets released ones first. */
  get pinnedBuffers(): number {
    if (this.wire.writing !== 0) return this.wire.nested(() => this.pinnedBuffers);
    if (this.wire.header[5] !== 0) this.takeReleased();
    return this.pinned.size;
  }

  /** The shim's deallocator for py.view ArrayBuffers (a C function pointer). */
  get viewDeallocator(): number {
    if (this.deallocator === 0) this.deallocator = this.lib.bp_view_deallocator();
    return this.deallocator;
  }

  /** Releases the Python buffers of views whose memory JS let go (now, not at the next call). */
  flushViews(): void {
    if (this.closed || this.wire.writing !== 0 || this.dispatching !== 0) return;
    this.lib.bp_flush(this.io);
  }

  /** Number of thrown errors kept for a `JSError.js_stack` not read yet (for leak tests). */
  get liveThrownErrors(): number {
    if (this.wire.writing !== 0) return this.wire.nested(() => this.liveThrownErrors);
    if (this.wire.header[5] !== 0) this.takeReleased();
    return this.thrown.live;
  }

  /** Number of JS functions Python still holds (for leak tests). */
  get liveFunctions(): number {
    if (this.wire.writing !== 0) return this.wire.nested(() => this.liveFunctions);
    if (this.wire.header[5] !== 0) this.takeReleased();
    return this.functions.size;
  }

  /** Python called a JS function: arguments are in the buffer, the result goes back there. */
  /** Runs the function registered as `name` (py.register); Python's keyword arguments,
      if any, arrive as one trailing object. */
  callRegistered(name: string, args: unknown[], kwargs: unknown): unknown {
    const fn = this.registered.get(name);
    if (fn === undefined) throw new ReferenceError(`no JS function is registered as "${name}" (use py.register)`);
    if (kwargs !== null) args.push(kwargs);
    return fn(...args);
  }

  /** JS functions called by Python that are running right now (nested calls count each). */
  private dispatching = 0;

  /** True while a JS function called from Python runs: Python cannot be closed then. */
  get insideCallback(): boolean {
    return this.dispatching > 0;
  }

  private dispatch(target: number): number {
    const w = this.wire;
    this.dispatching++;
    try {
      w.refresh();
      w.pos = 0;
      if (target < -1) return this.writeStack(-2 - target);
      // Arguments are decoded before the function is looked up: Python objects in them
      // arrive as references that only their proxies give back.
      const name = target === -1 ? (w.readValue() as string) : "";
      const args = w.readValue() as unknown[];
      const kwargs = w.readValue();
      let value: unknown;
      if (target === -1) {
        value = this.callRegistered(name, args, kwargs);
      } else {
        const fn = this.functions.get(target);
        if (fn === undefined) throw new ReferenceError(`JS function #${target} is gone`);
        if (kwargs !== null) args.push(kwargs);
        value = this.invoke(fn, args);
        if (value === THREW) {
          const e = this.threw;
          this.threw = undefined;
          return this.writeThrown(e, true);
        }
      }
      if (value instanceof Promise || (value !== null && typeof value === "object" && typeof (value as { then?: unknown }).then === "function")) {
        // A dropped Promise must not be reported unhandled; another thenable's then() is
        // user code and is not run.
        if (value instanceof Promise) value.then(undefined, () => {});
        throw new TypeError(
          "the JS function returned a Promise; Python in the main interpreter calls JS synchronously and cannot wait for it",
        );
      }
      this.begin();
      w.writeTop(value);
      return Status.Ok;
    } catch (e) {
      return this.writeThrown(e, true);
    } finally {
      this.dispatching--;
    }
  }

  /** Calls a JS function for Python; what it throws is kept in `threw` and THREW returned.
      A throw caught here, in a small function, costs JavaScriptCore ~100 ns less than one
      caught by dispatch's own try/catch (min-of-150 timing windows, 3.13). */
  private invoke(fn: Function, args: unknown[]): unknown {
    try {
      return fn(...args);
    } catch (e) {
      this.threw = e;
      return THREW;
    }
  }
  private threw: unknown;

  /** Writes what a JS function threw as the BP_ERR_JS record. Must not throw: an exception
      escaping the dispatch callback returns 0 to C, which then reads whatever the buffer
      holds as the function's result (a hostile thrown value did that: a Proxy whose
      getPrototypeOf trap throws on its second call, an error too large for a message).
      `lazyStack` (this thread's own callbacks): instead of `error.stack`, whose formatting
      costs Bun more than the rest of the throw, Python gets the slot where the Error is
      kept (INT32), and `JSError.js_stack` asks for the text when first read; the slot comes
      back when the text was read or the exception freed. */
  writeThrown(e: unknown, lazyStack = false): number {
    let name = "Error", message = "", stack = "", isError = false;
    try {
      isError = e instanceof Error; // once: a Proxy's trap may answer differently next time
      if (isError) {
        const err = e as Error;
        name = String(err.name || "Error");
        message = String(err.message ?? "");
        if (!lazyStack) stack = String(err.stack ?? "");
      } else {
        message = String(e);
      }
    } catch {
      message = "(the thrown value could not be turned into a string)";
    }
    const w = this.wire;
    let slot = -1;
    try {
      w.begin();
      w.writeString(name.toWellFormed());
      w.writeString(message.toWellFormed());
      if (lazyStack && isError) {
        slot = this.thrown.keep(e as Error);
        w.writeNumber(slot);
      } else {
        w.writeString(stack.toWellFormed());
      }
    } catch {
      // larger than a message may be (ConversionError): a short record fits
      if (slot >= 0) this.thrown.release(slot);
      w.begin();
      w.writeString(name.slice(0, 200).toWellFormed());
      w.writeString(`(the thrown error was too large to pass to Python: ${name.length + message.length + stack.length} characters)`);
      w.writeString("");
    }
    return Status.JS;
  }

  /** `JSError.js_stack`, first read: the stack of the Error kept in `slot`, as a string
      (a getter that throws gives its message instead; must not throw, see writeThrown). */
  private writeStack(slot: number): number {
    const e = this.thrown.get(slot);
    let text: string;
    try {
      text = e === undefined ? "" : String(e.stack ?? "");
    } catch (x) {
      let why: string;
      try {
        why = x instanceof Error ? String(x.message) : String(x);
      } catch {
        why = "what its getter threw cannot be turned into a string";
      }
      text = `(the JS stack could not be read: ${why})`;
    }
    this.begin();
    this.wire.writeTop(text.toWellFormed());
    return Status.Ok;
  }

  // ------------------------------------------------------------ main paths --

  private moduleHandle(name: string): number {
    let h = this.modules.get(name);
    if (h === undefined) {
      if (this.reentered()) return this.wire.nested(() => this.moduleHandle(name));
      if (typeof name !== "string") throw new TypeError(`module name must be a string, got ${typeof name}`);
      this.begin().writeString(name);
      h = this.handle(this.lib.bp_import(this.io));
      this.modules.set(name, h);
    }
    return h;
  }

  private nameHandle(name: string): number {
    let h = this.names.get(name);
    if (h === undefined) {
      if (this.reentered()) return this.wire.nested(() => this.nameHandle(name));
      if (typeof name !== "string") throw new TypeError(`attribute name must be a string, got ${typeof name}`);
      this.begin().writeString(name);
      h = this.handle(this.lib.bp_intern(this.io));
      if (this.names.size < NAME_CACHE_MAX) this.names.set(name, h);
      else queueMicrotask(() => this.drop(h!));
    }
    return h;
  }

  private compiled(source: string, mode: Mode): number {
    const key = mode === Mode.Eval ? source : `\0${source}`;
    let h = this.code.get(key);
    if (h === undefined) {
      if (this.reentered()) return this.wire.nested(() => this.compiled(source, mode));
      if (typeof source !== "string") throw new TypeError(`Python source must be a string, got ${typeof source}`);
      const w = this.begin();
      w.writeString(source);
      w.writeString(mode === Mode.Eval ? "<py.eval>" : "<py.exec>");
      h = this.handle(this.lib.bp_compile(this.io, mode));
      if (source.length <= CODE_CACHE_MAX_SOURCE) {
        if (this.code.size >= CODE_CACHE_MAX_ENTRIES) {
          for (const old of this.code.values()) this.drop(old);
          this.code.clear();
        }
        this.code.set(key, h);
      } else {
        const code = h;
        queueMicrotask(() => this.drop(code));
      }
    }
    return h;
  }

  eval(expr: string): unknown {
    if (this.reentered()) return this.wire.nested(() => this.eval(expr));
    return this.result(this.lib.bp_run(this.io, this.compiled(expr, Mode.Eval)));
  }

  exec(code: string): void {
    if (this.reentered()) return this.wire.nested(() => this.exec(code));
    const rc = this.lib.bp_run(this.io, this.compiled(code, Mode.Exec));
    if (rc !== 0) this.fail(rc);
  }

  callFunction(module: string, fn: string, args: readonly unknown[], kwargs?: Record<string, unknown>): unknown {
    if (this.reentered()) return this.wire.nested(() => this.callFunction(module, fn, args, kwargs));
    const m = this.moduleHandle(module);
    const n = this.nameHandle(fn);
    if (!Array.isArray(args)) throw new TypeError("py.call(module, fn, args, kwargs): args must be an array");
    if (this.wire.header[5] !== 0) this.takeReleased();
    this.wire.writeCall(args, kwargs); // starts the message
    const rc = this.lib.bp_call_attr(this.io, m, n);
    if (rc !== 0) this.fail(rc);
    return this.wire.result();
  }

  import(name: string): PyObject {
    return this.proxyForModule(name);
  }

  private proxyForModule(name: string): PyObject {
    if (typeof name !== "string") throw new TypeError(`py.import(name): name must be a string, got ${typeof name}`);
    if (this.reentered()) return this.wire.nested(() => this.proxyForModule(name));
    this.begin().writeString(name);
    const rc = this.lib.bp_import(this.io);
    if (rc !== 0) this.fail(rc);
    return this.wire.result() as PyObject;
  }

  get builtins(): PyObject {
    if (this.builtinsProxy === undefined) {
      if (this.reentered()) return this.wire.nested(() => this.builtins);
      const rc = this.lib.bp_builtins(this.io);
      if (rc !== 0) this.fail(rc);
      this.builtinsProxy = this.wire.result() as PyObject;
    }
    return this.builtinsProxy;
  }

  // ------------------------------------------------------- ProxyOwner (traps) --

  getattr(st: ProxyState, name: string): unknown {
    const mc = st.mc;
    if (mc !== undefined) {
      // `obj.method` answered without a call while what it depends on is unchanged
      const f = mc.names.get(name);
      if (f !== undefined) {
        if (!this.closed && this.methodCheck.valid(st.handle, mc)) return f;
        this.forgetMethods(st);
      }
    }
    if (this.reentered()) return this.wire.nested(() => this.getattr(st, name));
    const n = this.nameHandle(name);
    const rc = this.lib.bp_getattr(this.io, st.handle, n);
    if (rc === 1) return undefined; // no such attribute
    if (rc !== 0) this.fail(rc);
    const dv = this.wire.raw();
    if (dv.getUint8(0) !== Tag.Method) return this.wire.result();
    const f = methodCaller(st, name);
    if (dv.getUint8(1) === 1) this.cacheMethod(st, name, f, dv);
    return f;
  }

  /** Keeps the shim's record of a reusable method answer (it holds a type reference). */
  private cacheMethod(st: ProxyState, name: string, f: (...args: unknown[]) => unknown, dv: DataView): void {
    const rec = readMethodRecord(dv);
    const mc = st.mc;
    if (mc !== undefined && sameRecord(mc, rec)) {
      // the record holds references to this type and dict already
      this.drop(rec.type);
      if (rec.dict !== 0) this.drop(rec.dict);
      mc.names.set(name, f);
      return;
    }
    this.forgetMethods(st);
    st.mc = { ...rec, names: new Map([[name, f]]) };
  }

  /** Drops a method record and the references it holds (its type, the instance dict). */
  private forgetMethods(st: ProxyState): void {
    const mc = st.mc;
    if (mc === undefined) return;
    st.mc = undefined;
    if (this.closed) return;
    this.drop(mc.type);
    if (mc.dict !== 0) this.drop(mc.dict);
  }

  setattr(st: ProxyState, name: string, value: unknown): void {
    if (this.reentered()) return this.wire.nested(() => this.setattr(st, name, value));
    const n = this.nameHandle(name);
    this.begin().writeTop(value);
    const rc = this.lib.bp_setattr(this.io, st.handle, n);
    if (rc !== 0) this.fail(rc);
  }

  delattr(st: ProxyState, name: string): void {
    if (this.reentered()) return this.wire.nested(() => this.delattr(st, name));
    const n = this.nameHandle(name);
    const rc = this.lib.bp_delattr(this.io, st.handle, n);
    if (rc !== 0) this.fail(rc);
  }

  contains(st: ProxyState, key: unknown): boolean {
    if (this.reentered()) return this.wire.nested(() => this.contains(st, key));
    this.begin().writeTop(key);
    return this.result(this.lib.bp_contains(this.io, st.handle)) as boolean;
  }

  /** Arguments of a proxy call (writeCall starts the message itself). */
  private writeArgs(args: unknown[]): void {
    if (this.wire.header[5] !== 0) this.takeReleased();
    const last = args[args.length - 1];
    if (last instanceof Kwargs) this.wire.writeCall(args.slice(0, -1), last.values);
    else this.wire.writeCall(args, undefined);
  }

  call(st: ProxyState, args: unknown[]): unknown {
    if (this.reentered()) return this.wire.nested(() => this.call(st, args));
    this.writeArgs(args);
    const rc = this.lib.bp_call(this.io, st.handle);
    if (rc !== 0) this.fail(rc);
    return this.wire.result();
  }

  callMethod(st: ProxyState, name: string, args: unknown[]): unknown {
    if (this.reentered()) return this.wire.nested(() => this.callMethod(st, name, args));
    const n = this.nameHandle(name);
    this.writeArgs(args);
    return this.result(this.lib.bp_call_attr(this.io, st.handle, n));
  }

  getitem(st: ProxyState, key: unknown): unknown {
    if (this.reentered()) return this.wire.nested(() => this.getitem(st, key));
    this.begin().writeTop(key);
    return this.result(this.lib.bp_getitem(this.io, st.handle));
  }

  setitem(st: ProxyState, key: unknown, value: unknown): void {
    if (this.reentered()) return this.wire.nested(() => this.setitem(st, key, value));
    const w = this.begin();
    w.writeTop(key);
    w.writeTop(value);
    const rc = this.lib.bp_setitem(this.io, st.handle);
    if (rc !== 0) this.fail(rc);
  }

  delitem(st: ProxyState, key: unknown): void {
    if (this.reentered()) return this.wire.nested(() => this.delitem(st, key));
    this.begin().writeTop(key);
    const rc = this.lib.bp_delitem(this.io, st.handle);
    if (rc !== 0) this.fail(rc);
  }

  op(st: ProxyState, op: Op): unknown {
    if (this.reentered()) return this.wire.nested(() => this.op(st, op));
    return this.result(this.lib.bp_object_op(this.io, st.handle, op));
  }

  iterate(st: ProxyState): Iterator<unknown> & Disposable {
    if (this.reentered()) return this.wire.nested(() => this.iterate(st));
    // The iterator's reference is held here, not through a proxy: iter(x) is x for an
    // iterator or generator, and ending the loop must not dispose the proxy being iterated.
    const handle = this.handle(this.lib.bp_object_op(this.io, st.handle, Op.Iter));
    const itState: ProxyState = { handle, disposed: false, owner: this };
    const stop = (): IteratorResult<unknown> => {
      if (!itState.disposed) {
        itState.disposed = true;
        this.forgetMethods(itState);
        this.finalizer.unregister(itState);
        if (!this.closed) this.drop(itState.handle);
      }
      return { done: true, value: undefined };
    };
    const next = (): IteratorResult<unknown> => {
      if (itState.disposed) return { done: true, value: undefined };
      if (this.reentered()) return this.wire.nested(next);
      const rc = this.lib.bp_object_op(this.io, itState.handle, Op.Next);
      if (rc === 1) return stop();
      if (rc !== 0) {
        stop(); // for..of does not call return() when next() throws
        this.fail(rc);
      }
      return { done: false, value: this.wire.result() };
    };
    // ended early (break, return()): a generator is closed now, so its finally blocks run
    // here and not whenever the last reference goes
    const ret = (): IteratorResult<unknown> => {
      if (itState.disposed || this.closed) return stop();
      try {
        if (this.getattr(itState, "close") !== undefined) this.callMethod(itState, "close", []);
      } finally {
        stop();
      }
      return { done: true, value: undefined };
    };
    const iterator = { next, return: ret, [Symbol.dispose]: () => void ret() };
    this.finalizer.register(iterator, itState, itState); // abandoned half-way: GC releases it
    return iterator;
  }

  // ---------------------------------------------------------------- lifecycle --

  close(): void {
    if (this.closed) return;
    if (this.wire.writing !== 0) return this.wire.nested(() => this.close());
    // errors still alive keep their traceback: formatted now, while Python can
    if (!this.insideCallback) for (const k of [...this.keptErrors]) this.formatKept(k);
    const rc = this.lib.bp_finalize(this.io);
    if (rc === Status.Thread)
      throw new BunpyError(
        "py.close() must be called on the JS thread that started Python, outside any Python -> JS callback",
      );
    if (rc === Status.Busy)
      throw new BunpyError("py.close(): contexts of other JS threads (Bun Workers) are still open; close them first");
    this.closed = true;
    // The io port stays allocated: every later call through it gets BP_ERR_STATE from the
    // shim (a clear PythonClosedError) instead of touching freed memory. Python is gone,
    // so the shim will not call the dispatch callback again.
    this.dispatchCallback.close();
    if (rc === Status.Python) throw new BunpyError("Python reported errors while shutting down (Py_FinalizeEx)");
  }

  get isClosed(): boolean {
    return this.closed;
  }

  benchBaseline(fn: PyObject): (a: number, b: number) => number {
    const st = stateOf(fn)!;
    if (this.lib.bp_bench_prepare(this.io, st.handle) !== 0) throw new BunpyError("bench baseline failed");
    const lib = this.lib, io = this.io;
    return (a, b) => Number(lib.bp_bench_call(io, a, b));
  }
}

/** A Python exception JS holds for a PythonError until its traceback is read. */
class KeptException implements KeptTraceback {
  text: string | undefined;
  constructor(
    private readonly owner: MainInterpreter,
    public handle: number,
  ) {}
  format(): string {
    return this.text ?? this.owner.formatKept(this);
  }
}
