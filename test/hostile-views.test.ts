/**
 * py.view's internal functions (_bunpy._view with a `prev` record, _bunpy._view_close) are
 * callable from any Python code of the main interpreter (and worker contexts, which run in
 * it). A record JS holds (its ArrayBuffer points into the Python buffer) must not be
 * found by trying numbers near one's own: closing it would free the buffer under JS.
 */
import { expect, test } from "bun:test";
import { py } from "../src/index.ts";
import { defineModule } from "./helpers.ts";

defineModule(
  "t_hostile_views",
  `
import _bunpy
data = bytearray(b"x" * 4096)

def hunt(span=1 << 16):
    # records are malloc'd: JS's is near one made now; _view(obj, guess) answers guess when
    # guess is a live record over the same memory
    mine = _bunpy._view(data)[0]
    _bunpy._view_close(mine)
    for d in range(-span, span + 1, 16):
        g = mine + d
        if g <= 0:
            continue
        r = _bunpy._view(data, g)[0]
        if r == g:
            return True
        _bunpy._view_close(r)
    return False
`,
);

test("a live view's record cannot be found by trying numbers near a record of one's own", () => {
  const t = py.import("t_hostile_views");
  const v = py.view(t["data"]) as Uint8Array;
  expect(v.length).toBe(4096);
  expect(py.call("t_hostile_views", "hunt", [])).toBe(false);
  expect(v[0]).toBe(120);
  py.release(v);
});
