// `bunpy serve --processes N`: N child Bun processes on one port (SO_REUSEPORT), a supervisor
// that starts a dead one again, forwards SIGTERM and exits once all are gone, and stops at
// once when the app cannot start. Real processes, real sockets; the app answers os.getpid().
import { expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { alive, CLI, FIXTURES, gone, serve } from "./fixtures/serve/cli.ts";
import { lineReader } from "./fixtures/serve/lines.ts";
import { selfSigned } from "./fixtures/serve/tls.ts";

/** The pids of the "process PID started" lines up to the banner, and the banner's URL. */
async function started(out: ReturnType<typeof lineReader>): Promise<{ pids: number[]; url: string }> {
  const banner = await out.until(/bunpy: serving /);
  const pids = out.seen.flatMap((l) => /bunpy: process (\d+) started/.exec(l)?.[1] ?? []).map(Number);
  return { pids, url: /on (https?:\/\/\S+)/.exec(banner)![1]! };
}

/** A request on a connection of its own (so the kernel may hand it to any of the processes). */
async function pidOf(url: string, path = "/", init: RequestInit = {}): Promise<number> {
  const r = await fetch(new URL(path, url), { ...init, headers: { connection: "close" } });
  expect(r.status).toBe(200);
  return Number(await r.text());
}

/** Asks until `want` pids answered (each connection lands on one process, by the kernel's hash). */
async function pidsAnswering(url: string, want: number, init: RequestInit = {}): Promise<Set<number>> {
  const seen = new Set<number>();
  for (let i = 0; i < 400 && seen.size < want; i++) seen.add(await pidOf(url, "/", init));
  return seen;
}


test("--processes 2: both processes answer on one port; one killed with SIGKILL is started again", async () => {
  const { proc, out, err } = serve("pidapp:app", "--port", "0", "--processes", "2", "--workers", "1", "--access-log");
  try {
    const { pids, url } = await started(out);
    expect(pids.length).toBe(2);
    expect(out.seen.at(-1)).toMatch(/serving pidapp:app \(asgi, 2 processes × 1 (owngil|worker) context\) on http:/); // worker on 3.11
    expect([...(await pidsAnswering(url, 2))].sort()).toEqual([...pids].sort());
    expect(await out.until(/INFO: {5}\S+ - "GET \/ HTTP\/1.1" 200/)).toBeDefined(); // the children's access log

    process.kill(pids[0]!, "SIGKILL");
    expect(await err.until(/exited/)).toContain(`process ${pids[0]} exited (signal SIGKILL); starting another`);
    const again = Number(/process (\d+) started \(1 of 2\)/.exec(await out.until(/process \d+ started/))![1]);
    expect(pids).not.toContain(again);
    expect(alive(pids[0]!)).toBe(false);
    const now = await pidsAnswering(url, 2);
    expect([...now].sort()).toEqual([again, pids[1]!].sort());
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
    expect(await gone([again, pids[1]!])).toBe(true);
    expect((await out.rest()).at(-1)).toBe("bunpy: stopped");
  } finally {
    proc.kill("SIGKILL");
  }
}, 60000);

test("SIGTERM with a slow request in flight: it completes, then every process exits", async () => {
  const { proc, out } = serve("pidapp:app", "--port", "0", "--processes", "2", "--workers", "1");
  try {
    const { pids, url } = await started(out);
    const slow = pidOf(url, "/slow?s=1.5");
    const at = Number(/slow request in (\d+)/.exec(await out.until(/pidapp: slow request in/))![1]); // the app has it
    proc.kill("SIGTERM");
    expect(await slow).toBe(at);
    expect(pids).toContain(at);
    expect(await proc.exited).toBe(0);
    expect(await gone(pids)).toBe(true);
    const lines = await out.rest();
    expect(lines).toContain("bunpy: SIGTERM: stopping 2 processes (requests in flight finish, up to 10 s)");
    expect(lines.at(-1)).toBe("bunpy: stopped");
  } finally {
    proc.kill("SIGKILL");
  }
}, 60000);

test("Ctrl-C at a terminal (SIGINT to the whole process group) with a slow request in flight: still one graceful stop", async () => {
  // each child gets the terminal's SIGINT and then the SIGTERM its supervisor relays: that
  // is not "a second signal" (which exits at once, cutting requests)
  const proc = Bun.spawn([process.execPath, CLI, "serve", "pidapp:app", "--port", "0", "--processes", "2", "--workers", "1", "--app-dir", FIXTURES], {
    stdout: "pipe",
    stderr: "pipe",
    detached: true, // a process group of its own, as a shell gives a foreground job
  });
  const out = lineReader(proc.stdout), err = lineReader(proc.stderr);
  try {
    const { pids, url } = await started(out);
    const slow = pidOf(url, "/slow?s=1.5");
    const at = Number(/slow request in (\d+)/.exec(await out.until(/pidapp: slow request in/))![1]);
    process.kill(-proc.pid, "SIGINT");
    expect(await slow).toBe(at);
    expect(await proc.exited).toBe(0);
    expect(await gone(pids)).toBe(true);
    expect((await out.rest()).at(-1)).toBe("bunpy: stopped");
    expect((await err.rest()).join("\n")).not.toContain("again: exiting now");
  } finally {
    try {
      process.kill(-proc.pid, "SIGKILL");
    } catch {}
  }
}, 60000);

test("a supervisor killed with SIGKILL leaves no server behind (the children see their IPC channel close)", async () => {
  const { proc, out } = serve("pidapp:app", "--port", "0", "--processes", "2", "--workers", "1");
  const { pids } = await started(out);
  proc.kill("SIGKILL");
  await proc.exited;
  expect(await gone(pids)).toBe(true);
}, 60000);

test("a supervisor killed while its process is still loading the app: the process stops once it has", async () => {
  const { proc } = serve("slowimport:app", "--port", "0", "--processes", "1", "--workers", "1");
  let kids: number[] = [];
  for (let i = 0; i < 100 && kids.length === 0; i++) {
    await Bun.sleep(20);
    kids = readFileSync(`/proc/${proc.pid}/task/${proc.pid}/children`, "utf8").trim().split(" ").filter(Boolean).map(Number);
  }
  expect(kids.length).toBe(1);
  proc.kill("SIGKILL"); // slowimport.py sleeps 1.5 s at import: the process is loading it
  await proc.exited;
  expect(await gone(kids, 15000)).toBe(true);
}, 30000);

test("an app that fails to import: the error is printed once, no restart, exit code 1", async () => {
  const { proc, out, err } = serve("brokenapp:app", "--port", "0", "--processes", "2", "--workers", "1");
  expect(await proc.exited).toBe(1);
  const errors = (await err.rest()).join("\n");
  expect(errors.split("brokenapp refuses to import").length - 1).toBe(1);
  expect(errors).toMatch(/the server failed to start: process \d+ exited \(code 1\)/);
  expect((await out.rest()).filter((l) => l.includes("started"))).toEqual([]);
}, 30000);

test("--mode inline --processes 2 on a port given: one main interpreter per process, both answer", async () => {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  const { proc, out } = serve("pidapp:app", "--port", String(port), "--processes", "2", "--mode", "inline");
  try {
    const { pids, url } = await started(out);
    expect(url).toBe(`http://127.0.0.1:${port}/`);
    expect(out.seen.at(-1)).toContain("(asgi, 2 processes × inline: the main interpreter on Bun's thread)");
    expect([...(await pidsAnswering(url, 2))].sort()).toEqual([...pids].sort());
    proc.kill("SIGINT");
    expect(await proc.exited).toBe(0);
    expect(await gone(pids)).toBe(true);
  } finally {
    proc.kill("SIGKILL");
  }
}, 60000);

const tls = selfSigned();

test.skipIf(!tls)("--processes with TLS flags: every process serves https (skipped without openssl)", async () => {
  const { proc, out } = serve("pidapp:app", "--port", "0", "--processes", "2", "--workers", "1", "--ssl-keyfile", tls!.keyFile, "--ssl-certfile", tls!.certFile);
  try {
    const { pids, url } = await started(out);
    expect(url.startsWith("https://")).toBe(true);
    const insecure = { tls: { rejectUnauthorized: false } } as RequestInit;
    expect([...(await pidsAnswering(url, 2, insecure))].sort()).toEqual([...pids].sort());
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
  } finally {
    proc.kill("SIGKILL");
  }
  // a key that does not fit: the first process fails with the CLI's usage error, code 2
  const bad = serve("pidapp:app", "--port", "0", "--processes", "2", "--workers", "1", "--ssl-keyfile", tls!.keyFile, "--ssl-certfile", FIXTURES + "/static.txt");
  expect(await bad.proc.exited).toBe(2);
}, 60000);

test("--processes: bad combinations exit 2 with the usage", () => {
  const run = (...args: string[]) => Bun.spawnSync([process.execPath, CLI, "serve", "pidapp:app", "--app-dir", FIXTURES, ...args], { stderr: "pipe" });
  for (const [args, message] of [
    [["--processes", "2", "--reload"], "--reload and --processes cannot be combined"],
    [["--processes", "0"], "--processes: expected an integer ≥ 1, got 0"],
    [["--processes"], "--processes needs a value"],
    [["--processes", "2", "--mode", "inline", "--workers", "2"], "--workers does not apply to --mode inline"],
  ] as const) {
    const r = run(...args);
    expect(r.exitCode).toBe(2);
    expect(r.stderr.toString()).toContain(message);
    expect(r.stderr.toString()).toContain("--processes N");
  }
});

/** A copy of pidapp.py in a directory of its own, served by one supervised process. */
function flaky() {
  const dir = mkdtempSync(join(tmpdir(), "bunpy-processes-"));
  copyFileSync(join(FIXTURES, "pidapp.py"), join(dir, "flaky.py"));
  const proc = Bun.spawn([process.execPath, CLI, "serve", "flaky:app", "--port", "0", "--processes", "1", "--workers", "1", "--app-dir", dir], { stdout: "pipe", stderr: "pipe" });
  return { dir, proc, out: lineReader(proc.stdout), err: lineReader(proc.stderr) };
}

const exit = (url: string) => fetch(new URL("/exit", url), { headers: { connection: "close" } }).catch(() => undefined); // the process ends without answering

test("a process that keeps dying is started again after a delay that doubles", async () => {
  const { proc, out, err } = flaky();
  try {
    const { pids, url } = await started(out);
    expect(out.seen.at(-1)).toContain("(asgi, 1 process × 1 ");
    let pid = pids[0]!;
    for (const delay of ["0.1", "0.2", "0.4"]) {
      await exit(url);
      expect(await err.until(/exited/)).toBe(`bunpy: process ${pid} exited (code 3); starting another in ${delay} s`);
      pid = Number(/process (\d+) started/.exec(await out.until(/process \d+ started/))![1]);
      expect(await pidOf(url)).toBe(pid);
    }
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
    expect(await gone([pid])).toBe(true);
  } finally {
    proc.kill("SIGKILL");
  }
}, 60000);

test("a process that no longer starts (its module broke since) makes the supervisor give up after 5 tries", async () => {
  const { dir, proc, out, err } = flaky();
  try {
    const { url } = await started(out);
    writeFileSync(join(dir, "flaky.py"), 'raise RuntimeError("flaky no longer imports")\n');
    await exit(url);
    expect(await proc.exited).toBe(1);
    const errors = await err.rest();
    expect(errors.filter((l) => /failed to start \(code 1\); starting another in/.test(l)).length).toBe(4);
    expect(errors.filter((l) => l.includes("flaky no longer imports")).length).toBe(5);
    expect(errors.at(-1)).toMatch(/failed to start \(code 1\), 5 times in a row: giving up/);
  } finally {
    proc.kill("SIGKILL");
  }
}, 60000);

test("a port something already listens on (even with SO_REUSEPORT, which would let the processes share it) is refused", async () => {
  const other = Bun.serve({ port: 0, reusePort: true, fetch: () => new Response("other") });
  try {
    const { proc, err } = serve("pidapp:app", "--port", String(other.port), "--processes", "2", "--workers", "1");
    expect(await proc.exited).toBe(1);
    expect((await err.rest()).join("\n")).toContain(`bunpy: cannot listen on 127.0.0.1:${other.port} (EADDRINUSE): is another server there?`);
  } finally {
    other.stop(true);
  }
});

test("--workers 2 in worker mode (the default on 3.11) says that the contexts share a GIL and points to --processes", async () => {
  const { proc, out, err } = serve("pidapp:app", "--port", "0", "--workers", "2", "--mode", "worker");
  try {
    await out.until(/bunpy: serving pidapp:app \(asgi, 2 worker contexts\)/);
    expect(await err.until(/share one GIL/)).toContain("--processes N runs N processes");
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
  } finally {
    proc.kill("SIGKILL");
  }
}, 30000);
