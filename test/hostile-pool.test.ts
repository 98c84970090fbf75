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
