/**
 * Python calling into one JS thread: the JS functions, `py.buffer` memory and thrown
 * errors Python holds by id, and the dispatch of its calls (the shim's callback).
 *
 * Ids Python lets go of come back through the shim's released list (header slot 5):
 * positive ids are functions and pins, `-1 - slot` a thrown error's slot.
 */
import type { Wire } from "./codec.ts";
import { Status } from "./errors.ts";
import type { Shim } from "./ffi.ts";
import { ThrownErrors } from "./thrown-errors.ts";

/** Released ids are taken at the next message once this many wait; fewer are taken by a
    microtask (a caught JS error gives one back per throw, and an FFI call to take each
    would cost a crossing per throw). */
const RELEASE_BATCH = 64;

/** Who calls a registered function: a context (its sandbox's `jsFunctions`, if any). */
export interface Caller {
  readonly jsFunctions: ReadonlySet<string> | undefined;
}

/** What invoke() returns when the function threw (the thrown value is in `threw`). */
const THREW = Symbol("threw");

export class Callbacks {
  /** Functions registered by name (py.register, and bunpy's own private ones). */
  readonly registered = new Map<string, Function>();
  private readonly functions = new Map<number, Function>();
  /** Memory lent to Python with py.buffer, by pin id (ids shared with JS functions). */
  private readonly pinned = new Map<number, object>();
  private nextId = 1;
  /** Errors thrown into Python by this thread's callbacks, kept for a lazy `js_stack`. */
  private readonly thrown = new ThrownErrors();
  private releaseScheduled = false;
  /** JS functions called by Python that are running right now (nested calls count each). */
  dispatching = 0;
  /** The context whose registered function runs right now (its synchronous part, see
      callRegistered), undefined for the main interpreter. bunpy's own registered functions
      check it: a request body or a stream is read only by the caller it belongs to,
      whatever id another (sandboxed) context names. */
  caller: Caller | undefined = undefined;
  private threw: unknown;

  /** `closed`: whether the owning interpreter was closed. */
  constructor(
    private readonly lib: Shim,
    private readonly io: number,
    private readonly wire: Wire,
    private readonly closed: () => boolean,
  ) {}

  // ---------------------------------------------------------- ids Python holds --

  functionId(fn: Function): number {
    const id = this.takeId();
    this.functions.set(id, fn);
    return id;
  }

  pin(target: object): number {
    const id = this.takeId();
    this.pinned.set(id, target);
    return id;
  }

  private takeId(): number {
    const id = this.nextId++;
    if (this.nextId > 0x7fffffff) this.nextId = 1;
    return id;
  }

  /** Forgets ids handed out for a message that failed to encode (Python never saw them). */
  forgetFunctions(ids: readonly number[]): void {
    for (const id of ids) if (!this.functions.delete(id)) this.pinned.delete(id);
  }

  /** Called as a message starts when the shim has released ids (header slot 5 not 0):
      takes them now if a batch waits, else once from a microtask. */
  released(): void {
    if (this.wire.header[5]! >= RELEASE_BATCH) this.takeReleased();
    else if (!this.releaseScheduled) {
      this.releaseScheduled = true;
      queueMicrotask(this.releaseSoon);
    }
  }

  private readonly releaseSoon = (): void => {
    this.releaseScheduled = false;
    const w = this.wire;
    if (this.closed() || w.writing !== 0 || w.suspended !== 0 || this.dispatching !== 0) return;
    if (w.header[5] !== 0) this.takeReleased();
  };

  /** Takes every released id now (one FFI call). Not while a message is being written. */
  takeReleased(): void {
    if (this.lib.bp_take_released(this.io) !== 0) return;
    const ids = this.wire.result() as number[];
    for (const id of ids) {
      if (id < 0) this.thrown.release(-1 - id);
      else if (!this.functions.delete(id)) this.pinned.delete(id);
    }
  }

  /** Runs `count` after taking the released ids (for the leak counters below). */
  private counted(count: () => number): number {
    const w = this.wire;
    if (w.writing !== 0) return w.nested(() => this.counted(count));
    if (w.header[5] !== 0) this.takeReleased();
    return count();
  }

  /** Buffers lent to Python (py.buffer) that Python still holds. */
  get pinnedBuffers(): number {
    return this.counted(() => this.pinned.size);
  }

  /** Thrown errors kept for a `JSError.js_stack` not read yet (for leak tests). */
  get liveThrownErrors(): number {
    return this.counted(() => this.thrown.live);
  }

  /** JS functions Python still holds (for leak tests). */
  get liveFunctions(): number {
    return this.counted(() => this.functions.size);
  }

  // ------------------------------------------------------------ Python -> JS --

  /** Runs the function registered as `name` (py.register) for `caller` (a context, or
      undefined for the main interpreter), which `caller` names while it runs; Python's
      keyword arguments, if any, arrive as one trailing object. A context's sandbox
      `jsFunctions` limits the names it may call (bunpy's own check their caller). */
  callRegistered(name: string, args: unknown[], kwargs: unknown, caller: Caller | undefined): unknown {
    // the rule first: a context limited by jsFunctions cannot learn which other names exist
    const allowed = caller?.jsFunctions;
    if (allowed !== undefined && !allowed.has(name) && !name.startsWith("__bunpy_"))
      throw new ReferenceError(`the JS function "${name}" is not in this context's sandbox jsFunctions`);
    const fn = this.registered.get(name);
    if (fn === undefined) throw new ReferenceError(`no JS function is registered as "${name}" (use py.register)`);
    if (kwargs !== null) args.push(kwargs);
    const outer = this.caller;
    this.caller = caller;
    try {
      return fn(...args);
    } finally {
      this.caller = outer;
    }
  }

  /** The shim's callback: Python called a JS function. The arguments are in the io
      buffer; the result (or the error record) goes back there. `target`: a function id,
      -1 for a registered name, below -1 for the stack of thrown error slot `-2 - target`. */
  dispatch(target: number): number {
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
        value = this.callRegistered(name, args, kwargs, undefined);
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
      this.begin().writeTop(value);
      return Status.Ok;
    } catch (e) {
      return this.writeThrown(e, true);
    } finally {
      this.dispatching--;
    }
  }

  private begin(): Wire {
    const w = this.wire;
    if (w.header[5] !== 0) this.released();
    w.begin();
    return w;
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
    this.begin().writeTop(text.toWellFormed());
    return Status.Ok;
  }
}
