// Django over ASGI and asgiref's threads: with `threads: "reuse"` (the default) a request's
// thread-sensitive sync code runs on a thread of its own taken from idle ones, instead of a
// thread started and joined for every request (python/bunpy/_asgiref_threads.py).
import { describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { py, type AsgiApp, type AsgiOptions } from "../src/index.ts";
import { testVenv } from "./fixtures/venv.ts";

const FIXTURES = resolve(import.meta.dir, "fixtures/serve");
const venv = testVenv();
const skip = "skip" in venv ? venv.skip : undefined;
if (skip) console.warn(`serve-django: Django tests skipped: ${skip}`);
// Django in owngil contexts where they exist (3.12+), worker contexts on 3.11
const djangoMode = /^3\.1[2-9]\./.test(py.version) ? "owngil" : "worker";

function options(m: "owngil" | "worker" | "inline", extra: AsgiOptions = {}): AsgiOptions {
  const path = [FIXTURES, (venv as { site: string }).site];
  return m === "inline" ? { mode: m, path, ...extra } : { pool: { size: 1 }, mode: m, path, ...extra };
}

/** `expr` evaluated where the app runs (its one context, or the main interpreter). */
async function evalIn(app: AsgiApp, expr: string): Promise<unknown> {
  return app.pool === undefined ? py.eval(expr) : app.pool.contexts[0]!.eval(expr);
}

/** Polls `f` until it gives `want` (a request's app call may end a moment after its response). */
async function settles(f: () => Promise<unknown>, want: unknown): Promise<unknown> {
  let got = await f();
  for (let i = 0; i < 200 && got !== want; i++) {
    await Bun.sleep(10);
    got = await f();
  }
  return got;
}

const LEASED = "len([t for t in __import__('threading').enumerate() if t.name.startswith('bunpy-asgiref')])";

for (const appMode of [djangoMode, "inline"] as const)
  describe.skipIf(skip !== undefined)(`Django's sync code on reused threads (${appMode})`, () => {
    test("a request's sync view runs on a reused thread; requests in flight at once get threads of their own", async () => {
      const app = await py.asgi("djsite.app:asgi", options(appMode));
      const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch });
      const base = `http://127.0.0.1:${server.port}`;
      try {
        const seen: string[] = [];
        for (let i = 0; i < 20; i++) seen.push(await (await fetch(`${base}/thread/`)).text());
        expect(seen.every((s) => s.startsWith("bunpy-asgiref"))).toBe(true);
        // one request at a time: a few idle threads serve them all (a request's last sync
        // call, response.close(), may still run when the client already has the response and
        // sends the next request, which then takes another thread)
        expect(new Set(seen).size).toBeLessThanOrEqual(5); // (a loaded machine needs a few more)
        // two requests whose sync views wait for each other: on one shared thread they
        // could not both pass (the view answers 500 when the other never comes)
        const both = await Promise.all([fetch(`${base}/meet/`), fetch(`${base}/meet/`)]);
        expect(both.map((r) => r.status)).toEqual([200, 200]);
        const idents = await Promise.all(both.map((r) => r.text()));
        expect(idents[0]).not.toBe(idents[1]);
        // no thread per request: only the threads that were needed at once are kept
        expect(await evalIn(app, LEASED)).toBeLessThanOrEqual(4);
        for (let i = 0; i < 20; i++) expect((await fetch(`${base}/hello/?name=x`)).status).toBe(200);
        expect(await evalIn(app, LEASED)).toBeLessThanOrEqual(4);
        // nothing is left in asgiref's map of executors once the requests are over
        expect(await settles(() => evalIn(app, "len(__import__('asgiref.sync').sync.SyncToAsync.context_to_thread_executor)"), 0)).toBe(0);
      } finally {
        server.stop(true);
        await app.close();
      }
      if (appMode === "inline") expect(await settles(async () => py.eval(LEASED), 0)).toBe(0); // close() ended the idle threads
    }, 60000);

    test("a client that leaves while its sync view runs: the server goes on, nothing is left behind", async () => {
      const app = await py.asgi("djsite.app:asgi", options(appMode));
      const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch });
      const base = `http://127.0.0.1:${server.port}`;
      try {
        const gone = await Promise.allSettled(Array.from({ length: 4 }, () => fetch(`${base}/slow/`, { signal: AbortSignal.timeout(50) })));
        expect(gone.every((r) => r.status === "rejected")).toBe(true);
        expect(await (await fetch(`${base}/hello/?name=again`)).text()).toBe("<h1>Hello again</h1><p>/hello/</p>");
        expect(await (await fetch(`${base}/slow/`)).text()).toBe("slept");
        expect(await settles(() => evalIn(app, "len(__import__('asgiref.sync').sync.SyncToAsync.context_to_thread_executor)"), 0)).toBe(0);
        expect(await settles(() => evalIn(app, "len(__import__('bunpy._asgi')._asgi._state()[1])"), 0)).toBe(0);
      } finally {
        server.stop(true);
        await app.close();
      }
    }, 60000);

    test('threads: "per-request" leaves asgiref to start a thread for each request', async () => {
      const app = await py.asgi("djsite.app:asgi", options(appMode, { threads: "per-request" }));
      const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch });
      try {
        const text = await (await fetch(`http://127.0.0.1:${server.port}/thread/`)).text();
        expect(text.startsWith("bunpy-asgiref")).toBe(false);
        expect(text).toStartWith("ThreadPoolExecutor");
      } finally {
        server.stop(true);
        await app.close();
      }
    }, 60000);
  });

test("threads: anything but reuse or per-request is a TypeError", async () => {
  await expect(py.asgi("rawapp:app", { mode: "inline", path: [FIXTURES], threads: "pooled" as never })).rejects.toThrow(TypeError);
});
