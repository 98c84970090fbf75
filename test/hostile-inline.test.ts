/**
 * Inline ASGI mode (src/inline.ts, python/bunpy/_inline.py) attacked as a hostile user would:
 * an app that calls JS which calls Python and serves another inline request, apps that never
 * end, errors (SystemExit and KeyboardInterrupt too) in every phase, closing with requests in
 * flight. Every request gets an answer, and nothing stays behind.
 */
import { describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { py, type AsgiApp } from "../src/index.ts";

const FIXTURES = resolve(import.meta.dir, "fixtures/serve");
const inlineState = (expr: string) => py.eval(`(lambda m: ${expr})(__import__('bunpy._inline')._inline)`);

async function serving(body: (app: AsgiApp, base: string) => Promise<void>): Promise<void> {
  const app = await py.asgi("hostile_inline:app", { mode: "inline", path: [FIXTURES] });
  const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch, idleTimeout: 30 });
  try {
    await body(app, `http://127.0.0.1:${server.port}`);
  } finally {
    server.stop(true);
    await app.close({ timeout: 500 });
  }
}

const answer = async (url: string, init?: RequestInit): Promise<string> => {
  try {
    const r = await fetch(url, init);
    return `${r.status} ${await r.text()}`;
  } catch (e) {
    return `failed: ${(e as Error).name}`;
  }
};

describe("inline mode, attacked", () => {
  test("a request that finishes in its first step is answered in the same call, on every version", async () => {
    // 3.12 and 3.13 ran every request through a loop iteration: asyncio starts a task
    // eagerly only when its loop says it is running, and the inline loop did not
    const app = await py.asgi("hostile_inline:app", { mode: "inline", path: [FIXTURES] });
    try {
      const r = app.fetch(new Request("http://x/hello"));
      expect(r).toBeInstanceOf(Response);
      expect(await (r as Response).text()).toBe("hi");
      const now = app.fetch(new Request("http://x/loop-now"));
      expect(now).toBeInstanceOf(Response);
      expect(await (now as Response).text()).toBe("InlineLoop True");
      // synchronous Python called from JS afterwards still finds no loop running
      expect(py.eval("__import__('asyncio')._get_running_loop() is None")).toBe(true);
    } finally {
      await app.close();
    }
  });

  test("an app that calls JS, which calls Python and serves another inline request, then goes on awaiting", async () => {
    await serving(async (app, base) => {
      const nested: unknown[] = [];
      py.register("hostile_inline_reenter", () => {
        const a = py.eval("40 + 2");
        const r = app.fetch(new Request(`${base}/hello`));
        nested.push(r);
        return a + (py.eval("0") as number); // a call into Python after the nested request
      });
      for (let i = 0; i < 3; i++) expect(await answer(`${base}/reenter`)).toBe("200 42 InlineLoop InlineLoop");
      const texts = await Promise.all(nested.map(async (r) => (await (r as Response | Promise<Response>)).text()));
      expect(texts).toEqual(["hi", "hi", "hi"]);
      expect(await answer(`${base}/hello`)).toBe("200 hi");
      expect(inlineState("len(m._tl.tasks)")).toBe(0);
    });
  });

  test("errors in every phase, SystemExit and KeyboardInterrupt too: each request gets a 500, the loop goes on", async () => {
    await serving(async (_app, base) => {
      for (const path of ["/boom-first", "/boom-later", "/exit-first", "/exit-later", "/interrupt-later", "/cancel-self"]) {
        const got = await Promise.race([answer(base + path), Bun.sleep(5000).then(() => "no answer in 5 s")]);
        expect(`${path} ${got}`).toBe(`${path} 500 Internal Server Error`);
        expect(await answer(`${base}/hello`)).toBe("200 hi");
      }
      expect(inlineState("len(m._tl.tasks)")).toBe(0);
    });
  }, 60_000);

  test("an awaited JS function whose Promise settles with what Python cannot take: the await fails, it does not hang", async () => {
    py.register("hi_ok", async () => 5);
    py.register("hi_symbol", async () => Symbol("no"));
    py.register("hi_nullproto", () => Promise.reject(Object.create(null)));
    py.register("hi_getter", () => Promise.reject(Object.defineProperty(new Error(), "message", { get() { throw new Error("x"); } })));
    await serving(async (_app, base) => {
      const get = (fn: string) => Promise.race([answer(`${base}/async?${fn}`), Bun.sleep(5000).then(() => "no answer in 5 s")]);
      expect(await get("hi_ok")).toBe("200 ok 5");
      expect(await get("hi_symbol")).toStartWith("200 failed bunpy: the JS function failed: ");
      expect(await get("hi_nullproto")).toBe("200 failed bunpy: the JS function failed: (the rejection reason could not be turned into a string)");
      expect(await get("hi_getter")).toBe("200 failed bunpy: the JS function failed: (the rejection reason could not be turned into a string)");
    });
  }, 30_000);

  test("closed with requests in flight that never end: after the timeout they are cancelled, nothing stays behind", async () => {
    const ended = () => py.eval("__import__('hostile_inline').ended[:]") as string[];
    py.exec("__import__('hostile_inline').ended.clear()");
    const app = await py.asgi("hostile_inline:app", { mode: "inline", path: [FIXTURES] });
    const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch });
    const base = `http://127.0.0.1:${server.port}`;
    const gone = new AbortController();
    const never = answer(`${base}/never`);
    const sleeping = answer(`${base}/sleep-long`, { signal: gone.signal });
    await Bun.sleep(100);
    gone.abort(); // the client leaves; the app does not notice (it never reads)
    expect(app.inFlight).toBe(2);
    await app.close({ timeout: 300 });
    server.stop(true);
    await Promise.all([never, sleeping]);
    expect(ended().sort()).toEqual(["/never", "/sleep-long"]);
    expect(inlineState("len(m._tl.tasks)")).toBe(0);
    // and their request records (the cancelled /never one stayed in the main interpreter)
    expect(py.eval("len(__import__('bunpy._asgi')._asgi._state()[1])")).toBe(0);
    expect(inlineState("m._tl.loop is None or m._tl.loop.is_closed()")).toBe(true);
    // a new inline app gets a new loop
    const again = await py.asgi("hostile_inline:app", { mode: "inline", path: [FIXTURES] });
    try {
      expect(await (await again.fetch(new Request("http://x/hello"))).text()).toBe("hi");
    } finally {
      await again.close();
    }
  }, 30_000);

  test("a request cancelled by close() is not reported as an exception in the app", () => {
    const r = Bun.spawnSync([process.execPath, resolve(import.meta.dir, "fixtures/inline-close-quiet.ts")], { env: process.env, stdout: "pipe", stderr: "pipe", timeout: 20_000 });
    const err = r.stderr.toString();
    expect(err).toBe(""); // was a CancelledError traceback and a ContextClosedError line
    expect({ code: r.exitCode, signal: r.signalCode ?? null }).toEqual({ code: 0, signal: null });
    expect(r.stdout.toString().trim()).toBe("500");
  }, 30_000);

  test("py.close() with an inline app open and requests in flight: the process ends, the disconnects are not failures", () => {
    // the inline loop's timer for the app asleep for an hour kept the process alive after
    // py.close(), and every client disconnect was reported as a failed call
    const r = Bun.spawnSync([process.execPath, resolve(import.meta.dir, "fixtures/inline-py-close.ts")], { env: process.env, stdout: "pipe", stderr: "pipe", timeout: 20_000 });
    const err = r.stderr.toString();
    expect(err).not.toContain("disconnect failed");
    expect(err).not.toContain("inline event loop failed");
    expect({ code: r.exitCode, signal: r.signalCode ?? null }).toEqual({ code: 0, signal: null });
    expect(JSON.parse(r.stdout.toString())).toHaveLength(2);
  }, 30_000);
});
