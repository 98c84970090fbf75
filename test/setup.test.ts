// Finding Python and building the shim, exercised in fresh Bun processes.
//
// Nothing here depends on the BUNPY_PYTHON the suite runs under: every child process is
// given its Python (BUNPY_PYTHON, VIRTUAL_ENV or a project setting naming 3.11, 3.12, 3.13)
// or none. .ci/run runs the suite once per Python and sets BUNPY_CI_INDEPENDENT_RAN_ON=<version>
// on all but the first run: these tests ran in full under that version already, and skip.
import { expect, test } from "bun:test";
import { independentOfPython } from "./ci-independent.ts";
import { mkdtempSync, writeFileSync, chmodSync, existsSync, mkdirSync, readdirSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const START = join(import.meta.dir, "fixtures", "start.ts");
const PYENV = join(process.env["HOME"] ?? "/root", ".pyenv", "versions");
const py313 = join(PYENV, "3.13.0", "bin", "python3");

function run(env: Record<string, string | undefined>, args: string[] = []) {
  const merged: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...env })) if (v !== undefined) merged[k] = v;
  const r = Bun.spawnSync([process.execPath, START, ...args], { env: merged, stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

const tmp = (prefix: string) => mkdtempSync(join(tmpdir(), prefix));


independentOfPython("discovery", () => {
  test("BUNPY_PYTHON selects the interpreter, and sys.executable is that python", () => {
    const r = run({ BUNPY_PYTHON: py313 });
    expect(r.code).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info.version).toBe("3.13.0");
    expect(info.executable).toBe(py313);
    expect(info.sysExecutable).toBe(py313);
    expect(info.answer).toBe(42);
  });

  test("a BUNPY_PYTHON that does not exist is a PythonNotFoundError", () => {
    const r = run({ BUNPY_PYTHON: "/nonexistent/python3" });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("PythonNotFoundError");
    expect(r.stderr).toContain("BUNPY_PYTHON=/nonexistent/python3");
  });

  // Each BUNPY_PYTHON / VIRTUAL_ENV mistake: the message says what was found, why it does not
  // fit and how to fix it (naming a usable interpreter found on this machine).
  const fixHint = (stderr: string) => {
    expect(stderr).toContain("set BUNPY_PYTHON to a CPython 3.11+ executable");
    expect(stderr).toMatch(/such as \/\S+python3/);
  };

  test("BUNPY_PYTHON as a bare name is looked up on PATH", () => {
    const bin = join(PYENV, "3.13.0", "bin");
    const r = run({ BUNPY_PYTHON: "python3.13", PATH: `${bin}:${process.env["PATH"]}` });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).executable).toBe(join(bin, "python3.13"));
  });

  test("BUNPY_PYTHON as a bare name that is not on PATH says so", () => {
    const r = run({ BUNPY_PYTHON: "python3.99" });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("PythonNotFoundError: BUNPY_PYTHON=python3.99: there is no python3.99 on PATH");
    expect(r.stderr).toContain("set BUNPY_PYTHON to the full path of");
  });

  test("BUNPY_PYTHON=~/… is expanded", () => {
    const home = process.env["HOME"] ?? "/root";
    if (!py313.startsWith(`${home}/`)) return;
    const r = run({ BUNPY_PYTHON: `~/${py313.slice(home.length + 1)}` });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).executable).toBe(py313);
  });

  test("a BUNPY_PYTHON that does not exist says so", () => {
    const r = run({ BUNPY_PYTHON: "/nonexistent/python3" });
    expect(r.stderr).toContain("BUNPY_PYTHON=/nonexistent/python3: /nonexistent/python3 does not exist;");
    fixHint(r.stderr);
  });

  test("a BUNPY_PYTHON that is a directory says so, suggesting its bin/python3", () => {
    const prefix = join(PYENV, "3.13.0");
    const r = run({ BUNPY_PYTHON: prefix });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`${prefix} is a directory, not an interpreter (did you mean ${prefix}/bin/python3?)`);
    expect(r.stderr).not.toContain("EACCES");
    fixHint(r.stderr);
  });

  test("a BUNPY_PYTHON that is not a Python says what running it printed", () => {
    const r = run({ BUNPY_PYTHON: "/bin/echo", BUNPY_CACHE_DIR: tmp("bunpy-cache-") });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('BUNPY_PYTHON=/bin/echo: /bin/echo is not a Python interpreter (running it with -c printed "-I -c import json');
    expect(r.stderr).not.toContain("JSON Parse error");
    fixHint(r.stderr);
    const f = run({ BUNPY_PYTHON: "/bin/false", BUNPY_CACHE_DIR: tmp("bunpy-cache-") });
    expect(f.stderr).toContain("/bin/false does not run as a Python interpreter (running it with -I -c failed with exit code 1)");
  });

  test("a BUNPY_PYTHON that is not executable says so", () => {
    const file = join(tmp("bunpy-fake-"), "python3");
    writeFileSync(file, "#!/bin/sh\n");
    chmodSync(file, 0o644);
    const r = run({ BUNPY_PYTHON: file });
    expect(r.stderr).toContain(`${file} is not executable`);
    fixHint(r.stderr);
  });

  test("VIRTUAL_ENV pointing at a missing directory is an error naming it", () => {
    const r = run({ BUNPY_PYTHON: undefined, VIRTUAL_ENV: "/nonexistent/venv" });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("PythonNotFoundError: VIRTUAL_ENV=/nonexistent/venv: the directory does not exist;");
    expect(r.stderr).toContain("deactivate");
  });

  test("VIRTUAL_ENV that is not a virtual environment is an error naming it", () => {
    const dir = tmp("bunpy-notvenv-");
    const r = run({ BUNPY_PYTHON: undefined, VIRTUAL_ENV: dir });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`VIRTUAL_ENV=${dir}: there is no bin/python3 in it`);
  });

  test("VIRTUAL_ENV whose python is a broken link (its base Python was removed) says so", () => {
    const venv = tmp("bunpy-brokenvenv-");
    mkdirSync(join(venv, "bin"));
    symlinkSync("/nonexistent/python3.12", join(venv, "bin", "python3"));
    const r = run({ BUNPY_PYTHON: undefined, VIRTUAL_ENV: venv });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`VIRTUAL_ENV=${venv}: its ${venv}/bin/python3 is a link to /nonexistent/python3.12, which does not exist; recreate the environment`);
  });

  test("VIRTUAL_ENV with an unsupported Python is an error, not a silent switch to another Python", () => {
    const old = join(PYENV, "3.10.13");
    if (!existsSync(join(old, "bin", "python3"))) return;
    const r = run({ BUNPY_PYTHON: undefined, VIRTUAL_ENV: old });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`VIRTUAL_ENV=${old}: its ${old}/bin/python3 is Python 3.10.13, and bunpy needs 3.11 or newer`);
    expect(r.stderr).toMatch(/recreate the environment .* -m venv /);
  });

  test("a Python older than 3.11 is refused with the reason", () => {
    const old = join(PYENV, "3.10.13", "bin", "python3");
    if (!existsSync(old)) return;
    const r = run({ BUNPY_PYTHON: old });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("needs 3.11 or newer");
  });

  test("an interpreter without headers: the build (no prebuilt shim here) says what is missing", () => {
    const dir = tmp("bunpy-fake-");
    const fake = join(dir, "python3");
    const probe = {
      impl: "cpython", version: "3.13.0", major: 3, minor: 13, include: join(dir, "include"),
      libdir: dir, ldlibrary: "libpython3.13.so", shared: true, freeThreaded: false,
    };
    writeFileSync(fake, `#!/bin/sh\necho '${JSON.stringify(probe)}'\n`);
    chmodSync(fake, 0o755);
    const r = run({ BUNPY_PYTHON: fake, BUNPY_CACHE_DIR: tmp("bunpy-cache-") });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("BuildError");
    expect(r.stderr).toContain(`building one needs Python's C headers, which are not in ${join(dir, "include")}`);
    expect(r.stderr).toContain("python3-dev");
  });

  test("a free-threaded build is refused with the reason", () => {
    const dir = tmp("bunpy-fake-");
    const fake = join(dir, "python3");
    const probe = {
      impl: "cpython", version: "3.13.0", major: 3, minor: 13, include: dir,
      libdir: dir, ldlibrary: "libpython3.13t.so", shared: true, freeThreaded: true,
    };
    writeFileSync(fake, `#!/bin/sh\necho '${JSON.stringify(probe)}'\n`);
    chmodSync(fake, 0o755);
    const r = run({ BUNPY_PYTHON: fake, BUNPY_CACHE_DIR: tmp("bunpy-cache-") });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("free-threaded");
  });

  test("with nothing usable anywhere, the error lists every place tried and how to fix it", () => {
    const home = tmp("bunpy-home-");
    const r = run({ BUNPY_PYTHON: undefined, VIRTUAL_ENV: undefined, PYENV_ROOT: join(home, "pyenv"), HOME: home, PATH: "/nonexistent", BUNPY_CACHE_DIR: tmp("bunpy-cache-") });
    expect(r.code).not.toBe(0);
    for (const place of ["BUNPY_PYTHON", "VIRTUAL_ENV", "python3.13", "pyenv", "python3 on PATH"]) expect(r.stderr).toContain(place);
    expect(r.stderr).toContain("Fix:");
  });

  test("VIRTUAL_ENV is used: its site-packages are importable and sys.executable is its python", () => {
    const venv = join(tmp("bunpy-venv-"), "env");
    const made = Bun.spawnSync([py313, "-m", "venv", "--without-pip", venv]);
    expect(made.exitCode).toBe(0);
    const site = join(venv, "lib", "python3.13", "site-packages");
    writeFileSync(join(site, "bunpy_venv_probe.py"), "def value():\n    return 'from the venv'\n");
    const r = run({ BUNPY_PYTHON: undefined, VIRTUAL_ENV: venv }, ["bunpy_venv_probe"]);
    expect(r.stderr.replace(/^bunpy: building the C shim.*\n/, "")).toBe("");
    const info = JSON.parse(r.stdout);
    expect(info.extra).toBe("from the venv");
    expect(info.executable).toBe(join(venv, "bin", "python3"));
    expect(info.sysExecutable).toBe(join(venv, "bin", "python3"));
    expect(info.prefix).toBe(venv);
  });
});

independentOfPython("shim build", () => {
  test("two processes building at once both start; the build prints one line; later starts print nothing", async () => {
    const cache = tmp("bunpy-cache-");
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries({ ...process.env, BUNPY_PYTHON: py313, BUNPY_CACHE_DIR: cache })) if (v !== undefined) env[k] = v;
    // a temporary build left by a process that was killed mid-build is removed by this build
    const where = Bun.spawnSync(
      [process.execPath, "-e", `import { shimPath } from "${join(import.meta.dir, "..", "src", "build.ts")}"; import { findPython } from "${join(import.meta.dir, "..", "src", "discover.ts")}"; console.log(shimPath(findPython()))`],
      { env, stdout: "pipe", stderr: "pipe" },
    );
    const deadPid = Bun.spawnSync(["true"]).pid;
    const stale = `${join(where.stdout.toString().trim(), "..")}.tmp-${deadPid}-stale`;
    mkdirSync(join(stale, "lib"), { recursive: true });
    const procs = [0, 1].map(() => Bun.spawn([process.execPath, START], { env, stdout: "pipe", stderr: "pipe" }));
    const results = await Promise.all(
      procs.map(async (p) => ({ code: await p.exited, out: await new Response(p.stdout).text(), err: await new Response(p.stderr).text() })),
    );
    for (const r of results) {
      expect(r.code).toBe(0);
      expect(JSON.parse(r.out).answer).toBe(42);
      const lines = r.err.split("\n").filter(Boolean);
      expect(lines.length).toBeLessThanOrEqual(1);
      if (lines.length) expect(lines[0]).toContain("building the C shim");
    }
    const shims = readdirSync(join(cache, "shim")).filter((d) => !d.includes(".tmp-"));
    expect(shims.length).toBe(1);
    expect(existsSync(stale)).toBe(false);
    expect(readdirSync(join(cache, "shim")).filter((d) => d.includes(".tmp-"))).toEqual([]);
    const again = run({ BUNPY_PYTHON: py313, BUNPY_CACHE_DIR: cache });
    expect(again.code).toBe(0);
    expect(again.stderr).toBe("");
  }, 480_000); // two zig builds at once: 60 s on the idle 2-core machine, 205 s at load 8–10 (CI, other work running)

  test("a missing zig is a clear error", () => {
    const r = run({ BUNPY_PYTHON: py313, BUNPY_CACHE_DIR: tmp("bunpy-cache-"), BUNPY_ZIG: "/nonexistent/zig" });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("BuildError");
    expect(r.stderr).toContain("/nonexistent/zig");
  });
});

// Project conventions: .venv, .python-version, package.json "bunpy": { "python" }, each in a
// temporary project (cwd), with BUNPY_PYTHON and VIRTUAL_ENV unset.
const DISCOVER = join(import.meta.dir, "fixtures", "discover.ts");
const py312 = join(PYENV, "3.12.1", "bin", "python3");
const py311 = join(PYENV, "3.11.7", "bin", "python3");

interface Found {
  executable: string | null;
  version: string | null;
  why: string | null;
  error: string | null;
  steps: { source: string; path?: string; outcome: string }[];
}

function discoverIn(cwd: string, env: Record<string, string | undefined> = {}): Found {
  const merged: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, BUNPY_PYTHON: undefined, VIRTUAL_ENV: undefined, ...env })) if (v !== undefined) merged[k] = v;
  const r = Bun.spawnSync([process.execPath, DISCOVER], { cwd, env: merged, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  return JSON.parse(r.stdout.toString()) as Found;
}

/** A temporary project: package.json (with `pkg` merged in) and the given files. */
function project(files: Record<string, string> = {}, pkg: object = {}): string {
  const dir = tmp("bunpy-proj-");
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "app", ...pkg }));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(dir, name, ".."), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  return dir;
}

function makeVenv(python: string, dir: string): string {
  const made = Bun.spawnSync([python, "-m", "venv", "--without-pip", dir]);
  if (made.exitCode !== 0) throw new Error(made.stderr.toString());
  return dir;
}

independentOfPython("discovery from the project", () => {
  test("a .venv in the project is used, found from a subdirectory", () => {
    const dir = project({ "src/deep/keep": "" });
    const venv = makeVenv(py312, join(dir, ".venv"));
    const d = discoverIn(join(dir, "src", "deep"));
    expect(d.error).toBeNull();
    expect(d.executable).toBe(join(venv, "bin", "python3"));
    expect(d.version).toBe("3.12.1");
    expect(d.why).toBe(`the project has a virtual environment at ${venv}`);
    expect(d.steps.map((s) => s.source)).toEqual(["BUNPY_PYTHON", "VIRTUAL_ENV", ".venv"]);
  });

  test("the .venv's packages are importable and sys.executable is its python", () => {
    const dir = project();
    const venv = makeVenv(py313, join(dir, ".venv"));
    writeFileSync(join(venv, "lib", "python3.13", "site-packages", "bunpy_dotvenv_probe.py"), "def value():\n    return 'from .venv'\n");
    const merged: Record<string, string> = {};
    for (const [k, v] of Object.entries({ ...process.env, BUNPY_PYTHON: undefined, VIRTUAL_ENV: undefined })) if (v !== undefined) merged[k] = v;
    const r = Bun.spawnSync([process.execPath, START, "bunpy_dotvenv_probe"], { cwd: dir, env: merged, stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).toBe(0);
    const info = JSON.parse(r.stdout.toString());
    expect(info.extra).toBe("from .venv");
    expect(info.sysExecutable).toBe(join(venv, "bin", "python3"));
    expect(info.prefix).toBe(venv);
  }, 120_000);

  test("VIRTUAL_ENV wins over the project's .venv", () => {
    const dir = project();
    makeVenv(py312, join(dir, ".venv"));
    const other = makeVenv(py313, join(tmp("bunpy-venv-"), "env"));
    const d = discoverIn(dir, { VIRTUAL_ENV: other });
    expect(d.executable).toBe(join(other, "bin", "python3"));
  });

  test("a broken .venv is an error naming it, not a switch to another Python", () => {
    const dir = project();
    mkdirSync(join(dir, ".venv", "bin"), { recursive: true });
    symlinkSync("/nonexistent/python3.12", join(dir, ".venv", "bin", "python3"));
    const d = discoverIn(dir);
    expect(d.executable).toBeNull();
    expect(d.error).toContain(`the project's virtual environment ${join(dir, ".venv")}: its ${join(dir, ".venv", "bin", "python3")} is a link to /nonexistent/python3.12, which does not exist`);
    expect(d.error).toContain("recreate the environment, or remove it, or set BUNPY_PYTHON to the Python to use (`uv venv` or `python3 -m venv");
  });

  test(".python-version with a minor version picks pyenv's newest of that minor", () => {
    const dir = project({ ".python-version": "3.12\n" });
    const d = discoverIn(dir);
    expect(d.error).toBeNull();
    expect(d.executable).toBe(py312);
    expect(d.why).toBe(`${join(dir, ".python-version")} asks for 3.12`);
  });

  test(".python-version with a full version, a comment and several versions: the first is used", () => {
    const dir = project({ ".python-version": "# pinned\n3.11.7\n3.13.0\n", "sub/x": "" });
    const d = discoverIn(join(dir, "sub"));
    expect(d.executable).toBe(py311);
    expect(d.version).toBe("3.11.7");
  });

  test(".venv wins over .python-version", () => {
    const dir = project({ ".python-version": "3.11\n" });
    const venv = makeVenv(py312, join(dir, ".venv"));
    expect(discoverIn(dir).executable).toBe(join(venv, "bin", "python3"));
  });

  test(".python-version naming a version that is not installed says how to install it", () => {
    const dir = project({ ".python-version": "3.12.99\n" });
    const d = discoverIn(dir);
    expect(d.executable).toBeNull();
    expect(d.error).toContain(`${join(dir, ".python-version")} (3.12.99) asks for Python 3.12.99`);
    expect(d.error).toContain("pyenv install 3.12.99");
    expect(d.error).toContain("uv python install 3.12.99");
  });

  test(".python-version naming a Python bunpy cannot embed says why", () => {
    if (!existsSync(join(PYENV, "3.10.13"))) return;
    const dir = project({ ".python-version": "3.10\n" });
    const d = discoverIn(dir);
    expect(d.error).toContain("is Python 3.10.13, and bunpy needs 3.11 or newer");
    const bad = discoverIn(project({ ".python-version": "pypy3.10\n" }));
    expect(bad.error).toContain('"pypy3.10" is not a CPython version bunpy understands');
  });

  test('package.json "bunpy": { "python" } as a version, a venv directory, a command', () => {
    const byVersion = discoverIn(project({}, { bunpy: { python: "3.13" } }));
    expect(byVersion.executable).toBe(py313);
    expect(byVersion.why).toContain('"bunpy": { "python": "3.13" }');
    const dir = project({}, { bunpy: { python: "./envs/py312" } });
    const venv = makeVenv(py312, join(dir, "envs", "py312"));
    expect(discoverIn(dir).executable).toBe(join(venv, "bin", "python3"));
    const bin = join(PYENV, "3.11.7", "bin");
    const byName = discoverIn(project({}, { bunpy: { python: "python3.11" } }), { PATH: `${bin}:${process.env["PATH"]}` });
    expect(byName.executable).toBe(join(bin, "python3.11"));
  });

  test(".python-version wins over package.json", () => {
    const dir = project({ ".python-version": "3.11\n" }, { bunpy: { python: "3.13" } });
    expect(discoverIn(dir).executable).toBe(py311);
  });

  test("package.json mistakes are errors naming the field", () => {
    const missing = project({}, { bunpy: { python: "./nope/python3" } });
    const d = discoverIn(missing);
    expect(d.error).toContain(`${join(missing, "package.json")} "bunpy": { "python": "./nope/python3" }: ${join(missing, "nope", "python3")} does not exist`);
    const wrongType = project({}, { bunpy: { python: 3.12 } });
    expect(discoverIn(wrongType).error).toContain("the value must be a non-empty string");
  });

  test("with no project setting, the search decides and says so", () => {
    const d = discoverIn(project());
    expect(d.error).toBeNull();
    expect(d.why).toContain("no project setting names a Python");
    expect(d.steps.slice(0, 5).map((s) => s.outcome.split(" ")[0])).toEqual(["not", "not", "no", "no", expect.stringContaining("/")]);
  });
});
