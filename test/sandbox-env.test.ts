/**
 * The sandbox's `env` rule: a context sees only the listed environment variables, and the
 * programs it starts get only those; the rest of the process (Bun, the main interpreter)
 * keeps its environment. Without the rule a context sees everything (checked first, so the
 * other tests can fail).
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { py, type ContextOptions } from "../src/index.ts";
import { closedAfterAll, hasOwnGil } from "./helpers.ts";

const { keep } = closedAfterAll();
const context = async (options: ContextOptions) => keep(await py.context(options));

const PROBE = `
import os, subprocess
def seen():
    return {"secret": os.environ.get("BUNPY_TEST_SECRET"), "path": "PATH" in os.environ,
            "bytes": os.environb.get(b"BUNPY_TEST_SECRET"), "keys": sorted(os.environ)}
def child():
    out = subprocess.run(["env"], capture_output=True, text=True).stdout
    return {"secret": "BUNPY_TEST_SECRET" in out, "path": any(l.startswith("PATH=") for l in out.splitlines())}
def shell():
    try:
        os.system("true")
        return "ran"
    except PermissionError as e:
        return str(e)
`;

beforeAll(() => {
  // in the C environment, where a new interpreter and a host process read it
  py.exec("import os\nos.environ['BUNPY_TEST_SECRET'] = 's3cret'");
});

const modes = [...(hasOwnGil ? (["owngil"] as const) : []), "process" as const];

describe.each(modes)("%s context", (mode) => {
  test("without the rule it sees the whole environment", async () => {
    const ctx = await context({ mode, sandbox: {} });
    await ctx.exec(PROBE);
    expect(((await ctx.call("__main__", "seen", [])) as { secret: string }).secret).toBe("s3cret");
  });

  test("with env: [PATH] it sees PATH only, and so do the programs it starts", async () => {
    const ctx = await context({ mode, sandbox: { env: ["PATH"] } });
    await ctx.exec(PROBE);
    expect(await ctx.call("__main__", "seen", [])).toEqual({ secret: null, path: true, bytes: null, keys: ["PATH"] });
    expect(await ctx.call("__main__", "child", [])).toEqual({ secret: false, path: true });
    expect(await ctx.call("__main__", "shell", [])).toContain("rule: env");
    // the rest of the process keeps it
    expect(py.eval("__import__('os').environ.get('BUNPY_TEST_SECRET')")).toBe("s3cret");
    expect(py.eval("__import__('os').getenv('BUNPY_TEST_SECRET')")).toBe("s3cret");
  });

  test("os.execv (which hands the C environment on) does not pass the rest on", () => {
    // an owngil context cannot exec at all (CPython refuses it in isolated subinterpreters);
    // a process context's host cleared its own C environment, so its program gets PATH only
    const r = Bun.spawnSync([process.execPath, join(import.meta.dir, "fixtures", "env-execv.ts"), mode], { env: process.env, stdout: "pipe", stderr: "pipe", timeout: 30_000 });
    const out = r.stdout.toString() + r.stderr.toString();
    expect(out).not.toContain("s3cret");
    if (mode === "owngil") expect(out).toContain("exec not supported for isolated subinterpreters");
    else expect(out).toContain("PATH=");
  });

  test("an explicit env for subprocess is passed as given", async () => {
    const ctx = await context({ mode, sandbox: { env: [] } });
    await ctx.exec(PROBE);
    expect(await ctx.eval("subprocess.run(['env'], env={'ONLY': '1'}, capture_output=True, text=True).stdout")).toBe("ONLY=1\n");
    expect(await ctx.eval("sorted(os.environ)")).toEqual([]);
  });
});

test("a worker context cannot have the rule (it shares the main interpreter's os.environ)", async () => {
  await expect(py.context({ mode: "worker", sandbox: { env: ["PATH"] } })).rejects.toThrow(/worker context shares the main interpreter's os.environ/);
});

test("bad env rules are rejected with a TypeError", async () => {
  for (const env of ["PATH", [1], ["A=B"], [""]] as unknown as string[][])
    await expect(py.context({ sandbox: { env } })).rejects.toThrow(/env must be an array of environment variable names/);
});

