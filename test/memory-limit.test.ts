// memoryLimit of owngil contexts (shim/memcap.c): what the context's interpreter allocates
// through Python's allocators is counted; past the limit Python raises MemoryError there,
// and everything else (the main interpreter, other contexts, the context's next calls)
// goes on. Process contexts have their own test (process-context.test.ts).
import { describe, expect, test } from "bun:test";
import { py } from "../src/index.ts";
import { closedAfterAll, hasOwnGil } from "./helpers.ts";

const { keep } = closedAfterAll();
const MiB = 1 << 20;
const TRY = `
def attempt(code):
    try:
        exec(code, globals())
        return "allowed"
    except MemoryError:
        return "MemoryError"
`;

describe.skipIf(!hasOwnGil)("memoryLimit in an owngil context", () => {
  test("big blocks, many small objects and a thread of the context each stop at the limit with MemoryError; the context goes on", async () => {
    const ctx = keep(await py.context({ mode: "owngil", sandbox: { memoryLimit: 64 * MiB } }));
    await ctx.exec(TRY);
    const attempt = (code: string) => ctx.call("__main__", "attempt", [code]);
    // one big block (the raw allocator)
    expect(await attempt("x = b'x' * (100 << 20)")).toBe("MemoryError");
    expect(await attempt("x = bytearray(100 << 20)")).toBe("MemoryError");
    expect(await attempt("x = [0] * (20 << 20)")).toBe("MemoryError"); // a 160 MB item array
    // what fits, fits; and is given back
    for (let i = 0; i < 5; i++) expect(await attempt("x = b'y' * (40 << 20); del x")).toBe("allowed");
    // a flood of small objects (arenas)
    expect(await attempt("x = [str(i) * 2 for i in range(5_000_000)]")).toBe("MemoryError");
    expect(await attempt("x = None")).toBe("allowed");
    // a thread the context starts is counted too
    expect(
      await attempt(
        "import threading\nout = []\ndef grab():\n    try:\n        out.append(len(b'z' * (100 << 20)))\n    except MemoryError:\n        out.append('MemoryError')\nt = threading.Thread(target=grab); t.start(); t.join()\nassert out == ['MemoryError'], out",
      ),
    ).toBe("allowed");
    expect(await ctx.eval("sum(range(1000))")).toBe(499500);
    // the main interpreter and a context without a limit are not counted
    expect(py.eval("len(b'x' * (100 << 20))")).toBe(100 * MiB);
    const free = keep(await py.context({ mode: "owngil" }));
    expect(await free.eval("len(b'x' * (100 << 20))")).toBe(100 * MiB);
  }, 30_000); // 1.5-2 s on an idle machine, over 5 s under load

  test("limits are per context, and closed contexts give their entry back (300 contexts with a limit, one after another)", async () => {
    const small = keep(await py.context({ mode: "owngil", sandbox: { memoryLimit: 16 * MiB } }));
    const big = keep(await py.context({ mode: "owngil", sandbox: { memoryLimit: 256 * MiB } }));
    const code = "len(b'q' * (50 << 20))";
    await expect(small.eval(code)).rejects.toThrow(/MemoryError/);
    expect(await big.eval(code)).toBe(50 * MiB);
    // more than the 256 entries the table has: each close frees its entry
    for (let round = 0; round < 30; round++) {
      const batch = await Promise.all(Array.from({ length: 10 }, () => py.context({ mode: "owngil", sandbox: { memoryLimit: 8 * MiB } })));
      const results = await Promise.all(batch.map((c) => c.eval("len(b'w' * (32 << 20))").then(() => "allowed", (e) => (e as Error).message)));
      expect(results.every((r) => /MemoryError/.test(r))).toBe(true);
      await Promise.all(batch.map((c) => c.close()));
    }
  }, 120_000);

  test("bad limits are TypeErrors", async () => {
    await expect(py.context({ mode: "owngil", sandbox: { memoryLimit: 1000 } })).rejects.toThrow(/at least 1048576 bytes/);
    await expect(py.context({ mode: "owngil", sandbox: { memoryLimit: -5 } })).rejects.toThrow(TypeError);
    await expect(py.context({ mode: "owngil", sandbox: { memoryLimit: 1.5 } })).rejects.toThrow(TypeError);
  });
});
