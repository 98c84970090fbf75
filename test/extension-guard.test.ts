// Every load of an extension module in an owngil context is checked, whatever path it
// takes (the finder, spec_from_file_location + module_from_spec, _imp.create_dynamic,
// ExtensionFileLoader, load_module, a second _imp module, a copy of the file elsewhere).
// On 3.12.1 merely trying a single-phase extension there corrupts the extension cache and a
// later import in the main interpreter aborts, so the attempts run in a child process.
import { expect, test } from "bun:test";
import { join } from "node:path";
import { py } from "../src/index.ts";

const [, minor, patch] = py.version.split(".").map(Number) as [number, number, number];
const WAYS = ["by_file", "by_alias", "by_create_dynamic", "by_loader", "by_load_module", "by_fresh_imp",
  "by_import_without_finder", "by_copy"];

type Attempt = { way: string; name: string; loaded?: boolean; error?: string; message?: string };

async function attempts(names: string[]): Promise<{ results: Attempt[]; main: string | undefined; code: number | null; stderr: string }> {
  const proc = Bun.spawn([process.execPath, join(import.meta.dir, "fixtures", "extension-guard.ts"), names.join(",")], {
    stdout: "pipe",
    stderr: "pipe",
    env: process.env,
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 60_000);
  const [out, stderr] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  await proc.exited;
  clearTimeout(timer);
  const lines = out.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  return {
    results: lines.filter((l) => "way" in l),
    main: lines.find((l) => "main" in l)?.main,
    code: proc.exitCode,
    stderr,
  };
}

function byName(results: Attempt[], name: string): Attempt[] {
  const mine = results.filter((r) => r.name === name);
  expect(mine.map((r) => r.way)).toEqual(WAYS);
  return mine;
}

test.if(minor === 12)("3.12: unsafe accelerators and single-phase extensions are refused by every load path, and the main interpreter still loads them", async () => {
  const names = ["_decimal", "_datetime", "_zoneinfo"];
  const single = py.eval("__import__('importlib.util').util.find_spec('_testsinglephase') is not None");
  if (single) names.push("_testsinglephase");
  const { results, main, code, stderr } = await attempts(names);
  expect(stderr).not.toContain("double free");
  expect(code).toBe(0);
  for (const name of names) {
    for (const r of byName(results, name)) {
      expect({ way: r.way, error: r.error }).toEqual({ way: r.way, error: "ImportError" });
      expect(r.message).toStartWith("bunpy: the extension module");
      if (name === "_testsinglephase") expect(r.message).toContain("use a context with mode 'worker'");
    }
  }
  expect(main).toBe("0.25 2024-01-02");
}, 90_000);

test.if(minor === 12)("3.12: multi-phase stdlib extensions load by every path from the standard library's directory", async () => {
  const names = ["_json", "_socket", "math"];
  const { results, main, code } = await attempts(names);
  expect(code).toBe(0);
  for (const name of names) {
    for (const r of byName(results, name)) {
      if (r.way === "by_alias" || r.way === "by_copy") {
        // another name, or a file outside lib-dynload: not known to be the stdlib's module
        expect(r.error).toBe("ImportError");
        expect(r.message).toContain("single-phase extension modules cannot load in an owngil context on Python 3.12");
      } else {
        expect({ way: r.way, loaded: r.loaded, message: r.message }).toEqual({ way: r.way, loaded: true, message: undefined });
      }
    }
  }
  expect(main).toBe("0.25 2024-01-02");
}, 90_000);

test.if(minor === 13 && patch === 0)("3.13.0: _datetime is refused by every load path; _decimal and _json load by every path", async () => {
  const { results, main, code } = await attempts(["_datetime", "_decimal", "_json"]);
  expect(code).toBe(0);
  for (const r of byName(results, "_datetime")) {
    expect({ way: r.way, error: r.error }).toEqual({ way: r.way, error: "ImportError" });
    expect(r.message).toContain("not safe in a subinterpreter");
  }
  for (const name of ["_decimal", "_json"])
    for (const r of byName(results, name)) expect({ way: r.way, loaded: r.loaded }).toEqual({ way: r.way, loaded: true });
  expect(main).toBe("0.25 2024-01-02");
}, 90_000);

test.if(minor >= 12)("the guard cannot be installed twice or with bad arguments, and pure-Python fallbacks work in the context", async () => {
  const ctx = await py.context({ mode: "owngil" });
  try {
    if (minor === 12 || (minor === 13 && patch === 0)) {
      const again = await ctx.exec("import _bunpy\n_bunpy.guard_extensions(frozenset(), None, None)").catch((e) => e);
      expect(again.type).toBe("RuntimeError");
      expect(String(again.message)).toContain("already guarded");
      // the original function is not reachable from the wrapper
      expect(await ctx.eval("type(__import__('_imp').create_dynamic.__self__).__name__")).toBe("tuple");
      expect(await ctx.eval("__import__('datetime').date(2024, 1, 2).isoformat()")).toBe("2024-01-02");
      expect(await ctx.eval("__import__('datetime').datetime.__module__")).toBe("_pydatetime"); // the pure-Python fallback
      // zoneinfo falls back to its pure-Python version too (its C module needs _datetime's C API)
      expect(await ctx.eval("__import__('zoneinfo').ZoneInfo is __import__('zoneinfo._zoneinfo').ZoneInfo")).toBe(true);
      expect(await ctx.eval("str(__import__('datetime').datetime(2024, 1, 2, tzinfo=__import__('zoneinfo').ZoneInfo('UTC')))")).toBe(
        "2024-01-02 00:00:00+00:00",
      );
    }
    const bad = await ctx.exec("import _bunpy\n_bunpy.guard_extensions(1, 2, 3)").catch((e) => e);
    expect(bad.type).toBe("TypeError");
    if (minor === 12) expect(await ctx.eval("str(__import__('decimal').Decimal(1) / 4)")).toBe("0.25");
  } finally {
    await ctx.close();
  }
});
