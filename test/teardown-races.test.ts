// Races between threads that start, use and end contexts: each test loops a mix that
// crashed the process (free(): invalid pointer, or a use after free) before its fix.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { py } from "../src/index.ts";
import { closeLeavingThreadBehind, hasOwnGil } from "./helpers.ts";

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
          // In a context `signal` is bunpy's per-context module (its own handlers);
          // CPython's `_signal.getsignal` still hands out the process-wide handler object
          c.exec(`
import _signal, asyncio, signal
async def _nothing():
    return None
for _ in range(20):
    asyncio.run(_nothing())
for _ in range(100_000):
    _signal.getsignal(signal.SIGINT)
seen = _signal.getsignal(signal.SIGINT).__name__
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

  test("a handler Python code installs in the main interpreter is safe to read from contexts too", async () => {
    py.exec(`
import signal, sys
def _user_sigint(signum, frame):
    raise KeyboardInterrupt
_bunpy_saved_sigint = signal.signal(signal.SIGINT, _user_sigint)
`);
    try {
      const refs = () => py.eval("__import__('sys').getrefcount(_user_sigint)") as number;
      const before = refs();
      const ctxs = await Promise.all(Array.from({ length: 3 }, () => py.context({ mode: "owngil" })));
      try {
        const seen = await Promise.all(
          ctxs.map((c) =>
            c.exec(`
import _signal, signal
for _ in range(100_000):
    _signal.getsignal(signal.SIGINT)
seen = _signal.getsignal(signal.SIGINT).__name__
`).then(() => c.eval("seen")),
          ),
        );
        expect(seen).toEqual(["_user_sigint", "_user_sigint", "_user_sigint"]);
      } finally {
        await Promise.all(ctxs.map((c) => c.close()));
      }
      expect(refs()).toBe(before);
    } finally {
      py.exec("signal.signal(signal.SIGINT, _bunpy_saved_sigint)");
    }
    expect(py.eval("signal.getsignal(signal.SIGINT).__name__")).toBe("bunpy_sigint");
  }, 60_000);
});

// tracemalloc hooks every allocator of the process and keeps its tables under one GIL:
// tracing while owngil interpreters run crashed (free(): invalid pointer, 3.12.1 and 3.13.0).
test.skipIf(!hasOwnGil)("tracemalloc and owngil contexts never run together", async () => {
  const proc = Bun.spawn([process.execPath, join(import.meta.dir, "fixtures", "tracemalloc-owngil.ts")], {
    stdout: "pipe",
    stderr: "pipe",
    env: process.env,
  });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  expect({ code, stderr: stderr.includes("free(") || stderr.includes("Segmentation") ? stderr : "" }).toEqual({ code: 0, stderr: "" });
  const out = JSON.parse(stdout.trim().split("\n").pop()!);
  expect(out.contextWhileTracing).toContain("owngil contexts cannot start while tracemalloc traces memory");
  expect(out.startWhileOpen).toContain("tracemalloc cannot start while owngil contexts exist");
  expect(out.importInContext).toMatch(/ImportError: .*_tracemalloc/); // bunpy's refusal on 3.12, CPython's on 3.13
  expect(out.tracedAfterClose).toBe(true);
}, 60_000);

describe("a Bun Worker that ends while its context calls are in flight", () => {
  // Completions for a JS thread that is gone are dropped, never rung at it; the port is held
  // by a reference from before the completion is pushed until after its doorbell rang.
  for (const mode of hasOwnGil ? (["owngil", "worker"] as const) : (["worker"] as const)) {
    test(`${mode}: exit and terminate, 12 times, the process goes on`, async () => {
      for (let i = 0; i < 12; i++) {
        const w = new Worker(join(import.meta.dir, "fixtures", "exit-while-awaiting.ts"));
        const how = i % 2 ? "exit" : "terminate";
        const closed = new Promise((ok) => w.addEventListener("close", ok));
        const got = await new Promise((ok, bad) => {
          w.onmessage = (e) => ok(e.data);
          w.onerror = bad;
          w.postMessage({ mode, how });
        });
        expect(got).toBe(0);
        if (how === "terminate") w.terminate();
        await closed;
      }
      expect(py.eval("1 + 1")).toBe(2);
    }, 60_000);
  }
});

// A context closed while a thread of its owngil interpreter runs on leaves the interpreter
// behind and moves its policy to a copy for that thread; the context itself is freed. The
// audit hook's import check hashes the module name, which runs Python code for a str
// subclass (and may let the GIL go), and then read the context's policy again: freed memory.
test.skipIf(!hasOwnGil)(
  "a thread left behind inside the sandbox's import check when its context closes keeps the rules",
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "bunpy-races-"));
    try {
      const flag = join(dir, "go");
      const out = join(dir, "result");
      const ctx = await py.context({ mode: "owngil", sandbox: { denyImports: ["xml"] } });
      await ctx.exec(`
import os, threading, time
class Name(str):
    calls = 0
    def __hash__(self):
        Name.calls += 1
        if Name.calls == 2:     # the audit hook's look at the deny list (1: sys.modules)
            deadline = time.monotonic() + 30
            while not os.path.exists(${JSON.stringify(flag)}) and time.monotonic() < deadline:
                try:
                    time.sleep(0.05)
                except BaseException:
                    pass        # ignores the interrupts of close()
        return str.__hash__(self)
    __eq__ = str.__eq__
def stubborn():
    try:
        __import__(Name("xml.dom"))
        result = "imported"
    except PermissionError:
        result = "refused"
    except BaseException as e:
        result = type(e).__name__
    with open(${JSON.stringify(out)}, "w") as f:
        f.write(result)
threading.Thread(target=stubborn, daemon=True).start()
`);
      expect(await closeLeavingThreadBehind(ctx, flag, out)).toBe("refused");
      expect(py.eval("1 + 1")).toBe(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
  30_000,
);
