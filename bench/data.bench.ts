/**
 * Data without copies, streams and shared state (docs/data.md), each next to its
 * baseline measured in the same run:
 *  - a 100 MB float64 array to Python's sum and a 100 MB array back to JS: viewed
 *    (py.buffer / py.view) vs copied (bytes) vs the JSON route; numpy where the test venv
 *    has it (Python 3.11 here), else array.array and math.fsum;
 *  - py.view and py.buffer at 1 KB vs 100 MB (target: the same cost);
 *  - a generator of 1M small items streamed from a context vs returned as one list
 *    (target: within 2x);
 *  - shared counter increments per second from 2 contexts at once.
 * The 100 MB legs and the streams are timed by hand (median of 5 rounds, routes
 * alternating): one JSON round of 100 MB takes seconds.
 */
import { ptr, toArrayBuffer } from "bun:ffi";
import { bench, do_not_optimize, summary } from "mitata";
import { py, type PyObject } from "../src/index.ts";
import { packageVenv } from "../test/fixtures/venv.ts";
import { runWithRatios } from "./ratio.ts";

const N = (100 * 1024 * 1024) / 8; // 100 MiB of float64
const np = packageVenv("data", ["numpy"]);
const numpy = !("skip" in np);
if (numpy) py.exec(`import sys\nsys.path.append(${JSON.stringify((np as { site: string }).site)})`);
console.log(numpy ? "numpy: yes (np.frombuffer(...).sum())" : `numpy: no (${(np as { skip: string }).skip.slice(0, 80)}…): array.array + math.fsum`);

py.exec(`
import json, math, array
NUMPY = ${numpy ? "True" : "False"}
if NUMPY:
    import numpy as np
def total_view(m):
    return float(np.frombuffer(m, dtype=np.float64).sum()) if NUMPY else math.fsum(m)
def total_bytes(b):
    return float(np.frombuffer(b, dtype=np.float64).sum()) if NUMPY else math.fsum(memoryview(b).cast("d"))
def total_json(s):
    return float(np.array(json.loads(s), dtype=np.float64).sum()) if NUMPY else math.fsum(json.loads(s))
def make(n):
    return np.arange(n, dtype=np.float64) if NUMPY else array.array("d", range(n))
big = make(${N})
small = make(128)
def big_bytes():
    return big.tobytes()
def big_json():
    return json.dumps(big.tolist())
def nbytes(m):
    return m.nbytes
`);
const main = py.import("__main__") as any;
const big: PyObject = main.big;
const small: PyObject = main.small;
const jsBig = new Float64Array(N).map((_, i) => i);
const jsSmall = new Float64Array(128).fill(1);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
function timeRounds(routes: [string, () => unknown][], rounds: number): Map<string, number> {
  const out = new Map<string, number[]>();
  for (let r = 0; r < rounds; r++)
    for (const [name, f] of routes) {
      const t = performance.now();
      do_not_optimize(f());
      (out.get(name) ?? out.set(name, []).get(name)!).push(performance.now() - t);
      Bun.gc(true);
    }
  return new Map([...out].map(([k, v]) => [k, median(v)]));
}
function table(title: string, times: Map<string, number>, base: string): void {
  console.log(`\n${title}`);
  const b = times.get(base)!;
  for (const [k, v] of times) console.log(`  ${k.padEnd(60)} ${v.toFixed(2).padStart(10)} ms   ${(v / b).toFixed(2)}× "${base}"`);
}

// ---- 100 MB to Python's sum, and 100 MB back ------------------------------------------
const expected = py.call("__main__", "total_view", [py.buffer(jsBig)]);
{
  const to = timeRounds(
    [
      ["viewed: py.call(total, [py.buffer(f64)])", () => py.call("__main__", "total_view", [py.buffer(jsBig)])],
      ["copied: py.call(total, [Uint8Array]) (bytes)", () => py.call("__main__", "total_bytes", [new Uint8Array(jsBig.buffer)])],
      ["JSON: py.call(total, [JSON.stringify(Array.from(f64))])", () => py.call("__main__", "total_json", [JSON.stringify(Array.from(jsBig))])],
    ],
    5,
  );
  table("100 MiB float64 from JS to Python's sum (median of 5; the sum itself included in every route):", to, "viewed: py.call(total, [py.buffer(f64)])");
  const back = timeRounds(
    [
      ["viewed: py.view(big) (+ release)", () => { const v = py.view(big) as Float64Array; const x = v[N - 1]; py.release(v); return x; }],
      ["copied: big.tobytes() -> Uint8Array", () => new Float64Array((py.call("__main__", "big_bytes", []) as Uint8Array).buffer)[N - 1]],
      ["JSON: json.dumps(big.tolist()) -> JSON.parse", () => (JSON.parse(py.call("__main__", "big_json", [])) as number[])[N - 1]],
    ],
    5,
  );
  table("100 MiB float64 from Python to JS (median of 5):", back, "viewed: py.view(big) (+ release)");
  console.log(`  (sum checked: ${expected})`);
}

// ---- a view costs the same at 1 KB and 100 MB ------------------------------------------
// Views made while one over the same object is alive share its ArrayBuffer ("dropped":
// the view is left to the garbage collector, as most code does). A view released in the
// loop needs a new external ArrayBuffer every time, and Bun counts its length as memory
// JS allocated: the "bun:ffi" rows measure that alone, without bunpy.
const VIEW_BASE = "py.view(1 KiB array), dropped";
const jsBigAddress = ptr(jsBig);
const jsSmallAddress = ptr(jsSmall);
summary(() => {
  bench(VIEW_BASE, () => {
    const v = py.view(small) as Float64Array;
    do_not_optimize(v[0]);
  }).baseline(true);
  bench("py.view(100 MiB array), dropped", () => {
    const v = py.view(big) as Float64Array;
    do_not_optimize(v[0]);
  });
  bench("py.view(1 KiB array) + py.release", () => {
    const v = py.view(small) as Float64Array;
    do_not_optimize(v[0]);
    py.release(v);
  });
  bench("py.view(100 MiB array) + py.release", () => {
    const v = py.view(big) as Float64Array;
    do_not_optimize(v[0]);
    py.release(v);
  });
  bench("bun:ffi toArrayBuffer(1 KiB) + transfer(0)", () => {
    const b = toArrayBuffer(jsSmallAddress, 0, jsSmall.byteLength);
    do_not_optimize(b.transfer(0));
  });
  bench("bun:ffi toArrayBuffer(100 MiB) + transfer(0)", () => {
    const b = toArrayBuffer(jsBigAddress, 0, jsBig.byteLength);
    do_not_optimize(b.transfer(0));
  });
  bench("py.call(nbytes, [py.buffer(1 KiB Float64Array)])", () => do_not_optimize(py.call("__main__", "nbytes", [py.buffer(jsSmall)])));
  bench("py.call(nbytes, [py.buffer(100 MiB Float64Array)])", () => do_not_optimize(py.call("__main__", "nbytes", [py.buffer(jsBig)])));
  bench("reference: py.call(len, [1 KiB Uint8Array]) (a copy)", () => do_not_optimize(py.call("builtins", "len", [new Uint8Array(jsSmall.buffer)])));
});
await runWithRatios(VIEW_BASE);

// ---- a generator of 1M small items: streamed vs one list ----------------------------------
const minor = Number(py.version.split(".")[1]);
const mode = minor >= 12 ? "owngil" : "worker";
const ctx = await py.context({ mode });
// the same generator both ways: materialised into one list, or streamed
await ctx.exec("def gen(n):\n    for i in range(n):\n        yield i\ndef lst(n):\n    return list(gen(n))");
{
  const M = 1_000_000;
  const rounds = async (f: () => Promise<number>) => {
    const t = performance.now();
    const n = await f();
    if (n !== M) throw new Error(`got ${n} items`);
    return performance.now() - t;
  };
  const list = async () => {
    const a = (await ctx.call("__main__", "lst", [M])) as number[];
    let n = 0;
    for (const x of a) n += x >= 0 ? 1 : 0;
    return n;
  };
  const streamed = (options?: { batch?: number; prefetch?: boolean }) => async () => {
    let n = 0;
    for await (const x of ctx.iterate("__main__", "gen", [M], undefined, options)) n += (x as number) >= 0 ? 1 : 0;
    return n;
  };
  // the floor: what for-await costs per item in Bun, over 1M numbers already in JS
  const pre = Array.from({ length: M }, (_, i) => i);
  const floor = async () => {
    let i = 0;
    const it: AsyncIterableIterator<number> = {
      [Symbol.asyncIterator]() {
        return this;
      },
      next: () => Promise.resolve(i < M ? { done: false, value: pre[i++]! } : { done: true, value: undefined }),
    };
    let n = 0;
    for await (const x of it) n += x >= 0 ? 1 : 0;
    return n;
  };
  const floorGen = async () => {
    async function* g() {
      for (let i = 0; i < M; i++) yield pre[i]!;
    }
    let n = 0;
    for await (const x of g()) n += x >= 0 ? 1 : 0;
    return n;
  };
  const routes: [string, () => Promise<number>][] = [
    ["list(gen(n)) returned as one list, then a for-of", list],
    ["streamed: for await (ctx.iterate(gen)), defaults", streamed()],
    ["streamed: batch 1024, { prefetch: false } (before)", streamed({ batch: 1024, prefetch: false })],
    ["floor: for await over a JS async iterator (1M numbers)", floor],
    ["floor: for await over a JS async generator", floorGen],
  ];
  const times = new Map<string, number[]>(routes.map(([k]) => [k, []]));
  for (const [, f] of routes) await rounds(f);
  for (let r = 0; r < 5; r++) for (const [k, f] of routes) times.get(k)!.push(await rounds(f));
  const base = median(times.get(routes[0]![0])!);
  console.log(`\n1M small ints from a ${mode} context (median of 5, alternating):`);
  for (const [k] of routes) {
    const m = median(times.get(k)!);
    console.log(`  ${k.padEnd(56)} ${m.toFixed(1).padStart(8)} ms   ${(m / base).toFixed(2)}× the list${k.includes("defaults") ? " (target ≤ 2×)" : ""}`);
  }
}
await ctx.close();

// ---- shared counter: increments per second from 2 contexts --------------------------------
{
  const K = 200_000;
  const pool = await py.pool({ size: 2, mode });
  await pool.execAll(`
import bunpy, time
def bump(n):
    incr = bunpy.shared.incr
    t = time.perf_counter()
    for _ in range(n):
        incr("bench_hits")
    return time.perf_counter() - t
def local(n):
    d = {"x": 0}
    t = time.perf_counter()
    for _ in range(n):
        d["x"] += 1
    return time.perf_counter() - t
`);
  py.shared.set("bench_hits", 0);
  const t0 = performance.now();
  const [s1, s2] = (await Promise.all(pool.contexts.map((c) => pool.call("__main__", "bump", [K], undefined, { context: c })))) as number[];
  const wall = (performance.now() - t0) / 1000;
  const one = (await pool.call("__main__", "bump", [K], undefined, { context: pool.contexts[0] })) as number;
  const local = (await pool.call("__main__", "local", [K], undefined, { context: pool.contexts[0] })) as number;
  const hits = py.shared.get("bench_hits") as number;
  const tJs = performance.now();
  for (let i = 0; i < K; i++) py.shared.incr("bench_js");
  const js = (performance.now() - tJs) / 1000;
  console.log(`\nshared counter (${mode} contexts), ${K} increments each (total ${hits}):`);
  console.log(`  2 contexts at once: ${((2 * K) / wall / 1e6).toFixed(2)} M incr/s in all (each took ${s1!.toFixed(3)} s, ${s2!.toFixed(3)} s)`);
  console.log(`  1 context alone:    ${(K / one / 1e6).toFixed(2)} M incr/s   (a dict += 1 in the same loop: ${(K / local / 1e6).toFixed(2)} M/s)`);
  console.log(`  JS py.shared.incr:  ${(K / js / 1e6).toFixed(2)} M incr/s`);
  await pool.close();
}
