// A hostile pass over `bunpy serve` (src/cli-serve.ts, cli-supervise.ts, serve-app.ts): odd
// arguments and signals at odd times. Real processes, real sockets.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { lineReader } from "./fixtures/serve/lines.ts";

const CLI = resolve(import.meta.dir, "../src/cli.ts");
const FIXTURES = resolve(import.meta.dir, "fixtures/serve");

function serve(...args: string[]) {
  const proc = Bun.spawn([process.execPath, CLI, "serve", ...args, "--app-dir", FIXTURES], { stdout: "pipe", stderr: "pipe" });
  return { proc, out: lineReader(proc.stdout), err: lineReader(proc.stderr) };
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

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
  const { py } = await import("../src/index.ts");
  const app = await py.wsgi("slowwsgi:application", { pool: { size: 1, mode: "worker" }, path: [FIXTURES] });
  const slow = Promise.resolve(app.fetch(new Request("http://x/?s=6"))).then(async (r: Response) => `${r.status} ${await r.text()}`);
  await Bun.sleep(200);
  await app.close({ timeout: 3e9 });
  expect(await slow).toBe("200 slept");
}, 30000);
