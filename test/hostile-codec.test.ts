/**
 * The codec and its string memo (BP_T_ASCII_MEMO: shim/encode.c, shim/decode.c,
 * shim/shared.c, src/codec.ts, src/string-memo.ts) attacked as a hostile user would: strings
 * that collide in the memo, at its length limits, with NULs, DEL, lone surrogates and
 * non-ASCII next to ASCII; objects changed or the prototype polluted while they are encoded;
 * a frozen Object.prototype while dicts are decoded. Every value is compared char by char
 * on both sides.
 */
import { describe, expect, test } from "bun:test";
import { ConversionError, py } from "../src/index.ts";
import { defineModule } from "./helpers.ts";

defineModule(
  "t_hcodec",
  `
import gc

def ident(x):
    return x

def codes(xs):
    return [[ord(c) for c in x] for x in xs]

def make(codes):
    return [''.join(map(chr, c)) for c in codes]

def keyed(keys):
    return {k: i for i, k in enumerate(keys)}

def items(d):
    return [[k, v] for k, v in d.items()]

def store(key, value):
    import bunpy
    bunpy.shared.set(key, value)
    return bunpy.shared.get(key)

def swap(key, expected, value):
    import bunpy
    return bunpy.shared.compare_and_set(key, expected, value)

class Marker:
    pass

def with_markers(keys):
    return {k: Marker() for k in keys}

def markers():
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is Marker)
`,
);

const m: any = py.import("t_hcodec");
const codesOf = (s: string) => Array.from(s, (c) => c.codePointAt(0)!);

/** A deterministic stream of strings around the memo's limits. */
function strings(seed: number, count: number): string[] {
  const alphabet = ["a", "b", "\0", "\x7f", "\x01", "é", "ÿ", "\u0100", "😀", "Z", "~"];
  const lengths = [1, 2, 7, 8, 9, 15, 16, 17, 23, 24, 25, 26, 63, 64, 65];
  let s = seed;
  const next = (n: number) => ((s = (s * 1103515245 + 12345) & 0x7fffffff), s % n);
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const len = lengths[next(lengths.length)]!;
    const ascii = next(3) !== 0;
    let x = "";
    for (let j = 0; j < len; j++) x += ascii ? String.fromCharCode(next(128)) : alphabet[next(alphabet.length)]!;
    out.push(x);
  }
  return out;
}

describe("the string memo", () => {
  test("strings of 1, 24 and 25 chars, NULs, DEL, non-ASCII next to ASCII: equal char by char both ways, 200 rounds", () => {
    for (let round = 0; round < 200; round++) {
      const xs = strings(round + 1, 100);
      // same length and first 23 chars: if they shared a memo slot only the bytes tell them apart
      xs.push("abcdefghijklmnopqrstuvwx", "abcdefghijklmnopqrstuvwy", "abcdefghijklmnopqrstuvw\0", "a", "\0", "\x7f", "x".repeat(24), "x".repeat(25));
      const back = m.ident(xs) as string[];
      const codes = m.codes(xs) as number[][];
      const made = m.make(codes) as string[];
      for (let i = 0; i < xs.length; i++) {
        if (back[i] !== xs[i] || made[i] !== xs[i]) expect([round, i, back[i], made[i]]).toEqual([round, i, xs[i], xs[i]]);
        if (codes[i]!.join() !== codesOf(xs[i]!).join()) expect([round, i, codes[i]]).toEqual([round, i, codesOf(xs[i]!)]);
      }
    }
  });

  test("many strings whose hints share memo slots: every dict key decodes to itself", () => {
    // 20,000 distinct short keys over 512 / 1024 slots: every slot is shared many times
    const keys = Array.from({ length: 20000 }, (_, i) => `k${i.toString(36)}`);
    for (let pass = 0; pass < 3; pass++) {
      const d = m.keyed(keys) as Record<string, number>;
      const ks = Object.keys(d);
      expect(ks.length).toBe(keys.length);
      for (let i = 0; i < keys.length; i++) if (d[keys[i]!] !== i) expect([keys[i], d[keys[i]!]]).toEqual([keys[i], i]);
      const pairs = m.items(Object.fromEntries(keys.map((k, i) => [k, i]))) as [string, number][];
      for (let i = 0; i < keys.length; i++) if (pairs[i]![0] !== keys[i] || pairs[i]![1] !== i) expect(pairs[i]).toEqual([keys[i]!, i]);
    }
  });

  test("a lone surrogate is a ConversionError both ways, and the memo is not left holding anything wrong", () => {
    expect(() => m.ident(["ok", "\ud800"])).toThrow(ConversionError);
    expect(() => py.eval("'\\ud800'")).toThrow(ConversionError);
    expect(m.ident(["ok", "\ufffd"])).toEqual(["ok", "\ufffd"]);
  });

  test("py.shared stores memo strings as plain strings: equal from JS and from Python", () => {
    for (const v of ["a", "x".repeat(24), "x".repeat(25), "\0", "mixé", ["k", { k: "v" }]]) {
      py.shared.set("t_hcodec", v);
      expect(py.shared.get("t_hcodec")).toEqual(v);
      expect(m.store("t_hcodec2", v)).toEqual(v);
      // stored by Python, compared from JS; stored by JS, compared from Python
      expect(py.shared.compareAndSet("t_hcodec2", v, "swapped")).toBe(true);
      expect(m.swap("t_hcodec", v, "swapped")).toBe(true);
    }
    py.shared.delete("t_hcodec");
    py.shared.delete("t_hcodec2");
  });
});

describe("objects changed while they are encoded", () => {
  const P = Object.prototype as Record<string, unknown>;

  test("a getter that pollutes Object.prototype mid-message: the object is sent as it is, the pollution is not", () => {
    try {
      const o = { a: 1, get b() { P["polluted"] = "yes"; return 2; }, c: 3 };
      expect(m.items(o)).toEqual([["a", 1], ["b", 2], ["c", 3]]);
      // now polluted: the next objects are sent by their own keys only
      expect(m.items({ x: 1 })).toEqual([["x", 1]]);
    } finally {
      delete P["polluted"];
    }
  });

  test("getters that add or delete keys, throw; symbols, Proxies, holes, deep and cyclic values", () => {
    const grows: any = { a: 1, get b() { this.z = 9; return 2; } };
    expect(() => m.ident(grows)).toThrow(/changed while it was converted/);
    const shrinks: any = { a: 1, get b() { delete this.c; return 2; }, c: 3 };
    expect(() => m.ident(shrinks)).toThrow(/changed while it was converted/);
    const swaps: any = { a: 1, get b() { delete this.c; this.d = 4; return 2; }, c: 3 };
    expect(() => m.ident(swaps)).toThrow(/changed while it was converted/);
    const readds: any = { a: 1, get b() { delete this.c; this.c = 33; return 2; }, c: 3 };
    expect(m.items(readds)).toEqual([["a", 1], ["b", 2], ["c", 33]]);
    expect(() => m.ident({ a: 1, get b() { throw new Error("getter"); } })).toThrow("getter");
    expect(m.items({ a: 1, [Symbol("s")]: 2 })).toEqual([["a", 1]]);
    expect(m.ident(new Proxy({ a: 1 }, { get: (t, k) => (k === "a" ? 99 : (t as any)[k]) }))).toEqual({ a: 99 });
    expect(() => m.ident(new Proxy({ a: 1 }, { ownKeys() { throw new Error("ownKeys"); } }))).toThrow("ownKeys");
    expect(m.ident([1, , 3])).toEqual([1, null, 3]);
    let deep: unknown[] = [];
    for (let i = 0; i < 2000; i++) deep = [deep];
    expect(() => m.ident(deep)).toThrow(/deeper than/);
    const cyclic: any = { a: 1 };
    cyclic.self = cyclic;
    expect(() => m.ident(cyclic)).toThrow(/cyclic/);
    // a null-prototype object given a prototype by its own getter
    const o: any = Object.create(null);
    o.a = 1;
    Object.defineProperty(o, "b", { enumerable: true, get() { Object.setPrototypeOf(o, { inherited: 1 }); return 2; } });
    o.c = 3;
    expect(() => m.ident(o)).toThrow(/changed while it was converted/);
  });
});

describe("Python values changed while they are encoded", () => {
  test("a str subclass key whose __hash__ (asked for the memo hint) rewrites the dict: a ConversionError, no crash", () => {
    py.exec(`
import t_hcodec
t_hcodec.armed = False
class H(str):
    def __hash__(self):
        if t_hcodec.armed:
            t_hcodec.d.clear(); t_hcodec.d.update({1: 2, 2: 3, "zz": [1] * 10})
        return 7
class D2(dict):
    pass
t_hcodec.d = {H("a"): 1, "b": 2, "c": 3}
t_hcodec.w = D2(inner=t_hcodec.d)  # toJS of a proxy: str subclass keys are strings there
t_hcodec.armed = True
`);
    const w = m.w;
    let e: unknown;
    try {
      w.toJS();
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(ConversionError);
    expect((e as Error).message).toContain("dict changed");
    py.exec("t_hcodec.armed = False");
  });
});

describe("dicts decoded under a hostile Object.prototype", () => {
  test("keys named like Object.prototype's members, with Object.prototype frozen: own properties, nothing leaked", () => {
    // Object.freeze(Object.prototype) is a common hardening step; `out[k] = v` then threw
    // for a Python dict with a key such as "toString" (TypeError: readonly property), and
    // the objects after it in the buffer were never given proxies (their references leaked)
    const keys = ["toString", "constructor", "valueOf", "hasOwnProperty", "ok", "__proto__"];
    const before = m.markers();
    const frozen = Bun.spawnSync(
      [process.execPath, "-e", `
        const { py } = await import(${JSON.stringify(new URL("../src/index.ts", import.meta.url).pathname)});
        Object.freeze(Object.prototype);
        const d = py.eval("{'toString': 1, 'constructor': 2, 'valueOf': [3], 'hasOwnProperty': {'x': 4}, 'ok': 5, '__proto__': 6}");
        const own = Object.keys(d).map((k) => [k, Object.getOwnPropertyDescriptor(d, k).value]);
        console.log(JSON.stringify(own));
      `],
      { env: process.env, stdout: "pipe", stderr: "pipe" },
    );
    expect(frozen.stderr.toString()).toBe("");
    expect(JSON.parse(frozen.stdout.toString())).toEqual([["toString", 1], ["constructor", 2], ["valueOf", [3]], ["hasOwnProperty", { x: 4 }], ["ok", 5], ["__proto__", 6]]);
    // and in this process (Object.prototype as usual) the same keys with objects behind them
    const d = m.with_markers(keys);
    expect(Object.keys(d)).toEqual(keys);
    for (const k of keys) expect(Object.getOwnPropertyDescriptor(d, k)?.value).toBeDefined();
    expect(m.markers()).toBe(before + keys.length);
  }, 30_000);

  test("an accessor on Object.prototype does not swallow a dict key of its name, nor run", () => {
    // `out[k] = v` called an inherited setter: the key was silently missing from the object
    let ran = 0;
    const P = Object.prototype as Record<string, unknown>;
    Object.defineProperty(P, "hcodecFoo", { set() { ran++; }, get() { return "inherited"; }, configurable: true });
    Object.defineProperty(P, "hcodecBar", { set() { ran++; }, configurable: true });
    try {
      const d = m.ident({ a: 1 }) as Record<string, unknown>;
      expect(d).toEqual({ a: 1 });
      const got = py.eval("{'hcodecFoo': 1, 'x': {'hcodecBar': [2]}, 'hcodecBar': None}") as Record<string, unknown>;
      expect(Object.keys(got)).toEqual(["hcodecFoo", "x", "hcodecBar"]);
      expect(Object.getOwnPropertyDescriptor(got, "hcodecFoo")?.value).toBe(1);
      expect(Object.getOwnPropertyDescriptor(got, "hcodecBar")?.value).toBe(null);
      expect(Object.getOwnPropertyDescriptor(got["x"], "hcodecBar")?.value).toEqual([2]);
      expect(ran).toBe(0);
    } finally {
      delete P["hcodecFoo"];
      delete P["hcodecBar"];
    }
  });
});
