/**
 * Synchronous calls into the main interpreter, next to the floor for such a call:
 * one bare FFI call into a shim function that takes the GIL and calls a cached Python
 * callable with two ints (shim/bench.c), measured in the same run.
 */
import { bench, do_not_optimize, summary } from "mitata";
import { internals, py } from "../src/index.ts";
import { runWithRatios } from "./ratio.ts";
import { doc } from "./doc.ts";
import { CALL_FIXTURES } from "./fixtures.ts";

const BASELINE = "baseline: bare FFI call of cached operator.add";
const operator = py.import("operator");
const add = operator["add"];
const baseline = internals.runtime().benchBaseline(add);

py.exec(CALL_FIXTURES);
const counter = py.eval("counter");
const slotted = py.eval("slotted");
const bounded = py.eval("bounded");

console.log(`1 KB document: ${JSON.stringify(doc).length} bytes as JSON`);

summary(() => {
  bench(BASELINE, () => do_not_optimize(baseline(1, 2))).baseline(true);
  bench('py.call("operator", "add", [1, 2])', () => do_not_optimize(py.call("operator", "add", [1, 2])));
  bench("proxy call: operator.add(1, 2)", () => do_not_optimize(add(1, 2)));
  bench("proxy method call: counter.bump(1)", () => do_not_optimize(counter.bump(1)));
  bench("proxy method call, __slots__: slotted.bump(1)", () => do_not_optimize(slotted.bump(1)));
  bench("proxy method call, builtin: deque.append(1)", () => do_not_optimize(bounded.append(1)));
  bench('py.eval("1 + 2")', () => do_not_optimize(py.eval("1 + 2")));
  bench("1 KB JSON-like object round trip (ident)", () => do_not_optimize(py.call("__main__", "ident", [doc])));
  bench("reference: JSON.parse(JSON.stringify(1 KB))", () => do_not_optimize(JSON.parse(JSON.stringify(doc))));
});

await runWithRatios(BASELINE);
