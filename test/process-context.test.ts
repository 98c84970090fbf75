// Process contexts (issue 10, item 3): what exists so far is the host executable
// (shim/host.c), built by zig next to the shim, and its confinement. The relay that runs
// contexts in it is not written yet; these tests cover the host's build and confinement.
import { describe, expect, test } from "bun:test";
import { ensureShim, hostPath } from "../src/build.ts";
import { findPython } from "../src/discover.ts";

const shim = ensureShim(findPython());
const host = hostPath(shim);

function check(...args: string[]): { code: number | null; out: any; err: string } {
  const r = Bun.spawnSync([host!, "--check", ...args], { stdout: "pipe", stderr: "pipe" });
  const text = r.stdout.toString();
  return { code: r.exitCode, out: text ? JSON.parse(text) : undefined, err: r.stderr.toString() };
}

describe("bunpy-host", () => {
  test("is built next to the shim", () => {
    expect(host).toBeString();
    expect(host!.endsWith("/bunpy-host")).toBe(true);
  });

  test("applies rlimits and its own namespaces (or says which it could not)", () => {
    const r = check("--memory", String(256 * 1024 * 1024), "--cpu", "5", "--files", "64");
    expect(r.code).toBe(0);
    expect(r.out.rlimitErrors).toBe(0);
    expect(r.out.memory).toBe(256 * 1024 * 1024);
    // this machine (root in a VM) allows them; elsewhere mountns false means no private /tmp
    expect(r.out.mountns).toBe(true);
    expect(r.out.netns).toBe(true);
    expect(r.out.tmp).toBe("private");
  });

  test("--network keeps the parent's network namespace", () => {
    const r = check("--network");
    expect(r.code).toBe(0);
    expect(r.out.netns).toBe(false);
    expect(r.out.memory).toBe(0);
  });

  test("bad arguments are refused with exit code 64, not a crash", () => {
    expect(check("--memory", "lots").code).toBe(64);
    expect(check("--bogus").code).toBe(64);
  });

  test("a parent pid that is not its parent ends it at once (PR_SET_PDEATHSIG race check)", () => {
    const r = Bun.spawnSync([host!, "--check", "--parent", "1"], { stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).toBe(1);
    expect(r.stdout.toString()).toBe("");
  });
});
