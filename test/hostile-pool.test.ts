// A hostile pass over pools (src/pool.ts): odd sizes, members that die, close() at odd
// moments. Nothing a pool started may outlive its close().
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { py } from "../src/index.ts";
import { linux } from "./kernel-escapes.ts";

/** This process's live children (the host processes of process contexts). */
function children(): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = readFileSync(`/proc/${d}/stat`, "utf8");
      const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
      if (Number(f[1]) === process.pid && f[0] !== "Z") out.push(Number(d));
    } catch {}
  }
  return out;
}

test("sizes that are not a positive integer up to 1024 are refused before anything starts", async () => {
  for (const size of [0, -1, NaN, 1.5, Infinity, "2" as unknown as number, 2 ** 31])
    await expect(py.pool({ size, mode: "worker" })).rejects.toBeInstanceOf(size === 2 ** 31 || size === Infinity ? Error : TypeError);
});

describe.skipIf(!linux)("pools of process contexts", () => {
  test("close() while a dead member's replacement still runs the execAll code: the replacement is closed too before close() resolves", async () => {
    const before = new Set(children());
    const pool = await py.pool({ mode: "process", size: 1 });
    await pool.execAll("import time; time.sleep(1.0)");
    await expect(pool.contexts[0]!.exec("import os; os._exit(0)")).rejects.toThrow(/exited with code 0/);
    // the replacement host has started (or is starting) and sleeps in the execAll code
    for (let i = 0; i < 100 && children().filter((c) => !before.has(c)).length === 0; i++) await Bun.sleep(10);
    await pool.close({ timeout: 100 });
    expect(children().filter((c) => !before.has(c))).toEqual([]);
    expect(pool.stats().replaced).toBe(0);
  }, 20_000);
});

describe.skipIf(!linux)("execAll while a dead member is being replaced", () => {
  test("code given to execAll while the replacement runs its onReplace step still runs in it", async () => {
    const pool = await py.pool({ mode: "process", size: 1 });
    try {
      let release!: () => void;
      let entered!: () => void;
      const inPrepare = new Promise<void>((r) => (entered = r));
      const gate = new Promise<void>((r) => (release = r));
      pool.onReplace(async () => {
        entered();
        await gate;
      });
      const died = pool.contexts[0]!;
      await pool.execAll("first = 1");
      await died.exec("import os; os._exit(0)").catch(() => {});
      await inPrepare;
      // the pool still lists the dead context: this execAll's own run there rejects
      await pool.execAll("second = 2").catch(() => {});
      release();
      for (let i = 0; i < 200 && pool.contexts[0] === died; i++) await Bun.sleep(10);
      expect(pool.contexts[0]).not.toBe(died);
      expect(await pool.contexts[0]!.eval("(first, second)")).toEqual([1, 2]);
    } finally {
      await pool.close();
    }
  }, 20_000);
});

describe("AbortSignals aborted at odd points", () => {
  test("aborted by a getter while the arguments are encoded: the call rejects with the reason and does not run (pool and context)", async () => {
    const pool = await py.pool({ mode: "worker", size: 1 });
    try {
      await pool.execAll("ran = []\ndef note(d): ran.append(d['a']); return len(ran)");
      for (const via of ["pool", "context"] as const) {
        const ac = new AbortController();
        const arg = { get a() { ac.abort(new Error(`aborted in a getter (${via})`)); return 1; } };
        const call = via === "pool" ? pool.call("__main__", "note", [arg], undefined, { signal: ac.signal }) : pool.contexts[0]!.call("__main__", "note", [arg], undefined, { signal: ac.signal });
        await expect(call).rejects.toThrow(`aborted in a getter (${via})`);
      }
      expect(await pool.call("__main__", "note", [{ a: 2 }])).toBe(1); // only this one ran
    } finally {
      await pool.close();
    }
  });

  test("options whose getters answer differently on a second read: the values checked are the ones used", async () => {
    const pool = await py.pool({ mode: "worker", size: 1 });
    try {
      let reads = 0;
      const options = { get timeout() { return ++reads === 1 ? 5000 : 1e12; } }; // past setTimeout's range: would fire at once
      expect(await pool.contexts[0]!.call("time", "sleep", [0.05], undefined, options)).toBe(null);
    } finally {
      await pool.close();
    }
  });
});
