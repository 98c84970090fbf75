// Finding Python and building the shim, exercised in fresh Bun processes.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync, chmodSync, existsSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const START = join(import.meta.dir, "fixtures", "start.ts");
const PYENV = join(process.env.HOME ?? "/root", ".pyenv", "versions");
const py313 = join(PYENV, "3.13.0", "bin", "python3");

function run(env: Record<string, string | undefined>, args: string[] = []) {
  const merged: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...env })) if (v !== undefined) merged[k] = v;
  const r = Bun.spawnSync([process.execPath, START, ...args], { env: merged, stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

const tmp = (prefix: string) => mkdtempSync(join(tmpdir(), prefix));

describe("discovery", () => {
  test("BUNPY_PYTHON selects the interpreter, and sys.executable is that python", () => {
    const r = run({ BUNPY_PYTHON: py313 });
    expect(r.code).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info.version).toBe("3.13.0");
    expect(info.executable).toBe(py313);
    expect(info.sysExecutable).toBe(py313);
    expect(info.answer).toBe(42);
  });

  test("a BUNPY_PYTHON that does not exist is a clear error", () => {
    const r = run({ BUNPY_PYTHON: "/nonexistent/python3" });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("PythonNotFoundError");
    expect(r.stderr).toContain("BUNPY_PYTHON=/nonexistent/python3");
  });

  test("a Python older than 3.11 is refused with the reason", () => {
    const old = join(PYENV, "3.10.13", "bin", "python3");
    if (!existsSync(old)) return;
    const r = run({ BUNPY_PYTHON: old });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("needs 3.11 or newer");
  });

  test("an interpreter without headers is refused, naming what is missing", () => {
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
    expect(r.stderr).toContain("has no C headers");
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

describe("shim build", () => {
  test("two processes building at once both start; the build prints one line; later starts print nothing", async () => {
    const cache = tmp("bunpy-cache-");
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries({ ...process.env, BUNPY_PYTHON: py313, BUNPY_CACHE_DIR: cache })) if (v !== undefined) env[k] = v;
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
    const again = run({ BUNPY_PYTHON: py313, BUNPY_CACHE_DIR: cache });
    expect(again.code).toBe(0);
    expect(again.stderr).toBe("");
  }, 240_000);

  test("a missing zig is a clear error", () => {
    const r = run({ BUNPY_PYTHON: py313, BUNPY_CACHE_DIR: tmp("bunpy-cache-"), BUNPY_ZIG: "/nonexistent/zig" });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("BuildError");
    expect(r.stderr).toContain("/nonexistent/zig");
  });
});
