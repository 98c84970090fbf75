/**
 * Exceptions across the boundary: a Python exception caught in JS (with and without reading
 * its traceback) and a JS error thrown into Python, next to a Python raise/except and a
 * plain callback measured in the same run.
 */
import { bench, do_not_optimize, summary } from "mitata";
import { py } from "../src/index.ts";
import { runWithRatios } from "./ratio.ts";
import { ERROR_FIXTURES } from "./fixtures.ts";

py.exec(ERROR_FIXTURES);
py.exec(`
def boom():
    raise ValueError("bad")
`);
const boom = py.eval("boom");
const raiseExcept = py.eval("raise_except");
const guarded = py.eval("guarded");
const raiseJsError = py.eval("raise_jserror");
function jsThrow(): never {
  throw prebuilt;
}
const prebuilt = new Error("prebuilt");

const BASELINE = "baseline: Python raise/except, one call from JS";
summary(() => {
  bench(BASELINE, () => do_not_optimize(raiseExcept())).baseline(true);
  bench("throw in Python, catch in JS", () => {
    try {
      boom();
    } catch (e) {
      do_not_optimize(e);
    }
  });
  bench("throw in Python, catch in JS, read .message", () => {
    try {
      boom();
    } catch (e) {
      do_not_optimize((e as Error).message);
    }
  });
  bench("throw in Python, catch in JS, read .traceback", () => {
    try {
      boom();
    } catch (e) {
      do_not_optimize((e as { traceback: string }).traceback);
    }
  });
  bench("reference: JS callback returning, from Python", () => do_not_optimize(guarded(() => 1)));
  // the floor of the two throws below: the returning callback (one crossing each way), plus
  // these two, each measured alone
  bench("reference: Python builds and raises a JSError itself, one call from JS", () => do_not_optimize(raiseJsError()));
  bench("reference: JS throw/catch of a prebuilt Error, no Python", () => {
    try {
      jsThrow();
    } catch (e) {
      do_not_optimize(e);
    }
  });
  bench("JS throws a prebuilt Error into Python", () =>
    do_not_optimize(
      guarded(() => {
        throw prebuilt;
      }),
    ),
  );
  bench("JS throws new Error() into Python", () =>
    do_not_optimize(
      guarded(() => {
        throw new Error("js");
      }),
    ),
  );
});

await runWithRatios(BASELINE);
