// Property-based tests of the value conversion (fast-check). Random nested values go to
// Python and back through an identity function, in the main interpreter and in a context;
// each comes back exactly as the conversion table says, or the call fails with a
// ConversionError — never anything else. Then values with getters and Proxies that call
// bunpy or change what is being converted: Python gets exactly what the getters returned,
// or the call is a ConversionError, and bunpy works normally afterwards.
//
// A failure prints fast-check's seed and shrink path (re-run one with
// fc.assert(..., { seed, path })) and where the values differ. BUNPY_FUZZ_RUNS=n runs n
// cases per property instead of the default.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import fc from "fast-check";
import { ConversionError, py, type Context } from "../src/index.ts";
import { defineModule, hasOwnGil } from "./helpers.ts";

defineModule(
  "t_fuzz",
  `
def ident(x):
    return x

def idents(*args):
    return list(args)
`,
);

const RUNS = Number(process.env["BUNPY_FUZZ_RUNS"]) || 0;
const runs = (n: number) => (RUNS > 0 ? RUNS : n);

// --------------------------------------------------------------- expectations --

/** The value cannot cross: the call must be a ConversionError. */
const FAILS: unique symbol = Symbol("fails");
/** The getters of a model may replace entries in place (see containerOutcome): any value
    or a ConversionError is right then. */
const ANY: unique symbol = Symbol("any");

const YEAR_1 = new Date("0001-01-01T00:00:00Z").getTime();
const YEAR_10000 = new Date("+010000-01-01T00:00:00Z").getTime();

class Opaque {
  x = 1;
}

/** What `v` comes back as after JS -> Python -> JS (see "Values across the boundary"). */
function expected(v: unknown): unknown {
  switch (typeof v) {
    case "undefined":
      return null;
    case "boolean":
    case "number":
      return v;
    case "bigint":
      return v >= -(2n ** 53n) + 1n && v <= 2n ** 53n - 1n ? Number(v) : v;
    case "string":
      return v.isWellFormed() ? v : FAILS;
    case "symbol":
    case "function":
      return FAILS;
  }
  if (v === null) return null;
  if (Array.isArray(v)) {
    const out: unknown[] = [];
    for (let i = 0; i < v.length; i++) {
      const e = expected(v[i]); // a hole reads as undefined: None, back as null
      if (e === FAILS) return FAILS;
      out.push(e);
    }
    return out;
  }
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength).slice();
  if (v instanceof ArrayBuffer) return new Uint8Array(v).slice();
  if (v instanceof Date) {
    const t = v.getTime();
    return Number.isNaN(t) || t < YEAR_1 || t >= YEAR_10000 ? FAILS : new Date(t);
  }
  if (v instanceof Map) {
    const entries: [unknown, unknown][] = [];
    let allStrings = true;
    for (const [k, item] of v) {
      const ek = expected(k), ei = expected(item);
      if (ek === FAILS || ei === FAILS) return FAILS;
      if (typeof ek !== "string") allStrings = false;
      entries.push([ek, ei]);
    }
    // a dict with str keys only comes back as a plain object
    return allStrings ? Object.fromEntries(entries) : new Map(entries);
  }
  if (v instanceof Set) {
    const out = new Set<unknown>();
    for (const item of v) {
      const e = expected(item);
      if (e === FAILS) return FAILS;
      out.add(e);
    }
    return out;
  }
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return FAILS;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v as object)) {
    if (!k.isWellFormed()) return FAILS;
    const e = expected((v as Record<string, unknown>)[k]);
    if (e === FAILS) return FAILS;
    Object.defineProperty(out, k, { value: e, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** Where `got` differs from `want` (Object.is for numbers, so -0 and NaN count), or "". */
function diff(got: unknown, want: unknown, path = "value"): string {
  const show = (x: unknown) => Bun.inspect(x).slice(0, 120);
  const bad = () => `${path}: got ${show(got)}, expected ${show(want)}`;
  if (typeof want !== "object" || want === null) return Object.is(got, want) ? "" : bad();
  if (typeof got !== "object" || got === null) return bad();
  if (want instanceof Uint8Array) {
    if (!(got instanceof Uint8Array) || got.length !== want.length) return bad();
    return got.every((b, i) => b === want[i]) ? "" : bad();
  }
  if (want instanceof Date) return got instanceof Date && got.getTime() === want.getTime() ? "" : bad();
  if (Array.isArray(want)) {
    if (!Array.isArray(got) || got.length !== want.length) return bad();
    for (let i = 0; i < want.length; i++) {
      const d = diff(got[i], want[i], `${path}[${i}]`);
      if (d) return d;
    }
    return "";
  }
  if (want instanceof Map) {
    if (!(got instanceof Map) || got.size !== want.size) return bad();
    for (const [k, item] of want) {
      if (!got.has(k)) return `${path}: key ${show(k)} missing`;
      const d = diff(got.get(k), item, `${path}[${show(k)}]`);
      if (d) return d;
    }
    return "";
  }
  if (want instanceof Set) {
    // Python sets have no order; elements here are strings and numbers
    if (!(got instanceof Set) || got.size !== want.size) return bad();
    for (const item of want) if (![...got].some((g) => Object.is(g, item))) return `${path}: ${show(item)} missing`;
    return "";
  }
  if (Object.getPrototypeOf(got) !== Object.prototype) return bad();
  const wk = Object.keys(want).sort(), gk = Object.keys(got).sort();
  if (wk.join("\0") !== gk.join("\0")) return `${path}: keys ${show(gk)}, expected ${show(wk)}`;
  for (const k of wk) {
    const d = diff((got as Record<string, unknown>)[k], (want as Record<string, unknown>)[k], `${path}.${k}`);
    if (d) return d;
  }
  return "";
}

/** The outcome of one call checked against the expectation; throws a readable Error. */
function check(outcome: { ok: true; value: unknown } | { ok: false; error: unknown }, want: unknown): void {
  if (want === ANY) {
    if (!outcome.ok && !(outcome.error instanceof ConversionError)) throw outcome.error;
    return;
  }
  if (!outcome.ok) {
    if (!(outcome.error instanceof ConversionError)) throw outcome.error;
    if (want !== FAILS) throw new Error(`a ConversionError for a value that converts: ${(outcome.error as Error).message}`);
    return;
  }
  if (want === FAILS) throw new Error(`converted a value that cannot be converted: got ${Bun.inspect(outcome.value)}`);
  const d = diff(outcome.value, want);
  if (d) throw new Error(`round trip differs at ${d}`);
}

function callMain(v: unknown, args: unknown[] = [v]) {
  try {
    return { ok: true as const, value: py.call("t_fuzz", "ident", args) };
  } catch (error) {
    return { ok: false as const, error };
  }
}

// ---------------------------------------------------------------- arbitraries --

const loneSurrogate = fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c));
const strings = fc.oneof(
  fc.string({ unit: "binary", maxLength: 12 }), // astral characters as surrogate pairs
  fc.string({ unit: fc.oneof(fc.constant("\0"), fc.string({ unit: "binary", minLength: 1, maxLength: 1 })), maxLength: 8 }),
  fc.string({ unit: fc.oneof(loneSurrogate, fc.constant("a"), fc.constant("\u{1F600}")), maxLength: 6 }),
  fc.string({ unit: "grapheme-ascii", minLength: 60, maxLength: 200 }), // past the ASCII fast path
);
const keys = fc.oneof({ weight: 5, arbitrary: fc.string({ unit: "grapheme-ascii", maxLength: 6 }) }, { weight: 1, arbitrary: strings });

const leaves = fc.oneof(
  fc.constantFrom(null, undefined, true, false, 0, -0, NaN, Infinity, -Infinity, 2 ** 31, -(2 ** 31) - 1, 2 ** 53, 2 ** 53 - 1, 1e300),
  fc.integer(),
  fc.double(),
  fc.maxSafeInteger(),
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }),
  fc.bigInt({ min: -(2n ** 54n), max: 2n ** 54n }),
  strings,
  fc.date({ noInvalidDate: false }), // mostly outside Python's years 1-9999
  fc.date({ min: new Date(YEAR_1), max: new Date(YEAR_10000 - 1) }),
  fc.uint8Array({ maxLength: 16 }),
  fc.int16Array({ maxLength: 8 }),
  fc.float64Array({ maxLength: 4 }),
  fc.uint8Array({ maxLength: 8 }).map((a) => a.buffer as ArrayBuffer),
  fc.constantFrom<unknown>(new Opaque(), Symbol("s")),
);

const hashable = fc.oneof(fc.integer(), fc.string({ unit: "binary", maxLength: 6 }), loneSurrogate);

const { value: values } = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    leaves,
    fc.array(tie("value"), { maxLength: 5 }),
    fc.sparseArray(tie("value"), { maxLength: 6 }),
    fc.dictionary(keys, tie("value"), { maxKeys: 5 }),
    fc.array(fc.tuple(hashable, tie("value")), { maxLength: 4 }).map((e) => new Map(e)),
    fc.array(hashable, { maxLength: 5 }).map((a) => new Set(a)),
  ),
}));

// ------------------------------------------------------------ plain round trips --

/** A context with `ident(x)` defined, started before the describe block's tests and
    closed after them; read it through `.current`. */
function identityContext(): { current: Context } {
  const holder = {} as { current: Context };
  beforeAll(async () => {
    holder.current = await py.context({ mode: hasOwnGil ? "owngil" : "worker" });
    await holder.current.exec("def ident(x):\n    return x");
  });
  afterAll(async () => {
    await holder.current.close();
  });
  return holder;
}

describe("round trips of random values", () => {
  test("main interpreter: py.call of an identity function", () => {
    fc.assert(
      fc.property(values, (v) => {
        check(callMain(v), expected(v));
      }),
      { numRuns: runs(2000) },
    );
    expect(py.call("operator", "add", [1, 2])).toBe(3);
  });

  test("main interpreter: several values in one call", () => {
    fc.assert(
      fc.property(fc.array(values, { maxLength: 4 }), (vs) => {
        let outcome;
        try {
          outcome = { ok: true as const, value: py.call("t_fuzz", "idents", vs) };
        } catch (error) {
          outcome = { ok: false as const, error };
        }
        check(outcome, expected(vs));
      }),
      { numRuns: runs(300) },
    );
  });

  describe(`a context (${hasOwnGil ? "owngil" : "worker"})`, () => {
    const ctx = identityContext();

    test("await ctx.call of an identity function", async () => {
      await fc.assert(
        fc.asyncProperty(values, async (v) => {
          let outcome;
          try {
            outcome = { ok: true as const, value: await ctx.current.call("__main__", "ident", [v]) };
          } catch (error) {
            outcome = { ok: false as const, error };
          }
          check(outcome, expected(v));
        }),
        { numRuns: runs(400) },
      );
      expect(await ctx.current.eval("1 + 2")).toBe(3);
    });
  });
});

// ------------------------------------------------- getters, Proxies, re-entrancy --

/**
 * A model of a value whose reading runs code. `build` makes a fresh JS value for one
 * run; `want` is what Python must get (FAILS: a ConversionError), given that every
 * getter's action ran as described.
 */
type Action =
  | "none"
  | "eval" // py.eval of cached code returning a container
  | "compile" // py.eval of new code
  | "call" // py.call with arguments of its own
  | "getter-call" // py.call whose argument has a getter that calls bunpy too
  | "proxy-call" // a call through a main-interpreter proxy
  | "ctx" // ctx.call started, not awaited
  | "grow" // the container holding the getter gains an entry
  | "shrink"; // ...or loses one
const actions = fc.constantFrom<Action>("none", "eval", "compile", "call", "getter-call", "proxy-call", "ctx", "grow", "shrink");

type Node =
  | { k: "leaf"; v: unknown }
  | { k: "array"; items: Node[] }
  | { k: "object"; items: [string, Node][] }
  | { k: "map"; items: [string, Node][] }
  | { k: "getter"; child: Node; action: Action }
  | { k: "proxy"; child: Node; action: Action };

// not integer-like: an object reads such keys first, whatever their insertion order
const keyNames = fc.string({ unit: "grapheme-ascii", maxLength: 3 }).map((k) => `k${k}`);
const simpleLeaves = fc.oneof(fc.integer(), fc.string({ unit: "binary", maxLength: 6 }), fc.constant(null), fc.double());
const { node: nodes } = fc.letrec<{ node: Node }>((tie) => ({
  node: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    simpleLeaves.map((v): Node => ({ k: "leaf", v })),
    fc.array(tie("node"), { maxLength: 4 }).map((items): Node => ({ k: "array", items })),
    fc.uniqueArray(fc.tuple(keyNames, tie("node")), { maxLength: 4, selector: (e) => e[0] })
      .map((items): Node => ({ k: "object", items })),
    fc.uniqueArray(fc.tuple(keyNames, tie("node")), { maxLength: 3, selector: (e) => e[0] })
      .map((items): Node => ({ k: "map", items })),
    fc.tuple(tie("node"), actions).map(([child, action]): Node => ({ k: "getter", child, action })),
    fc.tuple(tie("node"), actions).map(([child, action]): Node => ({ k: "proxy", child, action })),
  ),
}));

interface Run {
  ctx: Context | undefined;
  started: Promise<void>[];
  dummy: any;
}

/** Runs a getter's action; `parent` is the container holding the getter object. */
function act(action: Action, run: Run, parent: unknown): void {
  switch (action) {
    case "eval":
      if (diff(py.eval("[1, (2, 3)]"), [1, [2, 3]])) throw new Error("nested py.eval returned a wrong value");
      return;
    case "compile":
      if (py.eval(`${Math.random()} * 0 + 7`) !== 7) throw new Error("nested compile returned a wrong value");
      return;
    case "call":
      if (diff(py.call("t_fuzz", "idents", ["x", [1, { y: 2 }]]), ["x", [1, { y: 2 }]])) throw new Error("nested call returned a wrong value");
      return;
    case "getter-call": {
      const got = py.call("t_fuzz", "ident", [{ get inner() { return py.eval("'in'"); } }]);
      if (diff(got, { inner: "in" })) throw new Error("doubly nested call returned a wrong value");
      return;
    }
    case "proxy-call":
      run.dummy.append(1);
      if (run.dummy.__len__() < 1) throw new Error("proxy call failed");
      return;
    case "ctx": {
      const ctx = run.ctx;
      if (ctx === undefined) return;
      const arg = ["ctx", { n: 1 }];
      run.started.push(
        ctx.call("builtins", "list", [arg]).then((got) => {
          if (diff(got, arg)) throw new Error("a ctx.call started from a getter got a wrong value");
        }),
      );
      return;
    }
    case "grow":
      if (parent === undefined) return;
      if (Array.isArray(parent)) parent.push("grown");
      else if (parent instanceof Map) parent.set(`grown${parent.size}`, 1);
      else (parent as Record<string, unknown>)[`grown${Object.keys(parent as object).length}`] = 1;
      return;
    case "shrink":
      if (parent === undefined) return;
      if (Array.isArray(parent)) parent.pop();
      else if (parent instanceof Map) parent.delete([...parent.keys()].at(-1));
      else delete (parent as Record<string, unknown>)[Object.keys(parent as object).at(-1)!];
      return;
  }
}

/** Builds the JS value of a model; `parent` is the container it goes into. */
function build(n: Node, run: Run, parent: unknown): unknown {
  switch (n.k) {
    case "leaf":
      return n.v;
    case "array": {
      const out: unknown[] = [];
      for (const item of n.items) out.push(build(item, run, out));
      return out;
    }
    case "object": {
      const out: Record<string, unknown> = {};
      for (const [k, item] of n.items) out[k] = build(item, run, out);
      return out;
    }
    case "map": {
      const out = new Map<string, unknown>();
      for (const [k, item] of n.items) out.set(k, build(item, run, out));
      return out;
    }
    case "getter": {
      const inner = build(n.child, run, undefined);
      let read = false;
      return {
        get g() {
          // a getter is read once: a second read would mean bunpy read the value twice
          if (read) throw new Error("a getter was read twice");
          read = true;
          act(n.action, run, parent);
          return inner;
        },
      };
    }
    case "proxy": {
      const inner = build(n.child, run, undefined);
      if (typeof inner !== "object" || inner === null) return inner;
      return new Proxy(inner, {
        get(t, k, r) {
          act(n.action, run, undefined);
          return Reflect.get(t, k, r);
        },
        ownKeys(t) {
          act(n.action, run, undefined);
          return Reflect.ownKeys(t);
        },
      });
    }
  }
}

/**
 * What the grow/shrink actions of the getters directly in one container do to it, in
 * reading order. They append and remove the last entry, so while removals never
 * outnumber additions only added entries go: the entries read are the original ones, and
 * the container must fail exactly when its size changed. Once a removal takes an original
 * entry (and an addition may put another in its place at the same size) the outcome is
 * not defined by the snapshot: documented as "entries replaced in place are read as they
 * are when reached".
 */
function containerOutcome(children: Node[], parentAlso: Action[] = []): "ok" | "fails" | "any" {
  let net = 0, negative = false;
  const acts = [...children.filter((c) => c.k === "getter").map((c) => (c as { action: Action }).action), ...parentAlso];
  for (const a of acts) {
    if (a === "grow") net++;
    else if (a === "shrink" && --net < 0) negative = true;
  }
  // checked first: once a removal took an original entry, the getters of entries not read
  // yet may never run (the size can end where it began: [shrink, grow, grow] ends at +0)
  if (negative) return "any";
  return net !== 0 ? "fails" : "ok";
}

function combine(outcome: "ok" | "fails" | "any", parts: unknown[], make: () => unknown): unknown {
  if (outcome === "fails") return FAILS;
  // before the parts: once a removal took an original entry, a part that would fail may
  // never be read (seed -374457624 on 3.11: [shrink, grow, Proxy of a Map] — the Proxy
  // popped before it was reached, "grown" in its place, the array converted)
  if (outcome === "any") return ANY;
  if (parts.includes(FAILS)) return FAILS;
  if (parts.includes(ANY)) return ANY;
  return make();
}

/** What Python must get for a model: a value, FAILS (a ConversionError) or ANY. */
function want(n: Node): unknown {
  switch (n.k) {
    case "leaf":
      return expected(n.v);
    case "array": {
      const parts = n.items.map(want);
      return combine(containerOutcome(n.items), parts, () => parts);
    }
    case "object":
    case "map": {
      const parts = n.items.map(([, item]) => want(item));
      // a Map with str keys comes back as an object too
      return combine(containerOutcome(n.items.map((e) => e[1])), parts, () =>
        Object.fromEntries(n.items.map(([k], i) => [k, parts[i]])),
      );
    }
    case "getter": {
      const inner = want(n.child);
      return inner === FAILS || inner === ANY ? inner : { g: inner };
    }
    case "proxy":
      // a Map cannot be read through a Proxy (its methods refuse the receiver): refused
      if (n.child.k === "map") return FAILS;
      return want(n.child); // built without a parent: its own actions change no container
  }
}

/** For the top-level value: its getter (if it is one) changes the argument array. */
function wantTop(model: Node): unknown {
  return combine(containerOutcome([model]), [want(model)], () => want(model));
}

describe("values whose reading runs code", () => {
  const ctx = identityContext();

  test("getters and Proxies that call bunpy or change containers: the exact snapshot or a ConversionError", async () => {
    const dummy = py.eval("__import__('collections').deque(maxlen=4)");
    await fc.assert(
      fc.asyncProperty(nodes, async (model) => {
        const run: Run = { ctx: ctx.current, started: [], dummy };
        const args: unknown[] = [];
        args.push(build(model, run, args));
        const wanted = wantTop(model);
        check(callMain(args[0], args), wanted);
        await Promise.all(run.started);
        // the interpreter is healthy afterwards
        if (py.call("operator", "add", [1, 2]) !== 3) throw new Error("bunpy is broken after the call");
      }),
      { numRuns: runs(1000) },
    );
  });

  test("the same values sent to a context", async () => {
    const dummy = py.eval("__import__('collections').deque(maxlen=4)");
    await fc.assert(
      fc.asyncProperty(nodes, async (model) => {
        const run: Run = { ctx: ctx.current, started: [], dummy };
        const args: unknown[] = [];
        args.push(build(model, run, args));
        const wanted = wantTop(model);
        let outcome;
        try {
          outcome = { ok: true as const, value: await ctx.current.call("__main__", "ident", args) };
        } catch (error) {
          outcome = { ok: false as const, error };
        }
        check(outcome, wanted);
        await Promise.all(run.started);
      }),
      { numRuns: runs(400) },
    );
    expect(await ctx.current.eval("1 + 2")).toBe(3);
    expect(py.call("operator", "add", [1, 2])).toBe(3);
  });
});
