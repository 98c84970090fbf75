/**
 * bunpy — CPython embedded in Bun.
 *
 *   import { py } from "bunpy";
 *   py.call("math", "sqrt", [16]);          // 4
 *   const json = py.import("json");
 *   json.dumps({ a: 1 }, py.kw({ indent: 2 }));
 */
import { isMainThread } from "node:worker_threads";
import { Kwargs, type KwargsObject } from "./wire-format.ts";
import { MainInterpreter } from "./main-interpreter.ts";
import { Op, stateOf, live, type PyObject } from "./proxy.ts";
import { BunpyError, PythonClosedError } from "./errors.ts";
import { Context, type ContextOptions } from "./context.ts";
import { existingHub, hubOf, type MessageListener } from "./hub.ts";
import { messageIterator } from "./messages.ts";
import { Pool, type PoolOptions } from "./pool.ts";
import { startAsgi, type AsgiApp, type AsgiOptions, type ServedApp } from "./asgi.ts";
import { closeInline } from "./inline.ts";
import { startWsgi, type WsgiOptions } from "./wsgi.ts";
import { startServe, type ServeOptions, type ServedServer } from "./serve.ts";
import { IterArg, type IterateOptions } from "./stream.ts";
import { SharedStore } from "./shared.ts";
import { BufferArg, isReleased, onRelease, openView, PyView, releaseView, type BufferOptions, type ViewData, type ViewOptions } from "./data.ts";

export { BunpyError, BuildError, ContextDiedError, ConversionError, PythonClosedError, PythonError, PythonNotFoundError } from "./errors.ts";
export { Kwargs, type KwargsObject } from "./wire-format.ts";
export type { PyObject } from "./proxy.ts";
export type { PythonInfo } from "./discover.ts";
export { CallTimeoutError, Context, ContextClosedError, PyRef } from "./context.ts";
export type { CallOptions, CloseOptions, ContextMode, ContextOptions, MessageListener, SandboxOption, SandboxPolicy } from "./context.ts";
export { Pool } from "./pool.ts";
export type { PoolCallOptions, PoolOptions, PoolStats } from "./pool.ts";
export type { ListenOptions, Listener } from "./listen.ts";
export type { AsgiApp, AsgiOptions, CloseAppOptions, ServedApp } from "./asgi.ts";
export type { WsgiOptions } from "./wsgi.ts";
export type { ServeOptions, ServedServer } from "./serve.ts";
export { BufferArg, PyView } from "./data.ts";
export { IterArg, PythonStream } from "./stream.ts";
export { SharedStore } from "./shared.ts";
export type { IterateOptions } from "./stream.ts";
export type { BufferOptions, DType, ViewData, ViewOptions } from "./data.ts";

let main: MainInterpreter | undefined;
let closed = false;

const CLOSED_MESSAGE = "Python was closed with py.close() and cannot be used again in this process";

/** The main interpreter for this JS thread, started on first use. */
function rt(): MainInterpreter {
  if (main !== undefined) return main;
  if (closed) throw new PythonClosedError(CLOSED_MESSAGE);
  main = new MainInterpreter();
  if (isMainThread) watchSigint(main);
  const m = main;
  onRelease(() => m.flushViews());
  return main;
}

/** An options argument: undefined or a plain object (a string, number, array or function
    there is a mistake that would otherwise be read as "no options"). */
function optionsObject<T>(options: T | undefined, call: string): T | undefined {
  if (options === undefined) return undefined;
  if (typeof options !== "object" || options === null || Array.isArray(options))
    throw new TypeError(`${call}: options must be an object, got ${options === null ? "null" : Array.isArray(options) ? "an array" : typeof options}`);
  return options;
}

/** rt(), refusing a closed interpreter: for entry points that do not go through a shim call
    (which would report the closed state itself). py.version stays readable after close. */
function running(): MainInterpreter {
  const m = rt();
  if (m.isClosed) throw new PythonClosedError(CLOSED_MESSAGE);
  return m;
}

/**
 * Ctrl-C: while a Python call runs on this thread and JS has a SIGINT listener, the shim
 * makes Python raise KeyboardInterrupt and then lets Bun queue the listener. Bun replaces
 * the process's SIGINT handler when the first listener is added and when the last goes;
 * the shim puts its own back in front at the next call into Python (or the next microtask).
 */
function watchSigint(m: MainInterpreter): void {
  const changed = (event: string | symbol) => {
    if (event !== "SIGINT" && event !== "SIGTERM") return; // SIGTERM: for contexts' handlers
    m.lib.bp_sigint_changed();
    queueMicrotask(() => m.lib.bp_sigint_refresh());
  };
  process.on("newListener", changed);
  process.on("removeListener", changed);
}

/** A one-object operation (len, repr, type name) on a proxy, with a TypeError naming `what`. */
function objectOp(value: unknown, what: string, op: Op): unknown {
  const st = stateOf(value);
  if (st === undefined) throw new TypeError(`${what}: expected a Python object (a PyObject proxy)`);
  return st.owner.op(live(st), op);
}

/** The Python side of bunpy: the main interpreter, called synchronously from JS. */
export const py = {
  /** The embedded Python's version, e.g. "3.13.0". Starts Python if needed. */
  get version(): string {
    return rt().info.version;
  },
  /** Path of the python executable whose runtime is embedded (also sys.executable). */
  get executable(): string {
    return rt().info.executable;
  },
  /** Evaluates a Python expression in __main__ and returns its value. */
  eval(expression: string): any {
    return rt().eval(expression);
  },
  /** Runs Python statements in __main__. */
  exec(code: string): void {
    rt().exec(code);
  },
  /** Calls module.fn(*args, **kwargs) and returns the result. */
  call(module: string, fn: string, args: readonly unknown[] = [], kwargs?: KwargsObject): any {
    return rt().callFunction(module, fn, args, kwargs);
  },
  /** Imports a module and returns it as a proxy. */
  import(name: string): PyObject {
    return rt().import(name);
  },
  /** The builtins module: py.builtins.len(x), py.builtins.dict(...) */
  get builtins(): PyObject {
    return rt().builtins;
  },
  /** Marks keyword arguments for a proxy call: fn(1, py.kw({ sep: "," })). */
  kw(values: Record<string, unknown>): Kwargs {
    if (values === null || typeof values !== "object") throw new TypeError("py.kw(values): values must be a plain object");
    return new Kwargs(values);
  },
  /** Makes `fn` callable from Python as bunpy.call(name, *args, **kwargs). */
  register(name: string, fn: (...args: any[]) => unknown): void {
    if (typeof name !== "string" || name === "") throw new TypeError("py.register(name, fn): name must be a non-empty string");
    if (typeof fn !== "function") throw new TypeError("py.register(name, fn): fn must be a function");
    // bunpy's own functions have these names and pass a sandbox's jsFunctions check (they
    // check their caller themselves): a user's function must not get that pass
    if (name.startsWith("__bunpy_")) throw new TypeError('py.register(name, fn): names starting with "__bunpy_" are reserved for bunpy');
    running().callbacks.registered.set(name, fn);
  },
  /** Removes a function registered with py.register. Returns whether it was registered. */
  unregister(name: string): boolean {
    return main?.callbacks.registered.delete(name) ?? false;
  },
  /** Starts a context: Python on its own thread, with its own interpreter and GIL
      (mode "owngil", the default on 3.12+) or as a thread of the main interpreter ("worker"). */
  async context(options?: ContextOptions): Promise<Context> {
    return Context.start(running(), optionsObject(options, "py.context(options)"));
  },
  /** Starts a pool of contexts (size defaults to the number of cores) with keyed routing. */
  async pool(options?: PoolOptions): Promise<Pool> {
    return Pool.start(running(), optionsObject(options, "py.pool(options)"));
  },
  /** Loads an ASGI app ("module:app") into a pool of contexts: `Bun.serve({ fetch: app.fetch })`
      (see docs/serving.md). */
  async asgi(target: string, options?: AsgiOptions): Promise<AsgiApp> {
    return startAsgi(running(), target, optionsObject(options, "py.asgi(target, options)"));
  },
  /** Loads a WSGI app ("module:application") into a pool of contexts (see docs/serving.md). */
  async wsgi(target: string, options?: WsgiOptions): Promise<ServedApp> {
    return startWsgi(running(), target, optionsObject(options, "py.wsgi(target, options)"));
  },
  /** Loads an app (ASGI or WSGI, detected) and serves it with Bun.serve (see docs/serving.md). */
  async serve(options: ServeOptions): Promise<ServedServer> {
    return startServe(running(), options);
  },
  /** Listens for bunpy.send(channel, value) from Python (main interpreter and this thread's
      contexts). Returns a function that stops listening. */
  on(channel: string, listener: MessageListener): () => void {
    if (typeof channel !== "string") throw new TypeError("py.on(channel, listener): channel must be a string");
    if (typeof listener !== "function") throw new TypeError("py.on(channel, listener): listener must be a function");
    return hubOf(running()).on(channel, listener);
  },
  /** The messages of a channel as an async iterator: `for await (const v of py.messages("log"))`. */
  messages(channel: string): AsyncIterableIterator<unknown> {
    return messageIterator((listener) => py.on(channel, listener));
  },
  /**
   * A typed array over the memory of a Python object with the buffer protocol (bytes,
   * bytearray, memoryview, array.array, mmap, numpy arrays): no copy. N-dimensional and
   * non-contiguous buffers (and any with { shaped: true }) come as a PyView
   * { data, shape, strides, offset, dtype }. The object stays alive while the view does,
   * or until py.release(view). See docs/data.md.
   */
  view(obj: PyObject, options?: ViewOptions): ViewData | PyView {
    if (stateOf(obj) === undefined)
      throw new TypeError("py.view(obj): expected a Python object (a PyObject proxy); bytes returned by a call were copied already, view them with py.eval('memoryview(...)') or keep the object in Python");
    return openView(running(), obj, options);
  },
  /** Lets go of a view's Python object now: its memory is detached (typed arrays over it
      read as empty). Returns false when `view` is not a live view. */
  release(view: ViewData | PyView): boolean {
    return releaseView(view);
  },
  /** Whether a view was released (its memory detached). */
  isReleased(view: ViewData | PyView): boolean {
    return isReleased(view);
  },
  /**
   * Marks a TypedArray / DataView / ArrayBuffer / SharedArrayBuffer argument to reach Python
   * as a writable memoryview over the same memory (no copy). JS keeps the memory alive
   * while Python holds the memoryview (or anything made from it, e.g. np.frombuffer).
   */
  buffer(x: ArrayBufferView | ArrayBuffer | SharedArrayBuffer, options: BufferOptions = {}): BufferArg {
    const rt = running();
    void rt.callbacks.pinnedBuffers; // forgets buffers Python let go of since the last call
    return new BufferArg(x, options?.readonly === true);
  },
  /**
   * Marks a JS iterable, async iterable or ReadableStream argument to reach Python as an
   * iterator (async iterator for async sources, contexts only) that pulls from it on demand,
   * `batch` items per round trip (default 1024 for iterables, 1 for async sources).
   */
  iter(source: Iterable<unknown> | AsyncIterable<unknown> | ReadableStream<unknown>, options?: IterateOptions): IterArg {
    running();
    return new IterArg(source, options);
  },
  /** The key-value store shared by JS threads, the main interpreter and every context
      (bunpy.shared in Python): get/set/incr/compareAndSet/delete, atomic. See docs/data.md. */
  shared: new SharedStore(running),
  /** len(obj) */
  len(obj: PyObject): number {
    return objectOp(obj, "py.len", Op.Len) as number;
  },
  /** repr(obj) */
  repr(obj: PyObject): string {
    return objectOp(obj, "py.repr", Op.Repr) as string;
  },
  /** The qualified Python type name of a proxy, e.g. "collections.OrderedDict". */
  typeName(obj: PyObject): string {
    return objectOp(obj, "py.typeName", Op.TypeName) as string;
  },
  /** True for a PyObject proxy. */
  isPyObject(value: unknown): value is PyObject {
    return stateOf(value) !== undefined;
  },
  /** Whether Python has been started in this JS thread (py.version etc. start it). */
  get started(): boolean {
    return main !== undefined && !main.isClosed;
  },
  /**
   * Shuts Python down: closes this thread's contexts (queued calls finish first), then
   * Py_FinalizeEx (atexit handlers run, non-daemon threads are joined).
   * Later calls throw PythonClosedError; Python cannot be started again in this process.
   */
  async close(): Promise<void> {
    if (main !== undefined && !main.isClosed) {
      const hub = existingHub(main);
      if (main.insideCallback || (hub !== undefined && hub.activeCalls > 0))
        throw new BunpyError("py.close() must be called on the JS thread that started Python, outside any Python -> JS callback");
      // contexts first: their threads use the runtime that Py_FinalizeEx tears down (and
      // again if a pool started a replacement meanwhile)
      while (hub !== undefined && hub.contexts.size > 0)
        await Promise.allSettled([...hub.contexts.values()].map((c) => c.close()));
      closeInline(main);
      main.close();
    }
    closed = true;
  },
};

/** Internal hooks for bunpy's own benchmarks and tests. */
export const internals = {
  runtime(): MainInterpreter {
    return rt();
  },
  BunpyError,
};

export default py;
