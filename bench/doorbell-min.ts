/**
 * Awaited context calls whose completion rings the JS thread's doorbell, timed as the
 * minimum of many loops (see calls-min.ts for why the minimum). `late` lasts ~60 µs, longer
 * than the JS thread's poll window (30 µs, src/hub.ts), so every completion rings the
 * doorbell (shim/io.c bp_port_ring); `ident` is mostly found by the poll. Run it from two
 * checkouts in turn to compare them (docs/performance.md, "Doorbells of ending Workers"):
 *
 *   bun bench/doorbell-min.ts [checkout root, default: this one] [loops, default 15]
 */
import { resolve } from "node:path";

const root = resolve(process.argv[2] ?? resolve(import.meta.dir, ".."));
const loops = Number(process.argv[3] ?? 15);
const { py } = await import(`${root}/src/index.ts`);
const mode = Number(py.version.split(".")[1]) >= 12 ? "owngil" : "worker";
const ctx = await py.context({ mode });
await ctx.exec(
  "import time\ndef ident(x):\n    return x\ndef late(x):\n    t = time.perf_counter() + 6e-5\n    while time.perf_counter() < t:\n        pass\n    return x",
);
const cases: [string, number, () => Promise<unknown>][] = [
  ['await ctx.call("__main__", "ident", [1])', 5000, () => ctx.call("__main__", "ident", [1])],
  ['await ctx.call("__main__", "late", [1]) (~60 µs: rings)', 1000, () => ctx.call("__main__", "late", [1])],
];
const best = new Map<string, number>();
for (let r = 0; r < loops; r++)
  for (const [name, n, f] of cases) {
    const t0 = Bun.nanoseconds();
    for (let i = 0; i < n; i++) await f();
    const t = (Bun.nanoseconds() - t0) / n / 1000;
    if (!(best.get(name)! <= t)) best.set(name, t);
  }
console.log(`${root} (Python ${py.version}, ${mode}), minimum of ${loops} loops:`);
for (const [name, us] of best) console.log(`  ${name.padEnd(56)} ${us.toFixed(2).padStart(7)} µs`);
await ctx.close();
await py.close();
