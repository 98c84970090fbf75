// pool.listen and bunpy.hand_off used carelessly or with hostile intent: a connection must
// be served by one context at most, and nothing may leak (fds). Real sockets on loopback.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { connect } from "node:net";
import { resolve } from "node:path";
import { py, type Listener, type Pool } from "../src/index.ts";
import { contextModes } from "./helpers.ts";

const FIXTURES = resolve(import.meta.dir, "fixtures/listen");

/** Writes `data` on a new connection and collects what comes back until the server closes
    it or `idleMs` pass without a byte (a connection served twice stays open). */
function exchange(port: number, data: string, idleMs = 500): Promise<{ out: string; closed: boolean }> {
  return new Promise((ok) => {
    let out = "";
    const s = connect(port, "127.0.0.1", () => s.write(data));
    let timer = setTimeout(() => done(false), idleMs);
    const done = (closed: boolean) => {
      clearTimeout(timer);
      s.destroy();
      ok({ out, closed });
    };
    s.on("data", (d) => {
      out += d.toString();
      clearTimeout(timer);
      timer = setTimeout(() => done(false), idleMs);
    });
    s.on("close", () => done(true));
    s.on("error", () => done(true));
  });
}

const fds = () => readdirSync("/proc/self/fd").length;

for (const mode of contextModes)
  describe(`hand-off (${mode})`, () => {
    let pool: Pool;
    let l: Listener;
    beforeAll(async () => {
      pool = await py.pool({ size: 2, mode });
      await pool.execAll(`import sys\nsys.path.insert(0, ${JSON.stringify(FIXTURES)})`);
      l = await pool.listen({ port: 0, protocol: "hostile:Hostile" });
    });
    afterAll(async () => {
      await l?.close();
      await pool?.close();
    });

    // worker contexts share the main interpreter's modules: one list for all of them
    const errors = async () =>
      (await Promise.all((mode === "worker" ? pool.contexts.slice(0, 1) : pool.contexts).map((c) => c.eval("__import__('hostile').errors")))).flat() as string[];

    test("a connection handed off twice is served by one context only: the second hand_off raises", async () => {
      const before = fds();
      for (let i = 0; i < 4; i++) {
        const { out } = await exchange(l.port, "cmd=twice\nhello");
        // served once ("served by" once, by whichever took it), never by both contexts
        expect(out.split("served by").length - 1).toBeLessThanOrEqual(1);
      }
      expect((await errors()).filter((e) => e.startsWith("twice: RuntimeError")).length).toBe(4);
      expect(fds()).toBeLessThanOrEqual(before + 2);
    });

    test("a transport closed or aborted first cannot be handed off (RuntimeError), the client sees the end", async () => {
      const before = fds();
      for (const cmd of ["after-close", "after-abort"]) {
        const { out, closed } = await exchange(l.port, `cmd=${cmd}\nhello`);
        expect(out).toBe("");
        expect(closed).toBe(true);
        expect((await errors()).some((e) => e.startsWith(`${cmd}: RuntimeError`))).toBe(true);
      }
      expect(fds()).toBeLessThanOrEqual(before + 2);
    });
  });

test("after listener.close(), a connection it accepted cannot be handed off (ValueError in the protocol): the client sees the end, nothing hangs", async () => {
  const pool = await py.pool({ size: 2, mode: contextModes[0] });
  try {
    await pool.execAll(`import sys\nsys.path.insert(0, ${JSON.stringify(FIXTURES)})`);
    const l = await pool.listen({ port: 0, protocol: "protocols:Handed" });
    const s = connect(l.port, "127.0.0.1");
    await new Promise((ok) => s.on("connect", ok));
    s.write("to="); // accepted; the routing line is not complete yet
    await Bun.sleep(100);
    await l.close();
    const closed = new Promise<void>((ok) => s.on("close", () => ok()));
    s.on("error", () => {});
    s.resume();
    s.write("1\nhello");
    await closed;
  } finally {
    await pool.close();
  }
});

test("a pool closed with its listener still open is let go: the hand-off relay does not keep it (and its contexts) alive", async () => {
  const pools: WeakRef<Pool>[] = [];
  const openAndClose = async () => {
    const pool = await py.pool({ size: 1, mode: contextModes[0] });
    await pool.execAll(`import sys\nsys.path.insert(0, ${JSON.stringify(FIXTURES)})`);
    await pool.listen({ port: 0, protocol: "protocols:Echo" }); // never closed itself
    await pool.close();
    pools.push(new WeakRef(pool));
  };
  for (let i = 0; i < 4; i++) await openAndClose();
  for (let i = 0; i < 10; i++) {
    Bun.gc(true);
    await Bun.sleep(10);
  }
  // the stack is scanned conservatively: the last one may still be seen as referenced
  expect(pools.filter((r) => r.deref() !== undefined).length).toBeLessThanOrEqual(1);
});
