// Django's sync code on reused threads (python/bunpy/_asgiref_threads.py) under a sandbox
// that caps the context's threads (maxThreads): requests past the cap fail as they would with
// asgiref's own per-request threads, but the executor whose thread could not start must not
// be kept for later requests (they would fail though threads sit idle), and the work queued
// on it must never run later (a failed request's view running during another request).
import { expect, test } from "bun:test";
import { resolve } from "node:path";
import { py } from "../src/index.ts";
import { testVenv } from "./fixtures/venv.ts";

const FIXTURES = resolve(import.meta.dir, "fixtures/serve");
const venv = testVenv();
const skip = "skip" in venv ? venv.skip : undefined;
const mode = /^3\.1[2-9]\./.test(py.version) ? "owngil" : "worker";

test.skipIf(skip !== undefined)("maxThreads with reused threads: past the cap fails, then idle threads serve; failed work never runs", async () => {
  const app = await py.asgi("djsite.app:asgi", {
    pool: { size: 1, mode, sandbox: { maxThreads: 2 } },
    path: [FIXTURES, (venv as { site: string }).site],
  });
  const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch });
  const base = `http://127.0.0.1:${server.port}`;
  const ctx = app.pool!.contexts[0]!;
  const stderr = console.error;
  console.error = () => {}; // the refused thread starts are reported: expected here
  try {
    let served = 0;
    for (let round = 0; round < 3; round++) {
      const statuses = (await Promise.all([0, 1, 2, 3].map((i) => fetch(`${base}/count/?i=${round}-${i}`)))).map((r) => r.status);
      expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(1);
      expect(statuses.every((s) => s === 200 || s === 500)).toBe(true);
      served += statuses.filter((s) => s === 200).length;
    }
    // one at a time: an idle thread is there for each
    for (let i = 0; i < 5; i++) {
      const r = await fetch(`${base}/count/?i=seq-${i}`);
      expect(r.status).toBe(200);
      await r.text();
      served++;
    }
    await Bun.sleep(500);
    // each view that ran answered 200: none ran for a request that had failed
    const calls = (await ctx.eval("__import__('djsite.app').app.calls")) as string[];
    expect(calls.length).toBe(served);
    expect(new Set(calls).size).toBe(calls.length);
  } finally {
    console.error = stderr;
    server.stop(true);
    await app.close();
  }
}, 60000);
