/**
 * Python code the benches share: the mitata benches (call, errors) and their minimum-of-loops
 * twins (calls-min.ts, errors-floor.ts) time the same functions.
 */

/** counter (instance with a __dict__), slotted (__slots__), bounded (a deque), ident. */
export const CALL_FIXTURES = `
class Counter:
    def __init__(self):
        self.n = 0
    def bump(self, k):
        self.n += k
        return self.n
counter = Counter()
class Slotted:
    __slots__ = ("n",)
    def __init__(self):
        self.n = 0
    def bump(self, k):
        self.n += k
        return self.n
slotted = Slotted()
import collections
bounded = collections.deque(maxlen=8)
def ident(x):
    return x
`;

/** raise_except (the baseline), raise_jserror (what a JS throw builds), guarded(cb). */
export const ERROR_FIXTURES = `
from bunpy import JSError
def raise_except():
    try:
        raise ValueError("x")
    except Exception:
        return 1
def raise_jserror():
    # what a JS error thrown into Python builds: the exception and its two attributes (the
    # stack stays in JS until it is read)
    try:
        e = JSError("Error: prebuilt")
        e.js_name, e.js_message = "Error", "prebuilt"
        raise e
    except Exception:
        return 1
def guarded(cb):
    try:
        cb()
    except Exception:
        return 1
    return 0
`;

/** The minimum time per call of each case over `loops` rounds of `calls` calls, the cases
    interleaved round by round: on a shared machine the minimum is what the code costs. */
export function minOfLoops(cases: readonly (readonly [string, () => unknown])[], calls: number, loops: number): Map<string, number> {
  const best = new Map<string, number>();
  for (let r = 0; r < loops; r++)
    for (const [name, f] of cases) {
      const t0 = Bun.nanoseconds();
      for (let i = 0; i < calls; i++) f();
      const t = (Bun.nanoseconds() - t0) / calls;
      if (!(best.get(name)! <= t)) best.set(name, t);
    }
  return best;
}
