/**
 * Hostile Python code against bunpy's serving machinery: garbage on its message channels,
 * odd callables as apps.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { contextModes } from "./helpers.ts";

for (const mode of contextModes)
  test(`garbage on __bunpy_ws and __bunpy_handoff (from a sandboxed ${mode} context, the app's and the listener's own) is dropped; nothing is thrown uncaught`, () => {
    // before: null on either channel threw in bunpy's listener, which the hub reports as an
    // uncaught error: that ends a Bun process (a sandboxed context could end the server)
    const r = Bun.spawnSync([process.execPath, join(import.meta.dir, "fixtures", "hostile-hub-garbage.ts"), mode], {
      stdout: "pipe",
      stderr: "pipe",
      timeout: 60_000,
      env: { ...process.env },
    });
    const out = r.stdout.toString().trim().split("\n").pop() ?? "";
    expect(r.stderr.toString()).not.toMatch(/uncaught|unhandled/);
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(out)).toMatchObject({ first: "python: one", uncaught: 0, alive: true });
  });
