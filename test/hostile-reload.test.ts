// `bunpy serve --reload` treated roughly: the watched directory deleted under it (and made
// again), saves in a storm, a signal while a reload is under way. The supervisor must say
// what happened, never die of a stack trace, and leave no process behind.
import { expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "./fixtures/serve/cli.ts";
import { lineReader } from "./fixtures/serve/lines.ts";

function app(dir: string, body: string): void {
  writeFileSync(
    join(dir, "live.py"),
    `async def app(scope, receive, send):\n    if scope["type"] != "http":\n        return\n    await send({"type": "http.response.start", "status": 200, "headers": []})\n    await send({"type": "http.response.body", "body": b"${body}"})\n`,
  );
}

function reloading(dir: string) {
  const proc = Bun.spawn([process.execPath, CLI, "serve", "live:app", "--port", "0", "--workers", "1", "--app-dir", dir, "--reload"], { stdout: "pipe", stderr: "pipe" });
  return { proc, out: lineReader(proc.stdout), err: lineReader(proc.stderr) };
}

const url = (line: string) => /on (http:\/\/\S+)/.exec(line)![1]!;

test("--reload: the watched directory deleted is said in one line (no stack trace); made again, it is watched again and the app reloads", async () => {
  const dir = mkdtempSync(join(tmpdir(), "bunpy-reload-rm-"));
  app(dir, "v1");
  const { proc, out, err } = reloading(dir);
  try {
    expect(await (await fetch(url(await out.until(/serving live:app/)))).text()).toBe("v1");
    rmSync(dir, { recursive: true, force: true });
    await err.until(/was deleted: no changes are seen until it is back/);
    mkdirSync(dir);
    app(dir, "v2");
    await err.until(/is back/);
    expect(await (await fetch(url(await out.until(/serving live:app/)))).text()).toBe("v2");
    // still watched: a change reloads
    app(dir, "v3");
    expect(await (await fetch(url(await out.until(/serving live:app/)))).text()).toBe("v3");
  } finally {
    proc.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  }
  expect(await proc.exited).toBe(0);
  const stderr = [...err.seen, ...(await err.rest())].join("\n");
  expect(stderr).not.toContain("TypeError");
}, 60000);
