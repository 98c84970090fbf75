// `bunpy doctor` in temporary projects: what it found, why, the venv, the shim, the modes.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const CLI = join(import.meta.dir, "..", "src", "cli.ts");
const PYENV = join(process.env["HOME"] ?? "/root", ".pyenv", "versions");
const py312 = join(PYENV, "3.12.1", "bin", "python3");

function doctor(cwd: string, env: Record<string, string | undefined> = {}) {
  const merged: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, BUNPY_PYTHON: undefined, VIRTUAL_ENV: undefined, ...env })) if (v !== undefined) merged[k] = v;
  const r = Bun.spawnSync([process.execPath, CLI, "doctor"], { cwd, env: merged, stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

function project(files: Record<string, string> = {}, pkg: object = {}): string {
  const dir = mkdtempSync(join(tmpdir(), "bunpy-doctor-"));
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "app", ...pkg }));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

describe("bunpy doctor", () => {
  test("a project .venv: the candidates, why it won, the venv and its site-packages, the shim, the modes", () => {
    const dir = project();
    const venv = join(dir, ".venv");
    expect(Bun.spawnSync([py312, "-m", "venv", "--without-pip", venv]).exitCode).toBe(0);
    const cache = mkdtempSync(join(tmpdir(), "bunpy-cache-"));
    const r = doctor(dir, { BUNPY_CACHE_DIR: cache });
    expect(r.err).toBe("");
    expect(r.out).toMatch(/^ {2}BUNPY_PYTHON +not set$/m);
    expect(r.out).toMatch(/^ {2}VIRTUAL_ENV +not set$/m);
    expect(r.out).toMatch(new RegExp(`^→ \\.venv +${venv}/bin/python3: chosen$`, "m"));
    expect(r.out).toContain(`Python: ${venv}/bin/python3 (Python 3.12.1)`);
    expect(r.out).toContain(`chosen because the project has a virtual environment at ${venv}`);
    expect(r.out).toContain(`virtual environment: ${venv} (made from ${join(PYENV, "3.12.1")})`);
    expect(r.out).toContain(`site-packages: ${venv}/lib/python3.12/site-packages`);
    expect(r.out).toContain(`install packages for it with: ${venv}/bin/python3 -m pip install`);
    expect(r.out).toContain(`Shim (cache: ${cache}):`);
    // this checkout has no platform package installed: the shim comes from zig
    expect(r.out).toContain("prebuilt: not used: bunpy-linux-x64-gnu is not installed");
    expect(r.out).toContain(`zig-built: ${cache}/shim/3.12.1-`);
    expect(r.out).toContain("(not built yet: the first start builds it)");
    expect(r.out).toMatch(/zig: \S+zig \(.*version 0\.\d+\.\d+.*\): builds the shim/);
    expect(r.out).toContain("owngil  yes");
    expect(r.out).toContain("on 3.12 single-phase C extensions are refused");
    expect(r.out).toContain("worker  yes");
    expect(r.code).toBe(0);
  });

  test(".python-version 3.11: owngil is not available, worker is the default", () => {
    const r = doctor(project({ ".python-version": "3.11\n" }));
    expect(r.out).toContain("→ .python-version");
    expect(r.out).toContain("Python 3.11.7");
    expect(r.out).toContain("virtual environment: none");
    expect(r.out).toContain("owngil  no: subinterpreters with their own GIL need Python 3.12+ (this is 3.11.7)");
    expect(r.out).toContain("(the default here)");
    expect(r.code).toBe(0);
  });

  test("the search: every candidate is listed, one chosen, the others usable or with the reason", () => {
    const r = doctor(project());
    expect(r.out).toMatch(/^ {2}package\.json +\S+package\.json: \S+ has no "bunpy": \{ "python" \} field$/m);
    const chosen = r.out.split("\n").filter((l) => l.startsWith("→ "));
    expect(chosen.length).toBe(1);
    expect(r.out).toContain("chosen because no project setting names a Python; the search found it first");
    for (const v of ["3.13.0", "3.12.1", "3.11.7"]) expect(r.out).toContain(join(PYENV, v, "bin", "python3"));
    expect(r.out).toMatch(/usable \(Python 3\.\d+\.\d+\), not chosen: an earlier candidate won/);
    expect(r.out).toMatch(/3\.10\.13\/bin\/python3: is Python 3\.10\.13, and bunpy needs 3\.11 or newer/);
  });

  test("a discovery error is printed with the steps before it, and the exit code is 1", () => {
    const r = doctor(project(), { BUNPY_PYTHON: "/nonexistent/python3" });
    expect(r.code).toBe(1);
    expect(r.out).toContain("BUNPY_PYTHON  error: BUNPY_PYTHON=/nonexistent/python3: /nonexistent/python3 does not exist");
    expect(r.out).toContain("No Python: BUNPY_PYTHON=/nonexistent/python3");
  });

  test("a BUNPY_ZIG that cannot run is shown as such", () => {
    const cache = mkdtempSync(join(tmpdir(), "bunpy-cache-"));
    const r = doctor(project({ ".python-version": "3.12\n" }), { BUNPY_ZIG: "/nonexistent/zig", BUNPY_CACHE_DIR: cache });
    expect(r.out).toContain("zig: /nonexistent/zig (BUNPY_ZIG, version cannot be run");
  });

  test("unknown commands print the usage", () => {
    const r = Bun.spawnSync([process.execPath, CLI, "frobnicate"], { stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).toBe(2);
    expect(r.stderr.toString()).toContain("usage: bunpy doctor");
  });
});
