/**
 * A JS error thrown into Python next to its floors, as minimum-of-windows timings that hold
 * on a loaded machine better than mitata's medians: `bun bench/errors-floor.ts CHECKOUT
 * [calls per window] [windows]` (CHECKOUT: the root of a bunpy checkout, so that two can be
 * run alternately, before and after). Not run by `bun run bench` (no .bench.ts suffix).
 */
import { ERROR_FIXTURES, minOfLoops } from "./fixtures.ts";

const root = process.argv[2] ?? new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const { py } = await import(root + "/src/index.ts");
py.exec(ERROR_FIXTURES);
py.exec(`
def guarded_stack(cb):
    try:
        cb()
    except Exception as e:
        return len(e.js_stack)
    return 0
`);
const raiseExcept = py.eval("raise_except"), guarded = py.eval("guarded"), rj = py.eval("raise_jserror"), gs = py.eval("guarded_stack");
const prebuilt = new Error("prebuilt");
function jsThrow(): never { throw prebuilt; }
const arr = [1];
const thrower = () => { throw prebuilt; };
const cases: [string, () => unknown][] = [
  ["js throw/catch", () => { try { jsThrow(); } catch (e) { return e; } }],
  ["js throw via native", () => { try { arr.forEach(thrower); return 0; } catch (e) { return e; } }],
  ["raise/except", () => raiseExcept()],
  ["cb returning", () => guarded(() => 1)],
  ["py builds JSError", () => rj()],
  ["cb throw+catch in JS", () => guarded(() => { try { throw prebuilt; } catch { return 1; } })],
  ["throw prebuilt", () => guarded(() => { throw prebuilt; })],
  ["throw new Error", () => guarded(() => { throw new Error("js"); })],
  ["new Error + js_stack", () => gs(() => { throw new Error("js"); })],
];
const N = Number(process.argv[3] ?? 20000), R = Number(process.argv[4] ?? 15);
const best = minOfLoops(cases, N, R);
const tag = root.split("/").pop();
for (const [name] of cases) console.log(`${tag}\t${name.padEnd(22)}\t${best.get(name)!.toFixed(0)} ns`);
