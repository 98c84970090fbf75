// Error types and messages a user meets: after py.close(), from a Python exception (stack,
// printed output, the install hint), and Ctrl-C during the first shim build.
import { describe, expect, test } from "bun:test";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PythonError, py } from "../src/index.ts";
import { contextModes, defineModule } from "./helpers.ts";

const FIXTURES = join(import.meta.dir, "fixtures");
const SRC = join(import.meta.dir, "..", "src");

function env(extra: Record<string, string | undefined> = {}): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...extra })) if (v !== undefined) out[k] = v;
  return out;
}

function run(args: string[], extra: Record<string, string | undefined> = {}) {
  const r = Bun.spawnSync([process.execPath, ...args], { env: env(extra), stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

function caught(fn: () => unknown): PythonError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(PythonError);
    return e as PythonError;
  }
  throw new Error("expected a PythonError");
}

defineModule(
  "t_messages",
  "def innermost(x):\n    return 1 / x\n\ndef middle(x):\n    return innermost(x)\n\ndef chained():\n    try:\n        {}['k']\n    except KeyError:\n        middle(0)\n",
);

describe("after py.close()", () => {
  test("every entry point fails with PythonClosedError (contexts: ContextClosedError), py.version stays readable", () => {
    const r = run([join(FIXTURES, "after-close.ts")]);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, string>;
    const closedPython = ["eval", "exec", "call", "import", "builtins", "register", "on", "context", "pool", "proxyAttr", "proxyCall", "proxyItem", "repr"];
    for (const k of closedPython) expect(`${k} ${out[k]}`).toMatch(new RegExp(`^${k} PythonClosedError: .*(closed)`));
    // the entry points that do not reach the shim say how Python was closed
    for (const k of ["register", "on", "context", "pool"]) expect(out[k]).toContain("py.close()");
    expect(out["len"]).toContain("PythonClosedError");
    for (const k of ["ctxCall", "ctxEval", "ctxExec", "ctxCallSync", "refCall", "poolCall"])
      expect(`${k} ${out[k]}`).toMatch(new RegExp(`^${k} ContextClosedError: .*closed`));
    expect(out["version"]).toMatch(/^3\.\d+\.\d+$/);
  }, 60_000);
});

describe("PythonError", () => {
  test("message, String() and fields are the one-line form; the fields do not clutter printing", () => {
    const e = caught(() => py.call("t_messages", "middle", [0]));
    expect(e.message).toBe("ZeroDivisionError: division by zero");
    expect(String(e)).toBe("PythonError: ZeroDivisionError: division by zero");
    expect(`${e}`).toBe("PythonError: ZeroDivisionError: division by zero");
    expect(e.type).toBe("ZeroDivisionError");
    expect(e.pythonMessage).toBe("division by zero");
    expect(e.traceback).toContain('in innermost\n');
    for (const k of ["traceback", "type", "module", "pythonMessage"]) expect(Object.keys(e)).not.toContain(k);
    expect(() => py.call("t_messages", "middle", [0])).toThrow("ZeroDivisionError: division by zero");
    // wrapping code may set the message
    e.message = `while computing: ${e.message}`;
    expect(e.message).toBe("while computing: ZeroDivisionError: division by zero");
  });

  test("stack: the message, the Python frames innermost first, then the caller's frames, no bunpy frames", () => {
    const e = caught(() => py.call("t_messages", "middle", [0]));
    const lines = e.stack!.split("\n");
    expect(lines[0]).toBe("PythonError: ZeroDivisionError: division by zero");
    expect(lines.slice(1, 3)).toEqual(["    at innermost (<string>:2)", "    at middle (<string>:5)"]);
    const mine = lines.findIndex((l) => l.includes(import.meta.path));
    expect(mine).toBeGreaterThan(2);
    expect(e.stack).not.toContain(SRC);
  });

  test("stack of a chained exception has the frames of the one raised; of code from py.exec its <py.exec> lines", () => {
    const e = caught(() => py.call("t_messages", "chained", []));
    expect(e.type).toBe("ZeroDivisionError");
    const python = e.stack!.split("\n").filter((l) => l.endsWith(")") && l.includes("(<string>:"));
    expect(python).toEqual(["    at innermost (<string>:2)", "    at middle (<string>:5)", "    at chained (<string>:11)"]);
    const x = caught(() => py.exec("a = 1\nb = a / 0"));
    expect(x.stack!.split("\n")[1]).toBe("    at <module> (<py.exec>:2)");
    // a syntax error has its location, not a function
    const s = caught(() => py.eval("1 +"));
    expect(s.stack!.split("\n")[1]).toMatch(/^    at <python> \(<py.eval>:1\)$/);
  });

  for (const mode of contextModes)
    test(`a ${mode} context's PythonError has the Python frames in its stack`, async () => {
      const ctx = await py.context({ mode });
      try {
        await ctx.exec("def f(x):\n    return g(x)\n\ndef g(x):\n    return 1 / x\n");
        const e = (await ctx.call("__main__", "f", [0]).catch((e) => e)) as PythonError;
        expect(e).toBeInstanceOf(PythonError);
        expect(e.message).toBe("ZeroDivisionError: division by zero");
        const lines = e.stack!.split("\n");
        expect(lines.slice(0, 3)).toEqual(["PythonError: ZeroDivisionError: division by zero", "    at g (<ctx.exec>:5)", "    at f (<ctx.exec>:2)"]);
        expect(e.stack).not.toContain(SRC);
      } finally {
        await ctx.close();
      }
    });

  test("an uncaught PythonError prints the Python traceback and the caller's frames, not bunpy's code", () => {
    const r = run([join(FIXTURES, "python-error.ts")]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("PythonError: ZeroDivisionError: division by zero");
    expect(r.stderr).toContain('File "<py.exec>", line 2, in inner');
    expect(r.stderr).toMatch(/at inner \(<py\.exec>:2/);
    expect(r.stderr).toMatch(/at outer \(<py\.exec>:5/);
    expect(r.stderr).toContain(`${join(FIXTURES, "python-error.ts")}:8`);
    expect(r.stderr).not.toContain(SRC); // no bunpy code frame or frames
    expect(r.stderr).not.toContain("traceback:"); // not the traceback as one escaped string
  }, 60_000);

  test("a failing bun test shows the Python traceback (sync and async)", () => {
    const r = run(["test", join(FIXTURES, "python-error.ts")], { BUNPY_AS_TEST: "1" });
    expect(r.code).not.toBe(0);
    const out = r.stdout + r.stderr;
    expect(out).toContain("2 fail");
    expect(out).toContain('File "<py.exec>", line 5, in outer');
    expect(out).toContain('File "<py.exec>", line 2, in inner');
    expect(out).toMatch(/at inner_ctx \(<ctx\.exec>:2/);
    expect(out).toContain(`${join(FIXTURES, "python-error.ts")}:8`);
  }, 60_000);

  test("ModuleNotFoundError of a top-level module names the Python bunpy runs and how to install into it", async () => {
    const e = caught(() => py.import("bunpy_no_such_module"));
    expect(e.type).toBe("ModuleNotFoundError");
    expect(e.pythonMessage).toBe("No module named 'bunpy_no_such_module'");
    expect(e.message).toContain(`Python ${py.version} at ${py.executable}`);
    expect(e.message).toContain(`${py.executable} -m pip install bunpy_no_such_module`);
    const viaCall = caught(() => py.call("bunpy_no_such_module", "f"));
    expect(viaCall.message).toContain("-m pip install bunpy_no_such_module");
    // a missing submodule is not a missing package: no hint
    const sub = caught(() => py.import("json.bunpy_nope"));
    expect(sub.message).toBe("ModuleNotFoundError: No module named 'json.bunpy_nope'");
    const ctx = await py.context({ mode: "worker" });
    try {
      const c = (await ctx.exec("import bunpy_no_such_module").catch((e) => e)) as PythonError;
      expect(c.message).toContain("-m pip install bunpy_no_such_module");
    } finally {
      await ctx.close();
    }
  });
});

describe("Ctrl-C during the first shim build", () => {
  for (const listener of [false, true])
    test(`stops the process by SIGINT, prints no BuildError, leaves no temporary build${listener ? " (with a SIGINT listener)" : ""}`, async () => {
      const cache = mkdtempSync(join(tmpdir(), "bunpy-cache-"));
      const child = spawn(process.execPath, [join(FIXTURES, "build-sigint.ts"), ...(listener ? ["listener"] : [])], {
        env: env({ BUNPY_CACHE_DIR: cache }),
        detached: true, // its own process group, as a terminal's Ctrl-C reaches bun and zig
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      let sent = false;
      const onData = (d: Buffer) => {
        out += d.toString();
        if (!sent && out.includes("building the C shim")) {
          sent = true;
          setTimeout(() => process.kill(-child.pid!, "SIGINT"), 1000); // zig is compiling by then
        }
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", onData);
      const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.on("exit", (c, s) => resolve([c, s])));
      expect(sent).toBe(true);
      expect(out).not.toContain("BuildError");
      expect(out).not.toContain('"version"'); // it did not go on to start Python
      expect(signal === "SIGINT" || code === 130).toBe(true);
      const shimDir = join(cache, "shim");
      const left = existsSync(shimDir) ? readdirSync(shimDir) : [];
      expect(left.filter((d) => d.includes(".tmp-"))).toEqual([]);
      expect(left.filter((d) => existsSync(join(shimDir, d, "libbunpy.so")))).toEqual([]);
    }, 120_000);
});
