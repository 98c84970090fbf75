// Edge cases found in review: each of these once crashed, hung or leaked.
import { expect, test } from "bun:test";
import { join } from "node:path";
import { BunpyError, ConversionError, CallTimeoutError, py } from "../src/index.ts";
import { closedAfterAll, contextModes, hasOwnGil } from "./helpers.ts";

const { context, keep } = closedAfterAll();

test("a released PyRef cannot be passed back (it would be a freed object)", async () => {
  const ctx = await context();
  const ref = await ctx.eval("object()");
  ref.release();
  await Bun.sleep(5); // the drop reaches the context
  await expect(ctx.call("builtins", "repr", [ref])).rejects.toBeInstanceOf(ConversionError);
  expect(() => ref.get("x")).toThrow(BunpyError);
});

test("a message listener that calls Python does not disturb the drain", async () => {
  const ctx = await context();
  const seen: number[] = [];
  const stop = py.on("reentrant", (v: number) => {
    seen.push(py.eval(`${v} * 2`) as number); // reuses the io buffer
    ctx.callSync("builtins", "abs", [-v]);
  });
  const results = await Promise.all([
    ctx.exec("import bunpy\nfor i in range(50):\n    bunpy.send('reentrant', i)"),
    ...Array.from({ length: 20 }, (_, i) => ctx.call("builtins", "abs", [-i])),
  ]);
  await Bun.sleep(20);
  stop();
  expect(results.slice(1)).toEqual(Array.from({ length: 20 }, (_, i) => i));
  expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => i * 2));
});

test("messages from one sender keep their order when a listener's ctx.callSync delivers newer ones inside it", async () => {
  const ctx = await context();
  await ctx.exec("import time\ndef pause():\n    time.sleep(0.05)");
  // queued in the main interpreter until someone listens; py.on delivers both in one drain
  py.exec("import bunpy\nbunpy.send('ordered', 0)\nbunpy.send('ordered', 1)");
  const seen: number[] = [];
  const stop = py.on("ordered", (v: number) => {
    seen.push(v);
    if (v !== 0) return;
    // the same sender goes on; ctx.callSync waits and delivers 2..29 from inside this
    // listener: 1, decoded with 0, must come before them
    py.exec("for i in range(2, 30):\n    bunpy.send('ordered', i)");
    ctx.callSync("__main__", "pause");
  });
  await Bun.sleep(20);
  stop();
  expect(seen).toEqual(Array.from({ length: 30 }, (_, i) => i));
});

test("a message sent by the main interpreter before any context exists does not block contexts", () => {
  const r = Bun.spawnSync([process.execPath, join(import.meta.dir, "fixtures", "send-before-context.ts")], {
    stdout: "pipe",
    stderr: "pipe",
    timeout: 30_000,
  });
  expect(r.exitCode).toBe(0);
  expect(JSON.parse(r.stdout.toString().trim())).toEqual({ value: 4 });
});

test("a timeout still interrupts while the context is closing, and close finishes", async () => {
  const ctx = await py.context();
  const busy = ctx.exec("while True:\n    pass", { timeout: 100 }).catch((e) => e);
  const closing = ctx.close();
  expect(await busy).toBeInstanceOf(CallTimeoutError);
  await closing;
  expect(ctx.state).toBe("closed");
});

test("timed-out calls do not count as in flight forever", async () => {
  const ctx = await context();
  for (let i = 0; i < 3; i++) await ctx.exec("import time\ntime.sleep(1)", { timeout: 20 }).catch(() => {});
  expect(ctx.inFlight).toBe(0);
});

test("un-keyed pool calls spread over the contexts", async () => {
  const pool = await py.pool({ size: 2 });
  await pool.execAll("import threading, time\ndef who():\n    time.sleep(0.05)\n    return threading.get_ident()");
  const ids = await Promise.all([1, 2, 3, 4].map(() => pool.call("__main__", "who")));
  expect(new Set(ids).size).toBe(2);
  await pool.close();
});

test("worker contexts do not grow the main interpreter's sys.path", async () => {
  const before = py.eval("len(__import__('sys').path)");
  const ctxs = await Promise.all([1, 2, 3].map(() => py.context({ mode: "worker" })));
  await Promise.all(ctxs.map((c) => c.close()));
  expect(py.eval("len(__import__('sys').path)")).toBe(before);
});

test("Python code run while a context writes its result cannot call JS into the buffer", async () => {
  const ctx = await context();
  py.register("edge_noop", () => 1);
  await ctx.exec(`
import bunpy
from datetime import datetime, timedelta, tzinfo
class Loud(tzinfo):
    def utcoffset(self, dt):
        try:
            bunpy.send('edge', 1)
        except RuntimeError:
            pass
        return timedelta(0)
def result():
    return ['first', datetime(2026, 1, 1, tzinfo=Loud()), 'last']
`);
  const r = (await ctx.call("__main__", "result")) as unknown[];
  expect(r[0]).toBe("first");
  expect(r[1]).toBeInstanceOf(Date);
  expect(r[2]).toBe("last");
});

test("closing a context whose Python threads still run does not abort the process", async () => {
  const ctx = await py.context();
  await ctx.exec("import _thread, threading, time\n_thread.start_new_thread(time.sleep, (0.3,))\nthreading.Thread(target=time.sleep, args=(0.2,)).start()");
  await ctx.close(); // joins the threading thread, waits for the low-level one
  expect(ctx.state).toBe("closed");
  expect(py.eval("1 + 1")).toBe(2);
});

test("asyncio works in a context without network sockets", async () => {
  const ctx = await py.context({ sandbox: { sockets: false } });
  keep(ctx);
  await ctx.exec("import asyncio\nasync def _m():\n    await asyncio.sleep(0)\n    return 'ran'");
  expect(await ctx.eval("asyncio.run(_m())")).toBe("ran");
  await expect(ctx.exec("import socket\nsocket.create_connection(('127.0.0.1', 9))")).rejects.toThrow(/no sockets/);
});

test.skipIf(!hasOwnGil)("threads started in an owngil context follow its sandbox policy", async () => {
  const ctx = await py.context({ mode: "owngil", sandbox: { processes: false } });
  keep(ctx);
  await ctx.exec(`
import threading
result = []
def work():
    try:
        import os
        os.system('true')
        result.append('allowed')
    except PermissionError as e:
        result.append('refused')
t = threading.Thread(target=work)
t.start(); t.join()
`);
  expect(await ctx.eval("result")).toEqual(["refused"]);
});

test("py.close() from a JS function a context is calling is refused", async () => {
  const ctx = await context();
  let refused = "";
  py.register("edge_close", async () => {
    await py.close().catch((e) => (refused = String(e)));
    return 1;
  });
  expect(await ctx.eval("__import__('bunpy').call('edge_close')")).toBe(1);
  expect(refused).toContain("outside any Python -> JS callback");
  expect(py.eval("2 + 2")).toBe(4);
});

for (const mode of [...contextModes, ...(hasOwnGil ? ["sandboxed"] : [])]) {
  test(`a ${mode} context finishing a call for a terminated Bun Worker does not crash the process`, () => {
    const r = Bun.spawnSync([process.execPath, join(import.meta.dir, "fixtures", "terminated-worker.ts"), mode], {
      stdout: "pipe",
      stderr: "pipe",
      timeout: 30_000,
    });
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(r.stdout.toString().trim().split("\n").pop()!)).toEqual({ main: 42 });
  });
}
