/**
 * Leak checks: long loops of calls, proxies and callbacks must leave the process's RSS
 * and Python's object count flat. Margins are generous (the allocators keep some memory
 * around) but far below what a per-call leak would cost over these loop sizes.
 */
import { expect, test } from "bun:test";
import { internals, py } from "../src/index.ts";
import { defineModule } from "./helpers.ts";

defineModule(
  "t_memory",
  `
import gc

class Thing:
    def __init__(self, i):
        self.i = i
        self.payload = [i, str(i)]

def make(i):
    return Thing(i)

def call_back(f, i):
    return f(i, [i])

def objects():
    gc.collect()
    return len(gc.get_objects())
`,
);

const MB = 1024 * 1024;

function rss(): number {
  Bun.gc(true);
  return process.memoryUsage().rss;
}

/** Lets FinalizationRegistry callbacks run, then makes one call so queued drops reach Python. */
async function settle(): Promise<void> {
  for (let i = 0; i < 4; i++) {
    Bun.gc(true);
    await Bun.sleep(5);
  }
  py.eval("0");
}

test("1,000,000 calls keep RSS flat", () => {
  let sum = 0;
  for (let i = 0; i < 100_000; i++) sum += py.call("operator", "add", [i, 1]);
  expect(sum).toBe((100_000 * 99_999) / 2 + 100_000);
  const before = rss();
  sum = 0;
  for (let i = 0; i < 1_000_000; i++) sum += py.call("operator", "add", [i, 1]);
  const after = rss();
  expect(sum).toBe((1_000_000 * 999_999) / 2 + 1_000_000);
  // a leak of even 32 bytes per call would show as 30 MB here
  expect(after - before).toBeLessThan(30 * MB);
});

test("200k proxies and 100k JS callbacks keep RSS and Python's object count flat", async () => {
  const live = () => internals.runtime().callbacks.liveFunctions;

  async function round(proxies: number, callbacks: number): Promise<void> {
    let checksum = 0;
    for (let i = 0; i < proxies; i++) {
      const t = py.call("t_memory", "make", [i]);
      if (i % 1000 === 0) checksum += t.i as number;
      if (i % 20_000 === 19_999) await settle(); // let collected proxies go as a program would
    }
    for (let i = 0; i < callbacks; i++) {
      const r = py.call("t_memory", "call_back", [(n: number, a: number[]) => n + a.length, i]);
      checksum += r - i - 1;
    }
    expect(checksum).toBe(Array.from({ length: Math.ceil(proxies / 1000) }, (_, k) => k * 1000).reduce((a, b) => a + b, 0));
    await settle();
  }

  // warm-up: caches, allocator pools and JIT reach their steady state
  await round(20_000, 10_000);
  const functionsBefore = live();
  const objectsBefore = py.call("t_memory", "objects") as number;
  const rssBefore = rss();

  await round(200_000, 100_000);

  const rssAfter = rss();
  const objectsAfter = py.call("t_memory", "objects") as number;
  expect(live()).toBe(functionsBefore);
  // every Thing holds a list and a str: 200k leaked proxies would be 400k+ objects
  expect(objectsAfter - objectsBefore).toBeLessThan(2_000);
  expect(rssAfter - rssBefore).toBeLessThan(30 * MB);
}, 60_000); // ~1.5 s on a quiet machine; 5 s was not enough on a loaded one

test("the io buffer goes back to its usual size after a huge value", () => {
  const wire = internals.runtime().wire;
  const big = py.eval("b'x' * (16 * 1024 * 1024)") as Uint8Array;
  expect(big.length).toBe(16 * 1024 * 1024);
  expect(py.call("operator", "add", [1, 2])).toBe(3); // a small call after it
  expect(wire.header[2]).toBeLessThanOrEqual(64 * 1024); // header[2]: the buffer's capacity
  const again = py.call("builtins", "len", [big]);
  expect(again).toBe(16 * 1024 * 1024);
  expect(py.eval("'after'")).toBe("after");
});

test("the buffers results and messages come through go back to their usual size (thread and process contexts)", async () => {
  const wire = internals.runtime().wire;
  for (const mode of ["worker", "process"] as const) {
    const ctx = await py.context({ mode });
    let got = 0;
    const off = py.on("big", (b) => void (got += (b as Uint8Array).length));
    try {
      await ctx.exec("import bunpy");
      const before = rss();
      for (let i = 0; i < 2; i++) {
        got = 0;
        // a 64 MiB message: drained into the JS thread's buffer (and, from a process
        // context, read through the relay's socket buffer first: bigger than its rings)
        await ctx.exec("bunpy.send('big', bytes(64 << 20))");
        for (let t = 0; t < 200 && got === 0; t++) await Bun.sleep(10);
        expect(got).toBe(64 << 20);
        expect(await ctx.eval("1 + 1")).toBe(2); // a small result after it
        expect(wire.header[2]).toBeLessThanOrEqual(64 * 1024);
      }
      // both buffers kept their 64 MiB (and more) before; the margin is for allocator noise
      expect((rss() - before) / MB).toBeLessThan(32);
    } finally {
      off();
      await ctx.close();
    }
  }
}, 60_000);
