/**
 * The rows of call.bench.ts that compare sync call paths, timed as the minimum of many
 * loops instead of mitata's median: on a machine shared with other jobs the minimum is
 * what the code costs, the median what the other jobs cost. Run it from two checkouts in
 * turn to compare them (docs/performance.md, "Method calls in one crossing"):
 *
 *   bun bench/calls-min.ts [checkout root, default: this one] [loops, default 25]
 */
import { resolve } from "node:path";
import { CALL_FIXTURES, minOfLoops } from "./fixtures.ts";

const root = resolve(process.argv[2] ?? resolve(import.meta.dir, ".."));
const loops = Number(process.argv[3] ?? 25);
const { py, internals } = await import(`${root}/src/index.ts`);
const add = py.import("operator")["add"];
const baseline = internals.runtime().benchBaseline(add);
py.exec(CALL_FIXTURES);
const counter = py.eval("counter"), slotted = py.eval("slotted"), bounded = py.eval("bounded");
const N = 20000;
const cases: [string, () => unknown][] = [
  ["baseline: bare FFI call of cached operator.add", () => baseline(1, 2)],
  ['py.call("operator", "add", [1, 2])', () => py.call("operator", "add", [1, 2])],
  ["proxy call: operator.add(1, 2)", () => add(1, 2)],
  ["proxy method call: counter.bump(1)", () => counter.bump(1)],
  ["proxy method call, __slots__: slotted.bump(1)", () => slotted.bump(1)],
  ["proxy method call, builtin: deque.append(1)", () => bounded.append(1)],
];
const best = minOfLoops(cases, N, loops);
const base = best.get(cases[0]![0])!;
console.log(`${root} (Python ${py.version}), minimum of ${loops} loops of ${N} calls:`);
for (const [name, ns] of best) console.log(`  ${name.padEnd(48)} ${ns.toFixed(1).padStart(7)} ns   ${(ns / base).toFixed(2)}×`);
