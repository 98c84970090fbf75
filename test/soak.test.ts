// Soak: contexts of both modes created and closed in a loop while executors, loops, servers,
// sockets, timers, threads and JS callbacks are in flight and calls time out at random.
// Afterwards fds and threads are back to where they were, and RSS grew by a bounded amount:
// CPython keeps 2-6.5 MB of every ended owngil interpreter (docs/contexts.md, "Lifetime"),
// so the bound is 12 MB per owngil cycle plus 48 MB of slack; worker cycles must keep none.
import { expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { CallTimeoutError, ContextClosedError, PythonError, py } from "../src/index.ts";
import { contextModes } from "./helpers.ts";

const CYCLES = 30;
const seed = Number(process.env["BUNPY_SOAK_SEED"] ?? Date.now() % 2 ** 31);

/** mulberry32: a small seeded generator, so a failing run can be repeated. */
function rng(s: number): () => number {
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SOURCE = `
import asyncio, bunpy, socket, threading, time
from concurrent.futures import ThreadPoolExecutor

ex = ThreadPoolExecutor(2)
futures = [ex.submit(time.sleep, 0.01 * i) for i in range(4)]
pair = socket.socketpair()
worker = threading.Thread(target=time.sleep, args=(0.05,))
worker.start()

async def network(n):
    async def handle(reader, writer):
        writer.write(await reader.readline())
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    streams = []
    for _ in range(n):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"ping\\n")
        assert await r.readline() == b"ping\\n"
        streams.append(w)   # left open: the close must release them
    loop = asyncio.get_running_loop()
    loop.call_later(3600, print, "never")
    loop.create_task(asyncio.sleep(3600))
    await loop.run_in_executor(None, sum, [1, 2])
    return port

def spin():
    while True:
        pass

async def spin_later():
    await asyncio.sleep(0)
    while True:
        pass

def ask_js(ms):
    return bunpy.call("soak_answer", ms)

def sleeps():
    bunpy.sleep(3600)

async def pending():
    await asyncio.sleep(3600)
`;

const fds = () => readdirSync("/proc/self/fd").length;
const threads = () => readdirSync("/proc/self/task").length;

async function cycle(mode: "owngil" | "worker", random: () => number): Promise<void> {
  const ctx = await py.context({ mode });
  await ctx.exec(SOURCE);
  await ctx.call("__main__", "network", [5 + Math.floor(random() * 10)]);
  const timeout = 5 + Math.floor(random() * 40);
  const inFlight = [
    ctx.call("__main__", random() < 0.5 ? "spin" : "spin_later", [], {}, { timeout }),
    ctx.call("__main__", "ask_js", [Math.floor(random() * 20)], {}, { timeout: timeout + 10 }),
    ctx.call("__main__", "ask_js", [Math.floor(random() * 5)]),
    ctx.call("__main__", "pending"),
    ctx.call("__main__", "sleeps"),
  ].map((p) => p.then((v) => ({ ok: v }), (e) => ({ error: e })));
  await Bun.sleep(random() * 30);
  await ctx.close({ timeout: 300 });
  expect(ctx.state).toBe("closed");
  for (const r of await Promise.all(inFlight)) {
    // each call either answered or failed in one of the expected ways, none hangs
    if ("error" in r) {
      const ok = r.error instanceof CallTimeoutError || r.error instanceof ContextClosedError || r.error instanceof PythonError;
      if (!ok) throw r.error;
    }
  }
}

test(`soak: ${CYCLES} context cycles leave fds and threads where they were, RSS bounded (seed ${seed})`, async () => {
  py.register("soak_answer", (ms: number) => new Promise((resolve) => setTimeout(() => resolve(ms), ms)));
  const random = rng(seed);
  // warm-up: first imports and Bun's own lazily created threads are not growth
  for (const mode of contextModes) await cycle(mode, random);
  Bun.gc(true);
  await Bun.sleep(200);
  const before = { fds: fds(), threads: threads(), rss: process.memoryUsage().rss };
  let owngilCycles = 0;
  try {
    for (let i = 0; i < CYCLES; i++) {
      const mode = contextModes[i % contextModes.length]!;
      if (mode === "owngil") owngilCycles++;
      await cycle(mode, random);
    }
  } catch (e) {
    console.error(`soak failed with seed ${seed} (BUNPY_SOAK_SEED=${seed} repeats it)`);
    throw e;
  }
  // interrupter threads end on their own shortly after their call did
  for (let i = 0; i < 100 && threads() > before.threads; i++) await Bun.sleep(20);
  Bun.gc(true);
  const after = { fds: fds(), threads: threads(), rss: process.memoryUsage().rss };
  const grownMB = (after.rss - before.rss) / 2 ** 20;
  console.log(`soak (seed ${seed}): fds ${before.fds} -> ${after.fds}, threads ${before.threads} -> ${after.threads}, RSS +${grownMB.toFixed(1)} MB over ${CYCLES} cycles`);
  expect(after.fds).toBeLessThanOrEqual(before.fds + 4);
  expect(after.threads).toBeLessThanOrEqual(before.threads + 1);
  expect(grownMB).toBeLessThan(12 * owngilCycles + 48);
}, 60_000);
