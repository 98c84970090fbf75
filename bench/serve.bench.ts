/**
 * Serving Python web apps: bunpy (Bun.serve + py.asgi, one context) against uvicorn (one
 * worker) on the same Python, both pinned to core 0 with taskset, wrk pinned to core 1.
 * Apps: a raw ASGI hello world, a Starlette JSON endpoint and a Django async JSON view.
 *
 *   BUNPY_PYTHON=~/.pyenv/versions/3.13.0/bin/python3 npx bun bench/serve.bench.ts
 *
 * Needs wrk (Debian: `apt-get install -y wrk`; the bench tries that itself when it runs as
 * root, and skips with this message otherwise) and pip's index for uvicorn and Starlette
 * (installed once per Python into .cache/bench-venv-<version>; uvloop and httptools too
 * when the index has them for that Python, else uvicorn uses asyncio and h11).
 * Env: SERVE_BENCH_SECONDS (default 8), SERVE_BENCH_CONNECTIONS (default 64),
 * SERVE_BENCH_TWO=0 skips the two-worker rows (uvicorn --workers 2 against a pool of 2 and
 * against `bunpy serve --processes 2`, with one context and inline),
 * SERVE_BENCH_ROUNDS (default 1: interleaved rounds, the best of each server compared),
 * SERVE_BENCH_CONTEXT=0 skips the one-context rows (uvicorn against inline mode only),
 * SERVE_BENCH_ONLY=raw|starlette|django (comma-separated) runs only those apps' rows.
 * Django has one more row: one context with `threads: "per-request"` (asgiref starts and
 * joins a thread for every request, as under uvicorn; the default reuses idle threads).
 * SERVE_BENCH_ONE=0 skips all the one-core rows (the two-worker rows only).
 * Each app has three one-core rows: uvicorn, bunpy with one context, bunpy inline
 * (`mode: "inline"`: the app in the main interpreter on Bun's own thread). The raw app has
 * a fourth, its floor: Bun.serve answering the same response from a JS handler, no Python
 * (no bunpy server can beat it, so floor / uvicorn is the most any of them can reach).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { py } from "../src/index.ts";

const ROOT = resolve(import.meta.dir, "..");
const APPS = join(ROOT, ".cache", "bench-apps");

const HELLO = `
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})
`;
const STAR = `
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def items(request):
    return JSONResponse({"id": int(request.path_params["n"]), "name": "widget", "tags": ["a", "b"], "price": 9.5})

app = Starlette(routes=[Route("/items/{n}", items)])
`;

// milliseconds of pure Python per request (a 20,000-term sum): where a shared GIL shows
const HEAVY = `
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    n = sum(i * i for i in range(20000))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(n).encode()})
`;

const DJ = `
import django
from django.conf import settings
settings.configure(DEBUG=False, SECRET_KEY="bench", ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, MIDDLEWARE=[], INSTALLED_APPS=[], USE_TZ=False)
django.setup()
from django.http import JsonResponse
from django.urls import path

async def item(request, n):
    return JsonResponse({"id": n, "name": "widget", "tags": ["a", "b"], "price": 9.5})

urlpatterns = [path("items/<int:n>", item)]
from django.core.asgi import get_asgi_application
app = get_asgi_application()
`;

// ---- server mode: `bun bench/serve.bench.ts --server <target> <port> <site-packages>` --------
if (process.argv[2] === "--server" && process.argv[3] === "js") {
  // the floor of the raw app: Bun.serve with a JS handler that reads what bunpy reads of a
  // request (method, URL, headers, client address) and answers what the app answers
  const server = Bun.serve({
    port: Number(process.argv[4]),
    hostname: "127.0.0.1",
    fetch(req, srv) {
      const seen = [req.method, req.url, req.headers.toJSON(), srv.requestIP(req)];
      return new Response(seen.length === 4 ? "Hello, world!" : "", { headers: { "content-type": "text/plain" } });
    },
  });
  console.log("ready", server.port);
  process.on("SIGTERM", () => process.exit(0));
  await new Promise(() => {});
}
if (process.argv[2] === "--server") {
  const [, , , target, port, site, mode, size] = process.argv;
  const threads = process.env["SERVE_BENCH_THREADS"] === "per-request" ? "per-request" : "reuse";
  const app =
    mode === "inline"
      ? await py.asgi(target!, { mode: "inline", path: [APPS, site!], threads })
      : await py.asgi(target!, { pool: { size: Number(size ?? 1), mode: mode as "owngil" | "worker" }, path: [APPS, site!], threads });
  Bun.serve({ port: Number(port), hostname: "127.0.0.1", fetch: app.fetch });
  console.log("ready");
  process.on("SIGTERM", async () => {
    await app.close();
    process.exit(0);
  });
  await new Promise(() => {});
}

function have(cmd: string): boolean {
  return Bun.spawnSync(["sh", "-c", `command -v ${cmd}`]).exitCode === 0;
}

if (!have("wrk") && process.getuid?.() === 0) Bun.spawnSync(["sh", "-c", "apt-get install -y wrk || (apt-get update && apt-get install -y wrk)"], { stdout: "ignore", stderr: "ignore" });
if (!have("wrk") || !have("taskset")) {
  console.log("serve bench skipped: needs wrk and taskset (Debian: apt-get install -y wrk util-linux)");
  process.exit(0);
}

const version = py.version;
const [maj, min] = version.split(".");
const venv = join(ROOT, ".cache", `bench-venv-${version}`);
const site = join(venv, "lib", `python${maj}.${min}`, "site-packages");
const vpython = join(venv, "bin", "python");
function pip(...pkgs: string[]): boolean {
  return Bun.spawnSync([py.executable, "-m", "pip", "--python", vpython, "install", "-q", "--retries", "0", "--timeout", "5", ...pkgs], { stdout: "ignore", stderr: "ignore" }).exitCode === 0;
}
if (!existsSync(join(site, "uvicorn"))) {
  Bun.spawnSync([py.executable, "-m", "venv", venv]);
  if (!pip("uvicorn", "starlette")) {
    console.log(`serve bench skipped: pip could not install uvicorn and starlette for Python ${version}`);
    process.exit(0);
  }
  pip("uvloop");
  pip("httptools");
}
if (!existsSync(join(site, "django"))) pip("django>=5,<6");
mkdirSync(APPS, { recursive: true });
writeFileSync(join(APPS, "bench_hello.py"), HELLO);
writeFileSync(join(APPS, "bench_star.py"), STAR);
writeFileSync(join(APPS, "bench_django.py"), DJ);
writeFileSync(join(APPS, "bench_heavy.py"), HEAVY);
const loop = existsSync(join(site, "uvloop")) ? "uvloop" : "asyncio";
const http = existsSync(join(site, "httptools")) ? "httptools" : "h11";

const SECONDS = Number(process.env["SERVE_BENCH_SECONDS"] ?? 8);
const CONNS = Number(process.env["SERVE_BENCH_CONNECTIONS"] ?? 64);

async function waitReady(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}/`);
      return;
    } catch {
      await Bun.sleep(50);
    }
  }
  throw new Error(`server on ${port} did not start`);
}

interface Result {
  rps: number;
  p50: string;
  p99: string;
  /** CPU time of the server process (all its threads) per request, µs: steadier than req/s
      when other work shares the core. */
  cpu: number;
}

/** utime + stime of a process and of its children (uvicorn's workers, the processes of
    `bunpy serve --processes`), in clock ticks (1/100 s here). */
function cpuTicks(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
    let ticks = Number(rest[11]) + Number(rest[12]);
    for (const child of readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(" ").filter(Boolean)) ticks += cpuTicks(Number(child));
    return ticks;
  } catch {
    return NaN;
  }
}

/** Reads the stream until a line matches re; the rest of it is drained (so the server never blocks on a full pipe). */
async function untilLine(stream: ReadableStream<Uint8Array>, re: RegExp): Promise<void> {
  const reader = stream.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the server exited before printing a line matching ${re}`);
    buf += dec.decode(value);
    if (buf.split("\n").some((l) => re.test(l))) break;
  }
  void (async () => {
    while (!(await reader.read()).done);
  })();
}

function wrk(url: string, seconds = SECONDS, cores = "1", server = 0): Result {
  const threads = cores.split(",").length;
  const before = cpuTicks(server);
  const r = Bun.spawnSync(["taskset", "-c", cores, "wrk", `-t${threads}`, `-c${CONNS}`, `-d${seconds}s`, "--latency", url], { stdout: "pipe" });
  const out = r.stdout.toString();
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
  const cpu = ((cpuTicks(server) - before) * 10000) / requests;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const p50 = /^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? "?";
  const p99 = /^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? "?";
  if (/Non-2xx/.test(out) || /Socket errors/.test(out)) console.log(out.split("\n").filter((l) => /Non-2xx|Socket errors/.test(l)).join("\n"));
  return { rps, p50, p99, cpu };
}

/** Prints the line of a result and returns it; `banner`: wait for a line matching it on the
    server's stdout too (`bunpy serve --processes` prints it once every process listens). */
async function run(label: string, cmd: string[], port: number, path: string, cores = "0", opts: { env?: Record<string, string>; banner?: RegExp } = {}): Promise<Result> {
  const banner = opts.banner;
  const proc = Bun.spawn(["taskset", "-c", cores, ...cmd], { stdout: banner === undefined ? "ignore" : "pipe", stderr: "inherit", env: { ...process.env, ...opts.env } });
  try {
    if (banner !== undefined) await untilLine(proc.stdout as ReadableStream<Uint8Array>, banner);
    await waitReady(port);
    const wrkCores = cores === "0" ? "1" : cores;
    wrk(`http://127.0.0.1:${port}${path}`, 2, wrkCores); // warm-up
    const res = wrk(`http://127.0.0.1:${port}${path}`, SECONDS, wrkCores, proc.pid);
    console.log(`  ${label.padEnd(44)} ${Math.round(res.rps).toLocaleString("en-US").padStart(8)} req/s   p50 ${res.p50.padStart(8)}   p99 ${res.p99.padStart(8)}   server CPU ${res.cpu.toFixed(1).padStart(6)} µs/req`);
    return res;
  } finally {
    proc.kill("SIGTERM");
    await proc.exited;
  }
}

const mode = Number(min) >= 12 ? "owngil" : "worker";
// Django in the same contexts as the other apps (owngil on 3.12+: owngil contexts allow the
// daemon thread asgiref starts after each request, and 3.13.0 gets pure-Python zoneinfo)
const djangoMode = mode;
console.log(`Python ${version}; uvicorn with ${loop} + ${http}; bunpy 1 ${mode} context; server on core 0, wrk -t1 -c${CONNS} -d${SECONDS}s on core 1`);
let port = 18000 + Math.floor(Math.random() * 1000);
let apps: [string, string, string, string][] = [
  ["raw ASGI hello world", "bench_hello:app", "/", mode],
  ["Starlette JSON endpoint", "bench_star:app", "/items/7", mode],
];
if (existsSync(join(site, "django"))) apps.push(["Django async JSON view (ASGI)", "bench_django:app", "/items/7", djangoMode]);
else console.log("(Django row skipped: pip could not install django)");
const ONLY = process.env["SERVE_BENCH_ONLY"]?.split(",").map((s) => s.trim().toLowerCase());
if (ONLY !== undefined) apps = apps.filter(([name]) => ONLY.some((o) => name.toLowerCase().startsWith(o)));
const ROUNDS = Number(process.env["SERVE_BENCH_ROUNDS"] ?? 1);
const CONTEXT_ROWS = process.env["SERVE_BENCH_CONTEXT"] !== "0";
const best = (a: Result | undefined, b: Result): Result => (a === undefined || b.rps > a.rps ? { ...b, cpu: Math.min(b.cpu, a?.cpu ?? Infinity) } : { ...a, cpu: Math.min(a.cpu, b.cpu) });
for (const [name, target, path, ctxMode] of process.env["SERVE_BENCH_ONE"] === "0" ? [] : apps) {
  console.log(`${name}${ctxMode !== mode ? ` (bunpy: ${ctxMode} context)` : ""}:`);
  // rounds interleave the servers; the best round of each is compared (min-of-N on a shared machine)
  let u: Result | undefined, b: Result | undefined, i: Result | undefined, f: Result | undefined, t: Result | undefined;
  const withFloor = target === "bench_hello:app";
  // Django: also one context with asgiref's own thread per request (threads: "per-request")
  const withPerRequest = target === "bench_django:app" && CONTEXT_ROWS;
  for (let r = 0; r < ROUNDS; r++) {
    if (withFloor) f = best(f, await run(`floor: Bun.serve, a JS handler, no Python`, [process.execPath, import.meta.path, "--server", "js", String(++port)], port, path));
    u = best(u, await run(`uvicorn (1 worker)`, [vpython, "-m", "uvicorn", target, "--port", String(++port), "--loop", loop, "--http", http, "--log-level", "error", "--no-access-log", "--app-dir", APPS], port, path));
    if (CONTEXT_ROWS) b = best(b, await run(`bunpy (Bun.serve + 1 context)`, [process.execPath, import.meta.path, "--server", target, String(++port), site, ctxMode], port, path));
    if (withPerRequest) t = best(t, await run(`bunpy (1 context, threads: "per-request")`, [process.execPath, import.meta.path, "--server", target, String(++port), site, ctxMode], port, path, "0", { env: { SERVE_BENCH_THREADS: "per-request" } }));
    // inline mode: the app in the main interpreter on Bun's own thread (no thread hand-off)
    i = best(i, await run(`bunpy inline (Bun.serve, main interpreter)`, [process.execPath, import.meta.path, "--server", target, String(++port), site, "inline"], port, path));
  }
  // req/s ratio, and uvicorn's CPU per request over bunpy's (> 1: bunpy spends less)
  const p = (x: Result) => `${(x.rps / u!.rps).toFixed(2)}× req/s, ${(u!.cpu / x.cpu).toFixed(2)}× by CPU per request (p99 ${x.p99} vs ${u!.p99})`;
  console.log(`  bunpy / uvicorn: ${b !== undefined ? `context ${p(b)}, ` : ""}inline ${p(i!)}${ROUNDS > 1 ? ` — best of ${ROUNDS} rounds each` : ""}`);
  if (f !== undefined) console.log(`  floor / uvicorn: ${p(f)} (the most a server behind Bun.serve can reach)`);
  if (t !== undefined) console.log(`  bunpy threads "per-request" / uvicorn: ${p(t)}`);
}

// Two of each on both cores: `uvicorn --workers 2` (two processes) against a pool of two
// contexts in one Bun process, and against `bunpy serve --processes 2` (two Bun processes on
// one port, one context or inline each; server CPU counts the children). wrk cannot have a core of its own here (2 cores), so it
// shares them with the server: the comparison is in the same run, the absolute numbers low.
if (process.env["SERVE_BENCH_TWO"] !== "0") {
  console.log(`two workers (server and wrk on cores 0-1):`);
  const heavy = ["CPU-bound handler (a 20,000-term sum in Python per request)", "bench_heavy:app", "/", mode] as const;
  for (const [name, target, path, ctxMode] of [...apps.filter(([, t]) => t !== "bench_django:app"), heavy]) {
    console.log(`${name}:`);
    let u: Result | undefined, b: Result | undefined, pc: Result | undefined, pi: Result | undefined;
    for (let r = 0; r < ROUNDS; r++) {
      u = best(u, await run(`uvicorn --workers 2`, [vpython, "-m", "uvicorn", target, "--port", String(++port), "--workers", "2", "--loop", loop, "--http", http, "--log-level", "error", "--no-access-log", "--app-dir", APPS], port, path, "0,1"));
      b = best(b, await run(`bunpy (Bun.serve + 2 ${ctxMode} contexts)`, [process.execPath, import.meta.path, "--server", target, String(++port), site, ctxMode, "2"], port, path, "0,1"));
      // two Bun processes on one port (SO_REUSEPORT), as uvicorn's two: one context, or inline, each
      const serve = (extra: string[]) => [process.execPath, join(ROOT, "src", "cli.ts"), "serve", target, "--port", String(++port), "--processes", "2", ...extra, "--app-dir", APPS, "--app-dir", site];
      pc = best(pc, await run(`bunpy serve --processes 2 --workers 1`, serve(["--workers", "1", "--mode", ctxMode]), port, path, "0,1", { banner: /bunpy: serving/ }));
      pi = best(pi, await run(`bunpy serve --processes 2 --mode inline`, serve(["--mode", "inline"]), port, path, "0,1", { banner: /bunpy: serving/ }));
    }
    const p = (x: Result) => `${(x.rps / u!.rps).toFixed(2)}× (CPU per request ${(u!.cpu / x.cpu).toFixed(2)}×)`;
    console.log(`  bunpy / uvicorn: pool of 2 ${p(b!)}, 2 processes ${p(pc!)}, 2 inline processes ${p(pi!)}${ROUNDS > 1 ? ` — best of ${ROUNDS} rounds each` : ""}`);
  }
}
await py.close();
