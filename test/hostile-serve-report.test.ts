// What serving prints on stderr: an app's error, in every mode; not a request whose client
// left (an app may return without a response then, as Django's handler does), nor one the
// app's close() cut short.
import { expect, test } from "bun:test";
import { resolve } from "node:path";

test("an app error is reported; a client that left and a request cut by close() are not", async () => {
  const child = Bun.spawn([process.execPath, resolve(import.meta.dir, "fixtures/hostile-serve-report.ts")], {
    stdout: "pipe",
    stderr: "pipe",
    env: process.env,
  });
  const [out, err] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  expect(out).toContain("END");
  expect(out).toContain("pool boom 500");
  expect(out).toContain("inline boom 500");
  expect(err.split("hostile-report-boom").length - 1).toBeGreaterThanOrEqual(2); // once per mode at least
  expect(err).not.toContain("returned without starting a response");
}, 60_000);
