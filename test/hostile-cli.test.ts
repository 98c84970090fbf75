// A hostile pass over `bunpy serve` (src/cli-serve.ts, cli-supervise.ts, serve-app.ts): odd
// arguments and signals at odd times. Real processes, real sockets.
import { expect, test } from "bun:test";
import { py } from "../src/index.ts";
import { alive, CLI, FIXTURES, serve } from "./fixtures/serve/cli.ts";

// the shim is built (if sources changed) here, not in a child process that a test times
py.eval("1");

// setTimeout fires at once for a delay past 2^31 - 1 ms (~24.8 days): a grace period that
// long must mean "wait", not "kill now"
for (const processes of [[], ["--processes", "1"]])
  test(`--timeout-graceful-shutdown past setTimeout's range (${processes.length ? "supervised" : "one process"}): a slow request in flight still completes on SIGTERM`, async () => {
    const { proc, out } = serve("pidapp:app", "--port", "0", "--workers", "1", "--timeout-graceful-shutdown", "3000000", ...processes);
    try {
      const url = /on (https?:\/\/\S+)/.exec(await out.until(/bunpy: serving /))![1]!;
      const slow = fetch(new URL("/slow?s=6", url), { headers: { connection: "close" } }).then(async (r) => `${r.status} ${await r.text()}`);
      const at = /slow request in (\d+)/.exec(await out.until(/pidapp: slow request in/))![1]!;
      proc.kill("SIGTERM");
      expect(await slow).toBe(`200 ${at}`);
      expect(await proc.exited).toBe(0);
      expect(alive(Number(at))).toBe(false);
    } finally {
      proc.kill("SIGKILL");
    }
  }, 60000);

test("app.close({ timeout }) past setTimeout's range waits for a WSGI request in flight", async () => {
  const app = await py.wsgi("slowwsgi:application", { pool: { size: 1, mode: "worker" }, path: [FIXTURES] });
  const slow = Promise.resolve(app.fetch(new Request("http://x/?s=6"))).then(async (r: Response) => `${r.status} ${await r.text()}`);
  await Bun.sleep(200);
  await app.close({ timeout: 3e9 });
  expect(await slow).toBe("200 slept");
}, 30000);

test("odd arguments: a usage error (exit code 2) naming the flag, never a stack trace", () => {
  const cases: [string[], string][] = [
    [["pidapp:app", "--port", "70000"], "--port: expected an integer ≤ 65535, got 70000"],
    [["pidapp:app", "--port", ""], '--port: expected an integer ≥ 0, got ""'],
    [["pidapp:app", "--port", "1e3"], '--port: expected an integer ≥ 0, got "1e3"'],
    [["pidapp:app", "--workers", "2000"], "--workers: expected an integer ≤ 1024, got 2000"],
    [["pidapp:app", "--workers", "abc"], '--workers: expected an integer ≥ 1, got "abc"'],
    [["pidapp:app", "--workers", "-1"], '--workers: expected an integer ≥ 1, got "-1"'],
    [["pidapp:app", "--workers", "0x10"], '--workers: expected an integer ≥ 1, got "0x10"'],
    [["pidapp:app", "--processes", "99999"], "--processes: expected an integer ≤ 1024, got 99999"],
    [["pidapp"], "expected MODULE:APP (e.g. myapp:app, pkg.main:app), got pidapp"],
    [["../../etc/passwd:app"], "expected MODULE:APP (e.g. myapp:app, pkg.main:app), got ../../etc/passwd:app"],
    [["..:app"], "expected MODULE:APP (e.g. myapp:app, pkg.main:app), got ..:app"],
  ];
  for (const [args, message] of cases) {
    const r = Bun.spawnSync([process.execPath, CLI, "serve", ...args, "--app-dir", FIXTURES], { stdout: "pipe", stderr: "pipe", timeout: 30_000 });
    const err = r.stderr.toString();
    expect({ args, code: r.exitCode, first: err.split("\n")[0] }).toEqual({ args, code: 2, first: `bunpy serve: ${message}` });
    expect(err).not.toMatch(/\n\s+at /);
  }
});

test("a port in use: exit code 1 and one line saying so, no stack trace", async () => {
  const taken = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("taken") });
  try {
    const r = Bun.spawn([process.execPath, CLI, "serve", "pidapp:app", "--port", String(taken.port), "--workers", "1", "--app-dir", FIXTURES], {
      stdout: "pipe",
      stderr: "pipe",
    });
    const [code, err] = await Promise.all([r.exited, new Response(r.stderr).text()]);
    expect(code).toBe(1);
    expect(err).toContain(`bunpy serve: cannot listen on 127.0.0.1 port ${taken.port}:`);
    expect(err).not.toMatch(/\n\s+at /);
  } finally {
    taken.stop(true);
  }
}, 30000);

test("an app whose lifespan shutdown blocks in C: SIGTERM still ends the server (the context is abandoned), exit code 0", async () => {
  const { proc, out } = serve("stuckshutdown:app", "--port", "0", "--workers", "1", "--timeout-graceful-shutdown", "0");
  try {
    await out.until(/bunpy: serving /);
    proc.kill("SIGTERM");
    await out.until(/stuckshutdown: blocking in C/);
    const code = await Promise.race([proc.exited, Bun.sleep(30_000).then(() => "still running")]);
    expect(code).toBe(0);
    expect((await out.rest()).at(-1)).toBe("bunpy: stopped");
  } finally {
    proc.kill("SIGKILL");
  }
}, 40_000);

test("a second SIGINT while the server stops: it exits at once (code 1)", async () => {
  const { proc, out, err } = serve("stuckshutdown:app", "--port", "0", "--workers", "1", "--timeout-graceful-shutdown", "0");
  try {
    await out.until(/bunpy: serving /);
    proc.kill("SIGINT");
    await out.until(/stuckshutdown: blocking in C/);
    proc.kill("SIGINT");
    const code = await Promise.race([proc.exited, Bun.sleep(5_000).then(() => "still running")]);
    expect(code).toBe(1);
    expect(await err.until(/again/)).toBe("bunpy: SIGINT again: exiting now");
  } finally {
    proc.kill("SIGKILL");
  }
}, 40_000);
