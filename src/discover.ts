/**
 * Finding the Python to embed.
 *
 * Order: BUNPY_PYTHON (only that one when set), VIRTUAL_ENV, python3.14 … python3.12 on
 * PATH, $(pyenv root)/versions/* newest first, python3 on PATH. The first CPython ≥ 3.11
 * with a shared libpython and its headers wins. What each interpreter reports about itself
 * (sysconfig) is cached by path, size and mtime, so later starts spawn nothing.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, statSync, writeFileSync, renameSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, join } from "node:path";
import { PythonNotFoundError } from "./errors.ts";

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
  if (env.VIRTUAL_ENV) {
    for (const name of ["python3", "python"]) {
      const p = join(env.VIRTUAL_ENV, "bin", name);
      if (isFile(p)) {
        out.push({ path: p, from: "VIRTUAL_ENV" });
        break;
      }
    }
  }
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

function probe(path: string): Probe {
  let stamp = "";
  try {
    const real = realpathSync(path);
    const st = statSync(real);
    stamp = `${real}:${st.size}:${st.mtimeMs}`;
  } catch {
    throw new Error("cannot be read");
  }
  const key = Bun.hash(`${PROBE_VERSION}:${path}:${stamp}`).toString(16);
  const file = join(cacheRoot(), "probe", `${key}.json`);
  try {
    return JSON.parse(readFileSync(file, "utf8")) as Probe;
  } catch {
    // not cached yet
  }
  const r = Bun.spawnSync([path, "-I", "-c", PROBE], { stdout: "pipe", stderr: "pipe", env: process.env });
  if (r.exitCode !== 0) {
    const why = r.stderr.toString().trim().split("\n").pop() || `exit code ${r.exitCode}`;
    throw new Error(`does not run (${why})`);
  }
  const info = JSON.parse(r.stdout.toString()) as Probe;
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
  if (p.major !== 3 || p.minor < MIN_MINOR) return `is Python ${p.version}; bunpy needs 3.${MIN_MINOR} or newer`;
  if (!p.shared || !p.libdir)
    return `Python ${p.version} has no shared libpython (${p.ldlibrary || "none"}); rebuild it with --enable-shared (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install ${p.version})`;
  if (p.freeThreaded)
    return `Python ${p.version} is a free-threaded (no-GIL) build, which bunpy does not support yet; use a regular build`;
  if (!existsSync(join(p.include, "Python.h")))
    return `Python ${p.version} has no C headers in ${p.include}; install them (Debian: apt-get install python3-dev)`;
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

/** Finds the Python to embed, or throws PythonNotFoundError listing every place tried. */
export function findPython(): PythonInfo {
  const forced = process.env.BUNPY_PYTHON;
  if (forced) {
    let p: Probe;
    try {
      p = probe(forced);
    } catch (e) {
      throw new PythonNotFoundError(`BUNPY_PYTHON=${forced} ${(e as Error).message}`);
    }
    const why = unusable(p);
    if (why) throw new PythonNotFoundError(`BUNPY_PYTHON=${forced}: ${why}`);
    return toInfo(forced, p);
  }
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
      tried.push(`  ${c.path} (${c.from}): ${(e as Error).message}`);
    }
  }
  const places = [
    "BUNPY_PYTHON (not set)",
    `VIRTUAL_ENV (${process.env.VIRTUAL_ENV ? process.env.VIRTUAL_ENV : "not set"})`,
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
