// The runtime around calls: the GIL between calls, Bun Workers, shutting down.
import { expect, test } from "bun:test";
import { join } from "node:path";
import { py } from "../src/index.ts";

test("Python threads keep running while JS is between calls (the GIL is free)", async () => {
  py.exec(`
import threading, time
ticks = 0
stop_ticking = threading.Event()
def _tick():
    global ticks
    while not stop_ticking.is_set():
        ticks += 1
        time.sleep(0.001)
ticker = threading.Thread(target=_tick, daemon=True)
ticker.start()
`);
  const before = py.eval("ticks") as number;
  await Bun.sleep(200); // JS idle: no bunpy call holds the GIL
  const after = py.eval("ticks") as number;
  py.exec("stop_ticking.set(); ticker.join()");
  expect(after - before).toBeGreaterThan(20);
});

test("a long Python call releases the GIL inside Python as usual (time.sleep)", () => {
  py.exec(`
import threading, time
progress = []
def _work():
    for i in range(5):
        progress.append(i)
        time.sleep(0.01)
worker = threading.Thread(target=_work)
worker.start()
`);
  py.exec("time.sleep(0.2)"); // the JS thread blocks in Python; the worker thread runs
  expect(py.eval("progress")).toEqual([0, 1, 2, 3, 4]);
  py.exec("worker.join()");
});

test("Bun Workers call the main interpreter through their own port", async () => {
  const workers = [0, 1].map(() => new Worker(join(import.meta.dir, "fixtures", "worker.ts")));
  const results = await Promise.all(
    workers.map(
      (w, i) =>
        new Promise<{ sum: number; tid: number; viaCallback: number }>((resolve, reject) => {
          w.onmessage = (e) => resolve(e.data);
          w.onerror = (e) => reject(e);
          w.postMessage(1000 + i);
        }),
    ),
  );
  for (const w of workers) w.terminate();
  expect(results[0]!.sum).toBe((999 * 1000) / 2);
  expect(results[1]!.sum).toBe((1000 * 1001) / 2);
  expect(results[0]!.viaCallback).toBe(42);
  expect(results[0]!.tid).not.toBe(results[1]!.tid);
  const mainTid = py.eval("__import__('threading').get_ident()");
  expect(results[0]!.tid).not.toBe(mainTid);
  expect(py.call("operator", "add", [1, 2])).toBe(3); // the main thread still works
});

test("py.close() closes contexts first; afterwards every entry point throws, and atexit handlers ran", () => {
  const r = Bun.spawnSync([process.execPath, join(import.meta.dir, "fixtures", "close.ts")], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const stdout = r.stdout.toString();
  expect(r.stderr.toString().replace(/^bunpy: building.*\n/, "")).toBe("");
  expect(r.exitCode).toBe(0);
  expect(stdout).toContain("atexit ran");
  const out = JSON.parse(stdout.trim().split("\n").pop()!);
  for (const k of ["eval", "call", "import", "proxyAttr", "proxyCall"]) expect(out[k]).toBe("PythonClosedError");
  expect(out.contextCall).toContain("ContextClosedError");
  expect([out.ctx, out.worker, out.running]).toEqual(["closed", "closed", "finished"]);
  expect(out.version).toMatch(/^3\.\d+\.\d+$/);
});

test("py.close() inside a Python -> JS callback is refused, and Python keeps working", async () => {
  let refused: unknown;
  py.register("closeFromCallback", () => {
    py.close().catch((e) => (refused = e));
  });
  py.eval("__import__('bunpy').call('closeFromCallback')");
  await Bun.sleep(0);
  expect(String(refused)).toContain("outside any Python -> JS callback");
  expect(py.eval("40 + 2")).toBe(42);
});
