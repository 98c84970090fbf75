/**
 * Sandbox kernel rules (Linux: seccomp filter + Landlock domain on the context's thread):
 * awaited call latency in a context with the strictest policy vs an unsandboxed one (the
 * baseline, same run), and context start + close with vs without, rounds interleaved;
 * then a process context (Python in a bunpy-host process, talking to Bun through shared-memory rings):
 * its awaited call latency and start time against the same thread-context baseline.
 */
import { bench, do_not_optimize, summary } from "mitata";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { py, type SandboxPolicy } from "../src/index.ts";
import { runWithRatios } from "./ratio.ts";

const minor = Number(py.version.split(".")[1]);
const mode = minor >= 12 ? "owngil" : "worker";
const dir = mkdtempSync(join(tmpdir(), "bunpy-bench-sandbox-"));
// every kernel rule on: seccomp (processes, sockets, the always-refused calls) and Landlock (files)
const strict: SandboxPolicy = { processes: false, sockets: false, files: [dir] };

const plain = await py.context({ mode });
const ruled = await py.context({ mode, sandbox: strict });
const proc = await py.context({ mode: "process" });
const procRuled = await py.context({ mode: "process", sandbox: strict });
for (const c of [plain, ruled, proc, procRuled]) await c.exec("def ident(x):\n    return x");

const BASELINE = `await ctx.call(ident) — no sandbox (${mode})`;
summary(() => {
  bench(BASELINE, async () => do_not_optimize(await plain.call("__main__", "ident", [1]))).baseline(true);
  bench(`await ctx.call(ident) — kernel rules (${mode})`, async () =>
    do_not_optimize(await ruled.call("__main__", "ident", [1])),
  );
  bench("await ctx.call(ident) — process context", async () => do_not_optimize(await proc.call("__main__", "ident", [1])));
  bench("await ctx.call(ident) — process + kernel rules", async () =>
    do_not_optimize(await procRuled.call("__main__", "ident", [1])),
  );
});
await runWithRatios(BASELINE);
for (const c of [plain, ruled, proc, procRuled]) await c.close();

// context start (to the first call answered) + close, alternating, medians of 15 rounds
async function startClose(sandbox?: SandboxPolicy, m: "owngil" | "worker" | "process" = mode): Promise<number> {
  const t = performance.now();
  const c = await py.context({ mode: m, sandbox });
  await c.eval("1");
  const ms = performance.now() - t;
  await c.close();
  return ms;
}
const without: number[] = [], withRules: number[] = [], processes: number[] = [], processRules: number[] = [];
await startClose();
await startClose(strict);
await startClose(undefined, "process");
for (let r = 0; r < 15; r++) {
  without.push(await startClose());
  withRules.push(await startClose(strict));
  processes.push(await startClose(undefined, "process"));
  processRules.push(await startClose(strict, "process"));
}
const med = (x: number[]) => x.sort((p, q) => p - q)[Math.floor(x.length / 2)]!;
console.log(`\ncontext start to first answer (${mode}), median of 15:`);
console.log(`  no sandbox      ${med(without).toFixed(2)} ms`);
console.log(`  kernel rules    ${med(withRules).toFixed(2)} ms   ${(med(withRules) / med(without)).toFixed(2)}×`);
console.log(`  process         ${med(processes).toFixed(2)} ms   ${(med(processes) / med(without)).toFixed(2)}×`);
console.log(`  process + rules ${med(processRules).toFixed(2)} ms   ${(med(processRules) / med(without)).toFixed(2)}×`);
