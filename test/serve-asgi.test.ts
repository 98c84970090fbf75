// ASGI apps served by Bun.serve through py.asgi, over real sockets: raw ASGI apps
// (test/fixtures/serve/rawapp.py), Starlette and Django from the local pip index.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { resolve } from "node:path";
import { py, type AsgiApp, type AsgiOptions } from "../src/index.ts";
import { hasOwnGil } from "./helpers.ts";
import { openUntil, rawExchange, sequential } from "./fixtures/serve/http.ts";
import { selfSigned } from "./fixtures/serve/tls.ts";
import { testVenv } from "./fixtures/venv.ts";

const FIXTURES = resolve(import.meta.dir, "fixtures/serve");
const mode = hasOwnGil ? "owngil" : "worker";

/** `expr` evaluated where the app runs: in each context of its pool, or in the main interpreter (inline). */
async function evalAll(app: AsgiApp, expr: string): Promise<any[]> {
  return app.pool === undefined ? [py.eval(expr)] : Promise.all(app.pool.contexts.map((c) => c.eval(expr)));
}

/** Options for `size` contexts of the pool mode, or inline mode (no pool). */
function where(m: "owngil" | "worker" | "inline", size: number, path: string[]): AsgiOptions {
  return m === "inline" ? { mode: m, path } : { pool: { size }, mode: m, path };
}

for (const appMode of [mode, "inline"] as const)
describe(`raw ASGI app (${appMode})`, () => {
  let app: AsgiApp;
  let server: ReturnType<typeof Bun.serve>;
  let base: string;
  beforeAll(async () => {
    app = await py.asgi("rawapp:app", where(appMode, 2, [FIXTURES]));
    server = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      routes: { "/api/*": app.mount("/api"), "/js": () => new Response("from JS") },
      fetch: app.fetch,
      websocket: app.websocket,
    });
    base = `http://127.0.0.1:${server.port}`;
  });
  afterAll(async () => {
    server?.stop(true);
    await app?.close();
  });

  test("hello world, with the app's headers", async () => {
    const r = await fetch(`${base}/hello`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("text/plain");
    expect(await r.text()).toBe("Hello, world!");
  });

  test("scope: method, scheme, decoded path, raw_path, query_string, headers as bytes in order, client, server, asgi, state", async () => {
    const r = await fetch(`${base}/a%20b%2Fc/scope?x=1&y=%20z`, { headers: { "X-First": "1", "X-Second": "two" } });
    const s = (await r.json()) as any;
    expect(s.type).toBe("http");
    expect(s.method).toBe("GET");
    expect(s.scheme).toBe("http");
    expect(s.http_version).toBe("1.1");
    expect(s.path).toBe("/a b/c/scope");
    expect(s.raw_path).toBe("/a%20b%2Fc/scope");
    expect(s.query_string).toBe("x=1&y=%20z");
    expect(s.root_path).toBe("");
    expect(s.asgi).toEqual({ version: "3.0", spec_version: "2.4" });
    expect(s.header_types).toEqual(["bytes,bytes"]);
    const names = s.headers.map((h: string[]) => h[0]);
    expect(names).toContain("x-first");
    expect(names.indexOf("x-first")).toBeLessThan(names.indexOf("x-second")); // order kept
    expect(s.headers.find((h: string[]) => h[0] === "x-second")[1]).toBe("two");
    expect(s.client[0]).toContain("127.0.0.1");
    expect(typeof s.client[1]).toBe("number");
    expect(s.server[1]).toBe(server.port);
    // lifespan state, copied shallowly: a request's change does not reach the next one
    expect(s.state).toEqual({ started: "yes" });
    const again = (await (await fetch(`${base}/scope`)).json()) as any;
    expect(again.state).toEqual({ started: "yes" });
  });

  test("mounted under a route: root_path is the mount, path keeps it; JS routes live beside it", async () => {
    const s = (await (await fetch(`${base}/api/scope`)).json()) as any;
    expect(s.root_path).toBe("/api");
    expect(s.path).toBe("/api/scope");
    expect(await (await fetch(`${base}/js`)).text()).toBe("from JS");
  });

  test("request bodies: small ones in one message, large ones streamed in chunks with more_body", async () => {
    const small = (await (await fetch(`${base}/echo`, { method: "POST", body: "x".repeat(1000) })).json()) as any;
    expect(small).toEqual({ total: 1000, chunks: 1 });
    const big = (await (await fetch(`${base}/echo`, { method: "POST", body: new Uint8Array(3 << 20) })).json()) as any;
    expect(big.total).toBe(3 << 20);
    expect(big.chunks).toBeGreaterThan(2);
  });

  test("a chunked upload (no Content-Length) is streamed", async () => {
    const out = await rawExchange(
      server.port!,
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    expect(out).toStartWith("HTTP/1.1 200");
    expect(out).toContain('{"total": 11');
  });

  test("streamed response (more_body) arrives chunked and complete", async () => {
    const r = await fetch(`${base}/stream?n=5`);
    expect(r.headers.get("transfer-encoding")).toBe("chunked");
    expect(await r.text()).toBe([0, 1, 2, 3, 4].map((i) => `chunk ${i}\n`).join(""));
  });

  test("an HTTP/1.0 client, with or without Host, gets its answer (Bun replies in HTTP/1.1, the scope says 1.1)", async () => {
    const out = await rawExchange(server.port!, "GET /hello HTTP/1.0\r\nHost: x\r\n\r\n");
    expect(out).toMatch(/^HTTP\/1\.[01] 200/);
    expect(out).toEndWith("Hello, world!");
    const s = await rawExchange(server.port!, "GET /a/scope?q=1 HTTP/1.0\r\n\r\n"); // no Host: Bun's req.url is "/a/scope?q=1"
    const scope = JSON.parse(s.slice(s.indexOf("\r\n\r\n") + 4));
    expect([scope.http_version, scope.path, scope.query_string]).toEqual(["1.1", "/a/scope", "q=1"]);
  });

  test("HEAD: headers, no body", async () => {
    const out = await rawExchange(server.port!, "HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    expect(out).toStartWith("HTTP/1.1 200");
    expect(out.toLowerCase()).toContain("content-type: text/plain");
    expect(out).not.toContain("Hello");
  });

  test("repeated Set-Cookie headers stay separate; body and more_body default to empty and False", async () => {
    const r = await fetch(`${base}/cookies`);
    expect(r.headers.getSetCookie()).toEqual(["a=1; Path=/", "b=2; Path=/"]);
    expect(await r.text()).toBe("");
  });

  test("a body message after the response is complete raises RuntimeError in the app", async () => {
    expect(await (await fetch(`${base}/twice`)).text()).toBe("once");
    const all = (await evalAll(app, "__import__('rawapp').events")).flat();
    expect(all.some((e: string) => e.startsWith("twice: bunpy: http.response.body after the response was complete"))).toBe(true);
  });

  test("the app call runs in one contextvars Context across its suspensions, a fresh one per request", async () => {
    const rs = await Promise.all(Array.from({ length: 20 }, () => fetch(`${base}/ctxvar`).then((r) => r.text())));
    expect(rs).toEqual(rs.map(() => "mine,unset"));
  });

  test("204 has no body", async () => {
    const r = await fetch(`${base}/status`);
    expect(r.status).toBe(204);
    expect(await r.text()).toBe("");
  });

  test("an error before the response starts is a 500; returning without a response too", async () => {
    const r = await fetch(`${base}/error-before`);
    expect(r.status).toBe(500);
    expect(await r.text()).toBe("Internal Server Error");
    expect((await fetch(`${base}/no-response`)).status).toBe(500);
    expect((await fetch(`${base}/hello`)).status).toBe(200); // the server goes on
  });

  test("an error after the response started closes the connection (no clean end)", async () => {
    const out = await rawExchange(server.port!, "GET /error-after HTTP/1.1\r\nHost: x\r\n\r\n", 2000);
    expect(out).toStartWith("HTTP/1.1 200");
    expect(out).toContain("partial");
    expect(out).not.toContain("\r\n0\r\n\r\n"); // the chunked body never ends properly
  });

  test("client disconnect: send() raises OSError in a streaming app, receive() gets http.disconnect", async () => {
    const a = await openUntil(server.port!, "GET /forever HTTP/1.1\r\nHost: x\r\n\r\n", "xxxx");
    a.socket.destroy();
    const b = await openUntil(server.port!, "GET /wait-disconnect HTTP/1.1\r\nHost: x\r\n\r\n", "start");
    b.socket.destroy();
    let events: string[] = [];
    for (let i = 0; i < 100; i++) {
      // each context has its own module: look in all
      const all = await evalAll(app, "__import__('rawapp').events");
      events = all.flat();
      if (events.includes("forever: OSError") && events.includes("wait-disconnect: http.disconnect")) break;
      await Bun.sleep(50);
    }
    expect(events).toContain("forever: OSError");
    expect(events).toContain("wait-disconnect: http.disconnect");
  });

  test("keep-alive: several requests one after another on one connection", async () => {
    const out = await sequential(server.port!, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 3, "Hello, world!");
    expect(out.length).toBe(3);
    for (const r of out) expect(r).toStartWith("HTTP/1.1 200");
    const streamed = await sequential(server.port!, "GET /stream?n=2 HTTP/1.1\r\nHost: x\r\n\r\n", 3, "0\r\n\r\n");
    for (const r of streamed) expect(r).toContain("chunk 1");
  });

  test("malformed requests get a 400 from Bun and the server goes on", async () => {
    const out = await rawExchange(server.port!, "GARBAGE\r\n\r\n");
    expect(out === "" || out.startsWith("HTTP/1.1 400")).toBe(true);
    const bad = await rawExchange(server.port!, "GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n");
    expect(bad === "" || bad.startsWith("HTTP/1.1 400")).toBe(true);
    expect((await fetch(`${base}/hello`)).status).toBe(200);
  });

  test("Expect: 100-continue: the body sent after the headers reaches the app", async () => {
    const out = await rawExchange(
      server.port!,
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nhello",
    );
    expect(out).toContain("HTTP/1.1 200");
    expect(out).toContain('{"total": 5');
  });

  test("oversized headers are refused by Bun (431/400 or closed), and the server goes on", async () => {
    const out = await rawExchange(server.port!, `GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(200_000)}\r\n\r\n`);
    expect(out === "" || /^HTTP\/1.1 4\d\d/.test(out)).toBe(true);
    expect((await fetch(`${base}/hello`)).status).toBe(200);
  });

  test("a slow client reading a long stream gets all of it (back-pressure, not loss)", async () => {
    const { socket, received } = await openUntil(server.port!, "GET /stream?n=3000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "chunk 0");
    let all = received;
    await Bun.sleep(200); // the app runs ahead only until its queue is full
    await new Promise<void>((done) => {
      socket.on("data", (d) => (all += d.toString("latin1")));
      socket.on("close", () => done());
      socket.resume();
    });
    expect(all).toContain("chunk 2999\n");
    expect(all.split("chunk ").length - 1).toBe(3000);
  });

  test("websocket: accept with subprotocol, text and binary frames both ways, app closes with its code", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`, ["chat", "other"]);
    ws.binaryType = "arraybuffer";
    const got: unknown[] = [];
    const closed = new Promise<{ code: number; reason: string }>((ok) => (ws.onclose = (e) => ok({ code: e.code, reason: e.reason })));
    await new Promise((ok, fail) => ((ws.onopen = ok), (ws.onerror = fail)));
    expect(ws.protocol).toBe("chat");
    const next = () => new Promise<unknown>((ok) => (ws.onmessage = (e) => ok(e.data)));
    got.push(await next());
    ws.send("ping");
    got.push(await next());
    ws.send(new Uint8Array([1, 2, 3]));
    got.push([...new Uint8Array((await next()) as ArrayBuffer)]);
    ws.send("close");
    expect(got).toEqual(["welcome /ws 'yes'", "echo ping", [3, 2, 1]]);
    expect(await closed).toEqual({ code: 4000, reason: "bye" });
  });

  test("websocket: closing before accept is a 403; a client close reaches the app as websocket.disconnect", async () => {
    const denied = await rawExchange(
      server.port!,
      "GET /ws-deny HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    expect(denied).toStartWith("HTTP/1.1 403");
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`);
    await new Promise((ok) => (ws.onmessage = ok));
    ws.close(4321);
    let events: string[] = [];
    for (let i = 0; i < 100 && !events.includes("ws disconnect 4321"); i++) {
      await Bun.sleep(20);
      events = (await evalAll(app, "__import__('rawapp').events")).flat();
    }
    expect(events).toContain("ws disconnect 4321");
  });

  test("websocket denial response (extension): the app answers the upgrade with its own HTTP response", async () => {
    const out = await rawExchange(
      server.port!,
      "GET /ws-denial-response HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    expect(out).toStartWith("HTTP/1.1 401");
    expect(out.toLowerCase()).toContain("www-authenticate: bearer");
    expect(out).toEndWith("log in first");
  });

  test("http.response.pathsend (extension): Bun sends the file; a missing file is the app's OSError and a 500", async () => {
    const s = (await (await fetch(`${base}/scope`)).json()) as { extensions: Record<string, unknown> };
    expect(s.extensions).toEqual({ "http.response.pathsend": {} });
    const file = resolve(FIXTURES, "static.txt");
    const r = await fetch(`${base}/pathsend?${file}`);
    expect(r.status).toBe(200);
    expect(r.headers.get("x-sent")).toBe("by-path");
    expect(await r.text()).toBe(await Bun.file(file).text());
    const head = await fetch(`${base}/pathsend?${file}`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe("");
    // the app's send() raised before anything reached the client: a clean 500
    expect((await fetch(`${base}/pathsend?/no/such/file`)).status).toBe(500);
    const events = (await evalAll(app, "__import__('rawapp').events")).flat();
    expect(events).toContain("pathsend: FileNotFoundError");
  });

  test("many requests in flight across the pool", async () => {
    const rs = await Promise.all(Array.from({ length: 64 }, (_, i) => fetch(`${base}/stream?n=${i % 7}`).then((r) => r.text())));
    rs.forEach((t, i) => expect(t.split("\n").length - 1).toBe(i % 7));
    expect(app.inFlight).toBe(0);
    // nothing is left behind in Python: every request record was dropped
    const left = await evalAll(app, "len(__import__('bunpy._asgi')._asgi._state()[1])");
    expect(left).toEqual(left.map(() => 0));
  });
});

describe("modes", () => {
  test.skipIf(!hasOwnGil)("an app importing an extension that refuses subinterpreters is served in worker contexts, with one line saying so", async () => {
    const warned: string[] = [];
    const warn = console.warn;
    console.warn = (...a: unknown[]) => void warned.push(a.join(" "));
    let app: AsgiApp | undefined;
    try {
      app = await py.asgi("singlephase:app", { pool: { size: 1 }, path: [FIXTURES] });
    } finally {
      console.warn = warn;
    }
    const server = Bun.serve({ port: 0, fetch: app.fetch });
    try {
      expect(app.pool!.mode).toBe("worker");
      expect(warned.join("\n")).toContain("singlephase:app imports an extension that refuses subinterpreters");
      expect(await (await fetch(`http://127.0.0.1:${server.port}/`)).text()).toBe("served");
    } finally {
      server.stop(true);
      await app.close();
    }
  });

  test.skipIf(!hasOwnGil)("with mode: \"owngil\" chosen, such an app is an ImportError", async () => {
    await expect(py.asgi("singlephase:app", { pool: { size: 1 }, mode: "owngil", path: [FIXTURES] })).rejects.toThrow(/ImportError.*_testsinglephase/);
  });
});

describe("routing", () => {
  async function served(route: AsgiOptions["route"], f: (base: string, port: number) => Promise<void>) {
    const app = await py.asgi("rawapp:app", { pool: { size: 2 }, mode, path: [FIXTURES], route });
    const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch });
    try {
      await f(`http://127.0.0.1:${server.port}`, server.port!);
    } finally {
      server.stop(true);
      await app.close();
    }
  }

  test("by key: concurrent requests with one key stay on one context; keys spread over the pool", async () => {
    await served((req) => req.headers.get("x-user") ?? undefined, async (base) => {
      const who = (user: string) => fetch(`${base}/whoami`, { headers: { "x-user": user } }).then((r) => r.text());
      const users = ["ana", "bo", "cy", "dee", "eli", "fay", "gus", "hal"];
      const rounds = await Promise.all(users.map((u) => Promise.all(Array.from({ length: 6 }, () => who(u)))));
      for (const r of rounds) expect(new Set(r).size).toBe(1);
      expect(new Set(rounds.map((r) => r[0])).size).toBe(2); // eight keys land on both contexts
      // without a route, the same concurrent load spreads over both contexts
    });
    await served(undefined, async (base) => {
      const r = await Promise.all(Array.from({ length: 12 }, () => fetch(`${base}/whoami`, { headers: { "x-user": "ana" } }).then((x) => x.text())));
      expect(new Set(r).size).toBe(2);
    });
  });

  test('"connection": the requests of one keep-alive connection are served by one context', async () => {
    await served("connection", async (base, port) => {
      // other clients keep both contexts busy meanwhile (unrouted, the requests would spread)
      let loading = true;
      const load = Array.from({ length: 6 }, async () => {
        while (loading) await (await fetch(`${base}/whoami`)).text();
      });
      const res = await sequential(port, "GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n", 12, ";");
      loading = false;
      await Promise.all(load);
      const idents = res.map((r) => r.slice(r.indexOf("\r\n\r\n") + 4));
      expect(idents.every((x) => /^\d+;$/.test(x))).toBe(true);
      expect(new Set(idents).size).toBe(1);
    });
  });

  test("bad route options are TypeErrors (py.serve's pool is closed again)", async () => {
    await expect(py.asgi("rawapp:app", { pool: { size: 1 }, mode, path: [FIXTURES], route: "cookie" as never })).rejects.toThrow(TypeError);
    const threads = () => readdirSync("/proc/self/task").length;
    const before = threads();
    await expect(py.serve({ app: "rawapp:app", port: 0, pool: { size: 2 }, mode, path: [FIXTURES], route: 5 as never })).rejects.toThrow(TypeError);
    expect(threads()).toBeLessThanOrEqual(before); // the two context threads are gone
  });
});

describe("TLS", () => {
  const tls = selfSigned();

  test.skipIf(!tls)("https and wss (skipped without openssl: apt-get install openssl): the scope says so, bodies and frames cross encrypted", async () => {
    const app = await py.asgi("rawapp:app", { pool: { size: 1 }, mode, path: [FIXTURES] });
    const server = Bun.serve({ port: 0, hostname: "127.0.0.1", tls: { cert: tls!.cert, key: tls!.key }, fetch: app.fetch, websocket: app.websocket });
    try {
      const opts = { tls: { rejectUnauthorized: false } } as RequestInit;
      const scope = (await (await fetch(`https://127.0.0.1:${server.port}/scope`, opts)).json()) as { scheme: string };
      expect(scope.scheme).toBe("https");
      const echo = await (await fetch(`https://127.0.0.1:${server.port}/echo`, { ...opts, method: "POST", body: new Uint8Array(200_000) })).json();
      expect(echo).toMatchObject({ total: 200_000 });
      const ws = new WebSocket(`wss://127.0.0.1:${server.port}/ws`, { tls: { rejectUnauthorized: false } } as never);
      const first = await new Promise<string>((ok, fail) => {
        ws.onmessage = (e) => ok(String(e.data));
        ws.onerror = fail;
      });
      expect(first).toStartWith("welcome /ws");
      ws.close();
    } finally {
      server.stop(true);
      await app.close();
    }
  });
});

describe("sandboxed app", () => {
  test('a "strict" pool reads the app from its path, and the sandbox holds while it serves', async () => {
    // without its path made readable the import failed: No module named 'rawapp'
    const app = await py.asgi("rawapp:app", { pool: { size: 1, sandbox: "strict", mode: hasOwnGil ? "owngil" : "process" }, path: [FIXTURES] });
    const server = Bun.serve({ port: 0, fetch: app.fetch });
    try {
      const base = `http://127.0.0.1:${server.port}`;
      expect(await (await fetch(`${base}/hello`)).text()).toBe("Hello, world!");
      expect((await fetch(`${base}/io?${server.port}`)).status).toBe(500); // no sockets
    } finally {
      server.stop(true);
      await app.close();
    }
  });

  test("a sandboxed app is not offered pathsend (Bun would open the file outside the sandbox, after the app's check)", async () => {
    const app = await py.asgi("rawapp:app", { pool: { size: 1, sandbox: { files: [FIXTURES] } }, mode, path: [FIXTURES] });
    const server = Bun.serve({ port: 0, fetch: app.fetch });
    try {
      const base = `http://127.0.0.1:${server.port}`;
      const s = (await (await fetch(`${base}/scope`)).json()) as { extensions: Record<string, unknown> };
      expect(s.extensions).toEqual({});
      // an app that sends the message anyway gets an error, not a file
      const r = await fetch(`${base}/pathsend?${resolve(FIXTURES, "static.txt")}`);
      expect(r.status).toBe(500);
      // a streamed body is read through JS from the sandboxed context (on 3.12+ an owngil
      // context with an fd table of its own): its own loop's async_call
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          for (let i = 0; i < 4; i++) c.enqueue(new Uint8Array(100_000));
          c.close();
        },
      });
      const echo = await fetch(`${base}/echo`, { method: "POST", body, duplex: "half" } as RequestInit);
      expect(((await echo.json()) as { total: number }).total).toBe(400_000);
    } finally {
      server.stop(true);
      await app.close();
    }
  });
});

describe("lifespan", () => {
  test("an app without lifespan support is served (auto), state is empty", async () => {
    const app = await py.asgi("rawapp:nolifespan", { pool: { size: 1 }, mode, path: [FIXTURES] });
    const server = Bun.serve({ port: 0, fetch: app.fetch });
    try {
      expect(await (await fetch(`http://127.0.0.1:${server.port}/`)).text()).toBe("state=[]");
    } finally {
      server.stop(true);
      await app.close();
    }
  });

  test("close() ends even when the app's lifespan shutdown never finishes", async () => {
    const app = await py.asgi("rawapp:stuck_shutdown", { pool: { size: 1 }, mode, path: [FIXTURES] });
    const server = Bun.serve({ port: 0, fetch: app.fetch });
    try {
      expect(await (await fetch(`http://127.0.0.1:${server.port}/`)).text()).toBe("up");
    } finally {
      server.stop(true);
    }
    await app.close({ timeout: 200 }); // waits a second for the shutdown, then closes anyway
    expect(app.pool!.contexts.every((c) => c.state === "closed")).toBe(true);
  }, 15_000);

  test("an app that takes the startup event and raises failed its startup (auto too): an error, with the traceback", async () => {
    await expect(py.asgi("rawapp:startup_raises", { pool: { size: 1 }, mode, path: [FIXTURES] })).rejects.toThrow(
      /lifespan startup failed: ConnectionError\('database unreachable'\)/,
    );
  });

  test('lifespan: "on" refuses an app without lifespan support', async () => {
    await expect(py.asgi("rawapp:nolifespan", { pool: { size: 1 }, mode, path: [FIXTURES], lifespan: "on" })).rejects.toThrow("lifespan");
  });

  test("startup runs in every context; close() waits for requests in flight, then shuts down, then 503", async () => {
    const shutdowns: string[] = [];
    const stop = py.on("rawapp-lifespan", (v) => shutdowns.push(v === "startup" ? v : `${v} while ${app.inFlight} in flight`));
    const app = await py.asgi("rawapp:app", { pool: { size: 2 }, mode, path: [FIXTURES] });
    const server = Bun.serve({ port: 0, fetch: app.fetch });
    const base = `http://127.0.0.1:${server.port}`;
    try {
      await Bun.sleep(10); // messages are delivered from the event loop
      expect(shutdowns).toEqual(["startup", "startup"]); // one per context
      shutdowns.length = 0;
      const slow = Array.from({ length: 30 }, () => fetch(`${base}/stream?n=200`).then((r) => r.text()));
      while (app.inFlight === 0) await Bun.sleep(1);
      const inFlight = app.inFlight;
      const closing = app.close();
      expect((await fetch(`${base}/hello`)).status).toBe(503);
      // every request in flight at close() finished, complete; those that came later got a 503
      const texts = await Promise.all(slow);
      const complete = texts.filter((t) => t.split("\n").length - 1 === 200).length;
      expect(complete).toBeGreaterThanOrEqual(inFlight);
      expect(texts.filter((t) => t !== "Service Unavailable").length).toBe(complete);
      await closing;
      stop();
      expect(shutdowns).toEqual(["shutdown while 0 in flight", "shutdown while 0 in flight"]); // one per context
    } finally {
      server.stop(true);
      await app.close();
    }
  });

  test("bad targets are typed errors", async () => {
    await expect(py.asgi("no colon", {})).rejects.toThrow(TypeError);
    await expect(py.asgi("rawapp:missing", { pool: { size: 1 }, mode, path: [FIXTURES] })).rejects.toThrow("no attribute");
    await expect(py.asgi("no_such_module_xyz:app", { pool: { size: 1 }, mode })).rejects.toThrow("No module named");
  });
});

describe("py.serve", () => {
  test("detects ASGI, serves, closes", async () => {
    const s = await py.serve({ app: "rawapp:app", port: 0, pool: { size: 1 }, mode, path: [FIXTURES] });
    try {
      expect(s.app.interface).toBe("asgi");
      expect(await (await fetch(new URL("/hello", s.url))).text()).toBe("Hello, world!");
    } finally {
      await s.close();
    }
  });

  test("maxRequestBodySize goes to Bun.serve: a larger body gets 413, the app never sees it", async () => {
    const s = await py.serve({ app: "rawapp:app", port: 0, pool: { size: 1 }, mode, path: [FIXTURES], maxRequestBodySize: 1000 });
    try {
      const ok = await fetch(new URL("/echo", s.url), { method: "POST", body: "x".repeat(1000) });
      expect(((await ok.json()) as { total: number }).total).toBe(1000);
      const big = await fetch(new URL("/echo", s.url), { method: "POST", body: "x".repeat(1001) });
      expect(big.status).toBe(413);
    } finally {
      await s.close();
    }
  });
});

const venv = testVenv();
// Django in owngil contexts where they exist (3.12+), worker contexts on 3.11.
export const djangoMode = /^3\.1[2-9]\./.test(py.version) ? "owngil" : "worker";
const skip = "skip" in venv ? venv.skip : undefined;
if (skip) console.warn(`serve-asgi: Starlette/Django tests skipped: ${skip}`);

for (const appMode of [mode, "inline"] as const)
describe.skipIf(skip !== undefined)(`Starlette (${appMode})`, () => {
  let app: AsgiApp;
  let server: ReturnType<typeof Bun.serve>;
  let base: string;
  beforeAll(async () => {
    app = await py.asgi("starapp:app", where(appMode, 2, [FIXTURES, (venv as { site: string }).site]));
    server = Bun.serve({ port: 0, hostname: "127.0.0.1", routes: { "/sub/*": app.mount("/sub") }, fetch: app.fetch, websocket: app.websocket });
    base = `http://127.0.0.1:${server.port}`;
  }, 60000);
  afterAll(async () => {
    server?.stop(true);
    await app?.close();
  });

  test("routing, path params, query, lifespan state", async () => {
    expect(await (await fetch(`${base}/`)).json()).toEqual({ greeting: "hello from lifespan", root_path: "" });
    expect(await (await fetch(`${base}/items/42?q=x`)).json()).toEqual({ id: 42, q: "x" });
    expect((await fetch(`${base}/items/nope`)).status).toBe(404);
  });

  test("mounted: Starlette routes under root_path", async () => {
    expect(await (await fetch(`${base}/sub/items/7`)).json()).toEqual({ id: 7, q: null });
    expect(await (await fetch(`${base}/sub/`)).json()).toEqual({ greeting: "hello from lifespan", root_path: "/sub" });
  });

  test("StreamingResponse, request.stream(), form, FileResponse", async () => {
    expect(await (await fetch(`${base}/stream`)).text()).toBe("part 0\npart 1\npart 2\npart 3\n");
    expect(await (await fetch(`${base}/upload`, { method: "POST", body: new Uint8Array(500000) })).json()).toEqual({ received: 500000 });
    const form = await fetch(`${base}/form`, { method: "POST", body: new URLSearchParams({ name: "Ada" }) });
    expect(await form.text()).toBe("name=Ada");
    const f = await fetch(`${base}/file`);
    expect(f.status).toBe(200);
    expect(await f.text()).toBe("static file contents\n");
    expect(f.headers.get("content-type")).toStartWith("text/plain");
  });
});

for (const appMode of [mode, "inline"] as const)
describe.skipIf(skip !== undefined)(`Starlette websocket (${appMode})`, () => {
  test("WebSocketRoute: accept, receive_text, send_json with lifespan state, close", async () => {
    const app = await py.asgi("starapp:app", where(appMode, 1, [FIXTURES, (venv as { site: string }).site]));
    const server = Bun.serve({ port: 0, fetch: app.fetch, websocket: app.websocket });
    try {
      const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`);
      const closed = new Promise<number>((ok) => (ws.onclose = (e) => ok(e.code)));
      await new Promise((ok) => (ws.onopen = ok));
      const msg = new Promise<string>((ok) => (ws.onmessage = (e) => ok(String(e.data))));
      ws.send("Ada");
      expect(JSON.parse(await msg)).toEqual({ hello: "Ada", greeting: "hello from lifespan" });
      expect(await closed).toBe(1000);
    } finally {
      server.stop(true);
      await app.close();
    }
  }, 60000);
});

for (const appMode of [djangoMode, "inline"] as const)
describe.skipIf(skip !== undefined)(`Django via ASGI (${appMode})`, () => {
  test("a template view, a form POST, a streaming response", async () => {
    const app = await py.asgi("djsite.app:asgi", where(appMode, 1, [FIXTURES, (venv as { site: string }).site]));
    const server = Bun.serve({ port: 0, fetch: app.fetch });
    const base = `http://127.0.0.1:${server.port}`;
    try {
      expect(await (await fetch(`${base}/hello/?name=Bun`)).text()).toBe("<h1>Hello Bun</h1><p>/hello/</p>");
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

describe("inline mode", () => {
  test("lifespan runs once, in the main interpreter; timers, executor threads and sockets on the inline loop wake it", async () => {
    const startups = "(lambda m: m.events.count('startup') if m else 0)(__import__('sys').modules.get('rawapp'))";
    const before = py.eval(startups) as number;
    const app = await py.asgi("rawapp:app", { mode: "inline", path: [FIXTURES] });
    // a plain JS server for the app to talk to over a real socket from the inline loop
    const peer = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("from the peer") });
    const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch });
    const base = `http://127.0.0.1:${server.port}`;
    try {
      expect(app.mode).toBe("inline");
      expect(app.pool).toBeUndefined();
      expect(py.eval(startups)).toBe(before + 1);
      expect(await (await fetch(`${base}/sleep`)).text()).toBe("slept");
      expect(await (await fetch(`${base}/thread`)).text()).toBe("from a thread");
      const many = await Promise.all(Array.from({ length: 20 }, () => fetch(`${base}/thread`).then((r) => r.text())));
      expect(many).toEqual(many.map(() => "from a thread"));
      const io = await (await fetch(`${base}/io?${peer.port}`)).text();
      expect(io).toStartWith("HTTP/1.1 200");
      expect(io).toEndWith("from the peer");
      // the request ran on this very thread: the main interpreter, inline
      expect(await (await fetch(`${base}/main-thread`)).text()).toBe("True");
      // nothing is left behind: no task record, no request record
      expect(py.eval("len(__import__('bunpy._inline')._inline._tl.tasks)")).toBe(0);
      expect(py.eval("len(__import__('bunpy._asgi')._asgi._state()[1])")).toBe(0);
    } finally {
      server.stop(true);
      peer.stop(true);
      await app.close();
    }
    expect(py.eval("__import__('rawapp').events[-1]")).toBe("shutdown");
  });

  test("two inline apps on one thread share the loop; closing one leaves the other serving", async () => {
    const a = await py.asgi("rawapp:app", { mode: "inline", path: [FIXTURES] });
    const b = await py.asgi("rawapp:nolifespan", { mode: "inline", path: [FIXTURES] });
    const server = Bun.serve({ port: 0, hostname: "127.0.0.1", routes: { "/b/*": b.mount("/b") }, fetch: a.fetch });
    const base = `http://127.0.0.1:${server.port}`;
    try {
      expect(await (await fetch(`${base}/hello`)).text()).toBe("Hello, world!");
      await a.close();
      expect((await fetch(`${base}/hello`)).status).toBe(503);
      expect(await (await fetch(`${base}/b/x`)).text()).toBe("state=[]");
    } finally {
      server.stop(true);
      await b.close();
    }
  });

  test("bad combinations are TypeErrors: pool options with inline, a WSGI app inline", async () => {
    await expect(py.asgi("rawapp:app", { mode: "inline", pool: { size: 2 }, path: [FIXTURES] })).rejects.toThrow(TypeError);
    await expect(py.wsgi("wsgiapp:application", { mode: "inline", path: [FIXTURES] })).rejects.toThrow(/ASGI apps only/);
    await expect(py.serve({ app: "wsgiapp:application", port: 0, mode: "inline", path: [FIXTURES] })).rejects.toThrow(/ASGI apps only/);
  });

  test("py.serve with mode inline", async () => {
    const s = await py.serve({ app: "rawapp:app", port: 0, mode: "inline", path: [FIXTURES] });
    try {
      expect(s.app.mode).toBe("inline");
      expect(await (await fetch(new URL("/hello", s.url))).text()).toBe("Hello, world!");
    } finally {
      await s.close();
    }
  });
});

describe(`a 1 GiB upload is streamed, never held (${mode})`, () => {
  test("the app counts 1 GiB sent as a stream; the process grows by far less than that", async () => {
    const app = await py.asgi("rawapp:app", where(mode, 1, [FIXTURES]));
    // Bun refuses bodies over 128 MiB unless told otherwise (413)
    const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch, maxRequestBodySize: 2 ** 31 });
    try {
      const piece = new Uint8Array(1 << 20).fill(120);
      const total = 1 << 30;
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (sent === total) return c.close();
          sent += piece.length;
          c.enqueue(piece);
        },
      });
      Bun.gc(true);
      const before = process.memoryUsage().rss;
      let peak = before;
      const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
      const r = await fetch(`http://127.0.0.1:${server.port}/echo`, { method: "POST", body, duplex: "half" } as RequestInit);
      const got = (await r.json()) as { total: number; chunks: number };
      clearInterval(sampler);
      expect(got.total).toBe(total);
      expect(got.chunks).toBeGreaterThan(100);
      // the client and the server are this one process: 1 GiB held anywhere would show
      expect(peak - before).toBeLessThan(256 * 1024 * 1024);
    } finally {
      server.stop(true);
      await app.close();
    }
  }, 120_000);
});
