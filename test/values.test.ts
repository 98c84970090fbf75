/**
 * The conversion table (docs/guide.md "Values crossing the boundary"), both directions,
 * with the real embedded CPython: JS -> Python is checked on the Python side (type name,
 * repr, equality tests written in Python), Python -> JS on the JS side.
 */
import { describe, expect, test } from "bun:test";
import { ConversionError, PythonError, py } from "../src/index.ts";
import { defineModule } from "./helpers.ts";

py.exec("import datetime");
defineModule(
  "t_values",
  `
import datetime, sys
def ident(x): return x
def tname(x): return type(x).__name__
def rep(x): return repr(x)
def is_exact(x, name): return type(x).__name__ == name
def length(x): return len(x)
def eq(a, b): return type(a) is type(b) and a == b
def float_hex(x): return x.hex() if type(x) is float else None
def is_neg_zero(x): return type(x) is float and x == 0.0 and str(x) == "-0.0"
def utf8(s): return s.encode("utf-8")
def codepoints(s): return [ord(c) for c in s]
def dt_fields(d):
    return [d.year, d.month, d.day, d.hour, d.minute, d.second, d.microsecond,
            None if d.tzinfo is None else d.utcoffset().total_seconds()]
def keys_types(d): return sorted(type(k).__name__ for k in d)
def deep_list(n):
    x = []
    for _ in range(n):
        x = [x]
    return x
def deep_depth(x):
    n = 0
    while isinstance(x, list) and x:
        x = x[0]
        n += 1
    return n
def self_list():
    a = [1]
    a.append(a)
    return a
def self_dict():
    d = {}
    d["me"] = d
    return d
def call_it(f, *a, **k): return f(*a, **k)
def same(a, b): return a is b
`,
);

const call = (fn: string, ...args: unknown[]): any => py.call("t_values", fn, args);
const tname = (v: unknown): string => call("tname", v);
const rep = (v: unknown): string => call("rep", v);
const ident = (v: unknown): any => call("ident", v);

/** Object.is-aware deep check for numbers that toEqual would also accept (it treats -0 apart). */
function expectSame(actual: unknown, expected: unknown): void {
  expect(Object.is(actual, expected)).toBe(true);
}

describe("None", () => {
  test("null and undefined become None, None comes back as null", () => {
    expect(rep(null)).toBe("None");
    expect(rep(undefined)).toBe("None");
    expect(call("is_exact", undefined, "NoneType")).toBe(true);
    expect(py.eval("None")).toBeNull();
    expect(ident(undefined)).toBeNull();
    expect(ident(null)).toBeNull();
  });
});

describe("booleans", () => {
  test("true/false <-> True/False", () => {
    expect(rep(true)).toBe("True");
    expect(rep(false)).toBe("False");
    expect(tname(true)).toBe("bool");
    expect(py.eval("True")).toBe(true);
    expect(py.eval("False")).toBe(false);
    expect(py.eval("1 == 1")).toBe(true);
  });
});

describe("numbers", () => {
  test("safe integers become int and come back as numbers", () => {
    for (const n of [0, 1, -1, 42, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, -(2 ** 31) - 1, 2 ** 40 + 7, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER]) {
      expect(tname(n)).toBe("int");
      expect(rep(n)).toBe(BigInt(n).toString());
      const back = ident(n);
      expect(typeof back).toBe("number");
      expectSame(back, n);
    }
    expect(py.eval("2**53 - 1")).toBe(Number.MAX_SAFE_INTEGER);
    expect(py.eval("-(2**53 - 1)")).toBe(Number.MIN_SAFE_INTEGER);
    expect(py.eval("7 * 6")).toBe(42);
  });

  test("non-integral numbers become float and come back exactly", () => {
    for (const x of [0.5, -0.5, 0.1, 1 / 3, Math.PI, -1e-300, 5e-324, Number.MAX_VALUE, Number.EPSILON, 123456.789]) {
      expect(tname(x)).toBe("float");
      expect(call("eq", x, py.call("builtins", "float", [String(x)]))).toBe(true);
      expectSame(ident(x), x);
    }
    expect(rep(0.1)).toBe("0.1");
    expect(py.eval("0.1 + 0.2")).toBe(0.1 + 0.2);
  });

  test("-0 is a float -0.0 both ways", () => {
    expect(tname(-0)).toBe("float");
    expect(call("is_neg_zero", -0)).toBe(true);
    expect(rep(-0)).toBe("-0.0");
    expectSame(ident(-0), -0);
    expectSame(py.eval("-0.0"), -0);
    expectSame(py.eval("0.0"), 0);
    // +0 stays an int
    expect(tname(0)).toBe("int");
  });

  test("NaN and infinities", () => {
    expect(rep(NaN)).toBe("nan");
    expect(rep(Infinity)).toBe("inf");
    expect(rep(-Infinity)).toBe("-inf");
    expect(tname(NaN)).toBe("float");
    expectSame(ident(NaN), NaN);
    expectSame(ident(Infinity), Infinity);
    expectSame(ident(-Infinity), -Infinity);
    expectSame(py.eval("float('nan')"), NaN);
    expectSame(py.eval("float('-inf')"), -Infinity);
  });

  test("integral numbers outside the safe range travel as float", () => {
    for (const x of [1e20, -1e20, 2 ** 53, -(2 ** 53), 2 ** 60, 1e300]) {
      expect(tname(x)).toBe("float");
      expectSame(ident(x), x);
    }
    expect(rep(1e20)).toBe("1e+20");
    expect(py.eval("1e20")).toBe(1e20);
    expect(py.eval("float(2**60)")).toBe(2 ** 60);
  });

  test("integral Python floats come back as numbers", () => {
    expect(py.eval("3.0")).toBe(3);
    expect(py.eval("float(10**15)")).toBe(1e15);
  });
});

describe("bigint", () => {
  test("bigint becomes int of any size", () => {
    const big = 2n ** 1000n + 12345n;
    expect(tname(big)).toBe("int");
    expect(rep(big)).toBe(big.toString());
    expect(rep(-big)).toBe((-big).toString());
    expect(call("eq", big, py.eval("2**1000 + 12345"))).toBe(true);
    expect(rep(0n)).toBe("0");
    expect(rep(-1n)).toBe("-1");
    expect(rep(5n)).toBe("5");
    expect(tname(5n)).toBe("int");
    expect(rep(2n ** 64n)).toBe("18446744073709551616");
    expect(rep(-(2n ** 63n))).toBe("-9223372036854775808");
  });

  test("Python ints beyond 2^53 come back as bigint, negative too", () => {
    expect(py.eval("2**53")).toBe(2n ** 53n);
    expect(py.eval("-(2**53)")).toBe(-(2n ** 53n));
    expect(py.eval("2**63")).toBe(2n ** 63n);
    expect(py.eval("-(2**63)")).toBe(-(2n ** 63n));
    expect(py.eval("2**64 - 1")).toBe(2n ** 64n - 1n);
    expect(py.eval("2**1000")).toBe(2n ** 1000n);
    expect(py.eval("-(2**1000)")).toBe(-(2n ** 1000n));
    expect(py.eval("-(2**1000) + 1")).toBe(-(2n ** 1000n) + 1n);
    expect(py.eval("3**500")).toBe(3n ** 500n);
  });

  test("bigints round trip: safe values come back as numbers, others as bigints", () => {
    for (const b of [0n, 1n, -1n, 2n ** 53n - 1n, -(2n ** 53n - 1n)]) {
      const back = ident(b);
      expect(typeof back).toBe("number");
      expect(back).toBe(Number(b));
    }
    for (const b of [2n ** 53n, -(2n ** 53n), 2n ** 62n + 1n, -(2n ** 100n) - 7n, 10n ** 300n]) {
      const back = ident(b);
      expect(typeof back).toBe("bigint");
      expect(back).toBe(b);
    }
  });
});

describe("strings", () => {
  test("ASCII, CJK, astral plane and empty strings", () => {
    for (const s of ["", "a", "hello world", "日本語のテキスト", "中文", "한국어", "😀", "a😀b🎉c", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "é", "\u0000nul\u0000", "x".repeat(100)]) {
      expect(tname(s)).toBe("str");
      expect(call("length", s)).toBe([...s].length); // Python counts code points
      expect(call("codepoints", s)).toEqual([...s].map((c) => c.codePointAt(0)!));
      expect(ident(s)).toBe(s);
    }
    expect(py.eval("'\\U0001F600'")).toBe("😀");
    expect(py.eval("chr(0x4e2d) + chr(0x6587)")).toBe("中文");
    expect(py.eval("''")).toBe("");
    expect(call("utf8", "é😀")).toEqual(new Uint8Array(Buffer.from("é😀", "utf8")));
  });

  test("a 1 MiB string round trips", () => {
    const ascii = "abcdefgh".repeat(128 * 1024);
    expect(ascii.length).toBe(1 << 20);
    expect(call("length", ascii)).toBe(1 << 20);
    expect(ident(ascii)).toBe(ascii);
    const mixed = "aé中😀".repeat(1 << 18);
    expect(call("length", mixed)).toBe(4 << 18);
    expect(ident(mixed)).toBe(mixed);
    expect(py.eval("'z' * (1 << 20)")).toBe("z".repeat(1 << 20));
  });

  test("a JS string with a lone surrogate is a ConversionError naming the argument", () => {
    for (const s of ["\ud800", "ab\udc80", "x\ud83d", "\ude00y", `${"long ".repeat(20)}\ud800`]) {
      let err: unknown;
      try {
        call("ident", s);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConversionError);
      expect((err as ConversionError).message).toContain("args[0]");
      expect((err as ConversionError).message).toContain("surrogate");
    }
    expect(() => py.call("t_values", "ident", [1, ["ok", "\ud800"]])).toThrow(/args\[1\]\[1\]/);
    expect(py.eval("1 + 1")).toBe(2);
  });

  test("short ASCII strings, memoized by both decoders, keep their exact values: colliding slots, every length around the memo's limit, ASCII next to non-ASCII", () => {
    // thousands of distinct short strings: many share a memo slot; each must come back as itself
    const strs: string[] = [];
    for (let i = 0; i < 5000; i++) strs.push(i.toString(36).padStart(1 + (i % 26), "k"));
    for (let n = 20; n <= 28; n++) strs.push("m".repeat(n), "m".repeat(n - 1) + "n");
    strs.push("é", "e", "ab\u00ff", "ab\u007f", "key", "kéy");
    expect(ident(strs)).toEqual(strs);
    expect(py.call("t_values", "codepoints", ["ab\u00ff"])).toEqual([97, 98, 255]);
    // as dict keys, both ways, and checked on the Python side
    const obj = Object.fromEntries(strs.map((k, i) => [k, i]));
    expect(ident(obj)).toEqual(obj);
    expect(py.call("t_values", "eq", [{ a: 1, é: 2 }, py.eval("{'a': 1, 'é': 2}")])).toBe(true);
    // a string seen before as a key, sent again as a value and the reverse
    expect(ident([{ key: "kéy" }, "key", { kéy: "key" }])).toEqual([{ key: "kéy" }, "key", { kéy: "key" }]);
  });

  test("the string memos hold across contexts and Workers (each has its own)", async () => {
    const ctx = await py.context();
    try {
      await ctx.exec("def ident(x):\n    return x\n");
      const words = Array.from({ length: 3000 }, (_, i) => `w${(i * 7919) % 3001}`);
      const rows = words.map((w, i) => ({ [w]: i, word: w }));
      expect(await ctx.call("__main__", "ident", [rows])).toEqual(rows);
      expect(ident(rows)).toEqual(rows);
      const worker = new Worker(new URL("./fixtures/memo-worker.ts", import.meta.url));
      const got = await new Promise<unknown>((ok, fail) => {
        worker.onmessage = (e) => ok(e.data);
        worker.onerror = fail;
        worker.postMessage(rows);
      });
      worker.terminate();
      expect(got).toEqual(rows);
    } finally {
      await ctx.close();
    }
  });

  test("a Python str with a lone surrogate is a ConversionError", () => {
    expect(() => py.eval("'\\udc80'")).toThrow(ConversionError);
    expect(() => py.eval("['ok', 'a\\ud800b']")).toThrow(/surrogate/);
    expect(py.eval("len('\\udc80')")).toBe(1);
    expect(ident("still fine")).toBe("still fine");
  });
});

describe("bytes", () => {
  test("Uint8Array, ArrayBuffer and Buffer become bytes", () => {
    expect(rep(new Uint8Array([0, 1, 255]))).toBe("b'\\x00\\x01\\xff'");
    expect(rep(new Uint8Array([104, 105]).buffer)).toBe("b'hi'");
    expect(rep(Buffer.from("hey"))).toBe("b'hey'");
    expect(tname(Buffer.from("hey"))).toBe("bytes");
    expect(tname(new ArrayBuffer(3))).toBe("bytes");
    // a view into a larger buffer sends only its own bytes
    const big = new Uint8Array([1, 2, 3, 4, 5, 6]);
    expect(rep(big.subarray(2, 4))).toBe("b'\\x03\\x04'");
  });

  test("bytes come back as a Uint8Array", () => {
    const v = py.eval("b'\\x00ab\\xff'");
    expect(v).toBeInstanceOf(Uint8Array);
    expect(v.constructor).toBe(Uint8Array);
    expect([...v]).toEqual([0, 97, 98, 255]);
    const back = ident(Buffer.from([9, 8, 7]));
    expect(back.constructor).toBe(Uint8Array);
    expect([...back]).toEqual([9, 8, 7]);
  });

  test("empty and 1 MiB bytes round trip", () => {
    const empty = ident(new Uint8Array(0));
    expect(empty).toBeInstanceOf(Uint8Array);
    expect(empty.length).toBe(0);
    expect(call("length", new Uint8Array(0))).toBe(0);
    const big = new Uint8Array(1 << 20);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919) & 0xff;
    expect(call("length", big)).toBe(1 << 20);
    const back = ident(big) as Uint8Array;
    expect(back.length).toBe(big.length);
    expect(Buffer.compare(back, big)).toBe(0);
    expect(py.eval("bytes(range(256)) * 4096").length).toBe(1 << 20);
  });
});

describe("lists and tuples", () => {
  test("Array <-> list, tuple -> Array", () => {
    expect(tname([1, 2])).toBe("list");
    expect(rep([1, "a", null, true, 1.5])).toBe("[1, 'a', None, True, 1.5]");
    expect(rep([])).toBe("[]");
    expect(py.eval("[1, 'two', [3.5, None]]")).toEqual([1, "two", [3.5, null]]);
    expect(py.eval("(1, 2, (3,))")).toEqual([1, 2, [3]]);
    expect(Array.isArray(py.eval("()"))).toBe(true);
    expect(py.eval("()")).toEqual([]);
    expect(ident([[], [[]], [1, [2, [3]]]])).toEqual([[], [[]], [1, [2, [3]]]]);
  });

  test("sparse arrays send holes as None", () => {
    const a = [1, , 3]; // eslint-disable-line no-sparse-arrays
    expect(rep(a)).toBe("[1, None, 3]");
  });
});

describe("dicts and Maps", () => {
  test("plain object <-> dict with str keys", () => {
    expect(tname({ a: 1 })).toBe("dict");
    expect(rep({ a: 1, b: "x", c: [1] })).toBe("{'a': 1, 'b': 'x', 'c': [1]}");
    expect(rep({})).toBe("{}");
    expect(py.eval("{'a': 1, 'b': {'c': None}}")).toEqual({ a: 1, b: { c: null } });
    const o = py.eval("{'x': 1}");
    expect(Object.getPrototypeOf(o)).toBe(Object.prototype);
    expect(call("keys_types", { 1: "a", b: 2 })).toEqual(["str", "str"]);
    expect(py.eval("{}")).toEqual({});
  });

  test("own enumerable keys only, in JS order, even with Object.prototype polluted", () => {
    const o = { b: 1, 2: "two", a: [1], 1: "one" };
    expect(call("keys_types", o)).toEqual(["str", "str", "str", "str"]);
    expect(rep(o)).toBe("{'1': 'one', '2': 'two', 'b': 1, 'a': [1]}");
    const bare = Object.assign(Object.create(null) as Record<string, unknown>, { x: 1, y: { z: 2 } });
    expect(rep(bare)).toBe("{'x': 1, 'y': {'z': 2}}");
    Object.defineProperty(Object.prototype, "polluted", { value: "no", enumerable: true, configurable: true });
    try {
      expect(rep(o)).toBe("{'1': 'one', '2': 'two', 'b': 1, 'a': [1]}");
      expect(rep({ n: { m: 1 } })).toBe("{'n': {'m': 1}}");
      expect(rep(bare)).toBe("{'x': 1, 'y': {'z': 2}}");
    } finally {
      delete (Object.prototype as Record<string, unknown>)["polluted"];
    }
    // a getter that pollutes it half-way through a message: the objects after it still
    // send their own keys only
    const sneaky = {
      first: {
        get g() {
          Object.defineProperty(Object.prototype, "late", { value: 1, enumerable: true, configurable: true });
          return 0;
        },
      },
      second: { k: 1 },
    };
    try {
      expect(rep(sneaky)).toBe("{'first': {'g': 0}, 'second': {'k': 1}}");
    } finally {
      delete (Object.prototype as Record<string, unknown>)["late"];
    }
  });

  test("a key named __proto__ stays an own property", () => {
    const v = py.eval("{'__proto__': 1, 'a': 2}");
    expect(Object.getPrototypeOf(v)).toBe(Object.prototype);
    expect(Object.keys(v).sort()).toEqual(["__proto__", "a"]);
    expect(Object.getOwnPropertyDescriptor(v, "__proto__")?.value).toBe(1);
    const sent = JSON.parse('{"__proto__": 5}');
    expect(rep(sent)).toBe("{'__proto__': 5}");
  });

  test("dict with non-str keys comes back as a Map", () => {
    const m = py.eval("{1: 'a', 'b': 2, (1, 2): 3, None: 4}");
    expect(m).toBeInstanceOf(Map);
    expect(m.get(1)).toBe("a");
    expect(m.get("b")).toBe(2);
    expect(m.get(null)).toBe(4);
    expect([...m.keys()].find((k: unknown) => Array.isArray(k))).toEqual([1, 2]);
    expect(py.eval("{2**70: 1}")).toEqual(new Map([[2n ** 70n, 1]]));
  });

  test("Map becomes a dict", () => {
    expect(tname(new Map())).toBe("dict");
    expect(rep(new Map<unknown, unknown>([[1, "a"], ["b", 2]]))).toBe("{1: 'a', 'b': 2}");
    expect(call("keys_types", new Map<unknown, unknown>([[1, 1], ["s", 2], [2n ** 80n, 3], [1.5, 4]]))).toEqual(["float", "int", "int", "str"]);
    const back = ident(new Map<unknown, unknown>([[1, "one"], [2, "two"]]));
    expect(back).toEqual(new Map([[1, "one"], [2, "two"]]));
    // a Map whose keys are all strings comes back as a plain object
    expect(ident(new Map([["a", 1]]))).toEqual({ a: 1 });
  });

  test("a Map with an unhashable key is a ConversionError", () => {
    expect(() => ident(new Map([[[1], 1]]))).toThrow(ConversionError);
    expect(ident(1)).toBe(1);
  });
});

describe("sets", () => {
  test("Set <-> set, frozenset -> Set", () => {
    expect(tname(new Set([1]))).toBe("set");
    expect(rep(new Set())).toBe("set()");
    expect(call("eq", new Set([1, "a"]), py.eval("{1, 'a'}") /* comes back as a Set */)).toBe(true);
    expect(py.eval("{1, 2, 3}")).toEqual(new Set([1, 2, 3]));
    const f = py.eval("frozenset({'x', 'y'})");
    expect(f).toBeInstanceOf(Set);
    expect(f).toEqual(new Set(["x", "y"]));
    expect(py.eval("set()")).toEqual(new Set());
    expect(ident(new Set(["a", 2, 2n ** 70n]))).toEqual(new Set(["a", 2, 2n ** 70n]));
  });
});

describe("dates", () => {
  test("Date becomes an aware UTC datetime with ms precision", () => {
    const d = new Date(Date.UTC(2023, 10, 14, 22, 13, 20, 123));
    expect(tname(d)).toBe("datetime");
    expect(call("dt_fields", d)).toEqual([2023, 11, 14, 22, 13, 20, 123000, 0]);
    expect(call("dt_fields", new Date(0))).toEqual([1970, 1, 1, 0, 0, 0, 0, 0]);
    expect(call("dt_fields", new Date(-1))).toEqual([1969, 12, 31, 23, 59, 59, 999000, 0]);
  });

  test("an aware datetime comes back as the same instant", () => {
    const back = py.eval("datetime.datetime(2020, 2, 29, 12, 30, 15, 250000, tzinfo=datetime.timezone.utc)");
    expect(back).toBeInstanceOf(Date);
    expect(back.getTime()).toBe(Date.UTC(2020, 1, 29, 12, 30, 15, 250));
    const plus2 = py.eval("datetime.datetime(2020, 1, 1, 2, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))");
    expect(plus2.getTime()).toBe(Date.UTC(2020, 0, 1, 0, 0));
    // sub-millisecond parts are dropped, rounding down like JS
    expect(py.eval("datetime.datetime(2020, 1, 1, 0, 0, 0, 999999, tzinfo=datetime.timezone.utc)").getTime()).toBe(
      Date.UTC(2020, 0, 1, 0, 0, 0, 999),
    );
    expect(py.eval("datetime.datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=datetime.timezone.utc)").getTime()).toBe(-1);
  });

  test("Dates round trip exactly", () => {
    for (const t of [0, 1, -1, 1700000000123, -2208988800000, 253402300799999, -62135596800000, 951782400000]) {
      const back = ident(new Date(t));
      expect(back).toBeInstanceOf(Date);
      expect(back.getTime()).toBe(t);
    }
  });

  test("a naive datetime is local time", () => {
    const oldTZ = process.env.TZ;
    py.exec("import os, time\n_old_tz = os.environ.get('TZ')");
    try {
      process.env.TZ = "America/New_York";
      py.exec("os.environ['TZ'] = 'America/New_York'\ntime.tzset()");
      const winter = py.eval("datetime.datetime(2020, 1, 2, 3, 4, 5, 678000)");
      expect(winter.getTime()).toBe(new Date(2020, 0, 2, 3, 4, 5, 678).getTime());
      expect(winter.getTime()).toBe(Date.UTC(2020, 0, 2, 8, 4, 5, 678)); // UTC-5
      const summer = py.eval("datetime.datetime(2020, 7, 2, 3, 4, 5)");
      expect(summer.getTime()).toBe(Date.UTC(2020, 6, 2, 7, 4, 5)); // UTC-4
    } finally {
      if (oldTZ === undefined) delete process.env.TZ;
      else process.env.TZ = oldTZ;
      py.exec("if _old_tz is None:\n    os.environ.pop('TZ', None)\nelse:\n    os.environ['TZ'] = _old_tz\ntime.tzset()");
    }
  });

  test("an invalid Date is a ConversionError", () => {
    expect(() => ident(new Date(NaN))).toThrow(ConversionError);
  });
});

describe("functions and proxies", () => {
  test("a JS function becomes a Python callable", () => {
    expect(tname(() => 1)).toBe("JSFunction");
    expect(call("call_it", (a: number, b: number) => a * b, 6, 7)).toBe(42);
  });

  test("a PyObject proxy becomes the same Python object", () => {
    py.exec("class _Thing:\n    pass\n_thing = _Thing()");
    const p = py.eval("_thing");
    expect(py.isPyObject(p)).toBe(true);
    expect(call("same", p, py.eval("_thing"))).toBe(true);
    py.exec("import t_values as _tv");
    expect(py.call("t_values", "same", [p, p])).toBe(true);
    expect(py.eval("_tv.ident(_thing) is _thing")).toBe(true);
    expect(ident(p)).toBe(p); // identity comes back as the same proxy
    expect(ident([p, { k: p }])).toEqual([p, { k: p }]);
    expect(py.call("builtins", "id", [p])).toBe(py.eval("id(_thing)"));
  });

  test("objects without a JS form come back as proxies", () => {
    const c = py.eval("complex(1, 2)");
    expect(py.isPyObject(c)).toBe(true);
    expect(String(c)).toBe("(1+2j)");
    expect(tname(c)).toBe("complex");
  });
});

describe("nesting", () => {
  test("nested containers both ways", () => {
    const v = {
      list: [1, [2, [3, [4]]]],
      map: new Map<unknown, unknown>([[1, { deep: [new Set([1, 2])] }]]),
      bytes: new Uint8Array([1, 2]),
      date: new Date(86400000),
      s: "😀",
    };
    expect(rep(v)).toBe(
      "{'list': [1, [2, [3, [4]]]], 'map': {1: {'deep': [{1, 2}]}}, 'bytes': b'\\x01\\x02', " +
        "'date': datetime.datetime(1970, 1, 2, 0, 0, tzinfo=datetime.timezone.utc), 's': '😀'}",
    );
    expect(ident(v)).toEqual(v);
    expect(py.eval("{'a': [(1, {2: frozenset({3})})]}")).toEqual({ a: [[1, new Map([[2, new Set([3])]])]] });
  });

  test("JS values nested deeper than 1000 levels are a ConversionError", () => {
    let deep: unknown[] = [];
    for (let i = 0; i < 1200; i++) deep = [deep];
    expect(() => ident(deep)).toThrow(ConversionError);
    expect(() => ident(deep)).toThrow(/nested deeper/);
    let ok: unknown[] = [];
    for (let i = 0; i < 900; i++) ok = [ok];
    expect(call("deep_depth", ok)).toBe(900);
    let obj: Record<string, unknown> = {};
    for (let i = 0; i < 1200; i++) obj = { a: obj };
    expect(() => ident(obj)).toThrow(ConversionError);
    expect(ident([1, 2])).toEqual([1, 2]);
  });

  test("Python values nested deeper than 1000 levels are a ConversionError", () => {
    expect(() => call("deep_list", 1500)).toThrow(ConversionError);
    expect(() => call("deep_list", 1500)).toThrow(/nested deeper/);
    const ok = call("deep_list", 900);
    let n = 0;
    for (let x = ok; Array.isArray(x) && x.length; x = x[0]) n++;
    expect(n).toBe(900);
    expect(py.eval("'alive'")).toBe("alive");
  });

  test("a JS array containing itself is a ConversionError mentioning the cycle", () => {
    const a: unknown[] = [1];
    a.push(a);
    expect(() => ident(a)).toThrow(ConversionError);
    expect(() => ident(a)).toThrow(/cyclic/);
    const o: Record<string, unknown> = { x: 1 };
    o["self"] = { back: o };
    expect(() => ident(o)).toThrow(/cyclic/);
    const m = new Map<unknown, unknown>();
    m.set("m", m);
    expect(() => ident(m)).toThrow(/cyclic/);
    expect(ident("after")).toBe("after");
  });

  test("a Python list containing itself is a ConversionError mentioning the cycle", () => {
    expect(() => call("self_list")).toThrow(ConversionError);
    expect(() => call("self_list")).toThrow(/cyclic/);
    expect(() => call("self_dict")).toThrow(/cyclic/);
    expect(py.eval("[1, 2]")).toEqual([1, 2]);
  });

  test("the same object twice (not a cycle) converts", () => {
    const shared = [1, 2];
    expect(ident([shared, shared, { a: shared }])).toEqual([[1, 2], [1, 2], { a: [1, 2] }]);
    expect(py.eval("(lambda x: [x, x])([3])")).toEqual([[3], [3]]);
  });
});

describe("values without a Python form", () => {
  test("class instances are a ConversionError naming the path", () => {
    class Point {
      x = 1;
    }
    let err: unknown;
    try {
      ident({ a: [1, new Point()] });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConversionError);
    expect((err as ConversionError).path).toBe("args[0].a[1]");
    expect((err as ConversionError).message).toContain("args[0].a[1]");
    expect((err as ConversionError).message).toContain("Point");
    expect(() => py.call("t_values", "ident", [1, { k: new Map([["m", new Point()]]) }])).toThrow(/args\[1\]\.k\[m\]/);
  });

  test("Symbols are a ConversionError naming the path", () => {
    expect(() => ident(Symbol("s"))).toThrow(ConversionError);
    expect(() => ident([0, { b: Symbol("s") }])).toThrow(/args\[0\]\[1\]\.b/);
    expect(() => py.call("t_values", "ident", [], { kw: Symbol("s") })).toThrow(/kwargs\.kw/);
  });

  test("the interpreter keeps working after conversion errors", () => {
    expect(ident({ ok: true })).toEqual({ ok: true });
  });
});

describe("generated round trips", () => {
  /** mulberry32: a small seeded PRNG, so a failure reproduces. */
  function prng(seed: number): () => number {
    return () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = seed;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  const rnd = prng(0xb0b);
  const int = (n: number) => Math.floor(rnd() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

  const alphabet = ["a", "z", "0", " ", "\n", "\u0000", "é", "ß", "中", "文", "😀", "🎉", "𝔘", "\u{10FFFF}", "\uFFFD", "\\", "'", '"'];
  const str = () => Array.from({ length: int(12) }, () => pick(alphabet)).join("");

  function number(): number {
    switch (int(9)) {
      case 0: return int(200) - 100;
      case 1: return (int(2 ** 31) - 2 ** 30) * 4; // around the int32 edges
      case 2: return int(Number.MAX_SAFE_INTEGER) * (rnd() < 0.5 ? -1 : 1);
      case 3: return (rnd() - 0.5) * 10 ** int(40);
      case 4: return pick([-0, NaN, Infinity, -Infinity, 0.5, 5e-324, Number.MAX_VALUE]);
      case 5: return pick([1e20, -(2 ** 60), 2 ** 53, 2 ** 70]); // integral, outside the safe range
      case 6: return pick([2 ** 31 - 1, -(2 ** 31), 2 ** 31, -(2 ** 31) - 1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER]);
      default: return rnd() * 1000;
    }
  }
  function bigint(): bigint {
    const digits = 1 + int(60);
    let v = 0n;
    for (let i = 0; i < digits; i++) v = v * 10n + BigInt(int(10));
    return rnd() < 0.5 ? -v : v;
  }
  /** A hashable key; keys are kept distinct by their Python value. */
  function key(): string | number | bigint {
    switch (int(3)) {
      case 0: return str();
      case 1: return int(1000) - 500;
      default: return 2n ** 60n + BigInt(int(1000));
    }
  }
  function value(depth: number): unknown {
    const scalar = depth > 4 || rnd() < 0.55;
    if (scalar) {
      switch (int(9)) {
        case 0: return pick([null, undefined, true, false]);
        case 1: case 2: return number();
        case 3: return bigint();
        case 4: case 5: return str();
        case 6: return new Uint8Array(Array.from({ length: int(6) }, () => int(256)));
        case 7: return new Date(int(4102444800000) - 2208988800000);
        default: return Buffer.from(str());
      }
    }
    const n = int(5);
    switch (int(5)) {
      case 0: case 1: return Array.from({ length: n }, () => value(depth + 1));
      case 2: {
        const o: Record<string, unknown> = {};
        for (let i = 0; i < n; i++) o[`k${str()}`] = value(depth + 1);
        return o;
      }
      case 3: {
        const m = new Map<unknown, unknown>();
        const seen = new Set<string>();
        for (let i = 0; i < n; i++) {
          const k = key();
          const id = `${typeof k === "string" ? "s" : "n"}${String(k)}`;
          if (seen.has(id)) continue;
          seen.add(id);
          m.set(k, value(depth + 1));
        }
        return m;
      }
      default: {
        const s = new Set<unknown>();
        const seen = new Set<string>();
        for (let i = 0; i < n; i++) {
          const k = key();
          const id = `${typeof k === "string" ? "s" : "n"}${String(k)}`;
          if (!seen.has(id)) s.add(k);
          seen.add(id);
        }
        return s;
      }
    }
  }

  const SAFE = BigInt(Number.MAX_SAFE_INTEGER);
  /** What a value looks like after a trip through Python and back. */
  function expected(v: unknown): unknown {
    if (v === undefined || v === null) return null;
    if (typeof v === "bigint") return v >= -SAFE && v <= SAFE ? Number(v) : v;
    if (typeof v !== "object") return v;
    if (Array.isArray(v)) return v.map(expected);
    if (v instanceof Uint8Array) return new Uint8Array(v);
    if (v instanceof Date) return new Date(v.getTime());
    if (v instanceof Set) return new Set([...v].map(expected));
    if (v instanceof Map) {
      const entries = [...v].map(([k, x]) => [expected(k), expected(x)] as const);
      if (entries.every(([k]) => typeof k === "string")) return Object.fromEntries(entries);
      return new Map(entries);
    }
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, expected(x)]));
  }

  /** toEqual plus the types toEqual glosses over (Buffer vs Uint8Array, bigint vs number). */
  function check(actual: unknown, want: unknown): void {
    if (typeof want === "number") {
      expect(typeof actual).toBe("number");
      if (!Object.is(actual, want)) expect(actual).toBe(want);
      return;
    }
    if (want instanceof Uint8Array) {
      expect((actual as object).constructor).toBe(Uint8Array);
      expect([...(actual as Uint8Array)]).toEqual([...want]);
      return;
    }
    if (Array.isArray(want)) {
      expect(Array.isArray(actual)).toBe(true);
      expect((actual as unknown[]).length).toBe(want.length);
      want.forEach((w, i) => check((actual as unknown[])[i], w));
      return;
    }
    expect(actual).toEqual(want);
  }

  test("3000 random values come back equal through an identity function", () => {
    let bytes = 0;
    for (let i = 0; i < 3000; i++) {
      const v = value(0);
      const want = expected(v);
      const got = ident(v);
      check(got, want);
      bytes += typeof v === "string" ? v.length : 1;
    }
    expect(bytes).toBeGreaterThan(0);
  });

  test("random values also survive a list of them at once, and as keyword arguments", () => {
    const vs = Array.from({ length: 300 }, () => value(0));
    check(ident(vs), expected(vs));
    const kw: Record<string, unknown> = {};
    vs.slice(0, 50).forEach((v, i) => (kw[`k${i}`] = v));
    py.exec("def _kw_ident(**kw): return kw");
    check(py.call("__main__", "_kw_ident", [], kw), expected(kw));
  });

  test("Python-generated values come back as JS values", () => {
    const got = py.eval(`[
      None, True, 0, -1, 2**31, 2**53 - 1, 2**53, -(2**80), 1.5, -0.0, 'é中😀', b'\\x00\\xff',
      [1, (2, 3)], {'a': {1: 'x'}}, {1, 2}, frozenset(), datetime.datetime(2001, 2, 3, tzinfo=datetime.timezone.utc)
    ]`);
    check(got, [
      null, true, 0, -1, 2 ** 31, Number.MAX_SAFE_INTEGER, 2n ** 53n, -(2n ** 80n), 1.5, -0, "é中😀", new Uint8Array([0, 255]),
      [1, [2, 3]], { a: new Map([[1, "x"]]) }, new Set([1, 2]), new Set(), new Date(Date.UTC(2001, 1, 3)),
    ]);
  });
});

test("PythonError is not confused with conversion errors", () => {
  expect(() => py.eval("1/0")).toThrow(PythonError);
  expect(() => py.eval("1/0")).not.toThrow(ConversionError);
});

describe("edge cases found in review", () => {
  test("an argument Python cannot build is an argument error, not a result error", () => {
    expect(() => py.call("builtins", "len", [new Map([[[1, 2], "a"]])])).toThrow(
      /an argument cannot become a Python object: TypeError: unhashable type: 'list'/,
    );
  });

  test("a naive datetime outside the C library's range still converts", () => {
    const d = py.eval("__import__('datetime').datetime(1, 1, 1)") as Date;
    expect(d).toBeInstanceOf(Date);
    expect(d.getUTCFullYear()).toBeLessThanOrEqual(1);
  });

  test("the path of a cyclic value stays short", () => {
    const a: unknown[] = [];
    a.push(a);
    try {
      py.call("builtins", "len", [a]);
      throw new Error("no error");
    } catch (e) {
      expect((e as Error).message).toContain("cyclic");
      expect((e as Error).message.length).toBeLessThan(300);
      expect((e as Error).message.startsWith("args[0]")).toBe(true);
    }
  });
});
