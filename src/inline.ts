/**
 * Inline mode: Python coroutines of the main interpreter run on this JS thread (the Python
 * half is python/bunpy/_inline.py). `call` is one synchronous FFI call; a coroutine that
 * finishes in its first step settles the Promise at once. One that waits goes on as a task
 * on the thread's inline loop, which this file runs one iteration at a time (`pump`): right
 * away when callbacks are ready, on a timer for the loop's next timer, and when Python asks
 * for it (a wake-up message from another thread or from the fd watcher thread).
 */
import { ContextClosedError } from "./errors.ts";
import { hubOf } from "./hub.ts";
import type { MainInterpreter } from "./main-interpreter.ts";

/** What serving needs from the place an app runs: a context, or the inline runner. */
export interface AppCaller {
  call(module: string, fn: string, args?: unknown[]): Promise<unknown>;
  cast(module: string, fn: string, args?: unknown[]): void;
}

const MODULE = "bunpy._inline";

/** What a rejection gives Python as text; never throws (a getter or toString may). */
function textOf(e: unknown): string {
  try {
    return e instanceof Error ? String(e.message) : String(e);
  } catch {
    return "(the rejection reason could not be turned into a string)";
  }
}

interface Waiter {
  ok(v: unknown): void;
  fail(e: unknown): void;
}

export class InlineRunner implements AppCaller {
  private readonly waiting = new Map<number, Waiter>();
  private scheduled = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt = Infinity;
  /** Apps using this runner (the loop is closed when the last one closes). */
  users = 0;

  constructor(readonly rt: MainInterpreter) {
    const hub = hubOf(rt); // the doorbell wake-up messages arrive through
    hub.on("__bunpy_inline_wake", () => this.pumpSoon());
    rt.callbacks.registered.set("__bunpy_inline_async", (key: number, name: string, ...args: unknown[]) => {
      // the inline loop's calls come from the main interpreter; a context naming this
      // would reach every registered function with the main interpreter as its caller
      if (rt.callbacks.caller !== undefined) throw new ReferenceError('no JS function is registered as "__bunpy_inline_async"');
      const fn = rt.callbacks.registered.get(name);
      const settle = (ok: boolean, value: unknown) => {
        if (rt.isClosed) return;
        try {
          rt.callFunction(MODULE, "settle", [key, ok, value]);
        } catch (e) {
          // a result that cannot become a Python value (a Symbol, say): the await fails
          // with that, rather than waiting for ever
          try {
            rt.callFunction(MODULE, "settle", [key, false, textOf(e)]);
          } catch (again) {
            console.error("bunpy: inline settle failed:", again);
          }
        }
        this.pumpSoon();
      };
      Promise.resolve()
        .then(() => (fn === undefined ? Promise.reject(new ReferenceError(`no JS function "${name}"`)) : fn(...args)))
        .then(
          (v) => settle(true, v),
          (e) => settle(false, textOf(e)),
        );
      return null;
    });
  }

  call(module: string, fn: string, args: unknown[] = []): Promise<unknown> {
    let r: [number, unknown, boolean];
    try {
      r = this.rt.callFunction(MODULE, "start", [module, fn, args]) as [number, unknown, boolean];
    } catch (e) {
      return Promise.reject(e);
    }
    if (r[2]) this.pumpSoon();
    if (r[0] === 0) return Promise.resolve(r[1]);
    const token = r[1] as number;
    return new Promise((ok, fail) => this.waiting.set(token, { ok, fail }));
  }

  /** The inline loop is this thread's running loop now (see handle() in _inline.py). */
  private sticky = false;
  /** handle() calls running now (a request served from inside another's step nests). */
  private depth = 0;

  /**
   * An ASGI request: `args` are [sticky placeholder, ...bunpy._asgi.handle's arguments].
   * Returns the response record when the app finished in its first step, else a token for
   * wait(). One FFI call; the running loop stays set until the end of this event loop turn
   * or the next other call into Python, whichever comes first.
   */
  handle(args: unknown[]): unknown[] | number {
    const rt = this.rt;
    const was = this.sticky;
    args[0] = was;
    this.sticky = true; // set by the call even when it fails
    rt.enterHook = undefined;
    this.depth++;
    let r: unknown[] | number;
    try {
      r = rt.callFunction(MODULE, "handle", args) as unknown[] | number;
    } finally {
      // A request served from inside another one's step (the app called JS, which called
      // app.fetch) must not arm the unstick: the next call into Python from that JS
      // function would take the running loop from the outer app, still in its step.
      if (--this.depth === 0) {
        rt.enterHook = this.unstick;
        if (!was) setImmediate(this.unstickLater);
      }
    }
    if (typeof r === "number") this.pumpSoon();
    return r;
  }

  private readonly unstick = (): void => {
    if (!this.sticky) return;
    this.sticky = false;
    this.rt.enterHook = undefined;
    this.rt.callFunction(MODULE, "unstick", []);
  };

  private readonly unstickLater = (): void => {
    if (this.sticky && !this.rt.isClosed) this.unstick();
  };

  wait(token: number): Promise<unknown> {
    return new Promise((ok, fail) => this.waiting.set(token, { ok, fail }));
  }

  cast(module: string, fn: string, args: unknown[] = []): void {
    this.call(module, fn, args).catch((e) => {
      // after py.close() (inline apps left open): a client's disconnect has nothing to tell
      if (!this.rt.isClosed) console.error(`bunpy: ${module}.${fn} failed:`, e);
    });
  }

  pumpSoon(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.pump);
  }

  private readonly pump = (): void => {
    this.scheduled = false;
    let out: unknown[];
    try {
      out = this.rt.callFunction(MODULE, "pump", []) as unknown[];
    } catch (e) {
      console.error("bunpy: the inline event loop failed:", e);
      return;
    }
    const delay = out[0] as number;
    for (let i = 1; i < out.length; i += 3) {
      const token = out[i] as number;
      const w = this.waiting.get(token);
      if (w === undefined) continue;
      this.waiting.delete(token);
      if (out[i + 1] === true) w.ok(out[i + 2]);
      else {
        try {
          this.rt.callFunction(MODULE, "error", [token]);
          w.fail(new Error("bunpy: an inline task failed"));
        } catch (e) {
          w.fail(e);
        }
      }
    }
    if (delay === 0) this.pumpSoon();
    else if (delay > 0) this.later(delay * 1000);
  };

  private later(ms: number): void {
    const at = performance.now() + ms;
    if (this.timer !== undefined) {
      if (at >= this.timerAt) return;
      clearTimeout(this.timer);
    }
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      this.pump();
    }, ms);
    // a timer alone does not keep Bun alive once nobody waits for an inline call
    if (this.waiting.size === 0) this.timer.unref();
  }

  /** The last app on this runner closed: close its loop when nothing else runs there. */
  release(): void {
    if (--this.users > 0) return;
    this.users = 0;
    this.shutdown();
  }

  /** Closes the loop (what still runs there is cancelled) and fails what JS still waits for;
      also from py.close() with inline apps still open. */
  shutdown(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
    if (!this.rt.isClosed) {
      try {
        // cancels what still runs (requests past the apps' close timeout)
        this.rt.callFunction(MODULE, "close", []);
      } catch (e) {
        console.error("bunpy: closing the inline event loop failed:", e);
      }
    }
    const left = [...this.waiting.values()];
    this.waiting.clear();
    for (const w of left) w.fail(new ContextClosedError("the inline app was closed before this call's coroutine finished"));
  }
}

const runners = new WeakMap<MainInterpreter, InlineRunner>();

/** This JS thread's inline runner. */
export function inlineRunner(rt: MainInterpreter): InlineRunner {
  let r = runners.get(rt);
  if (r === undefined) runners.set(rt, (r = new InlineRunner(rt)));
  return r;
}

/** py.close(): this thread's inline loop goes first. A timer it had set for a task (an app
    asleep for an hour) kept the process alive after Python was gone. */
export function closeInline(rt: MainInterpreter): void {
  runners.get(rt)?.shutdown();
}
