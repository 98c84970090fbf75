/**
 * Hostile Python code against bunpy's serving machinery: garbage on its message channels,
 * odd callables as apps.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { py } from "../src/index.ts";
import { contextModes } from "./helpers.ts";

for (const mode of contextModes)
  test(`garbage on __bunpy_ws and __bunpy_handoff (from a sandboxed ${mode} context, the app's and the listener's own) is dropped; nothing is thrown uncaught`, () => {
    // before: null on either channel threw in bunpy's listener, which the hub reports as an
    // uncaught error: that ends a Bun process (a sandboxed context could end the server)
    const r = Bun.spawnSync([process.execPath, join(import.meta.dir, "fixtures", "hostile-hub-garbage.ts"), mode], {
      stdout: "pipe",
      stderr: "pipe",
      timeout: 60_000,
      env: { ...process.env },
    });
    const out = r.stdout.toString().trim().split("\n").pop() ?? "";
    expect(r.stderr.toString()).not.toMatch(/uncaught|unhandled/);
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(out)).toMatchObject({ first: "python: one", uncaught: 0, alive: true });
  });

const FIXTURES = join(import.meta.dir, "fixtures", "serve");

describe("apps that misbehave get a 500, not a wrong response", () => {
  const get = async (target: string, iface: "asgi" | "wsgi") => {
    const options = { pool: { size: 1, mode: "worker" as const }, path: [FIXTURES] };
    const app = iface === "wsgi" ? await py.wsgi(target, options) : await py.asgi(target, options);
    try {
      const r = await app.fetch(new Request("http://x/"));
      return { status: r.status, headers: Object.fromEntries([...r.headers].filter(([k]) => k.startsWith("x-") || k === "null")), body: await r.text() };
    } finally {
      await app.close();
    }
  };
  const quiet = <T>(f: () => Promise<T>): Promise<T> => {
    // the app's traceback is printed on stderr: not this test's output
    const write = process.stderr.write;
    process.stderr.write = () => true;
    return f().finally(() => (process.stderr.write = write));
  };

  test("WSGI: a header name that is not a str, a value that is not a str, a status that is not a number", async () => {
    for (const t of ["w_none_name", "w_int_value", "w_status_word"])
      expect({ t, ...(await quiet(() => get(`hostile_apps:${t}`, "wsgi"))) }).toMatchObject({ t, status: 500, headers: {} });
    expect(await get("hostile_apps:w_list_pair", "wsgi")).toEqual({ status: 200, headers: { "x-a": "1" }, body: "body" });
  });

  test("WSGI: a bad status still closes the iterable", async () => {
    const r = await quiet(() => get("hostile_apps:w_bad_status_closes", "wsgi"));
    expect(r.status).toBe(500);
    // a worker pool runs in the main interpreter: its module is this one
    expect(py.eval("__import__('hostile_apps').ClosingBody.closed")).toBe(1);
  });

  test("ASGI: a header that is not a (name, value) pair does not shift the others", async () => {
    for (const t of ["a_short_pair", "a_long_pair", "a_balanced_pairs"])
      expect({ t, ...(await quiet(() => get(`hostile_apps:${t}`, "asgi"))) }).toMatchObject({ t, status: 500, headers: {} });
    expect(await get("hostile_apps:a_good", "asgi")).toEqual({ status: 200, headers: { "x-a": "1", "x-b": "2" }, body: "body" });
    // any iterable of pairs: a generator's headers were read twice, and lost
    expect(await get("hostile_apps:a_generator", "asgi")).toEqual({ status: 200, headers: { "x-a": "1", "x-b": "2" }, body: "body" });
  });

  test("an app whose __signature__ raises: a TypeError saying to give the interface; with it, it is served", async () => {
    const e = await py.serve({ app: "hostile_apps:sig_raises", port: 0, hostname: "127.0.0.1", pool: { size: 1, mode: "worker" }, path: [FIXTURES] }).catch((x: unknown) => x);
    expect(String(e)).toMatch(/cannot tell which interface .* RuntimeError: no signature for you.*interface/);
    // and when its repr raises as well, the message names its type
    const r = await py.serve({ app: "hostile_apps:sig_and_repr_raise", port: 0, hostname: "127.0.0.1", pool: { size: 1, mode: "worker" }, path: [FIXTURES] }).catch((x: unknown) => x);
    expect(String(r)).toMatch(/cannot tell which interface a SigAndReprRaise object speaks .* RuntimeError: no signature for you/);
    const s = await py.serve({ app: "hostile_apps:sig_raises", interface: "asgi3", port: 0, hostname: "127.0.0.1", pool: { size: 1, mode: "worker" }, path: [FIXTURES] });
    try {
      expect(await (await fetch(`http://127.0.0.1:${s.port}/`)).text()).toBe("body");
    } finally {
      await s.close();
    }
  });
});

test("bunpy serve: an empty TLS file exits 2 with the usage, not an uncaught TypeError", () => {
  const dir = mkdtempSync(join(tmpdir(), "bunpy-hostile-tls-"));
  const empty = join(dir, "empty.pem");
  writeFileSync(empty, "");
  const cli = join(import.meta.dir, "..", "src", "cli.ts");
  for (const args of [["--ssl-keyfile", empty, "--ssl-certfile", empty]]) {
    const r = Bun.spawnSync([process.execPath, cli, "serve", "rawapp:app", "--app-dir", FIXTURES, "--port", "0", "--workers", "1", ...args], { stderr: "pipe", timeout: 30_000 });
    expect(r.stderr.toString()).toContain(`--ssl-keyfile: ${empty} is empty`);
    expect(r.stderr.toString()).toContain("usage: bunpy serve");
    expect(r.exitCode).toBe(2);
  }
});

for (const appMode of [contextModes[0], "inline"] as const)
  for (const target of ["ws_flood", "ws_flood_two"])
  test(`websocket: a client that does not read for a while gets every frame the app sent (${appMode}, ${target})`, async () => {
    // Bun drops frames past its backpressureLimit (16 MiB): the app's send() used to go on
    // regardless, and the frames were lost without a word. ws_flood_two sends from two
    // tasks at once: both wait in send(), and one of them used to wait for ever
    const options = appMode === "inline" ? { mode: "inline" as const, path: [FIXTURES] } : { pool: { size: 1, mode: appMode }, path: [FIXTURES] };
    const app = await py.asgi(`hostile_apps:${target}`, options);
    const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch, websocket: app.websocket });
    const sock = connect(server.port!, "127.0.0.1");
    try {
      let got = 0, head = "", upgraded = false;
      sock.on("data", (d: Buffer) => {
        if (upgraded) return void (got += d.length);
        head += d.toString("latin1");
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return;
        upgraded = true;
        got += head.length - end - 4;
        sock.pause(); // reads nothing for a while: the kernel's buffers fill, then Bun's
      });
      await new Promise((ok) => sock.on("connect", ok));
      sock.write("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
      await Bun.sleep(1500);
      sock.resume();
      const expected = 512 * (65536 + 10) + 5; // frames of 64 KiB (10-byte headers), "END"
      for (let waited = 0; got < expected && waited < 20_000; waited += 50) await Bun.sleep(50);
      expect(got).toBe(expected);
    } finally {
      sock.destroy();
      server.stop(true);
      await app.close();
    }
  }, 30_000);

test("app targets: Unicode module and attribute names are served (Python allows them); what is not a dotted name is refused before any import", async () => {
  const dir = mkdtempSync(join(tmpdir(), "bunpy-unicode-app-"));
  writeFileSync(
    join(dir, "café_app.py"),
    "async def приложение(scope, receive, send):\n    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n    await send({'type': 'http.response.body', 'body': 'ok ☕'.encode()})\n",
  );
  const app = await py.asgi("café_app:приложение", { path: [dir] });
  try {
    expect(await (await app.fetch(new Request("http://x/"))).text()).toBe("ok ☕");
  } finally {
    await app.close();
  }
  for (const bad of ["1app:app", "app:", "a..b:c", "a:b()", "a b:c", "os:system;x"])
    await expect(py.asgi(bad, { path: [dir] })).rejects.toThrow(/expected "module:attribute"/);
});
