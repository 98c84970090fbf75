/**
 * Finding the Python to embed.
 *
 * Order: BUNPY_PYTHON (a path, or a name looked up on PATH), VIRTUAL_ENV, a `.venv` in the
 * working directory or a parent, the nearest `.python-version` (pyenv/uv), the nearest
 * package.json's `"bunpy": { "python" }`; the first of these present decides, and one that
 * does not fit is an error saying why, never a silent fall-back to another Python. Else
 * the search: python3.14 … python3.12 on PATH, $(pyenv root)/versions/* newest first,
 * python3 on PATH: the first CPython ≥ 3.11 with a shared libpython wins. What each interpreter reports about itself
 * (sysconfig) is cached by path, size and mtime, so later starts spawn nothing.
 */
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, realpathSync, statSync, writeFileSync, renameSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, dirname, join, resolve } from "node:path";
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
  /** The shared libpython file bunpy loads (globally) before its shim. */
  libpython: string;
  /** sys.abiflags: "" for a regular build, "t" free-threaded, "d" debug. */
  abiflags: string;
  /** sys.prefix: the venv when the interpreter is a venv's. */
  prefix: string;
  /** sys.base_prefix: the installation a venv was made from (same as prefix otherwise). */
  basePrefix: string;
  /** The site-packages directory (sysconfig "purelib"). */
  sitePackages: string;
}

const MIN_MINOR = 11;
const PROBE_VERSION = 3; // bump when the probe script changes

/** Runs inside the candidate interpreter and prints what we need as JSON. */
const PROBE = `
import json, os, sys, sysconfig
v = sysconfig.get_config_var
libdir = v("LIBDIR") or ""
ld = v("LDLIBRARY") or ""
names = [n for n in (ld, v("INSTSONAME") or "") if n]
dirs = [libdir, os.path.join(libdir, v("MULTIARCH") or ""), v("LIBPL") or ""]
found = next((os.path.join(d, n) for d in dirs if d for n in names if os.path.exists(os.path.join(d, n))), "")
print(json.dumps({
  "impl": sys.implementation.name,
  "version": "%d.%d.%d" % sys.version_info[:3],
  "major": sys.version_info[0], "minor": sys.version_info[1],
  "include": sysconfig.get_paths()["include"],
  "libdir": os.path.dirname(found), "libfile": found, "ldlibrary": ld,
  "shared": bool(v("Py_ENABLE_SHARED")),
  "freeThreaded": bool(v("Py_GIL_DISABLED")),
  "abiflags": getattr(sys, "abiflags", ""),
  "prefix": sys.prefix, "basePrefix": sys.base_prefix,
  "site": sysconfig.get_paths()["purelib"],
}))
`;

interface Probe {
  impl: string;
  version: string;
  major: number;
  minor: number;
  include: string;
  libdir: string;
  libfile: string;
  ldlibrary: string;
  shared: boolean;
  freeThreaded: boolean;
  abiflags: string;
  prefix: string;
  basePrefix: string;
  site: string;
}

export function cacheRoot(): string {
  const env = process.env;
  if (env["BUNPY_CACHE_DIR"]) return env["BUNPY_CACHE_DIR"];
  const xdg = env["XDG_CACHE_HOME"] || join(homedir(), ".cache");
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

/** pyenv's shim directories: a shim runs whichever Python .python-version names in the
    directory it runs in, so what a probe learnt from it would not hold elsewhere. pyenv's
    versions are searched directly instead. */
function isPyenvShims(dir: string): boolean {
  const root = process.env["PYENV_ROOT"] || join(homedir(), ".pyenv");
  return dir === join(root, "shims") || dir.endsWith("/pyenv-virtualenv/shims");
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env["PATH"] ?? "").split(delimiter)) {
    if (!dir || isPyenvShims(dir)) continue;
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
  const pyenvRoot = env["PYENV_ROOT"] || join(homedir(), ".pyenv");
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
  // C headers are checked when a shim has to be built: a prebuilt shim needs none
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
    libpython: p.libfile || join(p.libdir, p.ldlibrary),
    abiflags: p.abiflags,
    prefix: p.prefix,
    basePrefix: p.basePrefix,
    sitePackages: p.site,
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
    `BUNPY_PYTHON=${value}: there is no ${value} on PATH (${process.env["PATH"] || "PATH is empty"}); ` +
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

/** A virtual environment's Python. Named explicitly (VIRTUAL_ENV, a project's .venv, the
    package.json field), so a broken one is an error, not a reason to quietly embed some
    other Python. `label` starts the message ("VIRTUAL_ENV=/x"); `fix` ends it. */
function findVenv(venv: string, label: string, fix: string): PythonInfo {
  if (!existsSync(venv)) throw new PythonNotFoundError(`${label}: the directory does not exist; ${fix}`);
  const path = ["python3", "python"].map((n) => join(venv, "bin", n)).find(isEntry);
  if (!path) throw new PythonNotFoundError(`${label}: there is no bin/python3 in it, so it is not a virtual environment; ${fix}`);
  let p: Probe;
  try {
    p = probe(path);
  } catch (e) {
    if (!(e instanceof ProbeFailure)) throw e;
    throw new PythonNotFoundError(`${label}: its ${path} ${e.message}; recreate the environment, or ${fix}`);
  }
  const why = unusable(p);
  if (why)
    throw new PythonNotFoundError(
      `${label}: its ${path} ${why}; recreate the environment from a Python that bunpy can embed (${example()} -m venv ${venv}), or ${fix}`,
    );
  return toInfo(path, p);
}

/** An interpreter named explicitly by `label` (a path found in a project file). */
function findNamed(path: string, label: string, fix: string): PythonInfo {
  let p: Probe;
  try {
    p = probe(path);
  } catch (e) {
    if (!(e instanceof ProbeFailure)) throw e;
    throw new PythonNotFoundError(`${label}: ${path} ${e.message}; ${fix}`);
  }
  const why = unusable(p);
  if (why) throw new PythonNotFoundError(`${label}: ${path} ${why}; ${fix}`);
  return toInfo(path, p);
}

/** The working directory and each of its parents, nearest first. */
function upward(): string[] {
  const out: string[] = [];
  let dir = resolve(process.cwd());
  for (;;) {
    out.push(dir);
    const parent = dirname(dir);
    if (parent === dir) return out;
    dir = parent;
  }
}

function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function pyenvVersionsDir(): string {
  return join(process.env["PYENV_ROOT"] || join(homedir(), ".pyenv"), "versions");
}

/** Where uv installs Pythons (`uv python install`). */
function uvPythonsDir(): string {
  const env = process.env;
  if (env["UV_PYTHON_INSTALL_DIR"]) return env["UV_PYTHON_INSTALL_DIR"];
  return join(env["XDG_DATA_HOME"] || join(homedir(), ".local", "share"), "uv", "python");
}

const VERSION_REQUEST = /^(?:cpython-?)?3\.(\d+)(?:\.(\d+))?$/;

/**
 * A version request as .python-version or package.json write it ("3.12", "3.12.1",
 * "cpython-3.12", a pyenv version or virtualenv name): pyenv's versions, uv's Pythons, then
 * python3.<minor> on PATH; the newest matching one bunpy can embed wins.
 */
export function findVersion(request: string, label: string, fix: string): PythonInfo {
  const versionsDir = pyenvVersionsDir();
  // a pyenv version or pyenv-virtualenv name, as written
  const exact = join(versionsDir, request, "bin", "python3");
  if (!request.includes("/") && isEntry(exact)) return findNamed(exact, label, fix);
  const m = VERSION_REQUEST.exec(request);
  if (!m) throw new PythonNotFoundError(`${label}: "${request}" is not a CPython version bunpy understands (such as 3.12 or 3.12.1); ${fix}`);
  const minor = Number(m[1]);
  const patch = m[2] === undefined ? undefined : Number(m[2]);
  const wanted = patch === undefined ? `3.${minor}` : `3.${minor}.${patch}`;
  const paths: string[] = [];
  const byVersion = (names: string[], key: (n: string) => string) =>
    names
      .filter((n) => {
        const k = versionKey(key(n));
        return k.length === 3 && k[0] === 3 && k[1] === minor && (patch === undefined || k[2] === patch) && !/^\d+\.\d+\.\d+t/.test(key(n));
      })
      .sort((a, b) => versionKey(key(b))[2]! - versionKey(key(a))[2]!);
  if (isDir(versionsDir)) for (const v of byVersion(readdirSync(versionsDir), (n) => n)) paths.push(join(versionsDir, v, "bin", "python3"));
  const uvDir = uvPythonsDir();
  if (isDir(uvDir))
    for (const v of byVersion(readdirSync(uvDir).filter((n) => n.startsWith("cpython-")), (n) => n.slice("cpython-".length)))
      paths.push(join(uvDir, v, "bin", "python3"));
  const onP = onPath(`python3.${minor}`);
  if (onP) paths.push(onP);
  const problems: string[] = [];
  for (const path of paths) {
    let p: Probe;
    try {
      p = probe(path);
    } catch (e) {
      if (!(e instanceof ProbeFailure)) throw e;
      problems.push(`${path} ${e.message}`);
      continue;
    }
    if (p.minor !== minor || (patch !== undefined && p.version !== wanted)) {
      problems.push(`${path} is Python ${p.version}`);
      continue;
    }
    const why = unusable(p);
    if (why) {
      problems.push(`${path} ${why}`);
      continue;
    }
    return toInfo(path, p);
  }
  const where = `pyenv (${versionsDir}), uv (${uvDir}) and python3.${minor} on PATH`;
  throw new PythonNotFoundError(
    `${label} asks for Python ${wanted}, ` +
      (problems.length ? `and none of those found fits: ${problems.join("; ")}` : `which is not in ${where}`) +
      `; install it (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install ${wanted}; uv: uv python install ${wanted}), or ${fix}`,
  );
}

/** One place discovery looked, for `bunpy doctor`. */
export interface DiscoveryStep {
  /** Where the candidate came from: "BUNPY_PYTHON", ".venv", "python3.13 on PATH", … */
  source: string;
  /** The interpreter (or file) looked at, when there was one. */
  path?: string;
  /** What was found: "not set", "chosen", or why it does not fit. */
  outcome: string;
}

export interface Discovery {
  python?: PythonInfo;
  /** Why `python` won, in words: "VIRTUAL_ENV is set", … */
  why?: string;
  error?: PythonNotFoundError;
  steps: DiscoveryStep[];
}

type Source = () => { python: PythonInfo; why: string; path?: string } | { skip: string; path?: string };

/** The project sources, in order; the first one present decides (errors included). */
const sources: [string, Source][] = [
  [
    "BUNPY_PYTHON",
    () => {
      const v = process.env["BUNPY_PYTHON"];
      if (!v) return { skip: "not set" };
      return { python: findForced(v), why: `BUNPY_PYTHON is set to ${v}` };
    },
  ],
  [
    "VIRTUAL_ENV",
    () => {
      const venv = process.env["VIRTUAL_ENV"];
      if (!venv) return { skip: "not set" };
      const fix = "activate a working virtual environment, or run `deactivate` (unset VIRTUAL_ENV) to let bunpy search";
      return { python: findVenv(venv, `VIRTUAL_ENV=${venv}`, fix), why: `VIRTUAL_ENV is set to ${venv} (an activated virtual environment)` };
    },
  ],
  [
    ".venv",
    () => {
      const dir = upward().find((d) => isDir(join(d, ".venv")));
      if (!dir) return { skip: `no .venv in ${process.cwd()} or its parents` };
      const venv = join(dir, ".venv");
      const fix = `remove it, or set BUNPY_PYTHON to the Python to use (\`uv venv\` or \`python3 -m venv ${venv}\` makes a new one)`;
      return { python: findVenv(venv, `the project's virtual environment ${venv}`, fix), why: `the project has a virtual environment at ${venv}`, path: venv };
    },
  ],
  [
    ".python-version",
    () => {
      const dir = upward().find((d) => isFile(join(d, ".python-version")));
      if (!dir) return { skip: `no .python-version in ${process.cwd()} or its parents` };
      const file = join(dir, ".python-version");
      const request = readFileSync(file, "utf8")
        .split("\n")
        .map((l) => l.replace(/#.*/, "").trim())
        .find(Boolean)
        ?.split(/\s+/)[0];
      if (!request) return { skip: `${file} is empty`, path: file };
      if (request === "system") return { skip: `${file} says "system": left to the search`, path: file };
      const fix = `change ${file}, or set BUNPY_PYTHON to the Python to use`;
      return { python: findVersion(request, `${file} (${request})`, fix), why: `${file} asks for ${request}`, path: file };
    },
  ],
  [
    "package.json",
    () => {
      const dir = upward().find((d) => isFile(join(d, "package.json")));
      if (!dir) return { skip: "no package.json in the working directory or its parents" };
      const file = join(dir, "package.json");
      let field: unknown;
      try {
        field = (JSON.parse(readFileSync(file, "utf8")) as { bunpy?: { python?: unknown } })?.bunpy?.python;
      } catch {
        return { skip: `${file} could not be read as JSON`, path: file };
      }
      if (field === undefined) return { skip: `${file} has no "bunpy": { "python" } field`, path: file };
      const label = `${file} "bunpy": { "python": ${JSON.stringify(field)} }`;
      const fix = `change that field (a version such as "3.12", a command such as "python3.12", or a path relative to ${dir}), or set BUNPY_PYTHON`;
      if (typeof field !== "string" || !field) throw new PythonNotFoundError(`${label}: the value must be a non-empty string; ${fix}`);
      const why = `${file} says "bunpy": { "python": ${JSON.stringify(field)} }`;
      let path: string;
      if (field.startsWith("~/")) path = join(homedir(), field.slice(2));
      else if (field.includes("/") || field.startsWith(".")) path = resolve(dir, field);
      else if (VERSION_REQUEST.test(field)) return { python: findVersion(field, label, fix), why, path: file };
      else {
        const found = onPath(field) ?? Bun.which(field);
        if (!found) throw new PythonNotFoundError(`${label}: there is no ${field} on PATH; ${fix}`);
        path = found;
      }
      if (isDir(path)) return { python: findVenv(path, label, fix), why, path: file };
      return { python: findNamed(path, label, fix), why, path: file };
    },
  ],
];

/**
 * Runs discovery and says what it looked at. `all`: also probe the search's candidates
 * after the winner (for `bunpy doctor`); otherwise it stops at the first that fits.
 */
export function discover(all = false): Discovery {
  const steps: DiscoveryStep[] = [];
  for (const [name, source] of sources) {
    try {
      const r = source();
      if ("skip" in r) {
        steps.push({ source: name, ...(r.path ? { path: r.path } : {}), outcome: r.skip });
        continue;
      }
      steps.push({ source: name, path: r.python.executable, outcome: "chosen" });
      return { python: r.python, why: r.why, steps };
    } catch (e) {
      if (!(e instanceof PythonNotFoundError)) throw e;
      steps.push({ source: name, outcome: `error: ${e.message}` });
      return { error: e, steps };
    }
  }
  return search(steps, all);
}

/** Finds the Python to embed, or throws PythonNotFoundError saying what was found and how to fix it. */
export function findPython(): PythonInfo {
  const d = discover();
  if (!d.python) throw d.error!;
  noteRunningPython(d.python);
  return d.python;
}

/** The search when no project source names a Python: the newest usable CPython. */
function search(steps: DiscoveryStep[], all: boolean): Discovery {
  const tried: string[] = [];
  const seen = new Set<string>();
  let chosen: { python: PythonInfo; why: string } | undefined;
  for (const c of candidates()) {
    if (seen.has(c.path)) continue;
    seen.add(c.path);
    if (chosen && !all) break;
    try {
      const p = probe(c.path);
      const why = unusable(p);
      if (!why) {
        if (chosen) steps.push({ source: c.from, path: c.path, outcome: `usable (Python ${p.version}), not chosen: an earlier candidate won` });
        else {
          chosen = { python: toInfo(c.path, p), why: `no project setting names a Python; the search found it first (${c.from})` };
          steps.push({ source: c.from, path: c.path, outcome: "chosen" });
        }
        continue;
      }
      tried.push(`  ${c.path} (${c.from}): ${why}`);
      steps.push({ source: c.from, path: c.path, outcome: why });
    } catch (e) {
      if (!(e instanceof ProbeFailure)) throw e;
      tried.push(`  ${c.path} (${c.from}): ${e.message}`);
      steps.push({ source: c.from, path: c.path, outcome: e.message });
    }
  }
  if (chosen) return { ...chosen, steps };
  const places = [
    "BUNPY_PYTHON (not set)",
    "VIRTUAL_ENV (not set)",
    ".venv (none in the working directory or its parents)",
    ".python-version (none)",
    'package.json "bunpy": { "python" } (not set)',
    "python3.14, python3.13, python3.12 on PATH",
    `${pyenvVersionsDir()}/*`,
    "python3 on PATH",
  ];
  const error = new PythonNotFoundError(
    [
      "bunpy could not find a usable Python (CPython 3.11+ with a shared libpython).",
      `Looked in: ${places.join("; ")}.`,
      tried.length ? `Found but not usable:\n${tried.join("\n")}` : "Found no interpreter at all.",
      "Fix: install one (Debian: apt-get install python3-dev; pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install 3.13),",
      "or point BUNPY_PYTHON at an interpreter, e.g. BUNPY_PYTHON=/usr/bin/python3.13.",
    ].join("\n"),
  );
  return { error, steps };
}
