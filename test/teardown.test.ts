// Context teardown like interpreter shutdown (issue 9, items 6 and 13) and a close() that
// always finishes in bounded time, even when Python refuses to stop.
import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ContextClosedError, PythonError, py } from "../src/index.ts";
import { contextModes, hasOwnGil } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "bunpy-teardown-"));
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));

/** Open fds of this process (Bun opens and closes a few of its own: compare with slack). */
const fds = () => readdirSync("/proc/self/fd").length;

for (const mode of contextModes) {
  describe(`${mode} context`, () => {
    test("item 6: a ThreadPoolExecutor that was not shut down does not hang close()", async () => {
      const threadsBefore = py.eval("[t.name for t in __import__('threading').enumerate()]");
      const ctx = await py.context({ mode });
      await ctx.exec(`
from concurrent.futures import ThreadPoolExecutor
import time
ex = ThreadPoolExecutor(3)
results = [f.result() for f in [ex.submit(time.sleep, 0.01) for _ in range(6)]]
pending = ex.submit(time.sleep, 0.2)   # still running at close: it finishes first
`);
      await ctx.close();
      expect(ctx.state).toBe("closed");
      // worker mode: the executor's threads were threads of the main interpreter
      expect(py.eval("[t.name for t in __import__('threading').enumerate()]")).toEqual(threadsBefore);
    });

    test("close() joins the context's threads and the loop's executor threads", async () => {
      const file = join(dir, `joined-${mode}`);
      const ctx = await py.context({ mode });
      await ctx.exec(`
import threading, time, asyncio
def late():
    time.sleep(0.2)
    open(${JSON.stringify(file)}, "w").write("joined")
threading.Thread(target=late).start()
async def use_executor():
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, sum, [1, 2, 3])
`);
      expect(await ctx.call("__main__", "use_executor")).toBe(6);
      await ctx.close();
      expect(existsSync(file)).toBe(true);
      expect(ctx.state).toBe("closed");
    });

    test(`atexit handlers registered in the context ${mode === "owngil" ? "run at close()" : "are the main interpreter's: not run at close()"}`, async () => {
      const file = join(dir, `atexit-${mode}`);
      const ctx = await py.context({ mode });
      await ctx.exec(`
import atexit
def bye():
    open(${JSON.stringify(file)}, "w").write("bye")
atexit.register(bye)
`);
      await ctx.close();
      expect(existsSync(file)).toBe(mode === "owngil");
      if (mode === "worker") py.exec("import atexit as _ae; _ae._clear()"); // not at this test process's exit either
    });

    test("item 13: close() releases the loop's sockets and servers at once (no gc.collect() needed)", async () => {
      py.exec("import gc as _gc; _gc.disable()"); // the main interpreter's collector must not do the work
      try {
        const before = fds();
        const ctx = await py.context({ mode });
        await ctx.exec(`
import asyncio, socket
class Holder:
    pass
keep = Holder()
keep.self = keep   # a reference cycle: only a collection frees what it holds
async def serve_and_connect(n):
    conns = []
    async def handle(reader, writer):
        conns.append(writer)
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]
    while len(conns) < n:
        await asyncio.sleep(0.001)
    keep.server, keep.clients, keep.conns = server, clients, conns
    keep.pairs = [socket.socketpair() for _ in range(n)]
    return port
`);
        const port = (await ctx.call("__main__", "serve_and_connect", [100])) as number;
        expect(fds()).toBeGreaterThan(before + 400);
        await ctx.close();
        expect(fds()).toBeLessThanOrEqual(before + 5);
        const refused = py.eval(
          `(lambda s: (lambda: s.connect_ex(('127.0.0.1', ${port})))())(__import__('socket').socket())`,
        );
        expect(refused).not.toBe(0); // ECONNREFUSED: nothing listens any more
      } finally {
        py.exec("_gc.enable()");
      }
    });
  });
}

describe("close() is bounded", () => {
  test("code that catches the first interrupt stops at a later one: close() ends it after its grace period", async () => {
    const ctx = await py.context();
    await ctx.exec(`
caught = 0
def stubborn():
    global caught
    while True:
        try:
            while True:
                pass
        except BaseException:
            caught += 1
            if caught >= 2:
                raise
`);
    const call = ctx.call("__main__", "stubborn").catch((e) => e);
    await Bun.sleep(50);
    await ctx.close({ timeout: 100 });
    expect(ctx.state).toBe("closed");
    const err = await call;
    expect(err).toBeInstanceOf(PythonError);
    expect(err.type).toBe("Interrupted");
  });

  test("queued calls still run within the grace period; those left when it ends are rejected", async () => {
    const ctx = await py.context();
    await ctx.exec("import time\ndef slow(x):\n    time.sleep(0.15)\n    return x\ndef spin():\n    while True:\n        pass");
    const first = ctx.call("__main__", "slow", [1]);
    const spinning = ctx.call("__main__", "spin").catch((e) => e);
    const never = ctx.call("__main__", "slow", [3]).catch((e) => e);
    await ctx.close({ timeout: 300 });
    expect(await first).toBe(1);
    expect((await spinning).type).toBe("Interrupted");
    expect(await never).toBeInstanceOf(ContextClosedError);
  });

  test("close({ timeout }) refuses a bad timeout", async () => {
    const ctx = await py.context();
    await expect(ctx.close({ timeout: -1 })).rejects.toBeInstanceOf(TypeError);
    await ctx.close();
  });

  for (const mode of contextModes) {
    for (const how of ["catches", "blocked"]) {
      test(`a ${mode} context that refuses to stop (${how === "catches" ? "catches every interrupt" : "blocked in C"}) is abandoned; the process goes on`, () => {
        const r = Bun.spawnSync([process.execPath, join(import.meta.dir, "fixtures", "refuses-to-stop.ts"), mode, how], {
          stdout: "pipe",
          stderr: "pipe",
          timeout: 30_000,
        });
        expect(r.exitCode).toBe(0);
        const out = JSON.parse(r.stdout.toString().trim());
        expect(out).toMatchObject({ state: "abandoned", callRejected: "ContextClosedError", main: 42, pyClosed: true });
        expect(r.stderr.toString()).toContain("it was abandoned");
      });
    }
  }
});

test.skipIf(!hasOwnGil)("3.12+: closing many owngil contexts with executors and loops in parallel", async () => {
  const ctxs = await Promise.all([1, 2, 3, 4].map(() => py.context({ mode: "owngil" })));
  await Promise.all(
    ctxs.map((c) =>
      c.exec("from concurrent.futures import ThreadPoolExecutor\nex = ThreadPoolExecutor(2)\nex.submit(sum, [1]).result()\nimport asyncio\nasyncio.get_event_loop().call_later(3600, print)"),
    ),
  );
  await Promise.all(ctxs.map((c) => c.close()));
  expect(ctxs.map((c) => c.state)).toEqual(["closed", "closed", "closed", "closed"]);
});

test.skipIf(!hasOwnGil)("owngil contexts allow daemon threads (libraries start them) and join them at close", async () => {
  const ctx = await py.context({ mode: "owngil" });
  await ctx.exec(`
import threading, time
done = []
def later():
    time.sleep(0.2)
    done.append(1)
t = threading.Thread(target=later, daemon=True)
t.start()
`);
  expect(await ctx.eval("t.daemon and t.is_alive()")).toBe(true);
  await ctx.close();
  // the interpreter ended after its daemon thread did: no crash, closed not abandoned
  expect(ctx.state).toBe("closed");
  expect(py.eval("1 + 1")).toBe(2);
});
