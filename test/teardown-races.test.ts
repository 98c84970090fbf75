// Races between threads that start, use and end contexts: each test loops a mix that
// crashed the process (free(): invalid pointer, or a use after free) before its fix.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { py } from "../src/index.ts";
import { hasOwnGil } from "./helpers.ts";

describe.skipIf(!hasOwnGil)("owngil contexts and the main interpreter's objects", () => {
  // CPython keeps signal handlers per process: signal.getsignal(SIGINT) in an owngil context
  // returns bunpy's handler, an object of the main interpreter, with a new reference, and
  // asyncio.run() asks for it in every context. Contexts run under different GILs, so their
  // reference counting raced; a lost increment freed the object in a context whose allocator
  // does not own it (free(): invalid pointer, seen in "8 contexts x 20 create/run/close
  // cycles" of context.test.ts). Without the fix this test drifts the count and crashes.
  test("4 contexts reading the SIGINT handler in parallel leave it intact", async () => {
    const refs = () => py.eval("__import__('sys').getrefcount(__import__('signal').getsignal(2))") as number;
    const name = () => py.eval("getattr(__import__('signal').getsignal(2), '__name__', None)");
    const before = refs();
    expect(name()).toBe("bunpy_sigint");
    const ctxs = await Promise.all(Array.from({ length: 4 }, () => py.context({ mode: "owngil" })));
    try {
      const seen = await Promise.all(
        ctxs.map((c) =>
          c.exec(`
import asyncio, signal
async def _nothing():
    return None
for _ in range(20):
    asyncio.run(_nothing())          # asks for signal.getsignal(SIGINT) each time
for _ in range(100_000):
    signal.getsignal(signal.SIGINT)
seen = signal.getsignal(signal.SIGINT).__name__
`).then(() => c.eval("seen")),
        ),
      );
      expect(seen).toEqual(["bunpy_sigint", "bunpy_sigint", "bunpy_sigint", "bunpy_sigint"]);
    } finally {
      await Promise.all(ctxs.map((c) => c.close()));
    }
    expect(refs()).toBe(before); // its count is never written (immortal)
    expect(name()).toBe("bunpy_sigint");
  }, 60_000);
});
