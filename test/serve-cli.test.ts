// `bunpy serve MODULE:APP`: serves over a real socket, logs access lines, exits 0 on
// SIGTERM after a graceful shutdown; bad arguments exit 2 with the usage.
import { expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const CLI = resolve(import.meta.dir, "../src/cli.ts");
const FIXTURES = resolve(import.meta.dir, "fixtures/serve");

async function firstLine(stream: ReadableStream<Uint8Array>): Promise<{ line: string; rest: Promise<string> }> {
  const reader = stream.getReader();
  const dec = new TextDecoder();
  let buf = "";
  while (!buf.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value);
  }
  const rest = (async () => {
    let more = buf.slice(buf.indexOf("\n") + 1);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return more;
      more += dec.decode(value);
    }
  })();
  return { line: buf.split("\n")[0]!, rest };
}

test("serves an ASGI app, logs access, stops gracefully on SIGTERM", async () => {
  const proc = Bun.spawn([process.execPath, CLI, "serve", "rawapp:app", "--port", "0", "--workers", "1", "--app-dir", FIXTURES, "--access-log"], {
    stdout: "pipe",
    stderr: "inherit",
    env: process.env,
  });
  const { line, rest } = await firstLine(proc.stdout);
  const url = /on (http:\/\/\S+)/.exec(line)?.[1];
  expect(line).toContain("serving rawapp:app (asgi, 1 ");
  expect(url).toBeDefined();
  const slow = fetch(new URL("/stream?n=500", url)).then((r) => r.text());
  expect(await (await fetch(new URL("/hello", url))).text()).toBe("Hello, world!");
  proc.kill("SIGTERM");
  expect((await slow).split("\n").length - 1).toBe(500); // in flight when SIGTERM came: finished
  expect(await proc.exited).toBe(0);
  const out = await rest;
  expect(out).toMatch(/INFO: {5}\S+ - "GET \/hello HTTP\/1.1" 200/);
  expect(out).toContain("bunpy: stopped");
}, 30000);

test("--mode inline: the app runs in the main interpreter; --workers with it is a usage error", async () => {
  const proc = Bun.spawn([process.execPath, CLI, "serve", "rawapp:app", "--port", "0", "--mode", "inline", "--app-dir", FIXTURES], { stdout: "pipe", stderr: "inherit" });
  const { line, rest } = await firstLine(proc.stdout);
  expect(line).toContain("(asgi, inline: the main interpreter on Bun's thread)");
  const url = /on (http:\/\/\S+)/.exec(line)![1]!;
  expect(await (await fetch(new URL("/hello", url))).text()).toBe("Hello, world!");
  expect((await (await fetch(new URL("/stream?n=3", url))).text()).split("\n").length - 1).toBe(3);
  proc.kill("SIGTERM");
  expect(await proc.exited).toBe(0);
  expect(await rest).toContain("bunpy: stopped");
  const bad = Bun.spawnSync([process.execPath, CLI, "serve", "rawapp:app", "--mode", "inline", "--workers", "2"], { stderr: "pipe" });
  expect(bad.exitCode).toBe(2);
  expect(bad.stderr.toString()).toContain("--workers does not apply to --mode inline");
}, 30000);

test("a WSGI app is detected; bad arguments exit 2 with the usage", async () => {
  const proc = Bun.spawn([process.execPath, CLI, "serve", "wsgiapp:application", "--port", "0", "--workers", "1", "--app-dir", FIXTURES], { stdout: "pipe", stderr: "inherit" });
  const { line } = await firstLine(proc.stdout);
  expect(line).toContain("(wsgi, 1 ");
  const url = /on (http:\/\/\S+)/.exec(line)![1]!;
  expect(await (await fetch(new URL("/hello", url))).text()).toBe("Hello, WSGI!");
  proc.kill("SIGINT");
  expect(await proc.exited).toBe(0);
  const bad = Bun.spawnSync([process.execPath, CLI, "serve", "--port", "x", "a:b"], { stderr: "pipe" });
  expect(bad.exitCode).toBe(2);
  expect(bad.stderr.toString()).toContain("--port: expected an integer");
  expect(Bun.spawnSync([process.execPath, CLI, "serve", "a:b", "--reload-dir", "."], { stderr: "pipe" }).stderr.toString()).toContain("--reload-dir needs --reload");
}, 30000);

test("--reload: a changed .py file restarts the server with the new code; a broken one waits for the fix", async () => {
  const dir = mkdtempSync(join(tmpdir(), "bunpy-reload-"));
  const version = (v: string) =>
    writeFileSync(join(dir, "live.py"), `async def app(scope, receive, send):\n    if scope["type"] != "http":\n        return\n    await send({"type": "http.response.start", "status": 200, "headers": []})\n    await send({"type": "http.response.body", "body": b"${v}"})\n`);
  version("v1");
  const proc = Bun.spawn([process.execPath, CLI, "serve", "live:app", "--port", "0", "--workers", "1", "--app-dir", dir, "--reload"], { stdout: "pipe", stderr: "pipe" });
  const lines = lineReader(proc.stdout);
  const errors = lineReader(proc.stderr);
  try {
    const url1 = /on (http:\/\/\S+)/.exec(await lines.until(/serving live:app/))![1]!;
    expect(await (await fetch(url1)).text()).toBe("v1");
    version("v2");
    const url2 = /on (http:\/\/\S+)/.exec(await lines.until(/serving live:app/))![1]!;
    expect(await (await fetch(url2)).text()).toBe("v2");
    writeFileSync(join(dir, "live.py"), "def broken(:\n"); // a syntax error: the child fails to start
    await errors.until(/SyntaxError/);
    await errors.until(/the server exited \(code 1\); waiting for a change/);
    version("v3");
    await errors.until(/live.py changed; reloading/);
    const url3 = /on (http:\/\/\S+)/.exec(await lines.until(/serving live:app/))![1]!;
    expect(await (await fetch(url3)).text()).toBe("v3");
  } finally {
    proc.kill("SIGTERM");
  }
  expect(await proc.exited).toBe(0);
  expect(errors.seen.filter((l) => l.includes("live.py changed; reloading")).length).toBe(3);
}, 60000);

/** Reads a stream line by line: until(re) resolves with the next line matching re; `seen`
    keeps every line read so far. */
function lineReader(stream: ReadableStream<Uint8Array>): { until(re: RegExp): Promise<string>; seen: string[] } {
  const reader = stream.getReader();
  const dec = new TextDecoder();
  let buf = "";
  const seen: string[] = [];
  return {
    seen,
    async until(re: RegExp): Promise<string> {
      for (;;) {
        const nl = buf.indexOf("\n");
        if (nl >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          seen.push(line);
          if (re.test(line)) return line;
          continue;
        }
        const { value, done } = await reader.read();
        if (done) throw new Error(`the stream ended before a line matching ${re}`);
        buf += dec.decode(value);
      }
    },
  };
}
