// `bunpy serve MODULE:APP`: serves over a real socket, logs access lines, exits 0 on
// SIGTERM after a graceful shutdown; bad arguments exit 2 with the usage.
import { expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

import { lineReader } from "./fixtures/serve/lines.ts";
import { selfSigned } from "./fixtures/serve/tls.ts";

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

test("ASGI 2 apps: detected by auto (the banner says asgi2), or chosen with --interface asgi2", async () => {
  for (const args of [["asgi2app:App"], ["asgi2app:factory", "--interface", "asgi2"]]) {
    const proc = Bun.spawn([process.execPath, CLI, "serve", ...args, "--port", "0", "--workers", "1", "--app-dir", FIXTURES], { stdout: "pipe", stderr: "inherit" });
    const { line } = await firstLine(proc.stdout);
    expect(line).toContain(`serving ${args[0]} (asgi2, 1 `);
    const url = /on (http:\/\/\S+)/.exec(line)![1]!;
    const text = await (await fetch(new URL("/two", url))).text();
    expect(text).toContain(args[0] === "asgi2app:App" ? '"version": "2.0"' : "factory 2.0 /two");
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
  }
  const bad = Bun.spawnSync([process.execPath, CLI, "serve", "a:b", "--interface", "asgi4"], { stderr: "pipe" });
  expect(bad.exitCode).toBe(2);
  expect(bad.stderr.toString()).toContain("--interface: expected auto, asgi3, asgi2");
}, 30000);

const tls = selfSigned();
const locked = selfSigned("s3cret");

test.skipIf(!tls || !locked)("--ssl-keyfile/--ssl-certfile serve https (skipped without openssl); an encrypted key with --ssl-keyfile-password", async () => {
  for (const [c, extra] of [[tls!, []], [locked!, ["--ssl-keyfile-password", "s3cret"]]] as const) {
    const proc = Bun.spawn([process.execPath, CLI, "serve", "rawapp:app", "--port", "0", "--workers", "1", "--app-dir", FIXTURES,
      "--ssl-keyfile", c.keyFile, "--ssl-certfile", c.certFile, ...extra], { stdout: "pipe", stderr: "inherit" });
    try {
      const { line } = await firstLine(proc.stdout);
      const url = /on (https:\/\/\S+)/.exec(line)?.[1];
      expect(url).toBeDefined();
      const opts = { tls: { rejectUnauthorized: false } } as RequestInit;
      const scope = (await (await fetch(new URL("/scope", url), opts)).json()) as { scheme: string };
      expect(scope.scheme).toBe("https");
      expect(await (await fetch(new URL("/hello", url), opts)).text()).toBe("Hello, world!");
      await expect(fetch(new URL("/hello", url))).rejects.toThrow(); // the certificate is not trusted by default
    } finally {
      proc.kill("SIGTERM");
    }
    expect(await proc.exited).toBe(0);
  }
}, 30000);

test.skipIf(!tls)("--ssl-ca-certs with --ssl-cert-reqs 2: a client without a certificate the CA signed is refused", async () => {
  const proc = Bun.spawn([process.execPath, CLI, "serve", "rawapp:app", "--port", "0", "--workers", "1", "--app-dir", FIXTURES,
    "--ssl-keyfile", tls!.keyFile, "--ssl-certfile", tls!.certFile, "--ssl-ca-certs", tls!.certFile, "--ssl-cert-reqs", "2"], { stdout: "pipe", stderr: "inherit" });
  try {
    const { line } = await firstLine(proc.stdout);
    const url = /on (https:\/\/\S+)/.exec(line)![1]!;
    await expect(fetch(new URL("/hello", url), { tls: { rejectUnauthorized: false } } as RequestInit)).rejects.toThrow();
    const withCert = { tls: { rejectUnauthorized: false, cert: tls!.cert, key: tls!.key } } as RequestInit;
    expect(await (await fetch(new URL("/hello", url), withCert)).text()).toBe("Hello, world!");
  } finally {
    proc.kill("SIGTERM");
  }
  expect(await proc.exited).toBe(0);
}, 30000);

test("TLS flags (and --threads): a missing file, a key without a certificate and the like exit 2 with the usage", () => {
  const run = (...args: string[]) => Bun.spawnSync([process.execPath, CLI, "serve", "rawapp:app", "--app-dir", FIXTURES, ...args], { stderr: "pipe" });
  const cases: [string[], string][] = [
    [["--ssl-keyfile", "/nonexistent/key.pem", "--ssl-certfile", "/nonexistent/cert.pem"], "--ssl-keyfile: cannot read /nonexistent/key.pem (ENOENT)"],
    [["--ssl-keyfile", FIXTURES + "/static.txt"], "--ssl-keyfile needs --ssl-certfile"],
    [["--ssl-certfile", FIXTURES + "/static.txt"], "--ssl-certfile needs --ssl-keyfile"],
    [["--ssl-keyfile-password", "x"], "--ssl-keyfile-password needs --ssl-keyfile and --ssl-certfile"],
    [["--ssl-keyfile", FIXTURES, "--ssl-certfile", FIXTURES + "/static.txt"], "--ssl-keyfile: cannot read"],
    [["--ssl-cert-reqs", "3"], "--ssl-cert-reqs: expected 0, 1 or 2"],
    [["--threads", "pooled"], "--threads: expected reuse or per-request"],
  ];
  if (locked) // a key that does not decrypt: Bun.serve refuses it, after the app was loaded
    cases.push([["--port", "0", "--workers", "1", "--ssl-keyfile", locked.keyFile, "--ssl-certfile", locked.certFile, "--ssl-keyfile-password", "wrong"], "the TLS key or certificate cannot be used"]);
  for (const [args, message] of cases) {
    const r = run(...args);
    expect(r.exitCode).toBe(2);
    expect(r.stderr.toString()).toContain(message);
    expect(r.stderr.toString()).toContain("usage: bunpy serve");
  }
}, 60_000); // eight Bun processes one after another: past bun test's 5 s on a loaded machine

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
