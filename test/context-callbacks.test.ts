// Python reaching JS from contexts (bunpy.call) and messages (bunpy.send) from every
// interpreter, with back-pressure.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ContextClosedError, PythonError, py, type Context } from "../src/index.ts";
import { closedAfterAll, contextModes } from "./helpers.ts";

const modes = contextModes;
const contexts = closedAfterAll();
async function context(mode?: "owngil" | "worker") {
  const ctx = await contexts.context(mode);
  await ctx.exec("import bunpy");
  return ctx;
}

py.register("cb_add", (a: number, b: number) => a + b);
py.register("cb_kw", (a: number, kw: { scale: number }) => a * kw.scale);
py.register("cb_async", async (x: number) => {
  await Bun.sleep(2);
  return { doubled: x * 2 };
});
py.register("cb_throw", () => {
  throw new RangeError("out of range in JS");
});
py.register("cb_reject", () => Promise.reject(new Error("rejected in JS")));

for (const mode of modes) {
  describe(`bunpy.call from a ${mode} context`, () => {
    test("sync and async JS functions return their values", async () => {
      const ctx = await context(mode);
      expect(await ctx.eval("bunpy.call('cb_add', 2, 3)")).toBe(5);
      expect(await ctx.eval("bunpy.call('cb_kw', 7, scale=6)")).toBe(42);
      expect(await ctx.eval("bunpy.call('cb_async', 21)")).toEqual({ doubled: 42 });
    });

    test("a JS throw and a rejected Promise become bunpy.JSError in Python", async () => {
      const ctx = await context(mode);
      await ctx.exec(`
def catch(name):
    try:
        bunpy.call(name)
    except bunpy.JSError as e:
        return [e.js_name, e.js_message, "context-callbacks.test.ts" in e.js_stack]
`);
      expect(await ctx.call("__main__", "catch", ["cb_throw"])).toEqual(["RangeError", "out of range in JS", true]);
      const rejected = (await ctx.call("__main__", "catch", ["cb_reject"])) as unknown[];
      expect(rejected.slice(0, 2)).toEqual(["Error", "rejected in JS"]);
      const unknown = (await ctx.call("__main__", "catch", ["cb_nope"])) as string[];
      expect(unknown[0]).toBe("ReferenceError");
      const e = await ctx.eval("bunpy.call('cb_throw')").catch((x) => x);
      expect(e).toBeInstanceOf(PythonError);
      expect(e.type).toBe("JSError");
    });

    test("ctx.callSync serves callbacks from the context without deadlock", async () => {
      const ctx = await context(mode);
      await ctx.exec("def via_js(a, b):\n    return bunpy.call('cb_add', a, b) * 10");
      expect(ctx.callSync("__main__", "via_js", [1, 2])).toBe(30);
      // an async JS function cannot be awaited while the JS thread is blocked
      await ctx.exec("def via_async():\n    return bunpy.call('cb_async', 1)");
      expect(() => ctx.callSync("__main__", "via_async")).toThrow(/callSync/);
    });

    test("nested JS -> Python -> JS -> Python chains work, and too deep is an error", async () => {
      const ctx = await context(mode);
      py.register(`cb_down_${mode}`, (n: number) => (n <= 0 ? 0 : 1 + (ctx.callSync("__main__", "down", [n - 1]) as number)));
      py.register(`cb_down_async_${mode}`, async (n: number) => (n <= 0 ? 0 : 1 + (await ctx.call("__main__", "down_async", [n - 1]))));
      await ctx.exec(`
def down(n):
    return bunpy.call('cb_down_${mode}', n)
def down_async(n):
    return bunpy.call('cb_down_async_${mode}', n)
`);
      expect(await ctx.call("__main__", "down", [8])).toBe(8);
      expect(await ctx.call("__main__", "down_async", [8])).toBe(8);
      const e = await ctx.call("__main__", "down_async", [100]).catch((x) => x);
      expect(String(e)).toMatch(/nested deeper than 32/);
      expect(await ctx.eval("'still serving'")).toBe("still serving");
    });
  });
}

test("callbacks from 4 contexts at once", async () => {
  const ctxs = await Promise.all([0, 1, 2, 3].map(() => context()));
  let calls = 0;
  py.register("cb_count", (i: number) => {
    calls++;
    return i + 1;
  });
  const results = await Promise.all(
    ctxs.map((c, k) => c.eval(`sum(bunpy.call('cb_count', i) for i in range(${100 * (k + 1)}))`)),
  );
  expect(results).toEqual([100, 200, 300, 400].map((n) => (n * (n + 1)) / 2));
  expect(calls).toBe(1000);
});

describe("bunpy.send", () => {
  test("messages keep their order per sender and name their context", async () => {
    const ctxs = await Promise.all([0, 1, 2].map(() => context()));
    const got = new Map<Context | undefined, number[]>();
    const stop = py.on("ordered", (v: number, from) => {
      if (!got.has(from)) got.set(from, []);
      got.get(from)!.push(v);
    });
    await Promise.all(ctxs.map((c) => c.exec("for i in range(2000):\n    bunpy.send('ordered', i)")));
    py.exec("import bunpy\nfor i in range(100):\n    bunpy.send('ordered', i)");
    await Bun.sleep(20);
    stop();
    for (const c of ctxs) expect(got.get(c)).toEqual(Array.from({ length: 2000 }, (_, i) => i));
    expect(got.get(undefined)).toEqual(Array.from({ length: 100 }, (_, i) => i));
  });

  test("values of every kind travel, and py.messages is an async iterator", async () => {
    const ctx = await context();
    const it = py.messages("iter");
    await ctx.exec("bunpy.send('iter', {'a': [1, 2.5, None], 'b': b'xy'})\nbunpy.send('iter', 'done')");
    expect((await it.next()).value).toEqual({ a: [1, 2.5, null], b: new Uint8Array([120, 121]) });
    expect((await it.next()).value).toBe("done");
    await it.return!();
  });

  test("a context that outruns JS blocks at the limit instead of queueing without bound", async () => {
    const ctx = await context();
    const flag = join(mkdtempSync(join(tmpdir(), "bunpy-bp-")), "js-resumed");
    await ctx.exec(`
import os, threading, time
sent = 0
def flood(n, flag):
    global sent
    seen = []
    def observe():
        while not os.path.exists(flag):
            seen.append(sent)
            time.sleep(0.002)
    watcher = threading.Thread(target=observe)
    watcher.start()
    for i in range(n):
        bunpy.send('flood', i)
        sent += 1
    watcher.join()
    return max(seen)
`);
    const received: number[] = [];
    const stop = py.on("flood", (v: number) => received.push(v));
    const result = ctx.call("__main__", "flood", [5000, flag]);
    const until = performance.now() + 300;
    while (performance.now() < until) {} // JS busy: it drains nothing meanwhile
    writeFileSync(flag, "");
    const maxAhead = (await result) as number;
    await Bun.sleep(20);
    stop();
    expect(maxAhead).toBeGreaterThan(0);
    expect(maxAhead).toBeLessThanOrEqual(1025);
    expect(received).toEqual(Array.from({ length: 5000 }, (_, i) => i));
  });

  test("the main interpreter cannot wait for JS: past the limit send raises BufferError", () => {
    const e = (() => {
      try {
        py.exec("import bunpy\nfor i in range(3000):\n    bunpy.send('unread', i)");
      } catch (x) {
        return x as PythonError;
      }
      return undefined;
    })();
    expect(e?.type).toBe("BufferError");
  });
});

describe("bunpy.async_call", () => {
  test("awaits JS without blocking the context's event loop", async () => {
    const ctx = await context();
    let inFlight = 0;
    let maxInFlight = 0;
    py.register("cb_slow", async (x: number) => {
      maxInFlight = Math.max(maxInFlight, ++inFlight);
      await Bun.sleep(20);
      inFlight--;
      return x * 2;
    });
    py.register("cb_slow_fail", async () => {
      await Bun.sleep(1);
      throw new SyntaxError("async failure");
    });
    await ctx.exec(`
import asyncio
async def gather_calls(n):
    results = await asyncio.gather(*(bunpy.async_call('cb_slow', i) for i in range(n)))
    try:
        await bunpy.async_call('cb_slow_fail')
    except bunpy.JSError as e:
        return results, e.js_name, e.js_message
def run(n):
    return asyncio.run(gather_calls(n))
`);
    const [results, name, message] = (await ctx.call("__main__", "run", [8])) as [number[], string, string];
    expect(results).toEqual([0, 2, 4, 6, 8, 10, 12, 14]);
    expect([name, message]).toEqual(["SyntaxError", "async failure"]);
    expect(maxInFlight).toBe(8); // all eight were waiting in JS at the same time
  });

  test("on the context's own loop: many calls in flight, a cancelled one, and answers after the close", async () => {
    const ctx = await context();
    py.register("cb_later", async (x: number, ms: number) => {
      await Bun.sleep(ms);
      return x + 1;
    });
    await ctx.exec(`
import asyncio
async def many(n):
    # returned to JS, so it runs on the context's loop (answers through one shared fd)
    return await asyncio.gather(*(bunpy.async_call('cb_later', i, i % 7) for i in range(n)))
async def cancelled():
    t = asyncio.ensure_future(bunpy.async_call('cb_later', 1, 50))
    await asyncio.sleep(0.005)
    t.cancel()
    try:
        await t
    except asyncio.CancelledError:
        pass
    return await bunpy.async_call('cb_later', 41, 0)
async def outlives(ms):
    return await bunpy.async_call('cb_later', 0, ms)
`);
    for (let round = 0; round < 3; round++) {
      const out = (await ctx.call("__main__", "many", [300])) as number[];
      expect(out).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    }
    expect(await ctx.call("__main__", "cancelled")).toBe(42);
    const late = await context();
    await late.exec("import bunpy\nasync def outlives(ms):\n    return await bunpy.async_call('cb_later', 0, ms)");
    const pending = late.call("__main__", "outlives", [30]).catch((e) => e);
    await Bun.sleep(5);
    await late.close(); // JS answers 25 ms after the context is gone
    expect(await pending).toBeInstanceOf(ContextClosedError);
    await Bun.sleep(40);
    expect(await ctx.call("__main__", "outlives", [0])).toBe(1);
    py.unregister("cb_later");
  });

  test("in the main interpreter it calls at once, like bunpy.call", () => {
    py.exec("import asyncio, bunpy\nasync def _ac():\n    return await bunpy.async_call('cb_add', 20, 22)");
    expect(py.eval("asyncio.run(_ac())")).toBe(42);
  });
});
