// Django's sync code on reused threads (python/bunpy/_asgiref_threads.py) under a sandbox
// that caps the context's threads (maxThreads): requests past the cap fail as they would with
// asgiref's own per-request threads, but the executor whose thread could not start must not
// be kept for later requests (they would fail though threads sit idle), and the work queued
// on it must never run later (a failed request's view running during another request).
// The second test shows it without Django or timing; the first is the served picture.
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
    // the requests' executors all given back (a response reaches the client a moment before)
    const settled = async () => {
      const left = "len(__import__('asgiref.sync').sync.SyncToAsync.context_to_thread_executor)";
      for (let i = 0; i < 300 && (await ctx.eval(left)) !== 0; i++) await Bun.sleep(10);
    };
    let served = 0;
    for (let round = 0; round < 3; round++) {
      await settled();
      const statuses = (await Promise.all([0, 1, 2, 3].map((i) => fetch(`${base}/count/?i=${round}-${i}`)))).map((r) => r.status);
      expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(1);
      expect(statuses.every((s) => s === 200 || s === 500)).toBe(true);
      served += statuses.filter((s) => s === 200).length;
    }
    // one at a time: an idle thread is there for each
    for (let i = 0; i < 5; i++) {
      await settled();
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

// The same without Django or timing: ThreadLeases itself, with asgiref's two hooks stood in for.
const LEASES = `
import contextvars, threading
from bunpy._asgiref_threads import ThreadLeases

class S2A:
    thread_sensitive_context = contextvars.ContextVar("tsc")
    context_to_thread_executor = {}

class TSC:
    pass

ran = []

def scenario():
    leases = ThreadLeases(S2A, TSC)
    l1 = leases.enter(contextvars.copy_context())
    ex1 = S2A.context_to_thread_executor[l1]
    ex1.submit(ran.append, "first").result()       # its thread: the one the cap allows
    l2 = leases.enter(contextvars.copy_context())
    try:
        S2A.context_to_thread_executor[l2].submit(ran.append, "stale")
        refused = "no"
    except PermissionError:
        refused = "yes"
    leases.release(l1)
    leases.release(l2)                              # the thread-less one given back last
    l3 = leases.enter(contextvars.copy_context())
    try:
        S2A.context_to_thread_executor[l3].submit(ran.append, "third").result(5)
        third = "ran"
    except PermissionError:
        third = "refused"
    leases.release(l3)
    leases.close()
    return [refused, third, list(ran), len(S2A.context_to_thread_executor)]
`;

test("ThreadLeases: an executor whose thread the cap refused is not leased again, and its work never runs", async () => {
  const ctx = await py.context({ mode, sandbox: { maxThreads: 1 } });
  try {
    await ctx.exec(LEASES);
    expect(await ctx.call("__main__", "scenario")).toEqual(["yes", "ran", ["first", "third"], 0]);
  } finally {
    await ctx.close();
  }
});
