/**
 * Dicts sent with their key list first (BP_T_SHAPE: shim/encode.c write_shape, shim/decode.c
 * read_shape, shim/shared.c, src/codec.ts, src/shape-memo.ts). Each receiver keeps a bounded
 * memo of key lists, picked by the sender's hint and checked byte for byte; nothing is kept
 * about what the other side has, so Workers, contexts, abandoned messages and failed
 * conversions cannot desynchronise anything. Every value is compared by deep equality, and
 * the Python side checks its own dicts.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { ConversionError, internals, py } from "../src/index.ts";
import { contextModes, defineModule } from "./helpers.ts";

defineModule(
  "t_shapes",
  `
import sys, collections

def ident(x):
    return x

def keys(x):
    return [list(d.keys()) for d in x]

def is_plain(x):
    # every dict decoded from JS is an exact dict with exact str keys, in the JS order
    if isinstance(x, list):
        return all(is_plain(v) for v in x)
    if isinstance(x, dict):
        return type(x) is dict and all(type(k) is str for k in x) and all(is_plain(v) for v in x.values())
    return True

def rows(n, width):
    return [{f"k{j}_{i % 7}": j for j in range(width)} for i in range(n)]

def blocks():
    return sys.getallocatedblocks()

class Rewriter(collections.OrderedDict):
    # deep conversion (toJS) asks a dict subclass for items(): this one changes its parent
    parent = None
    def items(self):
        if Rewriter.parent is not None:
            Rewriter.parent.pop("b", None)
            Rewriter.parent["z"] = 0
        return super().items()

class Box(list):
    # a list subclass comes to JS as a proxy: its toJS() converts deeply
    pass

def rewriting():
    parent = {"a": 1, "b": Rewriter(x=1), "c": 3}
    Rewriter.parent = parent
    return Box([parent])
`,
);

const ident = <T>(v: T): T => py.call("t_shapes", "ident", [v]) as T;

afterAll(() => py.exec("import t_shapes\nt_shapes.Rewriter.parent = None"));

describe("object shapes", () => {
  test("the same key lists again and again, in other orders, at the length limits: equal both ways", () => {
    const long = "x".repeat(24), tooLong = "y".repeat(25);
    const objs: Record<string, unknown>[] = [
      { a: 1, b: 2 },
      { b: 2, a: 1 },
      { a: 1, b: 2, c: 3 },
      { a: { a: { a: 1 } } },
      { [long]: 1, b: [{ [long]: 2 }] },
      { [tooLong]: 1, b: 2 },
      { é: 1, b: 2 },
      { b: 1, é: 2 },
      { 0: "zero", 1: "one", x: "x" },
      { toString: 1, valueOf: 2, hasOwnProperty: 3 },
      {},
      Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`k${i}`, i])),
      Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, i])),
      { id: 1, name: "a" },
      { id: 2, login: "b" },
      { id: 3, name: "c", extra: true },
    ];
    for (let round = 0; round < 5; round++) {
      for (const o of objs) {
        const back = ident(o);
        expect(back).toEqual(o);
        expect(Object.keys(back)).toEqual(Object.keys(o));
        expect(Object.getPrototypeOf(back)).toBe(Object.prototype);
      }
      expect(py.call("t_shapes", "is_plain", [objs])).toBe(true);
      expect(py.call("t_shapes", "keys", [objs.slice(0, 3)])).toEqual([["a", "b"], ["b", "a"], ["a", "b", "c"]]);
    }
  });

  test("Python dicts with keys Object.prototype has, __proto__ among them: own data properties every time", () => {
    py.exec("import t_shapes\nt_shapes.proto = {'__proto__': 1, 'constructor': 2, 'x': 3}");
    for (let i = 0; i < 5; i++) {
      const o = py.eval("__import__('t_shapes').proto") as Record<string, unknown>;
      expect(Object.getPrototypeOf(o)).toBe(Object.prototype);
      expect(Object.getOwnPropertyDescriptor(o, "__proto__")?.value).toBe(1);
      expect(Object.getOwnPropertyDescriptor(o, "constructor")?.value).toBe(2);
      expect(o["x"]).toBe(3);
    }
  });

  test("a ConversionError in the middle of an object, then the same shape in a normal call", () => {
    const good = { a: 1, b: 2, c: 3 };
    expect(ident(good)).toEqual(good);
    for (let i = 0; i < 3; i++) {
      const bad = {
        a: 1,
        get b(): unknown {
          return Symbol("no");
        },
        c: 3,
      };
      expect(() => ident(bad)).toThrow(ConversionError);
      expect(ident(good)).toEqual(good);
      expect(ident([good, { a: 9, b: 8, c: 7 }])).toEqual([good, { a: 9, b: 8, c: 7 }]);
    }
  });

  test("a getter that changes the object's keys while its shape is sent: a ConversionError, then all is well", () => {
    const shape = { p: 1, q: 2, r: 3 };
    ident(shape);
    ident(shape);
    const o: Record<string, unknown> = {
      p: 1,
      get q(): number {
        delete o["r"];
        o["s"] = 4;
        return 2;
      },
      r: 3,
    };
    expect(() => ident(o)).toThrow(ConversionError);
    expect(ident(shape)).toEqual(shape);
  });

  test("a Proxy whose ownKeys answers each look with another list: never a header that announces more values than follow", () => {
    // the review's case: [a,b] to the count, [a,b,c,d,e] to the shape's own Object.keys,
    // [a,b] to the write. The header said 5 values and 2 followed: Python read on into the
    // next argument and stale bytes of earlier messages (Bun crashed on stale handles).
    py.exec("def args_of(*a):\n    return [repr(x) for x in a]");
    for (const lists of [
      [["pa", "pb"], ["pa", "pb", "pc", "pd", "pe"], ["pa", "pb"]],
      [["qa", "qb", "qc"], ["qa", "qb"], ["qa", "qb", "qc"]],
    ]) {
      // 20 times: a memo slot another key list holds is given up only after 16 misses
      for (let round = 0; round < 20; round++) {
        let look = 0;
        const target: Record<string, number> = {};
        for (const k of lists[1]!.concat(lists[0]!)) target[k] = k.charCodeAt(1);
        const p = new Proxy(target, { ownKeys: () => lists[Math.min(look++, 2)]! });
        // the keys the write saw, then the other arguments where they belong; or, when the
        // looks fall differently (whether the shape memo asked is up to its slot's state),
        // the encoder's own error that the object changed — never anything else
        const want = `{${lists[2]!.map((k) => `'${k}': ${k.charCodeAt(1)}`).join(", ")}}`;
        let got: unknown;
        try {
          got = py.call("__main__", "args_of", [p, "next-arg", 42]);
        } catch (e) {
          got = e;
        }
        if (got instanceof Error) expect(String(got)).toMatch(/^ConversionError: args\[0\]: the object changed while it was converted/);
        else expect(got).toEqual([want, "'next-arg'", "42"]);
      }
    }
    expect(ident({ pa: 1, pb: 2 })).toEqual({ pa: 1, pb: 2 });
  });

  test("a Python dict changed while its values are converted: a ConversionError, no crash", () => {
    for (let i = 0; i < 3; i++) {
      const box = py.call("t_shapes", "rewriting", []) as { toJS(): unknown };
      expect(() => box.toJS()).toThrow(/dict changed/);
      py.exec("import t_shapes\nt_shapes.Rewriter.parent = None");
      expect(box.toJS()).toEqual([{ a: 1, c: 3, z: 0 }]);
      expect(ident({ a: 1, b: 2, c: 3 })).toEqual({ a: 1, b: 2, c: 3 });
    }
  });

  test("100,000 distinct key lists: each decodes to itself, and neither side's memo grows", () => {
    const before = py.call("t_shapes", "blocks", []) as number;
    for (let batch = 0; batch < 2; batch++) {
      const start = py.call("t_shapes", "blocks", []) as number;
      for (let i = 0; i < 50_000; i++) {
        const o = { [`s${batch}_${i}`]: i, [`t${i % 13}`]: batch };
        const back = ident(o);
        if (back[`s${batch}_${i}`] !== i || back[`t${i % 13}`] !== batch || Object.keys(back).length !== 2) expect(back).toEqual(o);
      }
      const end = py.call("t_shapes", "blocks", []) as number;
      // the memo has 256 slots: a bounded number of blocks, whatever came through
      if (batch === 1) expect(end - start).toBeLessThan(2000);
    }
    expect((py.call("t_shapes", "blocks", []) as number) - before).toBeLessThan(5000);
  });

  test("nothing leaks over many round trips of repeated shapes", () => {
    const doc = { id: 1, name: "n", items: [{ sku: "a", qty: 1 }, { sku: "b", qty: 2 }], owner: { id: 2, login: "o" } };
    for (let i = 0; i < 20_000; i++) ident(doc);
    Bun.gc(true);
    const start = py.call("t_shapes", "blocks", []) as number;
    for (let i = 0; i < 200_000; i++) ident(doc);
    Bun.gc(true);
    const end = py.call("t_shapes", "blocks", []) as number;
    expect(end - start).toBeLessThan(500);
    expect(ident(doc)).toEqual(doc);
  });

  test("Python -> JS: many dicts of the same and of different shapes, and keys sharing memo slots", () => {
    for (let round = 0; round < 3; round++) {
      const got = py.call("t_shapes", "rows", [2000, 3]) as Record<string, number>[];
      expect(got.length).toBe(2000);
      got.forEach((row, i) => {
        const want = Object.fromEntries([0, 1, 2].map((j) => [`k${j}_${i % 7}`, j]));
        if (JSON.stringify(row) !== JSON.stringify(want)) expect(row).toEqual(want);
      });
    }
  });

  test("malformed shapes from JS are an error in Python (ValueError, UnicodeDecodeError), not a crash, and calls go on", () => {
    const rt = internals.runtime();
    const fn = py.import("t_shapes")["ident"] as object;
    const h = rt.handleOf(fn)!;
    const wire = rt.wire as unknown as { u8: Uint8Array; dv: DataView; begin(): void };
    const forge = (n: number, keyBytes: number[], values: number) => {
      wire.begin();
      const u8 = wire.u8, dv = wire.dv;
      let p = 0;
      u8[p] = 9; // LIST of 1 argument
      dv.setUint32(p + 1, 1, true);
      p += 5;
      u8[p] = 23; // SHAPE
      dv.setUint32(p + 1, n, true);
      dv.setUint32(p + 5, 12345, true);
      dv.setUint32(p + 9, keyBytes.length, true);
      p += 13;
      for (const b of keyBytes) u8[p++] = b;
      for (let i = 0; i < values; i++) u8[p++] = 0; // None
      u8[p++] = 0; // no kwargs
    };
    const cases: [number, number[], number][] = [
      [1, [0], 1], // a key of length 0
      [1, [25, ...Array(25).fill(97)], 1], // longer than the memo's limit
      [2, [1, 97], 2], // fewer keys than n
      [1, [1, 97, 1, 98], 1], // bytes left over
      [1, [1, 200], 1], // not ASCII
      [0, [], 0], // no keys
      [33, [], 33], // too many
      [1, [5, 97], 1], // a key running past the key bytes
    ];
    for (const [n, bytes, values] of cases) {
      forge(n, bytes, values);
      const rc = rt.lib.bp_call(rt.io, h);
      expect(rc).not.toBe(0);
      // the error record as bunpy reads it (the exception it holds is released with it)
      expect(() => (rt as unknown as { fail(rc: number): never }).fail(rc)).toThrow(/malformed|UnicodeDecodeError/);
      expect(ident({ a: 1 })).toEqual({ a: 1 });
    }
    // and the same forged key list when it is right
    forge(2, [1, 97, 1, 98], 2);
    expect(rt.lib.bp_call(rt.io, h)).toBe(0);
    expect(rt.wire.result()).toEqual({ a: null, b: null });
  });

  test("malformed shapes from Python are a ConversionError in JS", () => {
    const wire = internals.runtime().wire as unknown as { u8: Uint8Array; dv: DataView; pos: number; readValue(): unknown };
    const cases: [number, number[]][] = [
      [1, [0]],
      [2, [1, 97]],
      [1, [1, 97, 1, 98]],
      [1, [1, 200]],
      [1, [30, ...Array(30).fill(97)]],
      [0, []],
      [0x7fffffff, [1, 97]],
    ];
    for (const [n, bytes] of cases) {
      const u8 = wire.u8, dv = wire.dv;
      u8[0] = 23;
      dv.setUint32(1, n, true);
      dv.setUint32(5, 777, true);
      dv.setUint32(9, bytes.length, true);
      u8.set(bytes, 13);
      for (let i = 0; i < Math.min(n, 64); i++) u8[13 + bytes.length + i] = 0;
      wire.pos = 0;
      expect(() => wire.readValue()).toThrow(ConversionError);
    }
    expect(ident({ a: 1, b: 2 })).toEqual({ a: 1, b: 2 });
  });

  test("py.shared stores a shaped object as a plain dict: equal from JS and from Python", () => {
    const v = { a: 1, b: { c: "x", d: [1, { e: null }] } };
    for (let i = 0; i < 3; i++) {
      py.shared.set("shape", v);
      expect(py.shared.get("shape")).toEqual(v);
      expect(py.eval("__import__('bunpy').shared.get('shape')")).toEqual(v);
    }
  });

  for (const mode of contextModes)
    test(`contexts (${mode}) and the main interpreter alternately, and a Worker at the same time`, async () => {
      const ctx = await py.context({ mode });
      const worker = new Worker(new URL("./fixtures/memo-worker.ts", import.meta.url));
      try {
        await ctx.exec("def ident(x):\n    return x\ndef rows(n):\n    return [{'id': i, 'name': f'n{i}', 'tags': {'a': i}} for i in range(n)]\n");
        const rows = Array.from({ length: 500 }, (_, i) => ({ id: i, name: `n${i}`, tags: { a: i } }));
        const fromWorker = new Promise<unknown>((ok, fail) => {
          worker.onmessage = (e) => ok(e.data);
          worker.onerror = fail;
          worker.postMessage(rows);
        });
        for (let round = 0; round < 5; round++) {
          expect(await ctx.call("__main__", "ident", [rows])).toEqual(rows);
          expect(ident(rows)).toEqual(rows);
          expect(await ctx.call("__main__", "rows", [500])).toEqual(rows);
          expect(ctx.callSync("__main__", "ident", [rows[round]])).toEqual(rows[round]);
        }
        expect(await fromWorker).toEqual(rows);
      } finally {
        worker.terminate();
        await ctx.close();
      }
    });
});
