// ASGI conformance: each test states the rule of the ASGI spec (3.0; HTTP and WebSocket
// spec 2.4; lifespan 2.0) it checks, against py.asgi on a real Bun.serve socket. Most
// checks run inside the app (test/fixtures/serve/conformance.py), which reports what it
// found wrong; what only a client can see is checked here. test/serve-asgi.test.ts covers
// the behaviour around the rules (streaming bodies, back-pressure, closing, frameworks).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { py, type AsgiApp } from "../src/index.ts";
import { hasOwnGil } from "./helpers.ts";
import { openUntil, rawExchange } from "./fixtures/serve/http.ts";

const FIXTURES = resolve(import.meta.dir, "fixtures/serve");
const poolMode = hasOwnGil ? "owngil" : "worker";
const shutdowns: string[] = [];
const stopListening = py.on("conformance", (v) => shutdowns.push(v as string));
afterAll(() => stopListening());

// every rule is checked against a pool context and against inline mode (the main interpreter on this thread)
for (const mode of [poolMode, "inline"] as const) describe(`mode ${mode}`, () => {

let app: AsgiApp;
let server: ReturnType<typeof Bun.serve>;
let base: string;

beforeAll(async () => {
  // one context: the app's own records (events, lifespan state) are in one place
  app = await py.asgi("conformance:app", options());
  server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch, websocket: app.websocket });
  base = `http://127.0.0.1:${server.port}`;
});
afterAll(async () => {
  server?.stop(true);
  await app?.close();
});

function options() {
  return mode === "inline" ? { mode, path: [FIXTURES] } : { pool: { size: 1 }, mode, path: [FIXTURES] };
}

async function check(rule: string, init?: RequestInit): Promise<{ ok: boolean; problems: string[]; seen?: number }> {
  const r = await fetch(`${base}/check/${rule}`, init);
  expect(r.status).toBe(200);
  return (await r.json()) as { ok: boolean; problems: string[] };
}

async function appEvents(): Promise<string[]> {
  const expr = "__import__('conformance').events";
  return (app.pool === undefined ? py.eval(expr) : await app.pool.contexts[0]!.eval(expr)) as string[];
}

async function untilEvent(prefix: string): Promise<string | undefined> {
  for (let i = 0; i < 200; i++) {
    const hit = (await appEvents()).find((e) => e.startsWith(prefix));
    if (hit !== undefined) return hit;
    await Bun.sleep(10);
  }
  return undefined;
}

describe("lifespan", () => {
  test("the lifespan scope has asgi.version 3.0 and a state dict; lifespan.startup comes first", async () => {
    expect(await check("lifespan")).toEqual({ ok: true, problems: [] });
  });

  test("state: every request gets a shallow copy of the lifespan state (replaced keys do not carry over; shared objects do)", async () => {
    const a = await check("state");
    const b = await check("state");
    expect([a.ok, b.ok]).toEqual([true, true]);
    expect(b.seen).toBe(a.seen! + 1);
  });

  test("lifespan.shutdown is sent at close, after startup.complete, and the app's shutdown.complete ends it", async () => {
    const other = await py.asgi("conformance:app", options());
    const before = shutdowns.length;
    await other.close();
    await Bun.sleep(20); // messages are delivered from the event loop
    expect(shutdowns.slice(before)).toEqual(["shutdown"]);
  });
});

describe("http", () => {
  test("scope: type, asgi.version, http_version, uppercase method, scheme, str path, bytes raw_path and query_string, lowercase byte header pairs, client, server, state, extensions — all of the spec's types", async () => {
    expect(await check("scope", { method: "POST", body: "x", headers: { "X-Mixed-Case": "v" } })).toEqual({ ok: true, problems: [] });
    expect(await check("scope?q=%20")).toEqual({ ok: true, problems: [] });
  });

  test("http.request: body defaults to b'' and more_body to False; a request without a body gives one empty message", async () => {
    expect(await check("request-defaults")).toEqual({ ok: true, problems: [] });
  });

  test("receive() after the body and the response: http.disconnect", async () => {
    expect(await check("body-then-disconnect", { method: "POST", body: "x".repeat(100000) })).toMatchObject({ ok: true });
    expect(await untilEvent("after-response:")).toBe("after-response: http.disconnect");
  });

  test("send() on a closed connection raises a subclass of OSError", async () => {
    const { socket } = await openUntil(server.port!, "GET /check/send-after-disconnect HTTP/1.1\r\nHost: x\r\n\r\n", "first");
    socket.destroy();
    expect(await untilEvent("send-after-disconnect:")).toBe("send-after-disconnect: OSError");
  });

  test("http.response.body before http.response.start is an error in the app", async () => {
    expect(await check("body-before-start")).toEqual({ ok: true, problems: [] });
  });

  test("an unknown message type is an error in the app", async () => {
    expect(await check("unknown-message")).toEqual({ ok: true, problems: [] });
  });

  test("http.response.start: the status and the headers (repeated ones too) reach the client as sent", async () => {
    const r = await fetch(`${base}/check/status-and-headers`);
    expect(r.status).toBe(418);
    expect(r.headers.get("x-one")).toBe("1");
    expect(r.headers.getSetCookie()).toEqual(["a=1", "b=2"]);
    expect(await r.text()).toBe("teapot");
  });

  test("more_body: True streams the body; a final message without more_body ends it", async () => {
    const out = await rawExchange(server.port!, "GET /check/streaming HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    expect(out.toLowerCase()).toContain("transfer-encoding: chunked");
    expect(out).toContain("part0;");
    expect(out).toEndWith("0\r\n\r\n"); // the chunked body's proper end
    const body = out.slice(out.indexOf("\r\n\r\n") + 4).replace(/\r\n[0-9a-f]+\r\n/g, "").replace(/^[0-9a-f]+\r\n/, "");
    expect(body.startsWith("part0;part1;part2;")).toBe(true);
  });

  test("HEAD: the server sends the headers and no body", async () => {
    const out = await rawExchange(server.port!, "HEAD /check/status-and-headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    expect(out).toStartWith("HTTP/1.1 418");
    expect(out).not.toContain("teapot");
  });
});

describe("websocket", () => {
  test("scope: scheme ws, no method, subprotocols a list of str; websocket.connect first; text and bytes frames; the client's close code reaches the app", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`, ["chat", "superchat"]);
    const got: unknown[] = [];
    const three = new Promise<void>((ok) => {
      ws.onmessage = (e) => {
        got.push(typeof e.data === "string" ? e.data : [...new Uint8Array(e.data as ArrayBuffer)]);
        if (got.length === 3) ok();
      };
    });
    ws.binaryType = "arraybuffer";
    await new Promise((ok) => (ws.onopen = ok));
    expect(ws.protocol).toBe("chat"); // the subprotocol the app accepted
    ws.send("hi");
    ws.send(new Uint8Array([1, 2]));
    await three;
    expect(got).toEqual(["[]", "HI", [1, 2, 33]]); // "[]": the app found nothing wrong in the scope
    ws.close(4001);
    expect(await untilEvent("ws-disconnect")).toBe("ws-disconnect 4001");
  });
});
});
