// Shared by the test files: defines a Python module from source in the main interpreter,
// so each file's helpers live in their own namespace.
import { afterAll } from "bun:test";
import { writeFileSync } from "node:fs";
import { py, type Context } from "../src/index.ts";

py.exec(`
def _bunpy_test_module(name, src):
    import sys, types
    m = types.ModuleType(name)
    exec(src, m.__dict__)
    sys.modules[name] = m
`);

export function defineModule(name: string, source: string): void {
  py.call("__main__", "_bunpy_test_module", [name, source]);
}

/** Python 3.12+ has subinterpreters with their own GIL (owngil contexts). */
export const hasOwnGil = Number(py.version.split(".")[1]) >= 12;
/** The context modes this Python has. */
export const contextModes = hasOwnGil ? (["owngil", "worker"] as const) : (["worker"] as const);

/**
 * Contexts a test file starts and that are closed after all its tests:
 * `context(mode?)` starts one, `keep(ctx)` adds one started another way.
 */
export function closedAfterAll() {
  const open: Context[] = [];
  afterAll(async () => {
    await Promise.all(open.map((c) => c.close()));
  });
  const keep = (ctx: Context): Context => (open.push(ctx), ctx);
  return {
    keep,
    context: async (mode?: "owngil" | "worker") => keep(await py.context(mode ? { mode } : undefined)),
  };
}

/** Python: `attempt(f)` runs f and gives "ok", or the error's type and message (probes of
    what a sandbox lets through). */
export const PY_ATTEMPT = `
def attempt(f):
    try:
        f()
        return "ok"
    except BaseException as e:
        return f"{type(e).__name__}: {e}"
`;

/**
 * Closes an owngil context one of whose Python threads ignores close()'s interrupts and
 * waits for the file `flag`, so the interpreter is left behind; then creates `flag` and
 * returns what that thread wrote to the file `out` ("" if nothing within 5 s). close()
 * resolves once the context's thread is done ending the interpreter: after its 5 s wait
 * for the stubborn thread. Only a close that gave up on its thread (abandoned) resolves
 * earlier: then it waits past those 5 s itself.
 */
export async function closeLeavingThreadBehind(ctx: Context, flag: string, out: string): Promise<string> {
  await ctx.close({ timeout: 100 });
  if (ctx.state === "abandoned") await Bun.sleep(6000);
  writeFileSync(flag, "");
  let result = "";
  for (let i = 0; i < 100 && result === ""; i++) {
    await Bun.sleep(50);
    result = await Bun.file(out).text().catch(() => "");
  }
  return result;
}
