// pool.listen: a listening socket per context on one port (SO_REUSEPORT), connections
// served on the contexts' loops, and connections handed from one context to another
// (bunpy.hand_off) with no byte lost or reordered. Real sockets on loopback.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { resolve } from "node:path";
import { py, type Pool } from "../src/index.ts";
import { hasOwnGil } from "./helpers.ts";

const FIXTURES = resolve(import.meta.dir, "fixtures/listen");
const mode = hasOwnGil ? "owngil" : "worker";

/** Opens a connection, writes `data`, ends the writing side, reads until the server closes. */
function exchange(port: number, data: string | Uint8Array, half = true): Promise<Buffer> {
  return new Promise((ok, fail) => {
    const chunks: Buffer[] = [];
    const s: Socket = connect(port, "127.0.0.1", () => {
      s.write(data);
      if (half) s.end();
    });
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("end", () => ok(Buffer.concat(chunks)));
    s.on("error", fail);
  });
}

let pool: Pool;
let idents: string[];
beforeAll(async () => {
  pool = await py.pool({ size: 2, mode });
  await pool.execAll(`import sys\nsys.path.insert(0, ${JSON.stringify(FIXTURES)})\nimport threading`);
  idents = (await Promise.all(pool.contexts.map((c) => c.eval("threading.get_ident()")))).map(String);
});
afterAll(async () => {
  await pool?.close();
});

describe("pool.listen", () => {
  test("every context listens on one port; the kernel spreads connections over them", async () => {
    const l = await pool.listen({ port: 0, protocol: "protocols:Echo" });
    try {
      expect(l.port).toBeGreaterThan(0);
      const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => exchange(l.port, `hello ${i}\n`)));
      const served = new Set<string>();
      answers.forEach((a, i) => {
        const [ident, ...rest] = a.toString().trim().split(" ");
        expect(rest.join(" ")).toBe(`hello ${i}`);
        served.add(ident!);
      });
      expect([...served].sort()).toEqual([...idents].sort()); // both contexts served some
    } finally {
      await l.close();
    }
  });

  test("close() stops accepting in every context; a connection already made lives on", async () => {
    const l = await pool.listen({ port: 0, protocol: "protocols:Echo" });
    const open = connect(l.port, "127.0.0.1");
    const line = () => new Promise<string>((ok) => open.once("data", (d) => ok(d.toString())));
    await new Promise((ok) => open.on("connect", ok));
    // a round trip first: the context has accepted the connection (one still waiting in a
    // closed socket's accept queue is reset by the kernel)
    let answer = line();
    open.write("first\n");
    expect(await answer).toEndWith(" first\n");
    await l.close();
    await expect(exchange(l.port, "late\n")).rejects.toThrow(/ECONNREFUSED/);
    answer = line();
    open.write("still here\n");
    expect(await answer).toEndWith(" still here\n");
    open.destroy();
  });

  test("a context that replaces a dead one listens too", () => {
    const r = Bun.spawnSync([process.execPath, resolve(import.meta.dir, "fixtures/listen-replace.ts")], { stdout: "pipe", stderr: "pipe", timeout: 60_000 });
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(r.stdout.toString().trim().split("\n").pop()!)).toEqual({ replaced: 1, servedByBoth: true });
  });

  test("bad options are TypeErrors; an unknown factory rejects with the PythonError", async () => {
    await expect(pool.listen({ port: -1, protocol: "protocols:Echo" })).rejects.toThrow(TypeError);
    await expect(pool.listen({ port: 0, protocol: "no colon" })).rejects.toThrow(TypeError);
    await expect(pool.listen({ port: 0, protocol: "protocols:Nope" })).rejects.toThrow(/AttributeError/);
  });
});

describe("hand-off between contexts", () => {
  test("a connection routed by its first line goes to the context it names, with every byte in order", async () => {
    const l = await pool.listen({ port: 0, protocol: "protocols:Handed" });
    try {
      // 1 MB written at once behind the routing line: part of it is read by the first
      // context, the rest by the one it is handed to
      const payload = Buffer.alloc(1 << 20);
      for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + (i >> 10)) & 0xff;
      for (const to of [0, 1, 1, 0]) {
        const out = await exchange(l.port, Buffer.concat([Buffer.from(`to=${to}\n`), payload]));
        const nl = out.indexOf(10);
        expect(out.subarray(0, nl).toString()).toBe(`served by ${idents[to]}`);
        const echoed = out.subarray(nl + 1);
        expect(echoed.length).toBe(payload.length);
        expect(echoed.equals(payload)).toBe(true);
      }
    } finally {
      await l.close();
    }
  });

  test("a connection handed to a context that closed first is closed, not leaked", async () => {
    const p = await py.pool({ size: 2, mode });
    await p.execAll(`import sys\nsys.path.insert(0, ${JSON.stringify(FIXTURES)})`);
    const l = await p.listen({ port: 0, protocol: "protocols:Handed" });
    try {
      await p.contexts[1]!.close(); // its listener goes with its loop: context 0 accepts
      const fds = () => readdirSync("/proc/self/fd").length;
      const before = fds();
      for (let i = 0; i < 20; i++) {
        // context 0 hands it on; the call to context 1 fails without running: the client
        // sees the connection end instead of waiting forever
        const out = await exchange(l.port, "to=1\nlost\n", false);
        expect(out.length).toBe(0);
      }
      expect(fds()).toBeLessThanOrEqual(before + 2);
    } finally {
      await l.close().catch(() => {});
      await p.close();
    }
  });

  test("closing the pool closes live connections (the client sees the end), nothing hangs", async () => {
    const p = await py.pool({ size: 2, mode });
    await p.execAll(`import sys\nsys.path.insert(0, ${JSON.stringify(FIXTURES)})`);
    const l = await p.listen({ port: 0, protocol: "protocols:Echo" });
    const sockets = await Promise.all(
      Array.from({ length: 10 }, () => new Promise<Socket>((ok) => { const s = connect(l.port, "127.0.0.1", () => ok(s)); })),
    );
    const ended = sockets.map((s) => new Promise<void>((ok) => { s.on("close", () => ok()); s.on("error", () => {}); s.resume(); }));
    await p.close();
    await Promise.all(ended);
  });
});
