/**
 * bunpy.JSError (shim/jserror.c, src/thrown-errors.ts) attacked as a hostile user would:
 * values that are not Errors, getters and Proxy traps that throw, errors kept, re-raised,
 * pickled and sent back, thousands of throws, long chains, throws from contexts at the same
 * time. Python must always see a JSError (never a value the callback did not return), and
 * nothing may stay behind.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { internals, py, PythonError } from "../src/index.ts";
import { contextModes, defineModule } from "./helpers.ts";

defineModule(
  "t_hje",
  `
import bunpy, copy, gc, pickle, sys

kept = []
returned = []

class Marker:
    pass

def catch(f, *args):
    """What Python saw: the JSError's fields, or what the call returned instead."""
    try:
        v = f(*args)
    except bunpy.JSError as e:
        return ["JSError", e.js_name, e.js_message, e.js_stack]
    except BaseException as e:
        return ["other", type(e).__name__, str(e)]
    return ["returned", repr(v)]

def marker_after(f):
    """Calls f, records what Python saw, and returns an object: a JS exception escaping
    the callback would lose this result (and its reference)."""
    returned.append(catch(f))
    return Marker()

def markers():
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is Marker)

def keep(f, message_only=False):
    try:
        f()
    except bunpy.JSError as e:
        kept.append(e)
        return len(kept) - 1

def args_of(f, rebind=False):
    """str, args and fields of the JSError f raises; rebind replaces its args afterwards
    (the next error with the same name and message must not see that)."""
    try:
        f()
    except bunpy.JSError as e:
        out = [str(e), list(e.args), e.js_name, e.js_message]
        if rebind:
            e.args = ("rebound",)
        return out

def stack_of(i):
    return kept[i].js_stack

def message_of(i):
    return kept[i].js_message

def drop_kept():
    kept.clear()
    gc.collect()

def reraise(f):
    try:
        f()
    except bunpy.JSError as e:
        try:
            raise e
        except bunpy.JSError as again:
            try:
                raise RuntimeError("wrapped") from again
            except RuntimeError as w:
                return [again is e, type(w.__cause__).__name__, w.__cause__.js_message]

def pickled(i):
    e = kept[i]
    p = pickle.loads(pickle.dumps(e))
    c = copy.copy(e)
    return [type(p).__name__, p.js_name, p.js_message, p.js_stack, list(p.args), c.js_stack == e.js_stack]

def the_error(i):
    return kept[i]

def stack_from_thread(i):
    import threading
    out = []
    def read():
        try:
            out.append(kept[i].js_stack)
        except RuntimeError as e:
            out.append(str(e))
    t = threading.Thread(target=read)
    t.start()
    t.join()
    return out[0]

def chain_from_python(n):
    e = None
    for _ in range(n):
        x = bunpy.JSError("link")
        x.__context__ = e
        e = x
    return e is not None

def chain_from_js(f, n):
    prev = None
    for _ in range(n):
        try:
            f()
        except bunpy.JSError as e:
            e.__cause__ = prev
            prev = e
    prev = None
    gc.collect()
    return n

class Sub(bunpy.JSError):
    pass

def subclass():
    s = Sub("made in Python")
    s.extra = 1
    p = pickle.loads(pickle.dumps(s))
    try:
        s.js_stack = 5
    except TypeError as e:
        bad = str(e)
    return [type(p).__name__, p.extra, list(p.args), s.js_stack, bad, bunpy.JSError().js_stack]
`,
);

const m: any = py.import("t_hje");
const rt = internals.runtime();
/** The kept-error and JS-function counters (src/callbacks.ts). */
const counters = rt.callbacks;
const live = (): [number, number] => {
  py.eval("0"); // takes the ids released so far
  return [counters.liveThrownErrors, counters.liveFunctions];
};

/** A Proxy of an Error whose getPrototypeOf trap answers once, then throws `inner`. */
function answersOnce(inner: unknown): Error {
  let n = 0;
  return new Proxy(new Error("proxied"), {
    getPrototypeOf() {
      if (n++ > 0) throw inner;
      return Error.prototype;
    },
  });
}

afterAll(() => {
  m.drop_kept();
});

describe("what can be thrown", () => {
  test("values that are not Errors: JSError with the value as text", () => {
    const cases: [unknown, string][] = [
      [null, "null"],
      [undefined, "undefined"],
      [Symbol("s"), "Symbol(s)"],
      [42, "42"],
      ["text", "text"],
      [{ toString: () => "custom" }, "custom"],
      [Object.create(null), "(the thrown value could not be turned into a string)"],
      [{ toString() { throw new Error("no"); } }, "(the thrown value could not be turned into a string)"],
    ];
    for (const [v, text] of cases) {
      const got = m.catch(() => {
        throw v;
      });
      expect(got.slice(0, 3)).toEqual(["JSError", "Error", text]);
    }
  });

  test("Errors with throwing getters, frozen, cyclic causes, lone surrogates, NULs", () => {
    const nasty = Object.defineProperties(new Error("x"), {
      message: { get() { throw new Error("m"); } },
      name: { get() { throw new Error("n"); } },
    });
    expect(m.catch(() => { throw nasty; }).slice(0, 3)).toEqual(["JSError", "Error", "(the thrown value could not be turned into a string)"]);
    expect(m.catch(() => { throw Object.freeze(new TypeError("frozen")); }).slice(0, 3)).toEqual(["JSError", "TypeError", "frozen"]);
    const a: any = new Error("a");
    a.cause = new Error("b", { cause: a });
    expect(m.catch(() => { throw a; }).slice(0, 3)).toEqual(["JSError", "Error", "a"]);
    expect(m.catch(() => { throw new RangeError("\ud800 lone \0 nul"); }).slice(0, 3)).toEqual(["JSError", "RangeError", "\ufffd lone \0 nul"]);
    const named = Object.assign(new Error("m"), { name: { toString: () => "Named" } });
    expect(m.catch(() => { throw named; }).slice(0, 3)).toEqual(["JSError", "Named", "m"]);
  });

  test("a stack getter that throws what cannot be turned into a string: js_stack says so, it does not raise", () => {
    for (const thrown of [Object.create(null), { toString() { throw new Error("again"); } }, answersOnce(1)]) {
      const e = Object.defineProperty(new Error("sg"), "stack", { get() { throw thrown; } });
      const got = m.catch(() => { throw e; });
      expect(got.slice(0, 3)).toEqual(["JSError", "Error", "sg"]);
      expect(got[3]).toStartWith("(the JS stack could not be read");
    }
    const plain = Object.defineProperty(new Error("sg2"), "stack", { get() { throw new Error("unreadable"); } });
    expect(m.catch(() => { throw plain; })[3]).toBe("(the JS stack could not be read: unreadable)");
  });

  test("a thrown Proxy whose traps throw later: Python sees a JSError, never a value the callback did not return", () => {
    const before = m.markers();
    const rows: unknown[] = [];
    for (const thrown of [answersOnce(answersOnce(1)), answersOnce(Object.create(null)), answersOnce(answersOnce(answersOnce(2)))]) {
      const r = m.marker_after(() => { throw thrown; });
      rows.push(r);
      r[Symbol.dispose]();
    }
    expect(m.markers()).toBe(before);
    const seen = py.eval("__import__('t_hje').returned[-3:]") as unknown[][];
    for (const s of seen) expect(s[0]).toBe("JSError");
  });

  test("a registered function (no lazy stack) whose error is too large for a message: a JSError that says so", () => {
    const w = rt.wire;
    const saved = w.maxMessage;
    py.register("t_hje_huge", () => {
      throw new Error("x".repeat(2 << 20));
    });
    w.maxMessage = 1 << 20;
    let got: any;
    try {
      got = m.marker_after(py.eval("lambda: __import__('bunpy').call('t_hje_huge')"));
    } finally {
      w.maxMessage = saved;
    }
    expect(py.repr(got)).toContain("Marker"); // the result, not an error out of py.call
    const seen = py.eval("__import__('t_hje').returned[-1]") as unknown[];
    expect(seen.slice(0, 2)).toEqual(["JSError", "Error"]);
    expect(seen[2]).toContain("too large");
  });
});

describe("the same error thrown again (its args tuple reused by the shim)", () => {
  test("str and args stay each error's own: same, other and long messages, other names, args rebound", () => {
    const same = new Error("same");
    const long = new RangeError("a message longer than the string memo keeps, " + "x".repeat(40));
    const throwing = (e: unknown) => () => {
      throw e;
    };
    for (let i = 0; i < 3; i++) {
      expect(m.args_of(throwing(same), true)).toEqual(["Error: same", ["Error: same"], "Error", "same"]);
      expect(m.args_of(throwing(same))).toEqual(["Error: same", ["Error: same"], "Error", "same"]);
      expect(m.args_of(throwing(new Error("other")))).toEqual(["Error: other", ["Error: other"], "Error", "other"]);
      expect(m.args_of(throwing(new TypeError("same")))).toEqual(["TypeError: same", ["TypeError: same"], "TypeError", "same"]);
      expect(m.args_of(throwing(long))).toEqual([`RangeError: ${long.message}`, [`RangeError: ${long.message}`], "RangeError", long.message]);
      expect(m.args_of(throwing(long), true)).toEqual([`RangeError: ${long.message}`, [`RangeError: ${long.message}`], "RangeError", long.message]);
      expect(m.args_of(throwing("a string"))).toEqual(["Error: a string", ["Error: a string"], "Error", "a string"]);
      expect(m.args_of(throwing(new Error("é ünïcode")))).toEqual(["Error: é ünïcode", ["Error: é ünïcode"], "Error", "é ünïcode"]);
    }
  });
});

describe("kept errors", () => {
  test("re-raised, chained, stored past the callback, pickled, copied, sent back to JS", () => {
    expect(m.reraise(() => { throw new TypeError("again"); })).toEqual([true, "JSError", "again"]);
    const i = m.keep(() => {
      const e = new SyntaxError("stored");
      e.stack = "STACK of stored";
      throw e;
    });
    expect(m.stack_of(i)).toBe("STACK of stored");
    const j = m.keep(() => {
      const e = new Error("unread");
      e.stack = "STACK of unread";
      throw e;
    });
    // unread, from a Python thread: the error says where to read it
    const k = m.keep(() => {
      throw new Error("thread");
    });
    expect(m.stack_from_thread(k)).toContain("JSError.js_stack is first read on the JS thread that threw");
    expect(m.pickled(j)).toEqual(["JSError", "Error", "unread", "STACK of unread", ["Error: unread"], true]);
    // back to JS: a proxy of the exception, its stack still its own
    const back: any = m.the_error(i);
    expect(back.js_message).toBe("stored");
    expect(back.js_stack).toBe("STACK of stored");
    expect(m.subclass()).toEqual(["Sub", 1, ["made in Python"], "", "JSError.js_stack must be a str", ""]);
  });

  test("10,000 later throws: a kept error's stack is still its own; nothing stays kept afterwards", () => {
    m.drop_kept();
    const [errors0, fns0] = live();
    const first = m.keep(() => {
      const e = new Error("first");
      e.stack = "STACK first";
      throw e;
    });
    for (let i = 0; i < 10000; i++) {
      const k = m.keep(() => {
        const e = new Error(`n${i}`);
        e.stack = `STACK ${i}`;
        throw e;
      });
      if (i % 2 === 0) py.exec(`__import__('t_hje').kept[${k}] = None`); // frees it: its slot is reused
    }
    expect(m.stack_of(first)).toBe("STACK first");
    expect(m.stack_of(10000)).toBe("STACK 9999");
    expect(m.message_of(5000)).toBe("n4999");
    expect(m.stack_of(5000)).toBe("STACK 4999");
    m.drop_kept();
    expect(live()).toEqual([errors0, fns0]);
  });

  test("long chains of JSErrors are freed without overflowing the C stack", () => {
    // 100,000 linked exceptions freed at once: Python's own exceptions use the trashcan
    // for this; the JSError type did not (SIGSEGV)
    expect(m.chain_from_python(200000)).toBe(true);
    expect(m.chain_from_js(() => { throw new Error("chained"); }, 100000)).toBe(100000);
    expect(py.eval("1 + 1")).toBe(2);
  });
});

describe("from contexts", () => {
  for (const mode of contextModes)
    test(`${mode}: hostile throws from a context's callback, while the main thread throws too`, async () => {
      const ctx = await py.context({ mode });
      try {
        await ctx.exec(`
import bunpy
def catch(name, arg):
    try:
        bunpy.call(name, arg)
    except bunpy.JSError as e:
        return [e.js_name, e.js_message, type(e.js_stack).__name__]
    return "no error"
`);
        const throwers = [null, Symbol("c"), Object.create(null), answersOnce(answersOnce(3)), Object.defineProperty(new Error("s"), "stack", { get() { throw Object.create(null); } })];
        py.register("t_hje_ctx_throw", (i: number) => {
          throw throwers[i];
        });
        const [errors0] = live();
        const main = async () => {
          for (let i = 0; i < 200; i++) {
            expect(m.catch(() => { throw new Error(`main ${i}`); })[2]).toBe(`main ${i}`);
            if (i % 20 === 0) await Bun.sleep(0);
          }
        };
        // batches of 10 in flight: a context serves requests while it waits for JS, nested
        // up to 32 deep (the documented limit)
        const fromCtx = (async () => {
          const all: unknown[] = [];
          for (let b = 0; b < 5; b++)
            all.push(...(await Promise.all(Array.from({ length: 10 }, (_, i) => ctx.call("__main__", "catch", ["t_hje_ctx_throw", i % throwers.length])))));
          return all;
        })();
        const [got] = await Promise.all([fromCtx, main()]);
        for (const g of got as unknown[][]) {
          expect(g[0]).toBe("Error");
          expect(g[2]).toBe("str");
        }
        expect((got as unknown[][])[0]![1]).toBe("null");
        expect((got as unknown[][])[2]![1]).toBe("(the thrown value could not be turned into a string)");
        expect(live()[0]).toBe(errors0);
      } finally {
        await ctx.close();
      }
    }, 30_000);
});

test("a JSError raised out to JS is a PythonError of type JSError", () => {
  let e: unknown;
  try {
    py.call("t_hje", "keep", [() => 1]); // returns None: no error
    py.eval("(lambda f: f())")(() => {
      throw new Error("to JS");
    });
  } catch (x) {
    e = x;
  }
  expect(e).toBeInstanceOf(PythonError);
  expect((e as PythonError).type).toBe("JSError");
  expect((e as PythonError).message).toContain("to JS");
});
