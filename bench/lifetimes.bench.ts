/**
 * Object lifetimes: creating a Python object from JS, and creating + disposing it, with 10,
 * 10,000 and 100,000 other proxies alive — the cost must not depend on the live count.
 * Baseline: the bare FFI call of the call bench, in the same run.
 */
import { bench, do_not_optimize, summary } from "mitata";
import { internals, py } from "../src/index.ts";
import { runWithRatios } from "./ratio.ts";

py.exec("class Obj:\n    pass");
const Obj = py.eval("Obj");
const baseline = internals.runtime().benchBaseline(py.import("operator")["add"]);
const BASELINE = "baseline: bare FFI call of cached operator.add";

const alive: unknown[] = [];
function keepAlive(n: number): void {
  while (alive.length < n) alive.push(Obj());
}

summary(() => {
  bench(BASELINE, () => do_not_optimize(baseline(1, 2))).baseline(true);
  for (const live of [10, 10_000, 100_000]) {
    const label = `${live.toLocaleString("en-US")} live`;
    bench(`create (${label})`, function* () {
      keepAlive(live);
      yield () => do_not_optimize(Obj());
    });
    bench(`create + dispose (${label})`, function* () {
      keepAlive(live);
      yield () => Obj()[Symbol.dispose]();
    });
  }
});

await runWithRatios(BASELINE);
