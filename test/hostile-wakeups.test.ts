// Hostile pass on a sandboxed owngil context's wake-up pipes (shim/wakefd.c, fdtable.c):
// it holds their read ends in an fd table of its own, and may do what it likes to them.
// It may slow itself down; it must not stall JS or other contexts, and close() must end it
// without abandoning it. Each case runs in a process of its own (a context that never
// wakes again is abandoned, and its thread and fds stay until the process exits).
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { hasOwnGil } from "./helpers.ts";

const linux = process.platform === "linux";

function run(how: string): unknown {
  const child = Bun.spawnSync([process.execPath, join(import.meta.dir, "fixtures", "hostile-wakeup-hijack.ts"), how], {
    env: process.env,
    timeout: 60_000,
  });
  expect(child.exitCode, child.stderr.toString()).toBe(0);
  const out = JSON.parse(child.stdout.toString().trim().split("\n").at(-1) ?? "") as {
    tasks: number;
  };
  expect(out.tasks).toBeLessThanOrEqual(0); // no thread left behind
  return { ...out, tasks: 0 };
}

const expected = { states: ["closed", "closed", "closed"], sums: [4, 1, 4, 2, 4, 3, 4], fds: 0, tasks: 0 };

describe.skipIf(!linux || !hasOwnGil)("a sandboxed context that dup2s a dead pipe over its wake-up fds", () => {
  // Its waits slept on the numbers for ever: the next call was never served and close()
  // abandoned the context (its thread and its four pipes stayed).
  test("idle: calls are still served and close() ends it", () => {
    expect(run("idle")).toEqual(expected);
  }, 70_000);

  test("in bunpy.sleep: close() still alerts it", () => {
    expect(run("sleep")).toEqual(expected);
  }, 70_000);

  test("in its asyncio loop: calls are still served and close() ends it", () => {
    expect(run("loop")).toEqual(expected);
  }, 70_000);
});
