/**
 * `sandbox: "strict"`: every rule left out refuses (processes, ctypes, sockets, files,
 * environment, registered JS functions, bunpy.shared, and the kernel rules are required),
 * and rules given next to `strict: true` allow what they list. Each refusal is checked
 * against the same probe in a context with an empty policy, where it is allowed, so the
 * test fails if the probe cannot tell.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { py, type ContextOptions } from "../src/index.ts";
import { closedAfterAll, hasOwnGil, PY_ATTEMPT } from "./helpers.ts";

const { keep } = closedAfterAll();
const context = async (options: ContextOptions) => keep(await py.context(options));

// not under /tmp: a sandboxed process context gets a private /tmp unless `files` lists one
const base = join(import.meta.dir, "..", ".cache");
mkdirSync(base, { recursive: true });
const dir = mkdtempSync(join(base, "strict-in-"));
writeFileSync(join(dir, "note.txt"), "inside");
const outside = mkdtempSync(join(base, "strict-out-"));
writeFileSync(join(outside, "note.txt"), "outside");
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(outside, { recursive: true, force: true });
});

// each probe returns "ok" when the thing worked, else the error's type and message
const PROBES = PY_ATTEMPT + `
import os, asyncio, bunpy
def run_program():
    import subprocess
    subprocess.run(["true"], check=True)
def use_ctypes():
    import ctypes
    ctypes.CDLL(None)
def tcp_socket():
    import socket
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
def read(path):
    return lambda: open(path).read()
def environment():
    if "BUNPY_STRICT_SECRET" not in os.environ:
        raise KeyError("BUNPY_STRICT_SECRET")
def js_function():
    bunpy.call("strict_probe")
def shared_store():
    bunpy.shared.get("strict_key")
async def loop_work():
    await asyncio.sleep(0.001)
    return sum(range(10))
def probes(inside, outside):
    return {"processes": attempt(run_program), "ctypes": attempt(use_ctypes), "sockets": attempt(tcp_socket),
            "inside": attempt(read(inside)), "outside": attempt(read(outside)), "env": attempt(environment),
            "jsFunctions": attempt(js_function), "shared": attempt(shared_store),
            "loop": asyncio.run(loop_work())}
`;

type Probes = Record<string, string | number>;
const probe = async (options: ContextOptions): Promise<Probes> => {
  const ctx = await context(options);
  await ctx.exec(PROBES);
  return (await ctx.call("__main__", "probes", [join(dir, "note.txt"), join(outside, "note.txt")])) as Probes;
};

beforeAll(() => {
  py.exec("import os\nos.environ['BUNPY_STRICT_SECRET'] = '1'");
  py.register("strict_probe", () => 1);
});
afterAll(() => py.unregister("strict_probe"));

const modes = [...(hasOwnGil ? (["owngil"] as const) : []), "process" as const];

describe.each(modes)("%s context", (mode) => {
  test("an empty policy allows every probe (so the probes can tell)", async () => {
    const got = await probe({ mode, sandbox: {} });
    for (const k of ["processes", "sockets", "inside", "outside", "env", "jsFunctions", "shared"]) expect(got[k]).toBe("ok");
    // 3.12's subinterpreters refuse _ctypes whatever the policy (extension-guard)
    if (mode === "owngil" && py.version.startsWith("3.12.")) expect(got["ctypes"]).toContain("not known to support subinterpreters");
    else expect(got["ctypes"]).toBe("ok");
    expect(got["loop"]).toBe(45);
  });

  test('"strict" refuses each of them, and asyncio still runs', async () => {
    const got = await probe({ mode, sandbox: "strict" });
    expect(got["processes"]).toContain("rule: no processes");
    expect(got["ctypes"]).toContain("ctypes");
    expect(got["sockets"]).toContain("PermissionError");
    expect(got["inside"]).toContain("PermissionError");
    expect(got["outside"]).toContain("PermissionError");
    expect(got["env"]).toContain("KeyError");
    expect(got["jsFunctions"]).toContain("not in this context's sandbox jsFunctions");
    expect(got["shared"]).toContain("rule: no shared");
    expect(got["loop"]).toBe(45);
  });

  test("rules next to strict: true allow what they list, the rest stays refused", async () => {
    const got = await probe({ mode, sandbox: { strict: true, files: [dir], env: ["BUNPY_STRICT_SECRET"], jsFunctions: ["strict_probe"] } });
    expect(got["inside"]).toBe("ok");
    expect(got["outside"]).toContain("PermissionError");
    expect(got["env"]).toBe("ok");
    expect(got["jsFunctions"]).toBe("ok");
    expect(got["processes"]).toContain("rule: no processes");
    expect(got["shared"]).toContain("rule: no shared");
  });

  test("readFiles: read there, not written", async () => {
    const ctx = await context({ mode, sandbox: { strict: true, readFiles: [dir] } });
    await ctx.exec(PROBES);
    const at = join(dir, "note.txt");
    expect(await ctx.eval(`attempt(read(${JSON.stringify(at)}))`)).toBe("ok");
    expect(await ctx.eval(`attempt(lambda: open(${JSON.stringify(join(dir, "new.txt"))}, "w").close())`)).toContain("PermissionError");
    expect(await ctx.eval(`attempt(lambda: open(${JSON.stringify(at)}, "a").close())`)).toContain("PermissionError");
  });

  test("strict: false is the same as leaving it out", async () => {
    const got = await probe({ mode, sandbox: { strict: false, shared: false } });
    expect(got["processes"]).toBe("ok");
    expect(got["shared"]).toContain("rule: no shared");
  });
});

test("a worker context cannot be strict (it shares the main interpreter)", async () => {
  await expect(py.context({ mode: "worker", sandbox: "strict" })).rejects.toThrow(/worker context .* cannot be strict/);
  await expect(py.context({ mode: "worker", sandbox: { strict: true } })).rejects.toThrow(TypeError);
});

test("a sandbox that is not an object or \"strict\" is a TypeError", async () => {
  await expect(py.context({ sandbox: "lenient" as never })).rejects.toThrow(/must be an object or "strict"/);
  await expect(py.context({ sandbox: { strict: "yes" as never } })).rejects.toThrow(/strict must be a boolean/);
  await expect(py.context({ sandbox: 5 as never })).rejects.toThrow(TypeError);
});

test.if(hasOwnGil)("a strict pool runs calls in every context", async () => {
  const pool = await py.pool({ size: 2, sandbox: "strict" });
  try {
    await pool.execAll("import os\ndef env(): return sorted(os.environ)");
    expect(await Promise.all([pool.call("__main__", "env", []), pool.call("__main__", "env", [])])).toEqual([[], []]);
  } finally {
    await pool.close();
  }
});
