// `bunpy serve MODULE:APP`: serves over a real socket, logs access lines, exits 0 on
// SIGTERM after a graceful shutdown; bad arguments exit 2 with the usage.
import { expect, test } from "bun:test";
import { resolve } from "node:path";

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
  expect(Bun.spawnSync([process.execPath, CLI, "serve", "a:b", "--reload"], { stderr: "pipe" }).stderr.toString()).toContain("--reload is not supported yet");
}, 30000);
