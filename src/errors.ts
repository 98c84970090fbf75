/**
 * Errors thrown by bunpy. Every error is a `BunpyError`; Python exceptions arrive as
 * `PythonError` carrying the Python type, message and formatted traceback.
 */

/** bunpy's own source directory: its frames are left out of error stacks. */
const SRC_DIR = `${import.meta.dir}/`;

/** Splits an `Error.stack` string into its header (name and message) and frame lines. */
function splitStack(stack: string): { header: string; frames: string[] } {
  const at = stack.search(/\n\s+at /);
  if (at < 0) return { header: stack, frames: [] };
  return { header: stack.slice(0, at), frames: stack.slice(at + 1).split("\n") };
}

/** Frame lines that are not bunpy's own (its src/ files), so an error printed by Bun shows
    the caller's code rather than bunpy's internals. */
function callerFrames(frames: string[]): string[] {
  const out: string[] = [];
  for (const f of frames) {
    if (f.includes(`(${SRC_DIR}`) || f.includes(`at ${SRC_DIR}`)) continue;
    // Bun prints an error from its `stack` and skips frames without a function name
    const anonymous = /^(\s+at )([^\s()][^()]*:\d+:\d+)$/.exec(f);
    out.push(anonymous ? `${anonymous[1]}<anonymous> (${anonymous[2]})` : f);
  }
  return out;
}

const TRACE = Symbol("bunpy.trace");

export class BunpyError extends Error {
  constructor(message?: string, options?: ErrorOptions) {
    // The JS frames are captured here and formatted only when `stack` is read (formatting
    // costs microseconds; many errors are caught and never printed).
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message, options);
    // an Error's frames are captured now and formatted lazily (a plain object's would not
    // be); made with the limit still 0, so the frames are captured once, just below
    const trace = new Error();
    Error.stackTraceLimit = limit;
    delete (this as { stack?: string }).stack; // the prototype's accessor below answers
    Error.captureStackTrace(trace, new.target); // from the caller of `new`, without the constructors
    Object.defineProperty(this, TRACE, { value: trace, writable: true, configurable: true });
  }
}

Object.defineProperty(BunpyError.prototype, "name", { value: "BunpyError", writable: true, configurable: true, enumerable: false });

/** `stack`: the message, then (for a PythonError) the Python frames innermost first, then
    the caller's JS frames without bunpy's own. Bun's error printer uses it too, because the
    error holds no engine-captured frames of its own. */
Object.defineProperty(BunpyError.prototype, "stack", {
  get(this: BunpyError & { [TRACE]?: { stack?: string } }): string {
    const message = this instanceof PythonError ? shortMessage(this) : this.message;
    const header = message ? `${this.name}: ${message}` : this.name;
    const trace = this[TRACE];
    const frames = trace ? callerFrames(splitStack(String(trace.stack ?? "")).frames) : [];
    const python = this instanceof PythonError ? pythonFrames(this.traceback) : [];
    const stack = [header, ...python, ...frames].join("\n");
    Object.defineProperty(this, "stack", { value: stack, writable: true, configurable: true, enumerable: false });
    return stack;
  },
  set(this: BunpyError, value: unknown) {
    Object.defineProperty(this, "stack", { value, writable: true, configurable: true, enumerable: false });
  },
  configurable: true,
  enumerable: false,
});

/** The Python frames of a formatted traceback as stack lines, innermost first, e.g.
    `    at inner (/app/calc.py:2)`; a SyntaxError's location is `    at <python> (<py.exec>:3)`.
    Only the last traceback counts: that of the exception that was raised (chained ones come
    before it). */
function pythonFrames(traceback: string): string[] {
  // a SyntaxError from compiling has no "Traceback" header, only its `File …, line N`
  const start = Math.max(0, traceback.lastIndexOf("Traceback (most recent call last):"));
  const out: string[] = [];
  for (const line of traceback.slice(start).split("\n")) {
    const m = /^  File "(.*)", line (\d+)(?:, in (.*))?$/.exec(line);
    if (m) out.push(`    at ${m[3] ?? "<python>"} (${m[1]}:${m[2]})`);
  }
  return out.reverse();
}

/** The Python bunpy embeds (set once it is found), named in hints of error messages. */
let running: { version: string; executable: string } | undefined;

/** @internal discovery tells which Python it found. */
export function noteRunningPython(py: { version: string; executable: string }): void {
  running = py;
}

/** For `No module named 'x'` (a top-level module): which Python bunpy runs and how to
    install into it, since it is often not the `python` of the user's shell. */
function installHint(type: string, message: string): string {
  if (type !== "ModuleNotFoundError" || running === undefined) return "";
  const m = /^No module named '([^'.]+)'$/.exec(message);
  if (!m) return "";
  const py = running;
  return ` (bunpy runs Python ${py.version} at ${py.executable}; install the package into it: ${py.executable} -m pip install ${m[1]})`;
}

/** A traceback kept in Python until it is first read: the main interpreter holds a reference
    to the exception and formats it on demand (formatting costs far more than the throw). */
export interface KeptTraceback {
  /** The formatted traceback; releases the Python exception. */
  format(): string;
}

interface PythonErrorInfo {
  short: string;
  type: string;
  module: string;
  message: string;
  traceback: string | KeptTraceback;
  lineno: number;
  offset: number;
}

/** A Python exception raised by the code bunpy ran. Its fields live in one private record
    (no per-instance properties to define: constructing one is cheap) and the traceback is
    formatted when it is first read. */
export class PythonError extends BunpyError {
  #info: PythonErrorInfo;

  constructor(type: string, module: string, message: string, traceback: string | KeptTraceback, lineno = -1, offset = -1) {
    const where = lineno > 0 ? ` (line ${lineno}${offset > 0 ? `, column ${offset}` : ""})` : "";
    const short = `${type}: ${message}${where}${installHint(type, message)}`;
    super(short);
    // `message` comes from the prototype's getter (below), which reads the record
    delete (this as { message?: string }).message;
    this.#info = { short, type, module, message, traceback, lineno, offset };
  }

  /** The exception class name, e.g. `"ZeroDivisionError"`. */
  get type(): string {
    return this.#info.type;
  }
  /** The module defining the exception class (`"builtins"` for built-in exceptions). */
  get module(): string {
    return this.#info.module;
  }
  /** The exception's own message, without the type prefix. */
  get pythonMessage(): string {
    return this.#info.message;
  }
  /** For a SyntaxError: 1-based line and column of the error, else undefined. */
  get lineno(): number | undefined {
    return this.#info.lineno > 0 ? this.#info.lineno : undefined;
  }
  get offset(): number | undefined {
    return this.#info.offset > 0 ? this.#info.offset : undefined;
  }
  /** The formatted Python traceback, as `traceback.format_exception` prints it (formatted
      when first read, then kept). */
  get traceback(): string {
    const info = this.#info;
    if (typeof info.traceback !== "string") info.traceback = info.traceback.format();
    return info.traceback;
  }

  /** @internal the one-line message, without the traceback */
  static short(e: PythonError): string {
    return e.#info.short;
  }
  /** @internal the kept traceback while it is not formatted yet */
  static kept(e: PythonError): KeptTraceback | undefined {
    const tb = e.#info.traceback;
    return typeof tb === "string" ? undefined : tb;
  }
}
Object.defineProperty(PythonError.prototype, "name", { value: "PythonError", writable: true, configurable: true, enumerable: false });

function shortMessage(e: PythonError): string {
  return PythonError.short(e);
}

/** The traceback without its last lines (the `Type: message` the error's message already
    has), as "\nTraceback (most recent call last):\n  File …", or "" without frames. */
function tracebackBody(traceback: string): string {
  const lines = traceback.trimEnd().split("\n");
  while (lines.length && !/^\s/.test(lines[lines.length - 1]!)) lines.pop();
  return lines.length ? `\n${lines.join("\n")}` : "";
}

/** True when the reader of a property is native code with no JS caller: Bun's own error
    printer (an uncaught error, a failing test). Only this file's frames (the getter's) are
    then on the JS stack. */
function readByRuntime(): boolean {
  const limit = Error.stackTraceLimit;
  if (!(Number(limit) >= 3)) return false;
  // two frames are enough (this getter and its reader): formatting a full stack per read
  // made `.message` cost microseconds
  Error.stackTraceLimit = 2;
  const probe: { stack?: string } = {};
  Error.captureStackTrace(probe, readByRuntime);
  Error.stackTraceLimit = limit;
  const frames = splitStack(`x\n${probe.stack ?? ""}`).frames;
  return frames.length > 0 && frames.every((f) => f.includes(THIS_FILE));
}
const THIS_FILE = `${SRC_DIR}errors.ts:`;

// A failing `bun test` prints a synchronously thrown error with its name, its message and
// the frames of the throw (not `stack`), so the Python traceback must be in the message Bun
// reads. Code reading `err.message` gets the one-line message.
Object.defineProperty(PythonError.prototype, "message", {
  get(this: PythonError): string {
    const short = shortMessage(this);
    if (!readByRuntime() || !this.traceback.includes('  File "')) return short;
    return short + tracebackBody(this.traceback);
  },
  set(this: PythonError, value: string) {
    Object.defineProperty(this, "message", { value, writable: true, enumerable: false, configurable: true });
  },
  configurable: true,
  enumerable: false,
});

/** A value could not cross the JS/Python boundary. `path` names where, e.g. `args[1].a`. */
export class ConversionError extends BunpyError {
  override name = "ConversionError";
  path: string;
  readonly reason: string;
  constructor(reason: string, path = "") {
    super(path ? `${path}: ${reason}` : reason);
    this.reason = reason;
    this.path = path;
  }
  /** Adds an outer path segment while the error travels up through containers. */
  within(segment: string): this {
    this.path = segment + (this.path.startsWith("[") || this.path === "" ? "" : ".") + this.path;
    // a value nested 1000 deep would make a path of thousands of characters: keep its ends
    if (this.path.length > 160) this.path = `${this.path.slice(0, 80)}…${this.path.slice(-60)}`;
    this.message = `${this.path}: ${this.reason}`;
    return this;
  }
}

/** Python is not running: it was closed with `py.close()` or failed to start. */
export class PythonClosedError extends BunpyError {
  override name = "PythonClosedError";
}

/** The context was closed (or failed to start) before the call could finish. */
export class ContextClosedError extends BunpyError {
  override name = "ContextClosedError";
}

/** A call ran longer than its `timeout`: it was interrupted inside Python. */
export class CallTimeoutError extends BunpyError {
  override name = "TimeoutError";
}

/** A context died under a call: its thread ended (pthread_exit from a C extension or
    ctypes), or, for a `mode: "process"` context, its host process died (a segfault,
    `os._exit`, the memory limit, a signal; the message says which). The context is dead:
    every later call rejects with this error too; a pool replaces it. */
export class ContextDiedError extends BunpyError {
  override name = "ContextDiedError";
}

/** No usable Python was found; the message lists every place that was tried. */
export class PythonNotFoundError extends BunpyError {
  override name = "PythonNotFoundError";
}

/** The C shim could not be built (compiler or headers missing, or the build failed). */
export class BuildError extends BunpyError {
  override name = "BuildError";
}

/** Status codes of the shim (shim/bunpy.h BP_OK / BP_ERR_*). */
export const enum Status {
  Ok = 0,
  Python = -1,
  Convert = -2,
  State = -3,
  Thread = -4,
  Memory = -5,
  JS = -6,
  Argument = -7,
  Busy = -8,
  Died = -9,
}

/**
 * The error for a failed shim call. `next` reads the values of the error record the shim
 * wrote (shim/errors.c); `closed` builds the error for Status.State.
 */
export function errorFromRecord(
  status: number,
  next: () => unknown,
  closed: (message: string) => Error,
  keep?: (handle: number) => KeptTraceback,
): Error {
  switch (status) {
    case Status.Python: {
      const type = next() as string;
      const module = next() as string;
      const message = next() as string;
      // a number: a handle to the exception, kept to be formatted when first read
      const tb = next();
      const traceback = typeof tb === "number" && keep !== undefined ? keep(tb) : String(tb);
      const lineno = next() as number;
      const offset = next() as number;
      return new PythonError(type, module, message, traceback, lineno, offset);
    }
    case Status.Convert:
      return new ConversionError(`cannot convert the Python result: ${next() as string}`);
    case Status.Argument:
      return new ConversionError(`an argument cannot become a Python object: ${next() as string}`);
    case Status.State:
      return closed(next() as string);
    case Status.Died:
      return new ContextDiedError(next() as string);
    case Status.Thread:
      return new BunpyError("this bunpy object belongs to another JS thread");
    case Status.Memory:
      return new BunpyError("out of memory in the bunpy shim");
    default:
      return new BunpyError(`unexpected status ${status} from the bunpy shim`);
  }
}
