// Hostile pass on Bun Workers (src/hub.ts, shim/io.c, shim/context.c): a Worker holding
// contexts, a pool or a py.asgi app is terminated mid-call. The main thread's Python and
// contexts must keep working, the Worker's contexts must end (nothing else can close them),
// and py.close() must still work. Each case runs in a process of its own.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";

function run(what: string): unknown {
  const child = Bun.spawnSync([process.execPath, join(import.meta.dir, "fixtures", "hostile-worker-terminated.ts"), what], {
    env: process.env,
    timeout: 90_000,
  });
  expect(child.exitCode, child.stderr.toString()).toBe(0);
  return JSON.parse(child.stdout.toString().trim().split("\n").at(-1) ?? "");
}

const expected = { answers: [42, 5, 42, 5, 42, 5], fds: 0, closed: "yes" };

describe.skipIf(process.platform !== "linux")("a Bun Worker terminated with calls in flight", () => {
  test("its contexts (owngil, worker, sandboxed) are closed and py.close() works", () => {
    expect(run("contexts")).toEqual(expected);
  }, 100_000);

  test("its process contexts are closed: their hosts end, and their fds go", () => {
    expect(run("process")).toEqual(expected);
  }, 100_000);

  test("its pool is closed", () => {
    expect(run("pool")).toEqual(expected);
  }, 100_000);

  // Responses of 20 ms arrive while Bun tears the Worker down: before its port was closed
  // from the VM's cleanup hooks (shim/io.c), they rang a doorbell whose code Bun had freed
  // (a SIGSEGV in about one run in three).
  test("its py.asgi app's pool is closed", () => {
    expect(run("asgi")).toEqual(expected);
  }, 100_000);

  // Each bunpy.call into a JS thread takes a reference on its context that only the answer
  // gives back: calls the Worker never answered (taken and awaiting a Promise, or queued
  // while its JS busy-looped) kept their contexts, closed but never freed (8 fds for a
  // sandboxed one), until the shim answered them with an error as the Worker ends.
  test("calls into it that it never answers are answered, and their contexts freed", () => {
    expect(run("calls")).toEqual(expected);
  }, 100_000);

  test("a context it was closing is let go", () => {
    expect(run("closing")).toEqual(expected);
  }, 100_000);
});
