/**
 * bunpy's event loop against asyncio's own (SelectorEventLoop on epoll), same Python,
 * same run: call_soon throughput, timers scheduled and fired, and a TCP echo round trip
 * over loopback with asyncio streams. Then Protocol echo round trips (64 B, 4 KB, 256 KB
 * over 4 connections) and connections/s on bunpy's loop with its C transports, on bunpy's
 * loop with asyncio's Python transports (level-triggered: the switch), on bunpy's loop with
 * its C transports registered level-triggered and re-armed on every change of interest
 * instead of once for their life (what the lifetime registration saves), on the stock loop,
 * and on uvloop where this Python has it (3.11 here, from the pip index), next to the same
 * echo in C with no loop at all (_bunpy.echo_floor: the floor); the echo again in fresh
 * processes with and without glibc's malloc thresholds set. Then the cost of a coroutine
 * call into a context next to a plain call.
 *
 * Each benchmark iteration is one py.call that runs a batch on a loop made once per kind.
 * LOOP_BENCH_ONLY=connect (or =pausing) runs the connect + close row (or the pausing echo)
 * only, and uvloop's where it is.
 */
import { bench, do_not_optimize, run, summary } from "mitata";
import { py } from "../src/index.ts";
import { packageVenv } from "../test/fixtures/venv.ts";
import { runOptions } from "./ratio.ts";

// MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ for the echo runs "with malloc set": glibc
// then keeps 256 KB buffers on its heap instead of a fresh mmap/munmap per large recv
const MALLOC_ENV = { MALLOC_MMAP_THRESHOLD_: String(4 << 20), MALLOC_TRIM_THRESHOLD_: String(64 << 20) };
const FLOOR = "C only, no loop (floor)";
const STOCK_CONNECT = "bunpy (C transports, asyncio's connect/accept)";
const LEVEL = "bunpy (C transports, level-triggered)";

const UVICORN_APP = `
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})
`;

// --uvicorn <port> <site>: the server process of the uvicorn comparison (end of this file):
// uvicorn with httptools in a worker context, on bunpy's loop with its C transports
if (process.argv[2] === "--uvicorn") {
  const [port, site] = process.argv.slice(3) as [string, string];
  const ctx = await py.context({ mode: "worker" });
  await ctx.exec(`import sys\nsys.path.insert(0, ${JSON.stringify(site)})\nimport uvicorn\n${UVICORN_APP}
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=${port}, http="httptools", lifespan="off", ws="none", log_level="error", access_log=False))
async def serve():
    await server.serve()`);
  void ctx.call("__main__", "serve");
  process.on("SIGTERM", () => process.exit(0));
  await new Promise(() => {});
}

// --echo <rows json>: the Protocol echo only (stock, bunpy C transports, the C floor), as JSON
// on stdout; run with and without MALLOC_ENV by the main process
if (process.argv[2] === "--echo") {
  const rowsArg = process.argv[3]!;
  py.exec(`${PECHO_SOURCE()}
import bunpy, json
ploops = {"stock asyncio": asyncio.SelectorEventLoop(), "bunpy (C transports)": bunpy.new_event_loop(), ${JSON.stringify(LEVEL)}: bunpy.new_event_loop(), ${JSON.stringify(FLOOR)}: None}
ploops[${JSON.stringify(LEVEL)}]._reactor.registration("level")
print(json.dumps(rates(json.loads(${JSON.stringify(rowsArg)}))))`);
  process.exit(0);
}

// uvloop cannot run inside Bun: Bun exports libuv's symbols as stubs for N-API, and they
// shadow uvloop's own libuv (uv_replace_allocator panics). So uvloop runs in a plain
// python process, next to the stock loop as that process's baseline (see the end).
const uvloopVenv = Number(py.version.split(".")[1]) === 11 ? packageVenv("loop", ["uvicorn", "httptools", "uvloop"]) : null;

// Protocol echo and connect + close batches (also run by a plain python for uvloop)
function PECHO_SOURCE(): string {
  return String.raw`
import asyncio
# -- Protocol echo and connections/s, with uvloop where it is installed ------------------

class _Echo(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t
    def data_received(self, d):
        self.t.write(d)

class _PausingEcho(asyncio.Protocol):
    """Stops reading while it answers a message (as an HTTP/1.1 server does per request),
    answers on the loop's next turn and reads again: two changes of read interest per
    message, which a level-triggered registration pays an epoll_ctl each for."""
    def connection_made(self, t):
        self.t = t
        self.loop = asyncio.get_running_loop()
    def data_received(self, d):
        self.t.pause_reading()
        self.loop.call_soon(self.answer, d)
    def answer(self, d):
        self.t.write(d)
        self.t.resume_reading()

class _Pinger(asyncio.Protocol):
    """Sends a message, waits for all of it to come back, again, left times."""
    def connection_made(self, t):
        self.t = t
    def start(self, msg, n, done):
        self.msg, self.left, self.got, self.done = msg, n, 0, done
        self.t.write(msg)
    def data_received(self, d):
        self.got += len(d)
        if self.got >= len(self.msg):
            self.got = 0
            self.left -= 1
            if self.left:
                self.t.write(self.msg)
            else:
                self.done.set_result(None)

pecho = {}
async def _pecho_setup(conns, server=_Echo):
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(server, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    clients = [(await loop.create_connection(_Pinger, "127.0.0.1", port))[1] for _ in range(conns)]
    return srv, port, clients

async def _pecho_run(clients, msg, n):
    loop = asyncio.get_running_loop()
    done = [loop.create_future() for _ in clients]
    for c, d in zip(clients, done):
        c.start(msg, n // len(clients), d)
    await asyncio.gather(*done)

def pecho_batch(kind, size, n):
    loop = ploops[kind]
    if loop is None:  # the floor: the same echo in C only, no loop (shim/echofloor.c)
        import _bunpy
        return _bunpy.echo_floor(size, 4, n)
    if kind not in pecho:
        pecho[kind] = loop.run_until_complete(_pecho_setup(4))
    loop.run_until_complete(_pecho_run(pecho[kind][2], b"x" * size, n))

def pause_batch(kind, size, n):
    loop = ploops[kind]
    key = (kind, "pausing")
    if key not in pecho:
        pecho[key] = loop.run_until_complete(_pecho_setup(4, _PausingEcho))
    loop.run_until_complete(_pecho_run(pecho[key][2], b"x" * size, n))

class _Gone(asyncio.Protocol):
    def __init__(self):
        self.lost = asyncio.get_running_loop().create_future()
    def connection_lost(self, exc):
        self.lost.set_result(None)

async def _connect_close(port, n):
    loop = asyncio.get_running_loop()
    for _ in range(n):
        t, p = await loop.create_connection(_Gone, "127.0.0.1", port)
        t.close()
        await p.lost

def rates(rows, reps=15):
    """{kind: [per second for each row]}: the median of reps batches per row and kind, the
    kinds interleaved batch by batch (so drift in the machine's load hits them alike)."""
    import time
    out = {kind: [] for kind in ploops}
    for r in rows:
        times = {kind: [] for kind in ploops}
        for _ in range(reps):
            for kind in ploops:
                if ploops[kind] is None and (not r["size"] or r.get("pausing")):
                    continue  # the floor is for echo only
                if kind == ${JSON.stringify(STOCK_CONNECT)} and r["size"]:
                    continue  # the same transports as "bunpy (C transports)" for echo
                t0 = time.perf_counter()
                if r.get("pausing"):
                    took = pause_batch(kind, r["size"], r["per"])
                else:
                    took = pecho_batch(kind, r["size"], r["per"]) if r["size"] else connect_batch(kind, r["per"])
                times[kind].append(took if isinstance(took, float) else time.perf_counter() - t0)
        for kind in ploops:
            ts = sorted(times[kind])
            out[kind].append(r["per"] / ts[len(ts) // 2] if ts else None)
    return out

def connect_batch(kind, n):
    loop = ploops[kind]
    if kind not in pecho:
        pecho[kind] = loop.run_until_complete(_pecho_setup(4))
    loop.run_until_complete(_connect_close(pecho[kind][1], n))
`;
}
const PECHO = PECHO_SOURCE();

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

${PECHO}
ploops = {"stock asyncio": asyncio.SelectorEventLoop(), "bunpy (C transports)": bunpy.new_event_loop(),
          ${JSON.stringify(LEVEL)}: bunpy.new_event_loop(), "bunpy (Python transports)": bunpy.new_event_loop()}
ploops["bunpy (Python transports)"]._bunpy_c_transports = False
# the same C transports with their fds registered level-triggered and re-armed on every
# change of interest (as asyncio's are): what the lifetime registration saves, same run
ploops[${JSON.stringify(LEVEL)}]._reactor.registration("level")
ploops[${JSON.stringify(FLOOR)}] = None
# before/after for connect + close, same run: the C transports with asyncio's own
# create_connection and accept (a Task per accepted connection); connect rows only
ploops[${JSON.stringify(STOCK_CONNECT)}] = bunpy.new_event_loop()
ploops[${JSON.stringify(STOCK_CONNECT)}]._bunpy_connect = "stock"
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

const PKINDS = (py.eval("list(ploops)") as string[]);
const prows = [
  { what: "Protocol echo, 64 B", size: 64, per: 2000, unit: "round trips/s" },
  { what: "Protocol echo, 4 KB", size: 4096, per: 2000, unit: "round trips/s" },
  { what: "Protocol echo, 256 KB", size: 262144, per: 40, unit: "round trips/s" },
  { what: "echo 64 B, pausing server", size: 64, per: 2000, unit: "round trips/s", pausing: true },
  { what: "connect + close", size: 0, per: 200, unit: "connections/s" },
];
// LOOP_BENCH_ONLY=connect|pausing: that row only, here and in uvloop's own process
const only = process.env["LOOP_BENCH_ONLY"];
if (only === "connect" || only === "pausing") {
  const crows = prows.filter((r) => (only === "connect" ? !r.size : "pausing" in r));
  const out = py.call("__main__", "rates", [crows]) as Record<string, (number | null)[]>;
  const stock = out["stock asyncio"]![0]!;
  for (const [k, v] of Object.entries(out)) if (v[0] != null) console.log(`  ${k.padEnd(48)} ${Math.round(v[0]).toLocaleString("en-US").padStart(8)} ${crows[0]!.unit} (${(v[0] / stock).toFixed(2)}× stock)`);
  const edge = out["bunpy (C transports)"]![0]!, level = out[LEVEL]![0]!;
  console.log(`  lifetime registration ÷ level-triggered: ${(edge / level).toFixed(2)}×`);
  if (uvloopVenv && "site" in uvloopVenv) {
    const code = `${PECHO}\nimport json, uvloop\nploops = {"stock asyncio": asyncio.SelectorEventLoop(), "uvloop": uvloop.new_event_loop()}\nprint(json.dumps(rates(json.loads(${JSON.stringify(JSON.stringify(crows))}))))\n`;
    const r = Bun.spawnSync([py.executable, "-c", code], { env: { ...process.env, PYTHONPATH: uvloopVenv.site }, stdout: "pipe", stderr: "pipe" });
    const uv = JSON.parse(r.stdout.toString()) as Record<string, number[]>;
    const ours = out["bunpy (C transports)"]![0]!;
    console.log(`  uvloop, own process: stock ${Math.round(uv["stock asyncio"]![0]!).toLocaleString("en-US")}, uvloop ${Math.round(uv["uvloop"]![0]!).toLocaleString("en-US")} (${(uv["uvloop"]![0]! / uv["stock asyncio"]![0]!).toFixed(2)}× its stock) — bunpy (C transports) ÷ uvloop ${(ours / uv["uvloop"]![0]!).toFixed(2)}× absolute`);
  }
  process.exit(0);
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
// Protocol echo and connect + close: timed inside Python (median of 15 batches per kind,
// the kinds interleaved), here and in a plain python process for uvloop, so the two
// processes are measured the same way; each process's stock loop is its baseline.
const here = py.call("__main__", "rates", [prows]) as Record<string, (number | null)[]>;
console.log(`\nProtocol echo over 4 connections, and connect + close (per second, median of 15 batches; × the stock loop of the same process):`);
const fmt = (v: number, base: number) => `${Math.round(v).toLocaleString("en-US")} (${(v / base).toFixed(2)}×)`;
const fmtRow = (out: Record<string, (number | null)[]>, kinds: string[], i: number) => {
  const stock = out["stock asyncio"]![i]!;
  return kinds.filter((k) => out[k]![i] != null).map((k) => `${k} ${fmt(out[k]![i]!, stock)}`).join("  ");
};
prows.forEach((row, i) => console.log(`  ${row.what.padEnd(24)} ${row.unit}: ${fmtRow(here, PKINDS, i)}`));
console.log(
  `  lifetime registration ÷ level-triggered (C transports, same run): ` +
    prows.map((row, i) => `${row.what} ${(here["bunpy (C transports)"]![i]! / here[LEVEL]![i]!).toFixed(2)}×`).join(", "),
);
// the echo rows again in fresh processes, with glibc's malloc left alone and with MALLOC_ENV
// set (the same for every kind in the process)
const echoRows = prows.filter((r) => r.size);
for (const [label, env] of [["default malloc", {}], [`with ${Object.entries(MALLOC_ENV).map(([k, v]) => `${k}=${v}`).join(" ")}`, MALLOC_ENV]] as const) {
  const r = Bun.spawnSync([process.execPath, import.meta.path, "--echo", JSON.stringify(echoRows)], { env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" });
  try {
    const out = JSON.parse(r.stdout.toString().trim().split("\n").pop()!) as Record<string, (number | null)[]>;
    console.log(`Protocol echo in a fresh process, ${label}:`);
    echoRows.forEach((row, i) => console.log(`  ${row.what.padEnd(24)} ${fmtRow(out, Object.keys(out), i)}`));
  } catch {
    console.log(`  echo run (${label}) failed: ${r.stderr.toString().trim().split("\n").slice(-2).join(" | ")}`);
  }
}
if (uvloopVenv && "site" in uvloopVenv) {
  const code = `${PECHO}
import json, uvloop
ploops = {"stock asyncio": asyncio.SelectorEventLoop(), "uvloop": uvloop.new_event_loop()}
print(json.dumps(rates(json.loads(${JSON.stringify(JSON.stringify(prows))}))))
`;
  for (const [label, env] of [["", {}], [" (with MALLOC_ENV)", MALLOC_ENV]] as const) {
    const r = Bun.spawnSync([py.executable, "-c", code], { env: { ...process.env, ...env, PYTHONPATH: uvloopVenv.site }, stdout: "pipe", stderr: "pipe" });
    try {
      const out = JSON.parse(r.stdout.toString()) as Record<string, number[]>;
      console.log(`uvloop, in a plain python process (measured the same way)${label}:`);
      prows.forEach((row, i) => {
        const stock = out["stock asyncio"]![i]!, uv = out["uvloop"]![i]!;
        const ours = here["bunpy (C transports)"]![i]!, oursStock = here["stock asyncio"]![i]!;
        console.log(
          `  ${row.what.padEnd(24)} stock ${Math.round(stock).toLocaleString("en-US")}  uvloop ${fmt(uv, stock)}` +
            ` — bunpy (C transports) ÷ uvloop: ${(ours / uv).toFixed(2)}× absolute, ${((ours / oursStock) / (uv / stock)).toFixed(2)}× as ratios to each stock`,
        );
      });
    } catch {
      console.log(`  uvloop run failed: ${r.stderr.toString().trim().split("\n").slice(-2).join(" | ")}`);
    }
  }
} else {
  console.log(`  uvloop: not on this Python (${uvloopVenv && "skip" in uvloopVenv ? uvloopVenv.skip.slice(0, 80) : "its wheels are for 3.11 here"})`);
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
py.exec(`
for kind, loop in ploops.items():
    if loop is None:
        continue
    for key in (kind, (kind, "pausing")):
        if key in pecho:
            srv, _, clients = pecho[key]
            for c in clients:
                c.t.close()
            srv.close()
            loop.run_until_complete(srv.wait_closed())
    loop.close()
`);

// ---- uvicorn hello world with wrk: bunpy's loop (in a worker context) against uvloop ------
function have(cmd: string): boolean {
  return Bun.spawnSync(["sh", "-c", `command -v ${cmd}`]).exitCode === 0;
}
if (uvloopVenv && "site" in uvloopVenv && have("wrk") && have("taskset")) {
  const site = uvloopVenv.site;
  const appFile = `${site}/bunpy_bench_hello.py`;
  await Bun.write(appFile, UVICORN_APP);
  const wrk = (port: number, seconds: number) => {
    const r = Bun.spawnSync(["taskset", "-c", "1", "wrk", "-t1", "-c64", `-d${seconds}s`, `http://127.0.0.1:${port}/`], { stdout: "pipe" });
    const m = /Requests\/sec:\s+([\d.]+)/.exec(r.stdout.toString());
    return m ? Number(m[1]) : NaN;
  };
  const start = async (cmd: string[], env: Record<string, string>, port: number) => {
    const proc = Bun.spawn(["taskset", "-c", "0", ...cmd], { env: { ...process.env, ...env }, stdout: "ignore", stderr: "ignore" });
    for (let i = 0; i < 200; i++) {
      if (await fetch(`http://127.0.0.1:${port}/`).then((r) => r.ok, () => false)) break;
      await Bun.sleep(50);
    }
    wrk(port, 2); // warm-up
    return proc;
  };
  const base = 18000 + (process.pid % 1000);
  const uvicornArgs = (loop: string, port: number) => [py.executable, "-m", "uvicorn", "bunpy_bench_hello:app", "--port", String(port), "--loop", loop, "--http", "httptools", "--no-access-log", "--log-level", "error", "--lifespan", "off"];
  // the three servers run side by side (idle ones sleep), and wrk visits them in turn, three
  // rounds: the best of three each, so a busy moment of the machine hits them alike
  const servers = [
    { name: "uvloop", port: base, proc: await start(uvicornArgs("uvloop", base), { PYTHONPATH: site }, base), best: 0 },
    { name: "asyncio", port: base + 1, proc: await start(uvicornArgs("asyncio", base + 1), { PYTHONPATH: site }, base + 1), best: 0 },
    { name: "bunpy", port: base + 2, proc: await start([process.execPath, import.meta.path, "--uvicorn", String(base + 2), site], {}, base + 2), best: 0 },
  ];
  const rounds: string[] = [];
  for (let round = 0; round < 3; round++) {
    const got = servers.map((s) => {
      const rate = wrk(s.port, 4);
      if (rate > s.best) s.best = rate;
      return `${s.name} ${Math.round(rate).toLocaleString("en-US")}`;
    });
    rounds.push(got.join(", "));
  }
  for (const s of servers) {
    s.proc.kill("SIGTERM");
    await s.proc.exited;
  }
  const [uv, stock, ours] = servers.map((s) => s.best) as [number, number, number];
  console.log(`\nuvicorn + httptools hello world, servers on core 0, wrk -t1 -c64 -d4s on core 1, 3 rounds in turn (requests/s):`);
  for (const r of rounds) console.log(`  round: ${r}`);
  console.log(`  best of 3: uvloop ${Math.round(uv).toLocaleString("en-US")}  asyncio ${Math.round(stock).toLocaleString("en-US")}  bunpy's loop in a worker context ${Math.round(ours).toLocaleString("en-US")} (${(ours / uv).toFixed(2)}× uvloop, ${(ours / stock).toFixed(2)}× asyncio)`);
}
