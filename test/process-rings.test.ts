// Process contexts' shared memory (shim/ring.h, ring.c): frames bigger than a ring, rings
// filled by many calls at once (the socket path behind MARK frames keeps the order), and a
// hostile host whose Python writes over the rings with ctypes: Bun survives, the context
// dies with ContextDiedError naming the violation, a pool replaces it.
import { describe, expect, test } from "bun:test";
import { ContextDiedError, py } from "../src/index.ts";
import { closedAfterAll } from "./helpers.ts";
import { linux } from "./kernel-escapes.ts";

const { keep } = closedAfterAll();
const proc = async () => keep(await py.context({ mode: "process" }));

/** Each ring holds 1 MiB (BP_RING_CAP); the header layout is asserted in ring.h. */
const RING = 1 << 20;
const REQ_HEAD = 192, RES_HEAD = 320, RES_TAIL = 384, DATA = 4096;

/** Python for the host: the address of the shared memory (the memfd's mapping). */
const FIND = `
import ctypes, os, time
def rings():
    for line in open('/proc/self/maps'):
        if 'bunpy-rings' in line:
            return int(line.split('-')[0], 16)
    raise RuntimeError('no ring mapping')
def u64(addr, value):
    ctypes.c_uint64.from_address(addr).value = value
def bell():
    os.write(6, (1).to_bytes(8, 'little'))  # BP_BUN_BELL_FD: wakes the relay thread
`;

describe.skipIf(!linux)("process context rings", () => {
  test("requests and results bigger than a ring go over the socket, in order", async () => {
    const ctx = await proc();
    const big = "x".repeat(3 * RING);
    expect(await ctx.call("builtins", "len", [big])).toBe(big.length);
    const back: string = await ctx.eval(`'y' * ${3 * RING}`);
    expect(back.length).toBe(3 * RING);
    // a message bigger than the ring, between small ones
    const got: number[] = [];
    const off = py.on("rings-big", (v: string | number) => got.push(typeof v === "string" ? v.length : v));
    try {
      await ctx.exec(`import bunpy\nbunpy.send('rings-big', 1)\nbunpy.send('rings-big', 'z' * ${2 * RING})\nbunpy.send('rings-big', 2)`);
      for (let i = 0; i < 100 && got.length < 3; i++) await Bun.sleep(10);
      expect(got).toEqual([1, 2 * RING, 2]);
    } finally {
      off();
    }
  });

  test("many calls at once fill the rings: none is lost, and they run in the order sent", async () => {
    const ctx = await proc();
    await ctx.exec("seen = []\ndef note(i, pad): seen.append(i); return 'r' * len(pad)");
    const pad = "p".repeat(300_000); // four of these fill a ring
    const calls = Array.from({ length: 40 }, (_, i) => ctx.call("__main__", "note", [i, i % 3 === 0 ? pad : "s"]));
    const results: string[] = await Promise.all(calls);
    results.forEach((r, i) => expect(r.length).toBe(i % 3 === 0 ? pad.length : 1));
    expect(await ctx.eval("seen")).toEqual(Array.from({ length: 40 }, (_, i) => i));
  });

  // [what, the Python that writes it, whether the call that writes it sees the death]
  const scribbles: [string, string, boolean][] = [
    ["an impossible result tail", `u64(base + ${RES_TAIL}, 2**64 - 1)`, true],
    ["a result frame longer than what was published", `
head = ctypes.c_uint64.from_address(base + ${RES_HEAD}).value
at = base + ${DATA + RING} + head % ${RING}
ctypes.memset(at, 0, 24)
ctypes.c_uint32.from_address(at).value = 17            # DONE
ctypes.c_uint32.from_address(at + 8).value = 2**31     # len
u64(base + ${RES_TAIL}, head + 24)`, true],
    // found when the next request is written (this call's result still arrives)
    ["a request head that went back", `u64(base + ${REQ_HEAD}, 2**63)`, false],
    ["garbage over the whole header", `ctypes.memset(base, 0xA5, ${DATA})`, true],
  ];

  for (const [what, code, atOnce] of scribbles) {
    test(`a host that writes ${what} into the shared memory is killed; Bun goes on`, async () => {
      const ctx = await proc();
      const other = await proc();
      let died = 0;
      ctx.onDied(() => died++);
      await ctx.exec(FIND + "\nbase = rings()");
      const first = await ctx.exec(`${code}\nbell()\ntime.sleep(${atOnce ? 3 : 0})`).catch((e) => e);
      if (atOnce) expect(first).toBeInstanceOf(ContextDiedError);
      const e = await ctx.eval("1").catch((x) => x);
      expect(e).toBeInstanceOf(ContextDiedError);
      expect((e as Error).message).toMatch(/broke the shared memory's rules|exited with code 70/);
      await expect(ctx.eval("1")).rejects.toBeInstanceOf(ContextDiedError);
      expect(died).toBe(1);
      expect(await other.eval("40 + 2")).toBe(42);
      expect(await py.eval("1 + 1")).toBe(2);
      await ctx.close();
    });
  }

  test("a pool replaces a host that broke the rings", async () => {
    const pool = await py.pool({ mode: "process", size: 2 });
    try {
      await pool.execAll(FIND + `\nvalue = 5\ndef hostile():\n    u64(rings() + ${RES_TAIL}, 2**64 - 1)\n    bell()\n    time.sleep(3)`);
      const first = pool.contexts[0]!;
      const e = await pool.call("__main__", "hostile", [], undefined, { context: first }).catch((x) => x);
      expect(e).toBeInstanceOf(ContextDiedError);
      for (let i = 0; i < 200 && pool.stats().replaced === 0; i++) await Bun.sleep(10);
      expect(pool.stats().replaced).toBe(1);
      expect(pool.contexts[0]).not.toBe(first);
      expect(await pool.contexts[0]!.eval("value")).toBe(5);
    } finally {
      await pool.close();
    }
  });
});

describe.skipIf(!linux)("process context rings and callSync", () => {
  test("callSync right after an async call (JS was polling) and while calls are in flight", async () => {
    const ctx = await proc();
    await ctx.exec("import time\ndef slow(x):\n    time.sleep(0.05)\n    return x");
    for (let i = 0; i < 20; i++) {
      const pending = ctx.call("builtins", "abs", [-i]);
      expect(ctx.callSync("__main__", "slow", [i])).toBe(i);
      expect(await pending).toBe(i);
    }
    const many = Array.from({ length: 10 }, (_, i) => ctx.call("__main__", "slow", [i]));
    // inside JS's polling window (its poll ran first in this turn of the loop): the host
    // must still ring the relay for the blocked JS thread
    await new Promise((r) => setImmediate(r));
    expect(ctx.callSync("builtins", "abs", [-5])).toBe(5);
    expect(await Promise.all(many)).toEqual(Array.from({ length: 10 }, (_, i) => i));
  });
});
