// WSGI apps served by Bun.serve through py.wsgi, over real sockets: a raw WSGI app
// (test/fixtures/serve/wsgiapp.py) and Django from the local pip index.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { py, type ServedApp } from "../src/index.ts";
import { hasOwnGil } from "./helpers.ts";
import { openUntil, rawExchange } from "./fixtures/serve/http.ts";
import { testVenv } from "./fixtures/venv.ts";

const FIXTURES = resolve(import.meta.dir, "fixtures/serve");
const mode = hasOwnGil ? "owngil" : "worker";

describe("raw WSGI app", () => {
  let app: ServedApp;
  let server: ReturnType<typeof Bun.serve>;
  let base: string;
  beforeAll(async () => {
    app = await py.wsgi("wsgiapp:application", { pool: { size: 2 }, mode, path: [FIXTURES] });
    server = Bun.serve({ port: 0, hostname: "127.0.0.1", routes: { "/mnt/*": app.mount("/mnt") }, fetch: app.fetch });
    base = `http://127.0.0.1:${server.port}`;
  });
  afterAll(async () => {
    server?.stop(true);
    await app?.close();
  });

  test("hello", async () => {
    const r = await fetch(`${base}/hello`);
    expect(r.status).toBe(200);
    expect(r.headers.get("x-dup")).toBe("a");
    expect(await r.text()).toBe("Hello, WSGI!");
  });

  test("environ (PEP 3333)", async () => {
    const e = (await (await fetch(`${base}/environ?a=%20b`, { method: "POST", body: "xyz", headers: { "X-Test": "t", "Content-Type": "text/plain" } })).json()) as any;
    expect(e).toMatchObject({
      REQUEST_METHOD: "POST",
      SCRIPT_NAME: "",
      PATH_INFO: "/environ",
      QUERY_STRING: "a=%20b",
      SERVER_PORT: String(server.port),
      SERVER_PROTOCOL: "HTTP/1.1",
      CONTENT_TYPE: "text/plain",
      CONTENT_LENGTH: "3",
      HTTP_X_TEST: "t",
      "wsgi.url_scheme": "http",
      "wsgi.version": [1, 0],
    });
    expect(e.REMOTE_ADDR).toContain("127.0.0.1");
  });

  test("an HTTP/1.0 request without Host: PATH_INFO and QUERY_STRING from its target, SERVER_NAME from the server", async () => {
    const out = await rawExchange(server.port!, "GET /environ?q=1 HTTP/1.0\r\n\r\n");
    const e = JSON.parse(out.slice(out.indexOf("\r\n\r\n") + 4));
    expect([e.PATH_INFO, e.QUERY_STRING, e.SERVER_PORT]).toEqual(["/environ", "q=1", String(server.port)]);
    expect(typeof e.SERVER_NAME).toBe("string");
  });

  test("mounted: SCRIPT_NAME is the mount, PATH_INFO the rest", async () => {
    const e = (await (await fetch(`${base}/mnt/environ`)).json()) as any;
    expect(e.SCRIPT_NAME).toBe("/mnt");
    expect(e.PATH_INFO).toBe("/environ");
  });

  test("wsgi.input: readline and read, small and streamed (large) bodies", async () => {
    expect(await (await fetch(`${base}/echo`, { method: "POST", body: "line one\nrest" })).json()).toEqual({ first: 9, total: 13 });
    const big = new Uint8Array(3 << 20).fill(65);
    expect(await (await fetch(`${base}/echo`, { method: "POST", body: big })).json()).toEqual({ first: 3 << 20, total: 3 << 20 });
  });

  test("iterables are streamed and close() is called; write() works", async () => {
    const t = await (await fetch(`${base}/stream?n=10`)).text();
    expect(t.length).toBe(300000);
    expect(t.slice(-6)).toBe("000009");
    expect(await (await fetch(`${base}/write`)).text()).toBe("written and returned");
    let closed: string[] = [];
    for (let i = 0; i < 50 && closed.length === 0; i++) {
      closed = (await Promise.all(app.pool!.contexts.map((c) => c.eval("__import__('wsgiapp').closed")))).flat();
      if (closed.length === 0) await Bun.sleep(20);
    }
    expect(closed).toContain("/stream");
  });

  test("close() is called when the client goes away mid-stream", async () => {
    // worker contexts share the main interpreter's modules: one list for all
    const own = mode === "worker" ? app.pool!.contexts.slice(0, 1) : app.pool!.contexts;
    const before = (await Promise.all(own.map((c) => c.eval("len(__import__('wsgiapp').closed)")))).reduce((a, b) => a + b, 0);
    const { socket } = await openUntil(server.port!, "GET /stream?n=1000 HTTP/1.1\r\nHost: x\r\n\r\n", "000001");
    socket.destroy();
    let after = before;
    for (let i = 0; i < 100 && after === before; i++) {
      await Bun.sleep(20);
      after = (await Promise.all(own.map((c) => c.eval("len(__import__('wsgiapp').closed)")))).reduce((a, b) => a + b, 0);
    }
    expect(after).toBe(before + 1);
    const left = await Promise.all(app.pool!.contexts.map((c) => c.eval("len(__import__('bunpy._wsgi')._wsgi._streams())")));
    expect(left).toEqual(app.pool!.contexts.map(() => 0)); // no stream left behind
  });

  test("start_response with exc_info before the body replaces the status; errors are a 500", async () => {
    const r = await fetch(`${base}/exc-info`);
    expect(r.status).toBe(500);
    expect(await r.text()).toBe("handled: oops");
    const e = await fetch(`${base}/error`);
    expect(e.status).toBe(500);
    expect(await e.text()).toBe("Internal Server Error");
  });

  // what the contexts print on stderr while `f` runs (sys.stderr swapped for a buffer)
  async function stderrOf(f: () => Promise<void>): Promise<string> {
    const own = mode === "worker" ? app.pool!.contexts.slice(0, 1) : app.pool!.contexts;
    await Promise.all(own.map((c) => c.exec("import io, sys\n_saved_err = sys.stderr\nsys.stderr = io.StringIO()")));
    try {
      await f();
      return (await Promise.all(own.map((c) => c.eval("sys.stderr.getvalue()")))).join("");
    } finally {
      await Promise.all(own.map((c) => c.exec("sys.stderr = _saved_err")));
    }
  }

  test("an error after the head is sent ends the connection without a clean end, and its traceback is printed", async () => {
    const err = await stderrOf(async () => {
      const r = await fetch(`${base}/fail-mid`);
      expect(r.status).toBe(200);
      await expect(r.text()).rejects.toThrow();
    });
    expect(err).toContain("bunpy: exception in WSGI application (after the response started)");
    expect(err).toContain("RuntimeError: mid-stream boom");
    expect(app.inFlight).toBe(0);
  });

  test("an exception from the iterable's close() is printed; the complete response stands", async () => {
    const err = await stderrOf(async () => {
      const r = await fetch(`${base}/close-raises`);
      expect(r.status).toBe(200);
      expect(await r.text()).toBe("complete");
    });
    expect(err).toContain("exception in the WSGI iterable's close()");
    expect(err).toContain("OSError: close boom");
  });

  test("header names with underscores are dropped (they could pass for a dashed header)", async () => {
    const r = await rawExchange(server.port!, "GET /headers HTTP/1.1\r\nHost: x\r\nX-User: real\r\nX_User: forged\r\nX_Other: y\r\nConnection: close\r\n\r\n");
    const body = JSON.parse(r.slice(r.indexOf("\r\n\r\n") + 4));
    expect(body).toEqual({ HTTP_X_USER: "real" });
  });

  test("many requests in flight across the pool", async () => {
    const rs = await Promise.all(Array.from({ length: 40 }, () => fetch(`${base}/hello`).then((r) => r.text())));
    expect(rs.every((t) => t === "Hello, WSGI!")).toBe(true);
    expect(app.inFlight).toBe(0);
  });

  test("py.serve detects WSGI", async () => {
    const s = await py.serve({ app: "wsgiapp:application", port: 0, pool: { size: 1 }, mode, path: [FIXTURES] });
    try {
      expect(s.app.interface).toBe("wsgi");
      expect(await (await fetch(new URL("/hello", s.url))).text()).toBe("Hello, WSGI!");
    } finally {
      await s.close();
    }
  });
});

const venv = testVenv();
const skip = "skip" in venv ? venv.skip : undefined;
if (skip) console.warn(`serve-wsgi: Django tests skipped: ${skip}`);
const djangoMode = /^3\.1[2-9]\./.test(py.version) ? "owngil" : "worker"; // see serve-asgi.test.ts

describe.skipIf(skip !== undefined)("Django via WSGI", () => {
  test("a template view, a form POST, a streaming response", async () => {
    const app = await py.wsgi("djsite.app:wsgi", { pool: { size: 1 }, mode: djangoMode, path: [FIXTURES, (venv as { site: string }).site] });
    const server = Bun.serve({ port: 0, fetch: app.fetch });
    const base = `http://127.0.0.1:${server.port}`;
    try {
      expect(await (await fetch(`${base}/hello/?name=WSGI`)).text()).toBe("<h1>Hello WSGI</h1><p>/hello/</p>");
      const r = await fetch(`${base}/submit/`, { method: "POST", body: new URLSearchParams({ name: "Ada", age: "36" }) });
      expect(await r.text()).toBe("got Ada and 36");
      expect(await (await fetch(`${base}/stream/`)).text()).toBe("line 0\nline 1\nline 2\n");
      expect((await fetch(`${base}/nope/`)).status).toBe(404);
    } finally {
      server.stop(true);
      await app.close();
    }
  }, 60000);
});
