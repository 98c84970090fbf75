// How completions reach JS: right after a call is sent JS polls for them (and they ring no
// doorbell), later ones ring the doorbell. Every call must settle, with its own value,
// whichever way its completion came.
import { describe, expect, test } from "bun:test";
import { closedAfterAll, contextModes } from "./helpers.ts";

const { context } = closedAfterAll();

const SRC = `
import time
def ident(x):
    return x
def later(x, ms):
    time.sleep(ms / 1000)
    return x
`;

for (const mode of contextModes) {
  describe(`${mode} context`, () => {
    test("awaited calls finishing inside and after the polling window all settle with their values", async () => {
      const ctx = await context(mode);
      await ctx.exec(SRC);
      // 0 ms: found by polling; 1-20 ms: after polling stopped, through the doorbell
      const delays = [0, 0, 1, 0, 5, 0, 0, 20, 0, 2, 0];
      for (let round = 0; round < 3; round++)
        for (const [i, ms] of delays.entries()) {
          const v = { round, i, s: `v${i}` };
          expect(await (ms === 0 ? ctx.call("__main__", "ident", [v]) : ctx.call("__main__", "later", [v, ms]))).toEqual(v);
        }
    });

    test("a call finishing just as polling stops is not lost (many short gaps)", async () => {
      const ctx = await context(mode);
      await ctx.exec(SRC);
      // delays around the 30 µs polling window, many times: a lost wake-up would hang here
      for (let i = 0; i < 300; i++) {
        const ms = [0.01, 0.02, 0.03, 0.04, 0.06][i % 5]!;
        expect(await ctx.call("__main__", "later", [i, ms])).toBe(i);
      }
    });

    test("two contexts with thousands of calls in flight: every call gets its own result", async () => {
      const a = await context(mode);
      const b = await context(mode);
      await Promise.all([a.exec(SRC), b.exec(SRC)]);
      const n = 20_000;
      const out = await Promise.all(
        Array.from({ length: n }, (_, i) => (i % 2 ? a : b).call("__main__", "ident", [[i, `k${i}`]])),
      );
      for (let i = 0; i < n; i++) expect(out[i]).toEqual([i, `k${i}`]);
      expect(a.inFlight + b.inFlight).toBe(0);
    });

    test("memory stays flat over many calls (requests are freed, whichever way they completed)", async () => {
      const ctx = await context(mode);
      await ctx.exec(SRC);
      const batch = async (n: number) => {
        for (let done = 0; done < n; done += 2000)
          await Promise.all(Array.from({ length: 2000 }, (_, i) => ctx.call("__main__", "ident", [{ k: i, s: "x" }])));
        for (let i = 0; i < 200; i++) await ctx.call("__main__", "ident", [i]); // one at a time: polled
      };
      await batch(40_000);
      Bun.gc(true);
      const before = process.memoryUsage().rss;
      await batch(200_000);
      Bun.gc(true);
      // a leaked request (~150 bytes with its payload) per call would be 30 MB
      expect(process.memoryUsage().rss - before).toBeLessThan(15 * 1024 * 1024);
    }, 60_000);

    test("a context keeps working after another one closed with calls completed", async () => {
      const a = await context(mode);
      await a.exec(SRC);
      expect(await a.call("__main__", "ident", [1])).toBe(1);
      await a.close();
      const b = await context(mode);
      await b.exec(SRC);
      const out = await Promise.all(Array.from({ length: 1000 }, (_, i) => b.call("__main__", "ident", [i])));
      expect(out).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    });
  });
}
