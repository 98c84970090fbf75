/**
 * What a context can reach in JS: the functions registered with py.register (limited by
 * the sandbox's `jsFunctions`), and bunpy's own registered functions and message channels,
 * which act only for the context a request, socket, stream or listener belongs to. Each
 * test has a sandboxed context name another's ids and checks it got nothing and changed
 * nothing.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { closeSync, fstatSync, mkdtempSync, openSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { py, type Pool } from "../src/index.ts";
import { closedAfterAll } from "./helpers.ts";

const { keep } = closedAfterAll();
const sandboxed = async (jsFunctions?: string[]) =>
  keep(await py.context({ mode: "worker", sandbox: jsFunctions === undefined ? {} : { jsFunctions } }));

const PROBE = `
import asyncio, bunpy
def call(name, *args):
    try:
        return ["ok", bunpy.call(name, *args)]
    except Exception as e:
        return [type(e).__name__, str(e)]
async def read_all(name, ids):
    got = []
    for i in ids:
        try:
            got.append(await bunpy.async_call(name, i))
        except Exception as e:
            got.append(type(e).__name__)
    return got
def send_all(channel, values):
    for v in values:
        bunpy.send(channel, v)
`;

describe("py.register functions and the jsFunctions rule", () => {
  beforeAll(() => {
    py.register("sbx_allowed", (x: number) => x + 1);
    py.register("sbx_secret", () => "secret");
  });
  afterAll(() => {
    py.unregister("sbx_allowed");
    py.unregister("sbx_secret");
  });

  test("without the rule a sandboxed context calls every registered function", async () => {
    const ctx = await sandboxed();
    await ctx.exec(PROBE);
    expect(await ctx.call("__main__", "call", ["sbx_secret"])).toEqual(["ok", "secret"]);
  });

  test("with jsFunctions it calls the listed ones only", async () => {
    const ctx = await sandboxed(["sbx_allowed"]);
    await ctx.exec(PROBE);
    expect(await ctx.call("__main__", "call", ["sbx_allowed", 1])).toEqual(["ok", 2]);
    const [kind, message] = (await ctx.call("__main__", "call", ["sbx_secret"])) as [string, string];
    expect(kind).not.toBe("ok");
    expect(message).toContain('"sbx_secret" is not in this context\'s sandbox jsFunctions');
  });

  test("shared: false refuses bunpy.shared, which JS and every context share", async () => {
    const open = await sandboxed();
    await open.exec("import bunpy\nbunpy.shared.set('sbx_key', 41)");
    const closed = keep(await py.context({ mode: "worker", sandbox: { shared: false } }));
    await closed.exec(`
import bunpy
def attempts():
    out = []
    for f in (lambda: bunpy.shared.get("sbx_key"), lambda: bunpy.shared.set("sbx_key", 0), lambda: bunpy.shared.keys()):
        try:
            out.append(["ok", f()])
        except PermissionError as e:
            out.append(["refused", str(e)])
    return out
`);
    const got = (await closed.call("__main__", "attempts", [])) as [string, string][];
    expect(got.map(([k]) => k)).toEqual(["refused", "refused", "refused"]);
    expect(got[0]![1]).toContain("rule: no shared");
    expect(await open.eval("bunpy.shared.get('sbx_key')")).toBe(41);
  });

  test("bad jsFunctions are a TypeError", async () => {
    await expect(py.context({ sandbox: { jsFunctions: "x" as never } })).rejects.toThrow(/jsFunctions must be an array of strings/);
  });
});

describe("bunpy's own functions and channels act for their owner only", () => {
  let pool: Pool;
  let app: Awaited<ReturnType<typeof py.asgi>>;
  let server: ReturnType<typeof Bun.serve>;
  const dir = mkdtempSync(join(tmpdir(), "bunpy-sbx-"));

  beforeAll(async () => {
    writeFileSync(
      join(dir, "sbxapp.py"),
      `
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": m.get("text") or ""})
    n = 0
    while True:
        m = await receive()
        n += len(m.get("body", b""))
        if not m.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(n).encode()})

class Echo:
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(data)
`,
    );
    app = await py.asgi("sbxapp:app", { pool: { size: 1, mode: "worker" }, path: [dir] });
    server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch, websocket: app.websocket });
    pool = await py.pool({ size: 1, mode: "worker" });
    await pool.execAll(`import sys\nsys.path.insert(0, ${JSON.stringify(dir)})`);
  });
  afterAll(async () => {
    server.stop(true);
    await app.close();
    await pool.close();
  });

  test("a streamed request body is read by the context serving it, not by another naming its id", async () => {
    const thief = await sandboxed();
    await thief.exec(PROBE);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const chunk = new Uint8Array(100_000).fill(7);
    const body = new ReadableStream<Uint8Array>({
      async start(c) {
        c.enqueue(chunk);
        await gate; // the rest after the thief tried
        c.enqueue(chunk);
        c.close();
      },
    });
    const res = fetch(`http://127.0.0.1:${server.port}/`, { method: "POST", body, duplex: "half" } as RequestInit);
    await Bun.sleep(100); // the app is waiting for more of the body now
    const stolen = (await thief.call("__main__", "read_all", ["__bunpy_asgi_read", Array.from({ length: 40 }, (_, i) => i + 1)])) as unknown[];
    release();
    expect(stolen.every((x) => x === null)).toBe(true);
    expect(await (await res).text()).toBe("200000");
  });

  test("a websocket's frames are sent by the context serving it only", async () => {
    const thief = await sandboxed();
    await thief.exec(PROBE);
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/`);
    const got: string[] = [];
    await new Promise<void>((r) => (ws.onopen = () => r()));
    ws.onmessage = (e) => got.push(String(e.data));
    // [rid, kind 0 (text), data] for every id the thief might guess; then a real round trip
    await thief.call("__main__", "send_all", ["__bunpy_ws", Array.from({ length: 40 }, (_, i) => [i + 1, 0, "spoofed"])]);
    const echoed = new Promise<void>((r) => (ws.onmessage = (e) => (got.push(String(e.data)), r())));
    ws.send("hello");
    await echoed;
    ws.close();
    expect(got).toEqual(["hello"]);
  });

  test("a listener's hand-off message from another context closes and hands nothing", async () => {
    const listener = await pool.listen({ port: 0, protocol: "sbxapp:Echo" });
    const file = join(dir, "keep.txt");
    writeFileSync(file, "x");
    const fd = openSync(file, "r");
    try {
      const thief = await sandboxed();
      await thief.exec(PROBE);
      // [listener id, to, fd, data]: "to" 999 is no context, so JS would close the fd
      await thief.call("__main__", "send_all", ["__bunpy_handoff", Array.from({ length: 20 }, (_, i) => [i + 1, 999, fd, new Uint8Array()])]);
      expect(fstatSync(fd).size).toBe(1); // still open
    } finally {
      closeSync(fd);
      await listener.close();
    }
  });

  test("the inline runner's entry point is the main interpreter's only", async () => {
    const thief = await sandboxed();
    await thief.exec(PROBE);
    // make sure the inline runner exists (it registers the name)
    const inline = await py.asgi("sbxapp:app", { mode: "inline", path: [dir] });
    try {
      const [kind] = (await thief.call("__main__", "call", ["__bunpy_inline_async", 1, "sbx_any"])) as [string];
      expect(kind).not.toBe("ok");
    } finally {
      await inline.close();
    }
  });

  test("a py.iter source cannot be pulled by a context that guesses its name", async () => {
    const owner = keep(await py.context({ mode: "worker" }));
    const thief = await sandboxed();
    await thief.exec(PROBE);
    await owner.exec("def total(it):\n    return sum(it)");
    const pending = owner.call("__main__", "total", [py.iter([1, 2, 3, 4])]);
    const tries = (await thief.call("__main__", "read_all", ["__bunpy_iter_1", [0]])) as unknown[];
    expect(tries[0]).not.toEqual([[1, 2, 3, 4], true]);
    expect(await pending).toBe(10);
  });
});
