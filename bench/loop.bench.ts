/**
 * bunpy's event loop against asyncio's own (SelectorEventLoop on epoll), same Python,
 * same run: call_soon throughput, timers scheduled and fired, and a TCP echo round trip
 * over loopback with asyncio streams. Then the cost of a coroutine call into a context
 * next to a plain call.
 *
 * Each benchmark iteration is one py.call that runs a batch on a loop made once per kind.
 */
import { bench, do_not_optimize, run, summary } from "mitata";
import { py } from "../src/index.ts";
import { runOptions } from "./ratio.ts";

py.exec(`
import asyncio, time
import bunpy

loops = {"stock asyncio": asyncio.SelectorEventLoop(), "bunpy": bunpy.new_event_loop()}

def _countdown(loop, n):
    """A callback that stops the loop on its n-th call."""
    left = n
    def cb():
        nonlocal left
        left -= 1
        if left == 0:
            loop.stop()
    return cb

def call_soon_batch(kind, n):
    loop = loops[kind]
    cb = _countdown(loop, n)
    for _ in range(n):
        loop.call_soon(cb)
    loop.run_forever()

def timers_batch(kind, n):
    # n timers spread over the next millisecond, scheduled then all fired
    loop = loops[kind]
    cb = _countdown(loop, n)
    for i in range(n):
        loop.call_later((i % 1000) * 1e-6, cb)
    loop.run_forever()

echo = {}
async def _echo_setup():
    async def handle(r, w):
        while data := await r.read(4096):
            w.write(data)
        w.close()
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    r, w = await asyncio.open_connection(*srv.sockets[0].getsockname()[:2])
    return srv, r, w

async def _round_trips(r, w, n):
    msg = b"x" * 63 + b"\\n"
    for _ in range(n):
        w.write(msg)
        await r.readline()

def echo_batch(kind, n):
    loop = loops[kind]
    if kind not in echo:
        echo[kind] = loop.run_until_complete(_echo_setup())
    _, r, w = echo[kind]
    loop.run_until_complete(_round_trips(r, w, n))
`);

const KINDS = ["stock asyncio", "bunpy"] as const;
const SOON = 20_000;
const TIMERS = 20_000;
const ECHO = 200;

const rows: { what: string; unit: string; per: number; fn: string }[] = [
  { what: `call_soon: ${SOON.toLocaleString("en-US")} callbacks`, unit: "callbacks/s", per: SOON, fn: "call_soon_batch" },
  { what: `timers: ${TIMERS.toLocaleString("en-US")} scheduled and fired`, unit: "timers/s", per: TIMERS, fn: "timers_batch" },
  { what: `TCP echo: ${ECHO} round trips of 64 bytes`, unit: "round trips/s", per: ECHO, fn: "echo_batch" },
];

for (const row of rows) {
  summary(() => {
    for (const kind of KINDS) {
      const b = bench(`${row.what} (${kind})`, () => do_not_optimize(py.call("__main__", row.fn, [kind, row.per])));
      if (kind === "stock asyncio") b.baseline(true);
    }
  });
}

// ---- coroutine calls into a context -------------------------------------------------
const minor = Number(py.version.split(".")[1]);
const mode = minor >= 12 ? "owngil" : "worker";
const ctx = await py.context({ mode });
await ctx.exec("import asyncio\ndef plain(x):\n    return x\nasync def coro(x):\n    return x\nasync def sleeps(x):\n    await asyncio.sleep(0)\n    return x");
summary(() => {
  bench(`await ctx.call(plain def) (${mode})`, async () => do_not_optimize(await ctx.call("__main__", "plain", [1]))).baseline(true);
  bench(`await ctx.call(async def) (${mode})`, async () => do_not_optimize(await ctx.call("__main__", "coro", [1])));
  bench(`await ctx.call(async def awaiting sleep(0)) (${mode})`, async () =>
    do_not_optimize(await ctx.call("__main__", "sleeps", [1])),
  );
});

const { benchmarks } = await run(runOptions);
const median = (alias: string) => benchmarks.find((b) => b.alias === alias)?.runs[0]?.stats?.p50;

console.log("\nper second (median), and bunpy against stock asyncio in this run:");
for (const row of rows) {
  const [stock, ours] = KINDS.map((k) => median(`${row.what} (${k})`));
  if (stock === undefined || ours === undefined) continue;
  const rate = (ns: number) => Math.round(row.per / (ns / 1e9)).toLocaleString("en-US");
  console.log(
    `  ${row.what.padEnd(42)} stock ${rate(stock).padStart(10)}  bunpy ${rate(ours).padStart(10)} ${row.unit.padEnd(14)} ${(stock / ours).toFixed(2)}× as fast`,
  );
}
const timers = median(`${rows[1]!.what} (bunpy)`);
if (timers !== undefined) {
  const perSecond = TIMERS / (timers / 1e9);
  console.log(`  target ≥ 600,000 timers/s: ${perSecond >= 600_000 ? "met" : "not met"}`);
}
const plain = median(`await ctx.call(plain def) (${mode})`);
const coro = median(`await ctx.call(async def) (${mode})`);
if (plain !== undefined && coro !== undefined)
  console.log(`  coroutine call into a context: ${(coro / 1000).toFixed(2)} µs (${(coro / plain).toFixed(2)}× a plain call)`);

await ctx.close();
for (const kind of KINDS) py.exec(`loops[${JSON.stringify(kind)}].close()`);
