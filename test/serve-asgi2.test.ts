// ASGI 2 (two-callable) apps over real sockets: detected as uvicorn does (a class whose
// instances are not awaitable, a callable of one argument), wrapped, and served in a pool
// and inline: http, a websocket, the lifespan; py.serve and the interface option.
import { describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { py, type AsgiApp, type AsgiOptions } from "../src/index.ts";
import { hasOwnGil } from "./helpers.ts";

const FIXTURES = resolve(import.meta.dir, "fixtures/serve");
const mode = hasOwnGil ? "owngil" : "worker";

function where(m: "owngil" | "worker" | "inline"): AsgiOptions {
  return m === "inline" ? { mode: m, path: [FIXTURES] } : { pool: { size: 2 }, mode: m, path: [FIXTURES] };
}

for (const appMode of [mode, "inline"] as const)
describe(`ASGI 2 class app (${appMode})`, () => {
  test("http and a websocket through the wrapper; the scope says asgi 2.0; lifespan state in every context, shutdown on close", async () => {
    const shutdowns: unknown[] = [];
    const off = py.on("asgi2-lifespan", (v) => void shutdowns.push(v));
    const app: AsgiApp = await py.asgi("asgi2app:App", where(appMode));
    const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch, websocket: app.websocket });
    try {
      expect(app.asgiVersion).toBe("2.0");
      const base = `http://127.0.0.1:${server.port}`;
      const got = (await (await fetch(`${base}/x%20y`, { method: "POST", body: new Uint8Array(100_000) })).json()) as any;
      expect(got).toEqual({ asgi: { version: "2.0", spec_version: "2.4" }, path: "/x y", method: "POST", state: { style: "asgi2 class" }, body: 100_000 });
      // every context ran the startup (each has its own state)
      for (let i = 0; i < 6; i++) expect(((await (await fetch(`${base}/s`)).json()) as any).state).toEqual({ style: "asgi2 class" });

      const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`);
      ws.binaryType = "arraybuffer";
      const frames: unknown[] = [];
      let wake: () => void = () => {};
      ws.onmessage = (e) => {
        frames.push(typeof e.data === "string" ? e.data : [...new Uint8Array(e.data as ArrayBuffer)]);
        wake();
      };
      const closed = new Promise<number>((ok) => (ws.onclose = (e) => ok(e.code)));
      await new Promise((ok, fail) => ((ws.onopen = ok), (ws.onerror = fail)));
      ws.send("hi");
      ws.send(new Uint8Array([1, 2, 3]));
      while (frames.length < 3) await new Promise<void>((ok) => (wake = ok));
      expect(frames).toEqual(["asgi 2.0", "echo hi", [3, 2, 1]]);
      ws.close(1000);
      expect(await closed).toBe(1000);
    } finally {
      server.stop(true);
      await app.close();
    }
    const want = appMode === "inline" ? 1 : 2;
    for (let i = 0; i < 100 && shutdowns.length < want; i++) await Bun.sleep(10); // messages come through the event loop
    off();
    expect(shutdowns).toEqual(appMode === "inline" ? ["shutdown"] : ["shutdown", "shutdown"]);
  });

  test("a function of one argument (no lifespan: it raises for that scope, auto goes on without)", async () => {
    const app = await py.asgi("asgi2app:factory", where(appMode));
    const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch });
    try {
      expect(app.asgiVersion).toBe("2.0");
      expect(await (await fetch(`http://127.0.0.1:${server.port}/f`)).text()).toBe("factory 2.0 /f");
    } finally {
      server.stop(true);
      await app.close();
    }
  });
});

describe("detection", () => {
  test("as uvicorn: class without __await__ → 2, with → 3; async callable → 3; one parameter → 2; two → WSGI; three → 3", () => {
    py.exec(`import sys; sys.path.insert(0, ${JSON.stringify(FIXTURES)}); import asgi2app, bunpy._asgi as _a`);
    const d = (e: string) => py.eval(`_a.detect(${e})`);
    expect(d("asgi2app.App")).toBe("asgi2");
    expect(d("asgi2app.Awaitable3")).toBe("asgi3");
    expect(d("asgi2app.factory")).toBe("asgi2");
    expect(d("asgi2app.sync3")).toBe("asgi3");
    expect(d("asgi2app.wsgi")).toBe("wsgi");
    expect(d("asgi2app.WsgiClass")).toBe("wsgi");
    expect(d("__import__('rawapp').app" as string)).toBe("asgi3");
    expect(d("lambda *a: None")).toBe(null); // cannot tell
  });

  test("py.serve detects ASGI 2 and WSGI; interface forces it; py.asgi refuses an app that looks like WSGI", async () => {
    for (const [app, text, iface] of [
      ["asgi2app:factory", "factory 2.0 /p", "asgi"],
      ["asgi2app:sync3", "factory 3.0 /p", "asgi"],
      ["asgi2app:Awaitable3", "awaitable 3.0", "asgi"],
      ["asgi2app:WsgiClass", "wsgi class", "wsgi"],
    ] as const) {
      const s = await py.serve({ app, port: 0, pool: { size: 1 }, mode, path: [FIXTURES] });
      try {
        expect(s.app.interface).toBe(iface);
        expect(await (await fetch(new URL("/p", s.url))).text()).toBe(text);
      } finally {
        await s.close();
      }
    }
    // forced: a one-argument callable taken for ASGI 3 fails per request (500), as uvicorn's --interface asgi3
    const forced = await py.serve({ app: "asgi2app:factory", interface: "asgi3", port: 0, pool: { size: 1 }, mode, path: [FIXTURES], lifespan: "off" });
    const err = console.error;
    try {
      console.error = () => {};
      expect((await fetch(new URL("/p", forced.url))).status).toBe(500);
    } finally {
      console.error = err;
      await forced.close();
    }
    await expect(py.asgi("asgi2app:wsgi", { pool: { size: 1 }, mode, path: [FIXTURES] })).rejects.toThrow(/looks like a WSGI app/);
    await expect(py.asgi("asgi2app:App", { interface: "wsgi" as never })).rejects.toThrow(TypeError);
  });
});
