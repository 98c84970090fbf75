// Contexts: Python on its own thread with its own interpreter (owngil) or as a thread of
// the main interpreter (worker), and pools that route calls between them.
import { describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { BunpyError, CallTimeoutError, ContextClosedError, PyRef, PythonError, py, type Context } from "../src/index.ts";
import { closedAfterAll, contextModes, hasOwnGil } from "./helpers.ts";

const modes = contextModes;

const { context } = closedAfterAll();

for (const mode of modes) {
  describe(`${mode} context`, () => {
    test("eval, exec and call, with globals kept across calls", async () => {
      const ctx = await context(mode);
      expect(ctx.mode).toBe(mode);
      expect(ctx.state).toBe("running");
      expect(await ctx.eval("1 + 2")).toBe(3);
      await ctx.exec("counter = 0\ndef bump(k=1):\n    global counter\n    counter += k\n    return counter");
      expect(await ctx.call("__main__", "bump")).toBe(1);
      expect(await ctx.call("__main__", "bump", [], { k: 10 })).toBe(11);
      expect(await ctx.eval("counter")).toBe(11);
      expect(await ctx.call("math", "sqrt", [16])).toBe(4);
      expect(await ctx.call("json", "dumps", [{ a: [1, 2] }])).toBe('{"a": [1, 2]}');
    });

    test("its globals are its own, not the main interpreter's", async () => {
      const ctx = await context(mode);
      py.exec("only_in_main = 1");
      await ctx.exec("only_in_ctx = 2");
      await expect(ctx.eval("only_in_main")).rejects.toThrow(/NameError/);
      expect(() => py.eval("only_in_ctx")).toThrow(/NameError/);
    });

    test("Python exceptions reject with PythonError", async () => {
      const ctx = await context(mode);
      const e = await ctx.eval("1 / 0").catch((x) => x);
      expect(e).toBeInstanceOf(PythonError);
      expect(e.type).toBe("ZeroDivisionError");
      expect(e.traceback).toContain("ZeroDivisionError");
      expect(await ctx.eval("'still fine'")).toBe("still fine");
    });

    test("callSync blocks until the result is there", async () => {
      const ctx = await context(mode);
      await ctx.exec("def add(a, b):\n    return a + b");
      expect(ctx.callSync("__main__", "add", [2, 3])).toBe(5);
      expect(() => ctx.callSync("__main__", "nope")).toThrow(/AttributeError/);
    });

    test("cast is fire and forget; its errors reach onError", async () => {
      const ctx = await context(mode);
      await ctx.exec("seen = []\ndef note(x):\n    seen.append(x)\ndef boom():\n    raise ValueError('cast failed')");
      const errors: unknown[] = [];
      ctx.onError((e) => errors.push(e));
      ctx.cast("__main__", "note", [1]);
      ctx.cast("__main__", "boom");
      ctx.cast("__main__", "note", [2]);
      expect(await ctx.eval("seen")).toEqual([1, 2]);
      await Bun.sleep(10);
      expect(errors.length).toBe(1);
      expect((errors[0] as PythonError).pythonMessage).toBe("cast failed");
    });

    test("a timeout interrupts a busy loop and the context keeps serving", async () => {
      const ctx = await context(mode);
      const t0 = performance.now();
      const e = await ctx.exec("while True:\n    pass", { timeout: 100 }).catch((x) => x);
      expect(e).toBeInstanceOf(CallTimeoutError);
      expect(performance.now() - t0).toBeLessThan(10_000);
      expect(await ctx.eval("6 * 7")).toBe(42);
    });

    test("an AbortSignal interrupts a running call", async () => {
      const ctx = await context(mode);
      const ac = new AbortController();
      const p = ctx.exec("import time\nwhile True:\n    time.sleep(0.001)", { signal: ac.signal });
      setTimeout(() => ac.abort(new Error("stop it")), 50);
      await expect(p).rejects.toThrow("stop it");
      expect(await ctx.eval("'alive'")).toBe("alive");
      const already = new AbortController();
      already.abort(new Error("too late"));
      await expect(ctx.eval("1", { signal: already.signal })).rejects.toThrow("too late");
    });

    test("results without a JS form come back as PyRefs owned by the context", async () => {
      const ctx = await context(mode);
      await ctx.exec("class Box:\n    def __init__(self, v):\n        self.v = v\n    def get(self, k=0):\n        return self.v + k");
      const box = await ctx.call("__main__", "Box", [41]);
      expect(box).toBeInstanceOf(PyRef);
      expect(await box.get("v")).toBe(41);
      const getter = await box.get("get");
      expect(getter).toBeInstanceOf(PyRef);
      expect(await getter.call(py.kw({ k: 1 }))).toBe(42);
      expect(await ctx.call("builtins", "getattr", [box, "v"])).toBe(41); // a PyRef goes back in as the object
      const od = await ctx.eval("__import__('collections').OrderedDict(a=1)");
      expect(await od.toJS()).toEqual({ a: 1 });
      box.release();
      expect(() => box.get("v")).toThrow(BunpyError);
    });

    test("values that belong elsewhere are refused with a clear error", async () => {
      const ctx = await context(mode);
      await expect(ctx.call("builtins", "len", [py.eval("[1]") as never])).resolves.toBe(1); // a converted list is a plain value
      await expect(ctx.call("builtins", "repr", [py.import("json")])).rejects.toThrow(/main-interpreter PyObject/);
      await expect(ctx.call("builtins", "repr", [() => 1])).rejects.toThrow(/JS functions/);
    });

    test("close finishes queued work, then rejects what comes after", async () => {
      const ctx = await py.context({ mode });
      await ctx.exec("import time\ndef slow(x):\n    time.sleep(0.05)\n    return x");
      const queued = [1, 2, 3].map((i) => ctx.call("__main__", "slow", [i]));
      const closing = ctx.close();
      await expect(ctx.eval("1")).rejects.toBeInstanceOf(ContextClosedError);
      expect(await Promise.all(queued)).toEqual([1, 2, 3]);
      await closing;
      expect(ctx.state).toBe("closed");
      await expect(ctx.call("__main__", "slow", [1])).rejects.toBeInstanceOf(ContextClosedError);
      expect(() => ctx.callSync("__main__", "slow", [1])).toThrow(ContextClosedError);
    });
  });
}

describe("modes", () => {
  test("a single-phase extension module is refused by owngil and works in worker mode", async () => {
    // _testsinglephase is CPython's own single-phase test extension (like numpy for this purpose).
    const has = py.eval("__import__('importlib.util').util.find_spec('_testsinglephase') is not None");
    if (!has) return;
    if (hasOwnGil) {
      const ctx = await context("owngil");
      const e = await ctx.exec("import _testsinglephase").catch((x) => x);
      expect(e).toBeInstanceOf(PythonError);
      expect(e.message).toMatch(/subinterpreter/);
    }
    const worker = await context("worker");
    await worker.exec("import _testsinglephase");
    expect(await worker.eval("_testsinglephase.__name__")).toBe("_testsinglephase");
  });

  test("owngil on Python 3.11 is refused, naming the mode to use", async () => {
    if (hasOwnGil) return;
    await expect(py.context({ mode: "owngil" })).rejects.toThrow(/worker/);
  });

  test("an unknown mode is a TypeError", async () => {
    await expect(py.context({ mode: "threads" as never })).rejects.toThrow(TypeError);
  });

  test("options that are not objects, bad call timeouts and signals are TypeErrors naming the option", async () => {
    for (const bad of [null, 5, "x", []]) {
      await expect(py.context(bad as never)).rejects.toThrow(/py.context\(options\): options must be an object/);
      await expect(py.pool(bad as never)).rejects.toThrow(/py.pool\(options\): options must be an object/);
    }
    const ctx = await context("worker");
    for (const bad of [null, 5, "x"]) await expect(ctx.call("builtins", "len", [[1]], undefined, bad as never)).rejects.toThrow(/call options must be an object/);
    for (const timeout of [-1, NaN, "10", 2 ** 31]) await expect(ctx.eval("1", { timeout } as never)).rejects.toThrow(/timeout must be a number of ms/);
    await expect(ctx.eval("1", { signal: {} } as never)).rejects.toThrow(/signal must be an AbortSignal/);
    expect(await ctx.eval("1 + 1", { timeout: 0x7fffffff })).toBe(2);
    const pool = await py.pool({ size: 1, mode: "worker" });
    await expect(pool.call("builtins", "len", [[1]], undefined, null as never)).rejects.toThrow(/pool call options must be an object/);
    expect(await pool.call("builtins", "len", [[1, 2]], undefined, { key: "k", timeout: 1000 })).toBe(2);
    await pool.close();
  });

  test("a pool size that is not a positive integer is a TypeError; one above 1024 a RangeError, before anything starts", async () => {
    for (const size of [0, -1, 1.5, NaN]) await expect(py.pool({ size })).rejects.toThrow(TypeError);
    const threads = () => readdirSync("/proc/self/task").length;
    const before = threads();
    await expect(py.pool({ size: 1e6 })).rejects.toThrow(/at most 1024/);
    await expect(py.pool({ size: 1025 })).rejects.toThrow(RangeError);
    expect(threads()).toBe(before);
  });
});

describe("parallelism", () => {
  // A holds its GIL for about a second: a regular expression that backtracks runs in C and
  // never lets the GIL go. B asks for a timestamp 50 ms into it. With a GIL of its own B's
  // stamp falls early in A's hold; with a shared GIL it can only come once the match is over
  // (between the match and A's closing timestamp, where A's thread first lets the GIL go).
  // A says when it starts (a message): on a loaded machine a fixed sleep was not always
  // enough for A to be inside its hold, and B's stamp came before it.
  const HOLD_GIL = `
import bunpy, re, time
def hold():
    t0 = time.monotonic()
    bunpy.send('holding-gil', t0)
    re.match(r"(a+)+$", "a" * 25 + "b")
    return [t0, time.monotonic()]
def stamp():
    return time.monotonic()
`;

  async function stampWhileOtherHolds(a: Context, b: Context): Promise<{ stamp: number; from: number; to: number }> {
    await Promise.all([a.exec(HOLD_GIL), b.exec(HOLD_GIL)]);
    let started!: () => void;
    const inside = new Promise<void>((r) => (started = r));
    const off = py.on("holding-gil", () => started());
    const holding = a.call("__main__", "hold");
    await inside.finally(off);
    await Bun.sleep(20); // A is inside its hold by now (it lasts about a second)
    const stamp = (await b.call("__main__", "stamp")) as number;
    const [from, to] = (await holding) as [number, number];
    return { stamp, from, to };
  }

  test.skipIf(!hasOwnGil)("two owngil contexts run at the same time: one runs while the other holds its GIL", async () => {
    const { stamp, from, to } = await stampWhileOtherHolds(await context("owngil"), await context("owngil"));
    expect(stamp).toBeGreaterThan(from);
    expect(stamp).toBeLessThan((from + to) / 2);
  });

  test("two worker contexts share one GIL: one waits while the other holds it", async () => {
    // the negative control of the test above: the same code, and B comes after A
    const { stamp, from, to } = await stampWhileOtherHolds(await context("worker"), await context("worker"));
    expect(stamp).toBeGreaterThan((from + to) / 2);
  });

  test("many calls in flight on two contexts all complete, in order per context", async () => {
    const pool = await py.pool({ size: 2 });
    await pool.execAll("log = []\ndef rec(i):\n    log.append(i)\n    return i");
    const n = 20_000;
    const out = await Promise.all(Array.from({ length: n }, (_, i) => pool.call("__main__", "rec", [i])));
    expect(out).toEqual(Array.from({ length: n }, (_, i) => i));
    const stats = pool.stats();
    expect(stats.inFlight).toBe(0);
    expect(stats.contexts.every((c) => c.completed > 0)).toBe(true); // spilled to both
    for (const c of pool.contexts) {
      const log = (await c.eval("log")) as number[];
      expect(log).toEqual([...log].sort((p, q) => p - q));
    }
    await pool.close();
  });
});

describe("pool", () => {
  test("keyed routing is stable: the same key always reaches the same context", async () => {
    const pool = await py.pool({ size: 3 });
    await pool.execAll("import threading\ndef who():\n    return threading.get_ident()");
    for (const key of ["user:1", "user:2", 42, "another key"]) {
      const first = pool.pick({ key });
      for (let i = 0; i < 5; i++) expect(pool.pick({ key })).toBe(first);
      const ids = await Promise.all([1, 2, 3].map(() => pool.call("__main__", "who", [], undefined, { key })));
      expect(new Set(ids).size).toBe(1);
    }
    await pool.close();
    await expect(pool.call("__main__", "who")).rejects.toThrow(/closed/);
  });

  test("size defaults to the core count; stats count calls", async () => {
    const pool = await py.pool();
    expect(pool.contexts.length).toBe(navigator.hardwareConcurrency);
    await pool.call("math", "sqrt", [4]);
    expect(pool.stats().completed).toBeGreaterThanOrEqual(1);
    await pool.close();
  });

  test("8 contexts x 20 create/run/close cycles with asyncio, json, decimal, datetime, re, hashlib", async () => {
    const work = `
import asyncio, json, decimal, datetime, re, hashlib
async def _main():
    await asyncio.sleep(0)
    return 1
r = asyncio.run(_main())
s = json.dumps({"d": str(decimal.Decimal("1.10") * 3), "t": datetime.datetime(2026, 1, 2).isoformat()})
m = re.match(r"(\\w+)", "hello world").group(1)
h = hashlib.sha256(s.encode()).hexdigest()
result = (r, json.loads(s)["d"], m, len(h))
`;
    for (let cycle = 0; cycle < 20; cycle++) {
      const ctxs = await Promise.all(Array.from({ length: 8 }, () => py.context()));
      const results = await Promise.all(ctxs.map(async (c) => (await c.exec(work), c.eval("result"))));
      for (const r of results) expect(r).toEqual([1, "3.30", "hello", 64]);
      await Promise.all(ctxs.map((c) => c.close()));
    }
  }, 300_000);

  test("calls from two Bun Workers, each with its own context", async () => {
    const workers = [0, 1].map(() => new Worker(join(import.meta.dir, "fixtures", "context-worker.ts")));
    const results = await Promise.all(
      workers.map(
        (w, i) =>
          new Promise<{ sum: number; ident: number }>((resolve, reject) => {
            w.onmessage = (e) => resolve(e.data);
            w.onerror = reject;
            w.postMessage(1000 * (i + 1));
          }),
      ),
    );
    for (const w of workers) w.terminate();
    expect(results[0]!.sum).toBe((999 * 1000) / 2);
    expect(results[1]!.sum).toBe((1999 * 2000) / 2);
    const mainIdent = py.eval("__import__('threading').get_ident()");
    for (const r of results) expect(r.ident).not.toBe(mainIdent); // ran on a context thread
  });

  // ctypes loads in owngil subinterpreters from 3.13 on (it is single-phase in 3.12)
  const deathModes = Number(py.version.split(".")[1]) >= 13 ? ["worker", "owngil"] : ["worker"];
  for (const mode of deathModes) {
    test(`a ${mode} context whose thread dies is reported and the pool replaces it`, () => {
      const r = Bun.spawnSync([process.execPath, join(import.meta.dir, "fixtures", "context-death.ts"), mode], {
        stdout: "pipe",
        stderr: "pipe",
        timeout: 60_000,
      });
      expect(r.exitCode).toBe(0);
      const out = JSON.parse(r.stdout.toString().trim().split("\n").pop()!);
      expect(out).toEqual({
        error: "ContextDiedError",
        queuedAfter: "ContextClosedError",
        victimState: "closed",
        replaced: 1,
        sameFunctionsAfter: true, // execAll code ran again in the replacement
        main: 42,
      });
    });
  }

  test("a script using a pool exits by itself when its work is done", () => {
    const r = Bun.spawnSync([process.execPath, join(import.meta.dir, "fixtures", "pool-exit.ts")], { stdout: "pipe", stderr: "pipe", timeout: 30_000 });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString().trim()).toBe("[1,4,9,16]");
  });
});
