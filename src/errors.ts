/**
 * Errors thrown by bunpy. Every error is a `BunpyError`; Python exceptions arrive as
 * `PythonError` carrying the Python type, message and formatted traceback.
 */

export class BunpyError extends Error {
  override name = "BunpyError";
}

/** A Python exception raised by the code bunpy ran. */
export class PythonError extends BunpyError {
  override name = "PythonError";
  /** The exception class name, e.g. `"ZeroDivisionError"`. */
  readonly type: string;
  /** The module defining the exception class (`"builtins"` for built-in exceptions). */
  readonly module: string;
  /** The formatted Python traceback, as `traceback.format_exception` prints it. */
  readonly traceback: string;
  /** For a SyntaxError: 1-based line and column of the error, else undefined. */
  readonly lineno?: number;
  readonly offset?: number;

  constructor(type: string, module: string, message: string, traceback: string, lineno = -1, offset = -1) {
    const where = lineno > 0 ? ` (line ${lineno}${offset > 0 ? `, column ${offset}` : ""})` : "";
    super(`${type}: ${message}${where}`);
    this.type = type;
    this.module = module;
    this.traceback = traceback;
    if (lineno > 0) this.lineno = lineno;
    if (offset > 0) this.offset = offset;
    this.pythonMessage = message;
  }
  /** The exception's own message, without the type prefix. */
  readonly pythonMessage: string;
}

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

/** A context's thread ended under a call (pthread_exit from a C extension or ctypes). The
    context is dead; a pool replaces it. */
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
export function errorFromRecord(status: number, next: () => unknown, closed: (message: string) => Error): Error {
  switch (status) {
    case Status.Python: {
      const type = next() as string;
      const module = next() as string;
      const message = next() as string;
      const traceback = next() as string;
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
