/**
 * The floor of a Django request: what Django's ASGIHandler itself costs per request, called
 * in-process with a fake receive/send (no HTTP, no server), on (a) a stock asyncio loop in
 * the main interpreter, (b) bunpy's loop in a context; each with asgiref's own thread per
 * request and with bunpy's reused threads (python/bunpy/_asgiref_threads.py). Interleaved
 * rounds, the minimum of each. The app is bench/serve.bench.ts's Django view.
 *
 *   BUNPY_PYTHON=~/.pyenv/versions/3.13.0/bin/python3 npx bun bench/django-floor.ts
 *
 * Needs the venv bench/serve.bench.ts makes (.cache/bench-venv-<version>, with Django):
 * run that once first. Env: FLOOR_N (requests per measure, default 1000), FLOOR_C (requests
 * in flight at once, default 1), FLOOR_ROUNDS (default 3).
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { py } from "../src/index.ts";

const ROOT = resolve(import.meta.dir, "..");
const APPS = join(ROOT, ".cache", "bench-apps");
const [maj, min] = py.version.split(".");
const site = join(ROOT, ".cache", `bench-venv-${py.version}`, "lib", `python${maj}.${min}`, "site-packages");
if (!existsSync(join(site, "django")) || !existsSync(join(APPS, "bench_django.py"))) {
  console.log(`django floor skipped: no Django in ${site} (run bench/serve.bench.ts once first)`);
  process.exit(0);
}

const DRIVER = `
import asyncio, contextvars, time
import bench_django
from bunpy._asgiref_threads import ThreadLeases

SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
         "path": "/items/7", "raw_path": b"/items/7", "query_string": b"", "root_path": "",
         "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
         "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "state": {}}

async def one():
    # as a server does: the body in the first receive(), http.disconnect once the response is out
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    status = []
    first = [True]
    async def receive():
        if first[0]:
            first[0] = False
            return {"type": "http.request", "body": b"", "more_body": False}
        await done
        return {"type": "http.disconnect"}
    async def send(m):
        if m["type"] == "http.response.start":
            status.append(m["status"])
        elif not m.get("more_body"):
            done.set_result(None)
    await bench_django.app(dict(SCOPE), receive, send)
    assert status == [200], status

async def one_leased(leases):
    ctx = contextvars.copy_context()
    lease = leases.enter(ctx)
    try:
        await asyncio.get_running_loop().create_task(one(), context=ctx)
    finally:
        leases.release(lease)

async def measure(n, conc, reuse):
    leases = ThreadLeases.for_app() if reuse else None
    step = (lambda: one_leased(leases)) if reuse else one
    for _ in range(50):
        await step()
    t = time.perf_counter(); c = time.process_time()
    for _ in range(max(1, n // conc)):
        await asyncio.gather(*[step() for _ in range(conc)])
    n = max(1, n // conc) * conc
    r = [(time.perf_counter() - t) / n * 1e6, (time.process_time() - c) / n * 1e6]
    if leases is not None:
        leases.close()
    return r

def measure_stock(n, conc, reuse):
    loop = asyncio.SelectorEventLoop()
    try:
        return loop.run_until_complete(measure(n, conc, reuse))
    finally:
        loop.close()
`;
mkdirSync(APPS, { recursive: true });
writeFileSync(join(APPS, "bench_django_floor.py"), DRIVER);

const N = Number(process.env["FLOOR_N"] ?? 1000);
const C = Number(process.env["FLOOR_C"] ?? 1);
const ROUNDS = Number(process.env["FLOOR_ROUNDS"] ?? 3);
const setup = `import sys\nfor p in (${JSON.stringify(APPS)}, ${JSON.stringify(site)}):\n    sys.path.insert(0, p)\nimport bench_django_floor\n`;
py.exec(setup);
const mode = Number(min) >= 12 ? "owngil" : "worker";
const ctx = await py.context({ mode });
await ctx.exec(setup);

type Row = { label: string; run: () => Promise<[number, number]> };
const rows: Row[] = [];
for (const reuse of [false, true]) {
  const how = reuse ? "bunpy's reused threads" : "asgiref's thread per request";
  rows.push({ label: `main interpreter, asyncio loop, ${how}`, run: async () => py.call("bench_django_floor", "measure_stock", [N, C, reuse]) as [number, number] });
  rows.push({ label: `${mode} context, bunpy loop, ${how}`, run: async () => (await ctx.call("bench_django_floor", "measure", [N, C, reuse])) as [number, number] });
}
const best = rows.map(() => [Infinity, Infinity] as [number, number]);
for (let r = 0; r < ROUNDS; r++)
  for (const [i, row] of rows.entries()) {
    const [w, c] = await row.run();
    best[i] = [Math.min(best[i]![0], w), Math.min(best[i]![1], c)];
  }
console.log(`Python ${py.version}; Django's ASGIHandler in-process, ${N} requests per measure, ${C} in flight; best of ${ROUNDS} interleaved rounds`);
for (const [i, row] of rows.entries())
  console.log(`  ${row.label.padEnd(64)} ${best[i]![0].toFixed(0).padStart(6)} µs/req wall  ${best[i]![1].toFixed(0).padStart(6)} µs/req CPU (process)`);
await ctx.close();
await py.close();
