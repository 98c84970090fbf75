// Kernel-enforced sandbox rules (Linux): the seccomp filter and the Landlock domain of a
// sandboxed context's thread. The escapes tried are in test/kernel-escapes.ts (shared with
// the process-context tests).
import { describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { py } from "../src/index.ts";
import { contextModes } from "./helpers.ts";
import { attempt, kernelEscapeTests, linux, outsideFile, run, sandboxed } from "./kernel-escapes.ts";

describe.skipIf(!linux)("kernel rules", () => {
  for (const mode of contextModes) kernelEscapeTests(mode);
});

describe("requireKernel", () => {
  // Where the kernel rules cannot be applied (other systems, a kernel without Landlock) the
  // context does not start; this machine has them, so the context starts and they hold.
  for (const mode of contextModes) {
    test.skipIf(!linux)(`${mode} context: starts where the kernel rules apply, and they hold`, async () => {
      const { outside } = outsideFile();
      const dir = mkdtempSync(join(tmpdir(), "bunpy-kreq-"));
      const ctx = await sandboxed(mode, { requireKernel: true, files: [dir], processes: false });
      // the audit hook does not check links: Landlock refuses it
      expect(await attempt(ctx, `os.link(${JSON.stringify(outside)}, ${JSON.stringify(join(dir, "ln.txt"))})`)).toMatch(/Errno 13|Errno 18/);
      if (await run(ctx, "has_ctypes()")) expect(await run(ctx, "fork_raw()")).toBe("EPERM");
    });
  }
  test.skipIf(linux)("elsewhere a context with requireKernel does not start", async () => {
    await expect(py.context({ sandbox: { requireKernel: true } })).rejects.toThrow(/requireKernel is set but/);
  });
});

test("bad network rules are rejected with a TypeError", async () => {
  await expect(py.context({ sandbox: { network: { connect: [70000] } } })).rejects.toThrow(/network.connect must be an array of port numbers/);
  await expect(py.context({ sandbox: { network: { listen: [1] } as never } })).rejects.toThrow(/unknown network rule "listen"/);
  await expect(py.context({ sandbox: { network: {}, sockets: false } })).rejects.toThrow(/contradict/);
});
