// ASGI websockets over real sockets: back-pressure on frames from the client (Bun stops
// reading the socket while wsMaxQueue frames wait for the app).
import { describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { py, type AsgiApp, type AsgiOptions } from "../src/index.ts";
import { hasOwnGil } from "./helpers.ts";

const FIXTURES = resolve(import.meta.dir, "fixtures/serve");
const mode = hasOwnGil ? "owngil" : "worker";

function where(m: "owngil" | "worker" | "inline", extra: AsgiOptions = {}): AsgiOptions {
  return m === "inline" ? { mode: m, path: [FIXTURES], ...extra } : { pool: { size: 1 }, mode: m, path: [FIXTURES], ...extra };
}

/** The most client frames that waited for the app at once, on any open websocket of the app. */
async function peak(app: AsgiApp): Promise<number> {
  const expr = "max((getattr(w, 'peak', 0) for w in __import__('bunpy._asgi', fromlist=['_']) ._state()[1].values()), default=0)";
  return (app.pool === undefined ? py.eval(expr) : await app.pool.contexts[0]!.eval(expr)) as number;
}

/** Opens a websocket; `next()` resolves with the next message. */
async function open(url: string): Promise<{ ws: WebSocket; next(): Promise<unknown> }> {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const queue: unknown[] = [];
  let wake: (() => void) | undefined;
  ws.onmessage = (e) => {
    queue.push(e.data);
    wake?.();
  };
  await new Promise((ok, fail) => ((ws.onopen = ok), (ws.onerror = fail)));
  return {
    ws,
    async next() {
      while (queue.length === 0) await new Promise<void>((ok) => (wake = ok));
      return queue.shift();
    },
  };
}

for (const appMode of [mode, "inline"] as const)
describe(`websocket back-pressure (${appMode})`, () => {
  test("a client flooding frames at an app that reads slowly: the frames waiting in Python stay bounded, all arrive in order", async () => {
    const maxQueue = 8;
    const app = await py.asgi("wsapp:app", where(appMode, { wsMaxQueue: maxQueue }));
    const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch, websocket: app.websocket });
    try {
      const { ws, next } = await open(`ws://127.0.0.1:${server.port}/slow`);
      const n = 300;
      const frame = new Uint8Array(32 * 1024);
      for (let i = 0; i < n; i++) {
        frame.set(new TextEncoder().encode(String(i).padStart(8, "0")));
        ws.send(frame);
      }
      ws.send("end");
      const report = JSON.parse(String(await next())) as { count: number; in_order: boolean; size: number };
      expect(report).toEqual({ count: n, in_order: true, size: n * frame.length });
      // without the pause the app's queue would have held most of the flood (hundreds of
      // frames); with it, maxQueue plus what Bun had read from the socket already
      const most = await peak(app);
      expect(most).toBeGreaterThan(0);
      expect(most).toBeLessThanOrEqual(maxQueue + 24);
      ws.close();
    } finally {
      server.stop(true);
      await app.close();
    }
  }, 30000);
});

test("wsMaxQueue must be an integer ≥ 1", async () => {
  await expect(py.asgi("wsapp:app", { mode: "inline", path: [FIXTURES], wsMaxQueue: 0 })).rejects.toThrow(/wsMaxQueue/);
});

for (const appMode of [mode, "inline"] as const)
describe(`JS and Python websockets on one server (${appMode})`, () => {
  test("a JS websocket route and the app's websocket route on one Bun.serve both echo; each socket reaches only its own handlers", async () => {
    const jsEvents: string[] = [];
    const app = await py.asgi("wsapp:app", where(appMode, {
      websocket: {
        open(ws) {
          jsEvents.push(`open ${(ws.data as { who: string }).who}`);
          ws.send("js hello");
        },
        message(ws, m) {
          ws.send(`js: ${String(m)}`);
        },
        close(ws, code) {
          jsEvents.push(`close ${(ws.data as { who: string }).who} ${code}`);
        },
        drain() {},
        maxPayloadLength: 64 * 1024,
      },
    }));
    const server = Bun.serve<{ who: string }>({
      port: 0,
      hostname: "127.0.0.1",
      fetch(req, server) {
        if (new URL(req.url).pathname === "/js") return server.upgrade(req, { data: { who: "js" } }) ? undefined : new Response("no upgrade", { status: 400 });
        return app.fetch(req, server);
      },
      websocket: app.websocket,
    });
    try {
      const base = `ws://127.0.0.1:${server.port}`;
      const js = await open(`${base}/js`);
      const python = await open(`${base}/echo`);
      expect(await js.next()).toBe("js hello");
      for (let i = 0; i < 3; i++) {
        js.ws.send(`a${i}`);
        python.ws.send(`b${i}`);
      }
      python.ws.send(new Uint8Array([7, 8, 9]));
      expect([await js.next(), await js.next(), await js.next()]).toEqual(["js: a0", "js: a1", "js: a2"]);
      expect([await python.next(), await python.next(), await python.next()]).toEqual(["python: b0", "python: b1", "python: b2"]);
      expect([...new Uint8Array((await python.next()) as ArrayBuffer)]).toEqual([7, 8, 9]);
      expect(await (await fetch(`http://127.0.0.1:${server.port}/plain`)).text()).toBe("python http");
      // the JS handlers' settings are the server's: a frame over maxPayloadLength closes the socket (1009)
      const big = await open(`${base}/js`);
      await big.next();
      const closedBig = new Promise<number>((ok) => (big.ws.onclose = (e) => ok(e.code)));
      big.ws.send(new Uint8Array(100 * 1024));
      expect(await closedBig).toBe(1009);
      const closed = new Promise<number>((ok) => (js.ws.onclose = (e) => ok(e.code)));
      js.ws.close(4001);
      expect(await closed).toBe(4001);
      python.ws.close();
      for (let i = 0; i < 100 && !jsEvents.includes("close js 4001"); i++) await Bun.sleep(10);
      expect(jsEvents.filter((e) => e.startsWith("open"))).toEqual(["open js", "open js"]); // never the app's sockets
      expect(jsEvents).toContain("close js 4001");
    } finally {
      server.stop(true);
      await app.close();
    }
  }, 30000);
});

test("websocket: a handlers object is checked before the app loads", async () => {
  await expect(py.asgi("wsapp:app", { mode: "inline", path: [FIXTURES], websocket: { message: 5 } as never })).rejects.toThrow(/websocket.message: expected a function/);
});
