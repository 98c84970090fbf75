// Ctrl-C (SIGINT) must end a Bun script that embeds Python, even after Python code
// imported `signal` and `asyncio` (which would otherwise install Python's own handler).
import { expect, test } from "bun:test";
import { join } from "node:path";

async function interrupt(where: "js" | "python") {
  const proc = Bun.spawn([process.execPath, join(import.meta.dir, "fixtures", "sigint.ts"), where], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const reader = proc.stdout.getReader();
  let out = "";
  while (!out.includes("ready")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += new TextDecoder().decode(value);
  }
  expect(out).toContain("ready");
  await Bun.sleep(200);
  proc.kill("SIGINT");
  const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
  await proc.exited;
  clearTimeout(timer);
  return proc.signalCode;
}

test("SIGINT ends the script while JS is idle, after Python imported signal and asyncio", async () => {
  expect(await interrupt("js")).toBe("SIGINT");
});

test("SIGINT ends the script while a Python call is running", async () => {
  expect(await interrupt("python")).toBe("SIGINT");
});
