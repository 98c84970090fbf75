/**
 * Python -> JS: a callback from the main interpreter, a round trip from a context, and
 * bunpy.send throughput — each next to a baseline measured in the same run.
 */
import { bench, do_not_optimize, summary } from "mitata";
import { py } from "../src/index.ts";
import { runOptions, runWithRatios } from "./ratio.ts";

const LOOP = 1000;
py.register("noop", (x: number) => x);
py.exec(`
import bunpy
def py_noop(x):
    return x
def loop_py(n):
    for i in range(n):
        py_noop(i)
def loop_js(n):
    call = bunpy.call
    for i in range(n):
        call('noop', i)
`);

const BASELINE = `baseline: Python loop of ${LOOP} calls to a Python function`;
summary(() => {
  bench(BASELINE, () => do_not_optimize(py.call("__main__", "loop_py", [LOOP]))).baseline(true);
  bench(`Python loop of ${LOOP} bunpy.call('noop', i) into JS`, () => do_not_optimize(py.call("__main__", "loop_js", [LOOP])));
});
const { benchmarks } = await (async () => {
  const { run } = await import("mitata");
  return run({ ...runOptions, format: "quiet" });
})();
const p50 = (name: string) => benchmarks.find((b) => b.alias === name)!.runs[0]!.stats!.p50;
const perCall = (p50(`Python loop of ${LOOP} bunpy.call('noop', i) into JS`) - p50(BASELINE)) / LOOP;
console.log(`Python -> JS callback from the main interpreter: ${perCall.toFixed(1)} ns per call above a Python call (target ≤ 300 ns)`);

// ---- from a context ---------------------------------------------------------------
const minor = Number(py.version.split(".")[1]);
const ctx = await py.context({ mode: minor >= 12 ? "owngil" : "worker" });
await ctx.exec(`
import bunpy
def loop_js(n):
    for i in range(n):
        bunpy.call('noop', i)
def ident(x):
    return x
def flood(n):
    for i in range(n):
        bunpy.send('bench', i)
`);
const CTX_BASELINE = "baseline: await ctx.call('__main__', 'ident', [1]) (JS -> context)";
summary(() => {
  bench(CTX_BASELINE, async () => do_not_optimize(await ctx.call("__main__", "ident", [1]))).baseline(true);
  bench("context -> JS: 100 bunpy.call round trips in one ctx.call (per 100)", async () =>
    do_not_optimize(await ctx.call("__main__", "loop_js", [100])),
  );
});
await runWithRatios(CTX_BASELINE);

// ---- send throughput --------------------------------------------------------------
let received = 0;
py.on("bench", () => received++);
const N = 200_000;
let t = performance.now();
await ctx.call("__main__", "flood", [N]);
while (received < N) await Bun.sleep(1);
const ctxRate = N / ((performance.now() - t) / 1000);
received = 0;
py.exec("def flood_main(n):\n    for i in range(n):\n        bunpy.send('bench', i)");
t = performance.now();
for (let i = 0; i < N / 1000; i++) {
  py.call("__main__", "flood_main", [1000]); // under the 1024 unread limit of the main interpreter
  await Bun.sleep(0);
}
while (received < N) await Bun.sleep(1);
const mainRate = N / ((performance.now() - t) / 1000);
console.log(`\nbunpy.send throughput (${N.toLocaleString("en-US")} messages to one py.on listener):`);
console.log(`  from a context:          ${Math.round(ctxRate).toLocaleString("en-US").padStart(10)} messages/s`);
console.log(`  from the main interpreter: ${Math.round(mainRate).toLocaleString("en-US").padStart(8)} messages/s (in batches of 1,000)`);
await ctx.close();
