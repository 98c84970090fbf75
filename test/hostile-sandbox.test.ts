/**
 * Hostile code in a sandboxed context trying to get around its rules (the `env` rule, the
 * fd table of its own, jsFunctions). Each test was a way out before its fix.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { py, type ContextOptions } from "../src/index.ts";
import { closedAfterAll, hasOwnGil } from "./helpers.ts";

const { keep } = closedAfterAll();
const context = async (options: ContextOptions) => keep(await py.context(options));

beforeAll(() => {
  py.exec("import os\nos.environ['BUNPY_HOSTILE_SECRET'] = 's3cret'");
});
afterAll(() => {
  py.exec("import os\nfor k in ('BUNPY_HOSTILE_SECRET', 'BUNPY_FROM_CTX', 'BUNPY_FROM_CTX2'):\n    os.environ.pop(k, None)");
});

/** Runs `code` in the context; its last line is an expression whose value comes back. */
async function run(ctx: Awaited<ReturnType<typeof context>>, code: string): Promise<unknown> {
  const lines = code.trim().split("\n");
  const last = lines.pop()!;
  await ctx.exec(lines.join("\n"));
  return ctx.eval(last);
}

const CHILD_SEES_SECRET = `
def child_sees_secret():
    import subprocess
    try:
        out = subprocess.run(["env"], capture_output=True, text=True).stdout
    except Exception as e:
        return type(e).__name__ + ": " + str(e)
    return "BUNPY_HOSTILE_SECRET" in out
`;

describe.skipIf(!hasOwnGil)("env rule (owngil)", () => {
  test("replacing bunpy._context.environment (or its module) does not give a child the whole environment", async () => {
    for (const patch of [
      "import bunpy._context as c\nc.environment = lambda: None",
      "import sys, types\nsys.modules['bunpy._context'] = types.SimpleNamespace(environment=lambda: None, teardown=lambda *a: None)",
      "import bunpy._context as c\nc.environment = lambda: 42",
    ]) {
      const ctx = await context({ mode: "owngil", sandbox: { env: ["PATH"] } });
      await ctx.exec(CHILD_SEES_SECRET);
      await ctx.exec(patch);
      const r = await ctx.eval("child_sees_secret()");
      expect(r).not.toBe(true);
      expect(String(r)).toMatch(/env/);
      await ctx.close();
    }
  });

  test("a fresh _posixsubprocess (its fork_exec unguarded) is refused under the env rule", async () => {
    const ctx = await context({ mode: "owngil", sandbox: { env: ["PATH"] } });
    await ctx.exec(CHILD_SEES_SECRET);
    const reimport = `
import sys, subprocess
kept = sys.modules.pop('_posixsubprocess')
try:
    import _posixsubprocess as fresh
    subprocess._fork_exec = fresh.fork_exec
    r = "imported"
except PermissionError as e:
    r = str(e)
finally:
    sys.modules['_posixsubprocess'] = kept
r`;
    expect(await run(ctx, reimport)).toMatch(/rule: env/);
    const spec = `
import importlib.util, sys
try:
    importlib.util.module_from_spec(sys.modules["_posixsubprocess"].__spec__)
    r = "made"
except PermissionError as e:
    r = str(e)
r`;
    expect(await run(ctx, spec)).toMatch(/rule: env/);
    expect(await ctx.eval("child_sees_secret()")).toBe(false);
  });

  test("os.environ writes, os.putenv and os.unsetenv change the context's environment only, not Bun's", async () => {
    const ctx = await context({ mode: "owngil", sandbox: { env: ["PATH"] } });
    const code = `
import os, subprocess
os.environ['BUNPY_FROM_CTX'] = 'x'
os.environ.pop('PATH')
os.environ['PATH'] = '/usr/bin:/bin'
try:
    os.putenv('BUNPY_FROM_CTX2', 'y')
    direct = 'set'
except PermissionError as e:
    direct = str(e)
try:
    import posix
    posix.unsetenv('HOME')
    direct2 = 'unset'
except PermissionError as e:
    direct2 = str(e)
out = subprocess.run(['env'], capture_output=True, text=True).stdout
[direct, direct2, 'BUNPY_FROM_CTX=x' in out, os.environ.get('BUNPY_FROM_CTX')]`;
    const [direct, direct2, childSees, ctxSees] = (await run(ctx, code)) as [string, string, boolean, string];
    expect(direct).toMatch(/rule: env/);
    expect(direct2).toMatch(/rule: env/);
    expect(childSees).toBe(true); // its own children get what it set
    expect(ctxSees).toBe("x");
    // the process's C environment is untouched: what the main interpreter's children get
    const host = py.eval("__import__('subprocess').run(['env'], capture_output=True, text=True).stdout") as string;
    expect(host).not.toContain("BUNPY_FROM_CTX");
    expect(host).toMatch(/^PATH=/m);
    expect(process.env["HOME"] === undefined || host.includes("HOME=")).toBe(true);
  });
});

describe("jsFunctions", () => {
  test("a function registered by the user under bunpy's prefix is not callable past jsFunctions", async () => {
    // bunpy's own names pass the jsFunctions check (they check their caller); a user's
    // function must not get that pass by its name
    let called = 0;
    let registered = true;
    try {
      py.register("__bunpy_user_secret", () => ++called);
    } catch (e) {
      registered = false;
      expect(String(e)).toMatch(/reserved/);
    }
    const ctx = await context({ mode: "worker", sandbox: { jsFunctions: [] } });
    await ctx.exec("import bunpy");
    const r = await ctx.eval("(lambda: (lambda f: f())(lambda: bunpy.call('__bunpy_user_secret')))()").catch((e) => String(e));
    expect(called).toBe(0);
    expect(String(r)).toMatch(/ReferenceError/);
    if (registered) py.unregister("__bunpy_user_secret");
  });
});

describe.skipIf(!hasOwnGil)("http.response.pathsend from a sandboxed app (owngil)", () => {
  // Bun opens the file, outside the sandbox: a sandboxed app must not get it to, whatever
  // its Python side (which is all the app's to change) says
  test("neither offering itself the extension and swapping a symlink, nor patching bunpy._asgi, sends a file outside its files", async () => {
    const dir = mkdtempSync(join(tmpdir(), "bunpy-pathsend-"));
    const secret = join(mkdtempSync(join(tmpdir(), "bunpy-secret-")), "secret.txt");
    writeFileSync(secret, "TOP SECRET");
    // the app's module in its own directory (a sandboxed context reads its files there)
    copyFileSync(join(import.meta.dir, "fixtures", "serve", "hostile_pathsend.py"), join(dir, "hostile_pathsend.py"));
    for (const attack of ["swap", "patched"]) {
      const app = await py.asgi(`hostile_pathsend:${attack}`, {
        pool: { size: 1, mode: "owngil", sandbox: { files: [dir], env: [] } },
        path: [dir],
      });
      try {
        const bodies: string[] = [];
        for (const target of [secret, "/proc/self/environ"]) {
          for (let i = 0; i < 2; i++) {
            const write = process.stderr.write, error = console.error;
            process.stderr.write = () => true; // the refusal is logged
            console.error = () => {};
            try {
              const r = await app.fetch(new Request(`http://x/?${encodeURIComponent(`${dir}|${target}`)}`));
              bodies.push(await r.text());
            } finally {
              process.stderr.write = write;
              console.error = error;
            }
          }
        }
        // (booleans: a failure must not print the environment)
        expect(bodies.map((b) => b.includes("TOP SECRET") || b.includes("PATH="))).toEqual([false, false, false, false]);
      } finally {
        await app.close();
      }
    }
  }, 60_000); // two sandboxed pools one after another: past bun test's 5 s on a loaded machine
});
