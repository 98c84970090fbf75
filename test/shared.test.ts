// Shared state (issue 14, part 3): py.shared / bunpy.shared, one store for JS, the main
// interpreter and every context; atomic increments and compare-and-set under contention.
import { afterAll, beforeEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ConversionError, py, PythonError } from "../src/index.ts";
import { closedAfterAll, contextModes } from "./helpers.ts";

beforeEach(() => py.shared.clear());
afterAll(() => py.shared.clear());

describe("py.shared from JS", () => {
  test("set / get / has / delete / keys, values by copy", () => {
    expect(py.shared.get("missing")).toBeUndefined();
    expect(py.shared.has("missing")).toBe(false);
    const value = { a: [1, 2.5, "x", null, true], big: 2n ** 70n, when: new Date(86_400_000), bytes: new Uint8Array([1, 2]), m: new Map([[1, "one"]]), s: new Set(["q"]) };
    py.shared.set("config", value);
    const got = py.shared.get("config") as typeof value;
    expect(got).toEqual(value);
    expect(got).not.toBe(value);
    value.a.push(99);
    expect((py.shared.get("config") as typeof value).a.length).toBe(5); // stored by copy
    expect(py.shared.has("config")).toBe(true);
    py.shared.set("other", "ünïcode");
    expect(py.shared.keys().sort()).toEqual(["config", "other"]);
    expect(py.shared.delete("config")).toBe(true);
    expect(py.shared.delete("config")).toBe(false);
    expect(py.shared.keys()).toEqual(["other"]);
  });

  test("incr: missing keys start at 0; deltas; non-numbers refused", () => {
    expect(py.shared.incr("n")).toBe(1);
    expect(py.shared.incr("n", 41)).toBe(42);
    expect(py.shared.incr("n", -2)).toBe(40);
    expect(py.shared.incr("f", 0.5)).toBe(0.5);
    py.shared.set("s", "text");
    expect(() => py.shared.incr("s")).toThrow(ConversionError);
    expect(() => py.shared.incr("n", NaN)).toThrow(TypeError);
    py.shared.set("huge", 2 ** 53 - 1);
    expect(() => py.shared.incr("huge")).toThrow(/2\^53/);
    // JS stores 2**53 as a float: incr used to hand back the same number, the 1 lost
    py.shared.set("past", 2 ** 53);
    expect(() => py.shared.incr("past")).toThrow(/2\^53/);
    expect(() => py.shared.incr("past", -(2 ** 54))).toThrow(/2\^53/);
    expect(py.shared.incr("past", -1)).toBe(2 ** 53 - 1);
    expect(py.shared.get("past")).toBe(2 ** 53 - 1);
    expect(py.eval("__import__('bunpy').shared.get('past')")).toBe(2 ** 53 - 1);
    // a number already past 2^53 is a float counter: it goes on as floats do
    py.shared.set("float", 1e17);
    expect(py.shared.incr("float", 1)).toBe(1e17);
    expect(py.shared.incr("float", 0)).toBe(1e17);
    expect(py.shared.incr("float", 1e17)).toBe(2e17);
  });

  test("incr over an integer set before frees the value it replaces (memory stays flat)", () => {
    for (let i = 0; i < 100; i++) {
      py.shared.set(`k${i}`, 5); // an Int32 (shorter than the float incr writes)
      expect(py.shared.incr(`k${i}`, 1)).toBe(6);
    }
    // measured in a fresh process (this one's other tests move RSS): 600,000 replaced
    // values grew it by ~20 MB when each leaked its old buffer
    const r = Bun.spawnSync([process.execPath, join(import.meta.dir, "fixtures", "shared-incr-memory.ts")], { stdout: "pipe", stderr: "pipe", timeout: 60_000 });
    expect(r.exitCode).toBe(0);
    expect(Number(r.stdout.toString().trim())).toBeLessThan(8);
  });

  test("compareAndSet: equal values swap, others do not; null matches a missing key", () => {
    expect(py.shared.compareAndSet("k", null, "first")).toBe(true);
    expect(py.shared.compareAndSet("k", null, "second")).toBe(false);
    expect(py.shared.compareAndSet("k", "first", { v: 2 })).toBe(true);
    expect(py.shared.compareAndSet("k", { v: 2 }, [3])).toBe(true);
    expect(py.shared.get("k")).toEqual([3]);
    py.shared.set("num", 1);
    expect(py.shared.compareAndSet("num", 1, 2)).toBe(true);
  });

  test("values that cannot be copied are refused with a ConversionError", () => {
    expect(() => py.shared.set("p", py.eval("object()"))).toThrow(ConversionError);
    expect(() => py.shared.set("f", () => 1)).toThrow(ConversionError);
    expect(() => py.shared.set("b", py.buffer(new Uint8Array(2)))).toThrow(ConversionError);
    expect(py.shared.has("p")).toBe(false);
    expect(() => py.shared.get(3 as any)).toThrow(TypeError);
  });
});

describe("bunpy.shared from Python", () => {
  test("the main interpreter sees what JS stored and the reverse", () => {
    py.shared.set("greeting", "hello");
    py.exec("import bunpy");
    expect(py.eval("bunpy.shared.get('greeting')")).toBe("hello");
    expect(py.eval("bunpy.shared.get('nothing', 7)")).toBe(7);
    py.exec("bunpy.shared.set('from_py', {'a': (1, 2), 'b': {3}, 'c': 1.5})");
    expect(py.shared.get("from_py")).toEqual({ a: [1, 2], b: new Set([3]), c: 1.5 });
    expect(py.eval("bunpy.shared.incr('n', 5)")).toBe(5);
    expect(py.shared.incr("n")).toBe(6);
    // ASCII strings from Python and strings from JS compare equal
    expect(py.eval("bunpy.shared.compare_and_set('greeting', 'hello', 'bye')")).toBe(true);
    expect(py.shared.compareAndSet("greeting", "bye", "ok")).toBe(true);
    expect(py.eval("bunpy.shared.delete('greeting')")).toBe(true);
    expect(py.eval("'n' in bunpy.shared")).toBe(true);
    expect(() => py.eval("bunpy.shared.set('x', object())")).toThrow(PythonError);
    expect(() => py.eval("bunpy.shared.set('x', object())")).toThrow(/cannot be stored|cannot/);
    expect(() => py.eval("bunpy.shared.set(1, 2)")).toThrow(/keys are strings/);
  });

  const { context } = closedAfterAll();
  for (const mode of contextModes) {
    test(`${mode} contexts share the same store`, async () => {
      const ctx = await context(mode);
      py.shared.set("cfg", { level: 3 });
      expect(await ctx.eval("__import__('bunpy').shared.get('cfg')")).toEqual({ level: 3 });
      await ctx.exec("import bunpy\nbunpy.shared.set('ctx_says', ['hi', 2])");
      expect(py.shared.get("ctx_says")).toEqual(["hi", 2]);
    });
  }
});

describe("no lost update", () => {
  for (const mode of contextModes) {
    test(`${mode} pool of 2: concurrent increments and compare-and-set loops from every context and JS`, async () => {
      const pool = await py.pool({ size: 2, mode });
      try {
        await pool.execAll(`
import bunpy
def bump(n):
    for _ in range(n):
        bunpy.shared.incr("hits")
    return n

def cas_bump(n):
    done = 0
    while done < n:
        cur = bunpy.shared.get("cas")
        if bunpy.shared.compare_and_set("cas", cur, cur + 1):
            done += 1
    return n
`);
        const N = 20_000;
        py.shared.set("cas", 0);
        const calls = pool.contexts.flatMap((c) => [
          pool.call("__main__", "bump", [N], undefined, { context: c }),
          pool.call("__main__", "cas_bump", [N / 4], undefined, { context: c }),
        ]);
        for (let i = 0; i < N; i++) py.shared.incr("hits");
        await Promise.all(calls);
        expect(py.shared.get("hits")).toBe(N * (pool.contexts.length + 1));
        expect(py.shared.get("cas")).toBe((N / 4) * pool.contexts.length);
      } finally {
        await pool.close();
      }
    }, 60_000);
  }
});
