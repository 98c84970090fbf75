/**
 * Finding the Python to embed.
 *
 * Order: BUNPY_PYTHON (only that one when set: a path, or a name looked up on PATH), then
 * VIRTUAL_ENV (only its python when set), else python3.14 … python3.12 on PATH,
 * $(pyenv root)/versions/* newest first, python3 on PATH: the first CPython ≥ 3.11 with a
 * shared libpython and its headers wins. A BUNPY_PYTHON or VIRTUAL_ENV that does not fit is
 * an error saying why, never a silent fall-back to another Python. What each interpreter reports about itself
 * (sysconfig) is cached by path, size and mtime, so later starts spawn nothing.
 */
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, realpathSync, statSync, writeFileSync, renameSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, join } from "node:path";
import { noteRunningPython, PythonNotFoundError } from "./errors.ts";

export interface PythonInfo {
  /** The interpreter as found (a venv's python stays the venv's python). */
  executable: string;
  /** sys.version_info as "3.13.0". */
  version: string;
  major: number;
  minor: number;
  /** Directory holding Python.h. */
  include: string;
  /** Directory holding the shared libpython. */
  libdir: string;
  /** Library name for the linker, e.g. "python3.13". */
  library: string;
  /** True on a free-threaded (no-GIL) build. */
  freeThreaded: boolean;
}

const MIN_MINOR = 11;
const PROBE_VERSION = 2; // bump when the probe script changes

/** Runs inside the candidate interpreter and prints what we need as JSON. */
const PROBE = `
import json, os, sys, sysconfig
v = sysconfig.get_config_var
libdir = v("LIBDIR") or ""
ld = v("LDLIBRARY") or ""
dirs = [libdir, os.path.join(libdir, v("MULTIARCH") or ""), v("LIBPL") or ""]
found = next((d for d in dirs if d and ld and os.path.exists(os.path.join(d, ld))), "")
print(json.dumps({
  "impl": sys.implementation.name,
  "version": "%d.%d.%d" % sys.version_info[:3],
  "major": sys.version_info[0], "minor": sys.version_info[1],
  "include": sysconfig.get_paths()["include"],
  "libdir": found, "ldlibrary": ld,
  "shared": bool(v("Py_ENABLE_SHARED")),
  "freeThreaded": bool(v("Py_GIL_DISABLED")),
}))
`;

interface Probe {
  impl: string;
  version: string;
  major: number;
  minor: number;
  include: string;
  libdir: string;
  ldlibrary: string;
  shared: boolean;
  freeThreaded: boolean;
}

export function cacheRoot(): string {
  const env = process.env;
  if (env.BUNPY_CACHE_DIR) return env.BUNPY_CACHE_DIR;
  const xdg = env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return join(xdg, "bunpy");
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** True when something (even a broken link) is at `path`. */
function isEntry(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, name);
    if (isFile(p)) return p;
  }
  return undefined;
}

function versionKey(name: string): number[] {
  const m = /^(\d+)\.(\d+)\.(\d+)/.exec(name);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : [];
}

/** Candidate interpreters in the documented order, each with where it came from. */
function candidates(): { path: string; from: string }[] {
  const env = process.env;
  const out: { path: string; from: string }[] = [];
  for (let minor = 14; minor >= 12; minor--) {
    const p = onPath(`python3.${minor}`);
    if (p) out.push({ path: p, from: `python3.${minor} on PATH` });
  }
  const pyenvRoot = env.PYENV_ROOT || join(homedir(), ".pyenv");
  const versionsDir = join(pyenvRoot, "versions");
  if (existsSync(versionsDir)) {
    const versions = readdirSync(versionsDir)
      .filter((d) => versionKey(d).length === 3 && !d.includes("t")) // CPython x.y.z, not x.y.zt
      .sort((a, b) => {
        const ka = versionKey(a), kb = versionKey(b);
        return kb[0]! - ka[0]! || kb[1]! - ka[1]! || kb[2]! - ka[2]!;
      });
    for (const v of versions) {
      const p = join(versionsDir, v, "bin", "python3");
      if (isFile(p)) out.push({ path: p, from: `pyenv (${versionsDir})` });
    }
  }
  const py3 = onPath("python3");
  if (py3) out.push({ path: py3, from: "python3 on PATH" });
  return out;
}

/** A probe failure: `what` says what was found, for messages like "<path>: <what>". */
class ProbeFailure extends Error {}

function quote(text: string, max = 80): string {
  const t = text.trim().replace(/\s+/g, " ");
  return JSON.stringify(t.length > max ? `${t.slice(0, max)}…` : t);
}

/** Runs the probe script in `path` (or reads its cached answer). Throws ProbeFailure. */
function probe(path: string): Probe {
  let stamp = "";
  let st;
  try {
    const real = realpathSync(path);
    st = statSync(real);
    stamp = `${real}:${st.size}:${st.mtimeMs}`;
  } catch {
    let target: string | undefined;
    try {
      target = readlinkSync(path);
    } catch {
      // not a link
    }
    if (target !== undefined) throw new ProbeFailure(`is a link to ${target}, which does not exist`);
    throw new ProbeFailure(existsSync(path) ? "cannot be read (no permission)" : "does not exist");
  }
  if (st.isDirectory()) {
    const inside = ["bin/python3", "bin/python"].map((b) => join(path, b)).find(isFile);
    throw new ProbeFailure(`is a directory, not an interpreter${inside ? ` (did you mean ${inside}?)` : ""}`);
  }
  if (!st.isFile()) throw new ProbeFailure("is not a regular file");
  const key = Bun.hash(`${PROBE_VERSION}:${path}:${stamp}`).toString(16);
  const file = join(cacheRoot(), "probe", `${key}.json`);
  try {
    return JSON.parse(readFileSync(file, "utf8")) as Probe;
  } catch {
    // not cached yet
  }
  let r;
  try {
    r = Bun.spawnSync([path, "-I", "-c", PROBE], { stdout: "pipe", stderr: "pipe", env: process.env });
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw new ProbeFailure(code === "EACCES" ? "is not executable (no permission to run it)" : `cannot be run (${code ?? (e as Error).message})`);
  }
  const out = r.stdout.toString();
  if (r.exitCode !== 0) {
    // a Python traceback ends with what went wrong; other programs (a pyenv shim) start with it
    const err = r.stderr.toString().trim();
    const why = err.includes("Traceback (most recent call last)") ? quote(err.split("\n").pop()!) : err ? quote(err, 160) : "";
    const status = r.signalCode ? `killed by ${r.signalCode}` : `exit code ${r.exitCode}`;
    throw new ProbeFailure(`does not run as a Python interpreter (running it with -I -c failed with ${status}${why ? `: ${why}` : ""})`);
  }
  let info: Probe;
  try {
    info = JSON.parse(out) as Probe;
    if (typeof info !== "object" || info === null || typeof info.version !== "string") throw new Error();
  } catch {
    throw new ProbeFailure(`is not a Python interpreter (running it with -c printed ${quote(out) === '""' ? "nothing" : quote(out)})`);
  }
  try {
    mkdirSync(join(cacheRoot(), "probe"), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(info));
    renameSync(tmp, file);
  } catch {
    // a read-only cache only costs a probe per start
  }
  return info;
}

/** Why a probed interpreter cannot be embedded, or undefined when it can. */
function unusable(p: Probe): string | undefined {
  if (p.impl !== "cpython") return `is ${p.impl}, not CPython`;
  if (p.major !== 3 || p.minor < MIN_MINOR) return `is Python ${p.version}, and bunpy needs 3.${MIN_MINOR} or newer`;
  if (!p.shared || !p.libdir)
    return `is Python ${p.version} without a shared libpython (${p.ldlibrary || "none"}) (rebuild it with --enable-shared; pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install ${p.version})`;
  if (p.freeThreaded) return `is a free-threaded (no-GIL) build of Python ${p.version}, which bunpy does not support yet (use a regular build)`;
  if (!existsSync(join(p.include, "Python.h")))
    return `is Python ${p.version} without its C headers in ${p.include} (install them; Debian: apt-get install python3-dev)`;
  return undefined;
}

function toInfo(executable: string, p: Probe): PythonInfo {
  const library = p.ldlibrary.replace(/^lib/, "").replace(/\.so.*$/, "").replace(/\.dylib$/, "");
  return {
    executable,
    version: p.version,
    major: p.major,
    minor: p.minor,
    include: p.include,
    libdir: p.libdir,
    library,
    freeThreaded: p.freeThreaded,
  };
}

const NEEDS = "a CPython 3.11+ executable with a shared libpython";

/** A usable interpreter found by the normal search, for "such as …" in fix hints. */
function example(): string {
  for (const c of candidates()) {
    try {
      if (!unusable(probe(c.path))) return c.path;
    } catch {
      // not this one
    }
  }
  return "/usr/bin/python3.13";
}

/** The interpreter BUNPY_PYTHON names: a path, `~/…`, or a bare name looked up on PATH. */
function resolveForced(value: string): string {
  if (value.startsWith("~/")) return join(homedir(), value.slice(2));
  if (value.includes("/")) return value;
  const found = Bun.which(value);
  if (found) return found;
  throw new PythonNotFoundError(
    `BUNPY_PYTHON=${value}: there is no ${value} on PATH (${process.env.PATH || "PATH is empty"}); ` +
      `set BUNPY_PYTHON to the full path of ${NEEDS}, such as ${example()}`,
  );
}

function findForced(value: string): PythonInfo {
  const path = resolveForced(value);
  const shown = path === value ? value : `${value} (${path})`;
  const fix = () => `set BUNPY_PYTHON to ${NEEDS}, such as ${example()}, or unset it to let bunpy search`;
  let p: Probe;
  try {
    p = probe(path);
  } catch (e) {
    if (!(e instanceof ProbeFailure)) throw e;
    throw new PythonNotFoundError(`BUNPY_PYTHON=${shown}: ${path} ${e.message}; ${fix()}`);
  }
  const why = unusable(p);
  if (why) throw new PythonNotFoundError(`BUNPY_PYTHON=${shown}: ${path} ${why}; ${fix()}`);
  return toInfo(path, p);
}

/** The active virtual environment's Python. Set explicitly, so a broken one is an error,
    not a reason to quietly embed some other Python. */
function findVenv(venv: string): PythonInfo {
  const fix = "activate a working virtual environment, or run `deactivate` (unset VIRTUAL_ENV) to let bunpy search";
  if (!existsSync(venv)) throw new PythonNotFoundError(`VIRTUAL_ENV=${venv}: the directory does not exist; ${fix}`);
  const path = ["python3", "python"].map((n) => join(venv, "bin", n)).find(isEntry);
  if (!path) throw new PythonNotFoundError(`VIRTUAL_ENV=${venv}: there is no bin/python3 in it, so it is not a virtual environment; ${fix}`);
  let p: Probe;
  try {
    p = probe(path);
  } catch (e) {
    if (!(e instanceof ProbeFailure)) throw e;
    throw new PythonNotFoundError(`VIRTUAL_ENV=${venv}: its ${path} ${e.message}; recreate the environment, or ${fix}`);
  }
  const why = unusable(p);
  if (why)
    throw new PythonNotFoundError(
      `VIRTUAL_ENV=${venv}: its ${path} ${why}; recreate the environment from a Python that bunpy can embed (${example()} -m venv ${venv}), or ${fix}`,
    );
  return toInfo(path, p);
}

/** Finds the Python to embed, or throws PythonNotFoundError saying what was found and how to fix it. */
export function findPython(): PythonInfo {
  const py = search();
  noteRunningPython(py);
  return py;
}

function search(): PythonInfo {
  const forced = process.env.BUNPY_PYTHON;
  if (forced) return findForced(forced);
  if (process.env.VIRTUAL_ENV) return findVenv(process.env.VIRTUAL_ENV);
  const tried: string[] = [];
  const seen = new Set<string>();
  for (const c of candidates()) {
    if (seen.has(c.path)) continue;
    seen.add(c.path);
    try {
      const p = probe(c.path);
      const why = unusable(p);
      if (!why) return toInfo(c.path, p);
      tried.push(`  ${c.path} (${c.from}): ${why}`);
    } catch (e) {
      if (!(e instanceof ProbeFailure)) throw e;
      tried.push(`  ${c.path} (${c.from}): ${e.message}`);
    }
  }
  const places = [
    "BUNPY_PYTHON (not set)",
    "VIRTUAL_ENV (not set)",
    "python3.14, python3.13, python3.12 on PATH",
    `${join(process.env.PYENV_ROOT || join(homedir(), ".pyenv"), "versions")}/*`,
    "python3 on PATH",
  ];
  throw new PythonNotFoundError(
    [
      "bunpy could not find a usable Python (CPython 3.11+ with a shared libpython and headers).",
      `Looked in: ${places.join("; ")}.`,
      tried.length ? `Found but not usable:\n${tried.join("\n")}` : "Found no interpreter at all.",
      "Fix: install one (Debian: apt-get install python3-dev; pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install 3.13),",
      "or point BUNPY_PYTHON at an interpreter, e.g. BUNPY_PYTHON=/usr/bin/python3.13.",
    ].join("\n"),
  );
}
