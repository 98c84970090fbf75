/**
 * Python calling JS: JS functions passed as arguments, functions registered with
 * py.register and called through bunpy.call, exceptions both ways, nesting, lifetime of
 * the Python wrappers, and calls from Python threads.
 */
import { describe, expect, test } from "bun:test";
import { PythonError, internals, py } from "../src/index.ts";
import { defineModule } from "./helpers.ts";

defineModule(
  "t_callbacks",
  `
import bunpy, copy, pickle, threading

def call_it(f, *args, **kwargs):
    return f(*args, **kwargs)

def call_twice(f, x):
    return [f(x), f(x + 1)]

def type_of_result(f):
    r = f()
    return [type(r).__name__, repr(r)]

def catch_js(f, *args):
    try:
        f(*args)
    except bunpy.JSError as e:
        return {
            "type": type(e).__name__,
            "is_exception": isinstance(e, Exception),
            "js_name": e.js_name,
            "js_message": e.js_message,
            "js_stack": e.js_stack,
            "str": str(e),
        }
    return None

kept_errors = []
def keep_js_error(f):
    try:
        f()
    except bunpy.JSError as e:
        kept_errors.append(e)
    return len(kept_errors)

def kept_stacks():
    return [e.js_stack for e in kept_errors]

def kept_stack_from_thread(i):
    out = []
    t = threading.Thread(target=lambda: out.append(_stack_or_error(kept_errors[i])))
    t.start()
    t.join()
    return out[0]

def _stack_or_error(e):
    try:
        return ["ok", e.js_stack]
    except Exception as x:
        return [type(x).__name__, str(x)]

def drop_kept():
    kept_errors.clear()

def pickled_js_error(f):
    try:
        f()
    except bunpy.JSError as e:
        e.note = "kept"
        out = []
        for e2 in (pickle.loads(pickle.dumps(e)), copy.copy(e)):
            out.append([type(e2).__name__, str(e2), repr(e2), e2.args, e2.js_name, e2.js_message, e2.js_stack == e.js_stack, e2.note])
        return out

class MyJSError(bunpy.JSError):
    pass

def made_in_python():
    e = MyJSError("A: b")
    e.js_name, e.js_message = "A", "b"
    back = pickle.loads(pickle.dumps(e))
    plain = bunpy.JSError("x")
    return [isinstance(e, Exception), repr(back), back.js_name, back.js_message, plain.js_stack, hasattr(plain, "js_name")]

def swallow_js(f):
    try:
        f()
    except bunpy.JSError:
        return 1

def catch_registered(name, *args):
    try:
        return ["ok", bunpy.call(name, *args)]
    except bunpy.JSError as e:
        return ["JSError", e.js_name, e.js_message]

def call_registered(name, *args, **kwargs):
    return bunpy.call(name, *args, **kwargs)

def py_down(n):
    # Python side of the ping-pong: Python -> JS -> Python ...
    if n == 0:
        return ["py"]
    return ["py"] + bunpy.call("js_down", n - 1)

stored = []
def store(f):
    stored.append(f)
def call_stored(*args):
    return [f(*args) for f in stored]
def clear_stored():
    stored.clear()

def in_thread(f):
    out = {}
    def run():
        try:
            out["value"] = f()
        except BaseException as e:
            out["error"] = [type(e).__name__, str(e)]
    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out

def registered_in_thread(name):
    return in_thread(lambda: bunpy.call(name))

import datetime, sys

class CallingTZ(datetime.tzinfo):
    """A tzinfo whose utcoffset calls JS: it runs while bunpy converts a datetime."""
    def utcoffset(self, dt):
        bunpy.call("tz_probe")
        return datetime.timedelta(0)
    def dst(self, dt):
        return None

class CallingDict(dict):
    def items(self):
        bunpy.call("tz_probe")
        return super().items()

class CallingKey:
    def __hash__(self):
        bunpy.call("tz_probe")
        return 1

def calling_datetime_list():
    return [1, "abc", datetime.datetime(2020, 1, 1, tzinfo=CallingTZ()), "after"]

def calling_dict():
    return CallingDict(a=1)

def calling_key():
    return CallingKey()

def pass_calling_datetime(f):
    return f(datetime.datetime(2020, 1, 1, tzinfo=CallingTZ()))

del_errors = []
class DelTZ(datetime.tzinfo):
    """Dies while bunpy finishes writing a result; its __del__ tries to call JS."""
    def utcoffset(self, dt):
        return datetime.timedelta(0)
    def dst(self, dt):
        return None
    def __del__(self):
        try:
            bunpy.call("tz_probe", "x" * 200)
        except RuntimeError as e:
            del_errors.append(str(e))

def dying_result():
    return [datetime.datetime(2020, 1, 1, tzinfo=DelTZ()), "after", 42]

class DelCallable:
    def __call__(self):
        return ["result", 1]
    def __del__(self):
        try:
            bunpy.call("tz_probe", "y" * 200)
        except RuntimeError as e:
            del_errors.append(str(e))

def __getattr__(name):
    # module attributes named dying_*: a new callable each time, dropped after the call
    if name.startswith("dying_"):
        return DelCallable()
    raise AttributeError(name)

class Notifier:
    """Tells JS when it dies."""
    def __del__(self):
        bunpy.call("tz_probe", "z" * 300)

def raise_with_local():
    n = Notifier()
    raise ValueError("with a local")

marker = object()
def marker_refs():
    return sys.getrefcount(marker)
def call_unknown_with_marker():
    try:
        bunpy.call("never_registered_either", marker, [marker])
    except bunpy.JSError:
        pass
`,
);

const call = (fn: string, ...args: unknown[]): any => py.call("t_callbacks", fn, args);

describe("JS functions passed to Python", () => {
  test("arguments arrive converted, the return value comes back", () => {
    const seen: unknown[][] = [];
    const f = (...args: unknown[]) => {
      seen.push(args);
      return { sum: (args[0] as number) + (args[1] as number), got: args };
    };
    const r = call("call_it", f, 2, 3);
    expect(seen).toEqual([[2, 3]]);
    expect(r).toEqual({ sum: 5, got: [2, 3] });
    expect(call("call_twice", (x: number) => x * 10, 4)).toEqual([40, 50]);
  });

  test("values of every kind cross into the callback", () => {
    let got: unknown[] = [];
    py.exec("import datetime");
    const f = (...args: unknown[]) => {
      got = args;
      return null;
    };
    py.call("t_callbacks", "call_it", [
      f,
      py.eval("(1, 'é😀', b'\\x01', 2**70, 1.5, None, True, {'a': [1]}, {1: 2}, {3}, "
        + "datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))"),
    ]);
    expect(got).toEqual([[1, "é😀", new Uint8Array([1]), 2n ** 70n, 1.5, null, true, { a: [1] }, new Map([[1, 2]]), new Set([3]), new Date(Date.UTC(2020, 0, 1))]]);
  });

  test("keyword arguments arrive as a trailing object", () => {
    let got: unknown[] = [];
    const f = (...args: unknown[]) => {
      got = args;
      return args.length;
    };
    expect(py.call("t_callbacks", "call_it", [f, 1, "two"], { a: 1, b: [2] })).toBe(3);
    expect(got).toEqual([1, "two", { a: 1, b: [2] }]);
    expect(py.call("t_callbacks", "call_it", [f], { only: true })).toBe(1);
    expect(got).toEqual([{ only: true }]);
    call("call_it", f);
    expect(got).toEqual([]);
  });

  test("return values are converted for Python", () => {
    expect(call("type_of_result", () => 5)).toEqual(["int", "5"]);
    expect(call("type_of_result", () => 1.5)).toEqual(["float", "1.5"]);
    expect(call("type_of_result", () => 2n ** 80n)).toEqual(["int", String(2n ** 80n)]);
    expect(call("type_of_result", () => "s")).toEqual(["str", "'s'"]);
    expect(call("type_of_result", () => undefined)).toEqual(["NoneType", "None"]);
    expect(call("type_of_result", () => [1, [2]])).toEqual(["list", "[1, [2]]"]);
    expect(call("type_of_result", () => ({ k: new Set([1]) }))).toEqual(["dict", "{'k': {1}}"]);
    expect(call("type_of_result", () => new Uint8Array([65]))).toEqual(["bytes", "b'A'"]);
    const p = py.eval("object()");
    expect(py.call("t_callbacks", "call_it", [() => p])).toBe(p);
    // a function returned by a function is callable in Python too
    expect(call("type_of_result", () => () => 1)).toEqual(["JSFunction", expect.stringContaining("JS function")]);
  });

  test("a return value that cannot be converted raises in Python", () => {
    class NotPlain {}
    const r = call("catch_js", () => new NotPlain());
    expect(r.js_name).toBe("ConversionError");
    expect(r.js_message).toContain("NotPlain");
    expect(call("catch_js", () => "\ud800").js_message).toContain("surrogate");
  });
});

describe("py.register and bunpy.call", () => {
  test("a registered function is callable by name from Python", () => {
    py.register("add", (a: number, b: number) => a + b);
    expect(py.eval("__import__('bunpy').call('add', 2, 40)")).toBe(42);
    expect(call("call_registered", "add", 1, 2)).toBe(3);
    let got: unknown[] = [];
    py.register("echo", (...args: unknown[]) => {
      got = args;
      return args;
    });
    expect(py.call("t_callbacks", "call_registered", ["echo", 1], { x: "y" })).toEqual([1, { x: "y" }]);
    expect(got).toEqual([1, { x: "y" }]);
    py.register("add", (a: number, b: number) => a - b); // re-registering replaces
    expect(call("call_registered", "add", 5, 2)).toBe(3);
    expect(py.unregister("add")).toBe(true);
    expect(py.unregister("add")).toBe(false);
  });

  test("an unknown registered name gives a clear error", () => {
    const r = call("catch_registered", "never_registered");
    expect(r[0]).toBe("JSError");
    expect(r[2]).toContain('"never_registered"');
    expect(r[2]).toContain("py.register");
    let err: unknown;
    try {
      call("call_registered", "never_registered");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PythonError);
    expect((err as PythonError).type).toBe("JSError");
    expect((err as PythonError).message).toContain("never_registered");
  });

  test("bunpy.call checks its name argument", () => {
    expect(() => py.eval("__import__('bunpy').call(1)")).toThrow(/TypeError/);
    expect(() => py.eval("__import__('bunpy').call()")).toThrow(/TypeError/);
  });

  test("register validates its arguments", () => {
    expect(() => py.register("", () => 1)).toThrow(TypeError);
    expect(() => py.register("x", 5 as unknown as () => void)).toThrow(TypeError);
  });
});

describe("JS exceptions", () => {
  test("a JS throw becomes bunpy.JSError, catchable in Python", () => {
    const r = call("catch_js", () => {
      throw new RangeError("out of range!");
    });
    expect(r.type).toBe("JSError");
    expect(r.is_exception).toBe(true);
    expect(r.js_name).toBe("RangeError");
    expect(r.js_message).toBe("out of range!");
    expect(r.js_stack).toContain("out of range!");
    expect(r.js_stack).toContain("callbacks.test.ts");
    expect(r.str).toContain("out of range!");
  });

  test("js_stack is formatted when first read, also long after the throw (issue 11)", () => {
    function thrower(label: string) {
      throw new TypeError(`kept ${label}`);
    }
    call("drop_kept");
    call("keep_js_error", () => thrower("one"));
    call("keep_js_error", () => thrower("two"));
    // other calls and callbacks in between
    for (let i = 0; i < 100; i++) expect(call("call_it", (x: number) => x, i)).toBe(i);
    // never read on the JS thread: a Python thread cannot fetch it from JS, and says why
    const [kind, text] = call("kept_stack_from_thread", 1);
    expect(kind).toBe("RuntimeError");
    expect(text).toContain("JS thread");
    const stacks = call("kept_stacks") as string[];
    expect(stacks[0]).toContain("kept one");
    expect(stacks[0]).toContain("thrower");
    expect(stacks[0]).toContain("callbacks.test.ts");
    expect(stacks[1]).toContain("kept two");
    // once read, the text is kept: any thread can read it
    expect(call("kept_stack_from_thread", 1)).toEqual(["ok", stacks[1]]);
    call("drop_kept");
  });

  test("an unread js_stack holds nothing once the exception is gone", () => {
    const rt = internals.runtime();
    const live = () => [rt.callbacks.liveFunctions, rt.callbacks.liveThrownErrors];
    py.eval("0");
    const fns = rt.callbacks.liveFunctions, thrown = rt.callbacks.liveThrownErrors;
    for (let i = 0; i < 2000; i++)
      expect(call("swallow_js", () => {
        throw new Error(`e${i}`);
      })).toBe(1);
    py.eval("0");
    expect(live()).toEqual([fns, thrown]);
    call("keep_js_error", () => {
      throw new Error("kept");
    });
    py.eval("0");
    // the thrower (its frame is in the traceback) and the Error kept for js_stack
    expect(live()).toEqual([fns + 1, thrown + 1]);
    // reading the stack gives the Error back at once; the text stays with the exception
    expect((call("kept_stacks") as string[])[0]).toContain("kept");
    expect(live()).toEqual([fns + 1, thrown]);
    call("drop_kept");
    py.eval("0");
    expect(live()).toEqual([fns, thrown]);
    call("keep_js_error", () => {
      throw new Error("kept, never read");
    });
    call("drop_kept");
    expect(live()).toEqual([fns, thrown]);
  });

  test("JSError pickles and copies with its attributes; Python code can make and subclass it", () => {
    const rows = call("pickled_js_error", () => {
      throw new RangeError("too far");
    }) as unknown[][];
    for (const row of rows)
      expect(row).toEqual(["JSError", "RangeError: too far", "JSError('RangeError: too far')", ["RangeError: too far"], "RangeError", "too far", true, "kept"]);
    expect(call("made_in_python")).toEqual([true, "MyJSError('A: b')", "A", "b", "", false]);
  });

  test("non-Error throws are reported too", () => {
    expect(call("catch_js", () => {
      throw "a string";
    }).js_message).toBe("a string");
    expect(call("catch_js", () => {
      throw 42;
    }).js_message).toBe("42");
    expect(call("catch_js", () => {
      throw null;
    }).js_message).toBe("null");
    const weird = {
      toString() {
        throw new Error("cannot describe");
      },
    };
    const r = call("catch_js", () => {
      throw weird;
    });
    expect(r.type).toBe("JSError");
    expect(typeof r.js_message).toBe("string");
  });

  test("an error message with a lone surrogate still becomes a JSError", () => {
    const r = call("catch_js", () => {
      throw new Error("bad \ud800 text");
    });
    expect(r.type).toBe("JSError");
    expect(r.js_message).toContain("bad ");
    expect(r.js_message).toContain(" text");
    // and nothing is left pending on the JS side
    expect(py.eval("'still ok'")).toBe("still ok");
  });

  test("an uncaught JSError surfaces in JS as PythonError with type JSError", () => {
    let err: unknown;
    try {
      call("call_it", () => {
        throw new TypeError("thrown in JS");
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PythonError);
    const pe = err as PythonError;
    expect(pe.type).toBe("JSError");
    expect(pe.module).toBe("bunpy");
    expect(pe.message).toContain("thrown in JS");
    expect(pe.traceback).toContain("call_it");
    expect(py.eval("2 + 2")).toBe(4);
  });

  test("a callback returning a Promise gives a clear error", () => {
    const r = call("catch_js", async () => 1);
    expect(r.type).toBe("JSError");
    expect(r.js_message).toContain("Promise");
    py.register("async_fn", () => Promise.resolve(5));
    expect(() => call("call_registered", "async_fn")).toThrow(/Promise/);
    const thenable = { then: (ok: (v: number) => void) => ok(1) };
    expect(call("catch_js", () => thenable).js_message).toContain("Promise");
  });
});

describe("Python code run during a conversion", () => {
  test("cannot call JS, and the value being converted is not corrupted", () => {
    let probes = 0;
    py.register("tz_probe", () => ++probes);
    // a tzinfo runs while the result is written
    let err: unknown;
    try {
      call("calling_datetime_list");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PythonError);
    expect((err as PythonError).type).toBe("RuntimeError");
    expect((err as PythonError).message).toContain("JS cannot be called");
    // a dict subclass's items() runs during toJS()
    const d = call("calling_dict");
    expect(() => d.toJS()).toThrow(/JS cannot be called/);
    // a key's __hash__ runs while the arguments are read
    const key = call("calling_key");
    expect(() => call("call_it", (m: unknown) => m, new Map([[key, 1]]))).toThrow(/JS cannot be called/);
    // a tzinfo runs while the arguments of a call into JS are written
    expect(() => call("pass_calling_datetime", (x: unknown) => x)).toThrow(/JS cannot be called/);
    expect(probes).toBe(0);
    expect(call("call_it", (x: string) => x + "!", "ok")).toBe("ok!");
  });

  test("a __del__ run when an exception is dropped does not overwrite the error", () => {
    let probes = 0;
    py.register("tz_probe", () => ++probes);
    for (let i = 0; i < 20; i++) {
      let err: unknown;
      try {
        call("raise_with_local");
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(PythonError);
      expect((err as PythonError).type).toBe("ValueError");
      expect((err as PythonError).pythonMessage).toBe("with a local");
      expect((err as PythonError).traceback).toContain("raise_with_local");
    }
    expect(py.eval("'ok'")).toBe("ok");
  });

  test("a __del__ run while a result is finished cannot call JS over the result", () => {
    let probes = 0;
    py.register("tz_probe", () => ++probes);
    expect(call("dying_result")).toEqual([new Date(Date.UTC(2020, 0, 1)), "after", 42]);
    expect(py.call("t_callbacks", "dying_callable")).toEqual(["result", 1]);
    // each __del__ either reached JS at a safe moment or was refused, never both or neither
    const errors = py.eval("__import__('t_callbacks').del_errors") as string[];
    expect(probes + errors.length).toBe(2);
    expect(errors.every((e) => e.includes("JS cannot be called"))).toBe(true);
  });
});

describe("nesting", () => {
  test("JS -> Python -> JS -> Python ... works several levels deep", () => {
    py.register("js_down", (n: number): string[] => (n === 0 ? ["js"] : ["js", ...(call("py_down", n - 1) as string[])]));
    const r = call("py_down", 12);
    expect(r).toEqual(["py", "js", "py", "js", "py", "js", "py", "js", "py", "js", "py", "js", "py"]);
  });

  test("nested calls with large values do not corrupt the outer call", () => {
    const big = "x".repeat(300_000);
    const r = py.call("t_callbacks", "call_it", [
      (s: string) => {
        const inner = py.call("t_callbacks", "call_it", [(t: string) => t + "!", s + "?"]);
        return [inner.length, py.call("builtins", "len", [big + big])];
      },
      big,
    ]);
    expect(r).toEqual([300_002, 600_000]);
  });

  test("an exception deep inside nested calls unwinds cleanly", () => {
    let depth = 0;
    const f = (n: number): unknown => {
      depth++;
      if (n === 0) throw new Error("bottom");
      return py.call("t_callbacks", "call_it", [f, n - 1]);
    };
    let err: unknown;
    try {
      f(5);
    } catch (e) {
      err = e;
    }
    expect(depth).toBe(6);
    expect(err).toBeInstanceOf(PythonError);
    expect((err as PythonError).message).toContain("bottom");
    expect(py.eval("1")).toBe(1);
  });
});

describe("lifetime of JS function wrappers", () => {
  const live = () => internals.runtime().callbacks.liveFunctions;

  test("wrappers are released when Python drops them", () => {
    const base = live();
    for (let i = 0; i < 2000; i++) expect(call("call_it", (x: number) => x + 1, i)).toBe(i + 1);
    expect(live()).toBeLessThanOrEqual(base);
    py.eval("0");
    expect(live()).toBe(base);
  });

  test("a function Python keeps stays alive until Python drops it", () => {
    const base = live();
    let calls = 0;
    call("store", () => ++calls);
    call("store", (x: number) => x * 2);
    expect(live()).toBe(base + 2);
    expect(call("call_stored", 21)).toEqual([1, 42]);
    call("clear_stored");
    py.eval("0");
    expect(live()).toBe(base);
  });

  test("functions in a call that fails to convert are not kept", () => {
    const base = live();
    for (let i = 0; i < 50; i++) {
      expect(() => call("call_it", () => i, Symbol("no"))).toThrow(/args\[1\]/);
      expect(() => py.call("t_callbacks", "call_it", [() => i], { bad: new (class X {})() })).toThrow(/kwargs\.bad/);
    }
    py.eval("0");
    expect(live()).toBe(base);
    const a: unknown[] = [() => 1];
    a.push(a);
    expect(() => call("call_it", a)).toThrow(/cyclic/);
    expect(live()).toBe(base);
  });
});

test("arguments of a call to an unknown name are not leaked", async () => {
  const before = call("marker_refs") as number;
  for (let i = 0; i < 200; i++) call("call_unknown_with_marker");
  for (let i = 0; i < 4; i++) {
    Bun.gc(true);
    await Bun.sleep(5);
  }
  py.eval("0");
  // before the fix every call kept one reference (200); a live proxy may keep one
  expect((call("marker_refs") as number) - before).toBeLessThanOrEqual(1);
});

describe("threads", () => {
  test("calling a JS function from a Python thread is a RuntimeError in Python", () => {
    let called = false;
    const r = call("in_thread", () => {
      called = true;
      return 1;
    });
    expect(called).toBe(false);
    expect(r.error?.[0]).toBe("RuntimeError");
    expect(r.error?.[1]).toContain("thread");
    py.register("from_thread", () => 1);
    const r2 = call("registered_in_thread", "from_thread");
    expect(r2.error?.[0]).toBe("RuntimeError");
    expect(call("in_thread", py.eval("lambda: 7"))).toEqual({ value: 7 });
    expect(py.eval("'alive'")).toBe("alive");
  });
});
