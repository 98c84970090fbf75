// Leaks: references JS let go of reach Python whatever call comes next — also calls that
// write no arguments (py.eval of cached code, attribute reads, str()), and also when more
// proxies are collected at once than the shim's drop queue holds (issue 9, item 12).
import { expect, test } from "bun:test";
import { internals, py } from "../src/index.ts";
import { defineModule } from "./helpers.ts";

defineModule(
  "t_leaks",
  `
import gc

live = 0

class Big:
    def __init__(self):
        global live
        live += 1
        self.payload = bytes(100_000)
    def __del__(self):
        global live
        live -= 1

def count():
    gc.collect()
    return live
`,
);
py.exec("from t_leaks import Big as LeakBig");

const MB = 1024 * 1024;

async function collect(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    Bun.gc(true);
    await Bun.sleep(2);
  }
}

function rss(): number {
  return process.memoryUsage().rss;
}

for (const [name, touch] of [
  ["py.eval of cached code", () => py.eval("0")],
  ["py.exec of cached code", () => py.exec("pass")],
  ["an attribute read", () => (py.eval("LeakBig") as any).__name__],
] as const) {
  test(`20,000 dropped 100 KB proxies are freed by ${name} alone`, async () => {
    const before = rss();
    let peak = 0;
    for (let round = 0; round < 10; round++) {
      // made by eval of cached code: no call in this loop goes through a message write
      for (let i = 0; i < 2000; i++) py.eval("LeakBig()");
      await collect(); // thousands of proxies collected at once: more than the drop queue holds
      for (let i = 0; i < 3; i++) touch();
      peak = Math.max(peak, rss() - before);
    }
    for (let i = 0; i < 3; i++) touch();
    expect(py.call("t_leaks", "count", [])).toBeLessThan(2100);
    // without the fix, about half of 2 GB stays alive
    expect(peak).toBeLessThan(300 * MB);
    await collect();
    touch();
    expect(py.call("t_leaks", "count", [])).toBe(0);
  }, 60_000);
}

test("proxies disposed inside getters while a message is written are freed after it", async () => {
  for (let i = 0; i < 3000; i++) {
    const big = py.eval("LeakBig()") as any;
    py.call("builtins", "len", [
      {
        get a() {
          big[Symbol.dispose](); // waits in JS until the outer message has been read
          return py.eval("1");
        },
      },
    ]);
  }
  py.eval("0");
  expect(py.call("t_leaks", "count", [])).toBe(0);
  expect(internalsFunctions()).toBeLessThan(10);
}, 60_000);

function internalsFunctions(): number {
  return internals.runtime().callbacks.liveFunctions;
}

test("a million create/drop cycles leave the Python object count flat (issue 11)", async () => {
  py.exec(`
import gc as _gc
class LeakSmall:
    pass
def leak_small_count():
    _gc.collect()
    return sum(1 for o in _gc.get_objects() if type(o) is LeakSmall)
`);
  const make = py.eval("LeakSmall") as any;
  const count = () => py.call("__main__", "leak_small_count", []) as number;
  const before = count();
  for (let round = 0; round < 10; round++) {
    for (let i = 0; i < 50_000; i++) make(); // left to the GC
    for (let i = 0; i < 50_000; i++) make()[Symbol.dispose]();
    await collect();
  }
  await collect();
  py.eval("0");
  // flat: at most the proxies the last GC did not reach yet
  expect(count() - before).toBeLessThan(60_000);
  await collect();
  await collect();
  expect(count() - before).toBeLessThan(5_000);
}, 60_000);

test("disposed proxies are released without waiting for an unrelated call", async () => {
  py.exec(`
import weakref as _weakref
class LeakWatched:
    pass
leak_watched = []
def leak_watched_alive():
    return sum(1 for r in leak_watched if r() is not None)
`);
  const objs = Array.from({ length: 10 }, () => py.eval("(lambda o: (leak_watched.append(_weakref.ref(o)), o)[1])(LeakWatched())") as any);
  expect(py.call("__main__", "leak_watched_alive", [])).toBe(10);
  const queued = internals.runtime().wire.header; // [8]: drops waiting for the shim
  for (const o of objs) o[Symbol.dispose]();
  expect(queued[8]).toBe(10);
  await Bun.sleep(0); // a microtask hands the drops to Python: no call made here
  expect(queued[8]).toBe(0);
  const alive = py.eval("sum(1 for r in leak_watched if r() is not None)");
  expect(alive).toBe(0);
});

test("JS errors thrown into Python leave nothing behind: JSError objects, kept Errors, JS heap (issue 11)", async () => {
  py.exec(`
import gc as _gc
import bunpy as _bunpy
def leak_js_errors():
    _gc.collect()
    return sum(1 for o in _gc.get_objects() if isinstance(o, _bunpy.JSError))
def leak_swallow(f, read):
    try:
        f()
    except _bunpy.JSError as e:
        return len(e.js_stack) if read else 1
`);
  const rt = internals.runtime();
  const swallow = py.eval("leak_swallow") as any;
  const errors = () => py.call("__main__", "leak_js_errors", []) as number;
  const round = (n: number) => {
    for (let i = 0; i < n; i++) swallow(() => {
      throw new Error(`e${i}`);
    }, i % 3 === 0);
  };
  round(5_000);
  await collect();
  const before = { errors: errors(), kept: rt.callbacks.liveThrownErrors, fns: rt.callbacks.liveFunctions, heap: process.memoryUsage().heapUsed };
  round(20_000);
  await collect();
  expect(errors()).toBe(before.errors);
  expect(rt.callbacks.liveThrownErrors).toBe(before.kept);
  expect(rt.callbacks.liveFunctions).toBe(before.fns);
  // flat, with room for what the JIT and the collector keep
  expect(process.memoryUsage().heapUsed - before.heap).toBeLessThan(8 * MB);
}, 60_000);
