/**
 * Hostile policy objects: the sandbox a context gets is the one its policy object said at
 * py.context() time, read once. A `strict` (or any rule) that is inherited (a class getter,
 * Object.create) counts as it does when it is an own property, and a getter or a Proxy that
 * answers differently on later reads cannot get a value past the checks.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { py, type ContextOptions, type SandboxPolicy } from "../src/index.ts";
import { closedAfterAll, hasOwnGil, PY_ATTEMPT } from "./helpers.ts";

const { keep } = closedAfterAll();
const context = async (options: ContextOptions) => keep(await py.context(options));

const PROBE = PY_ATTEMPT + `
import os
def probes():
    import subprocess
    return {"env": "BUNPY_HOSTILE_SECRET" in os.environ,
            "processes": attempt(lambda: subprocess.run(["true"], check=True))}
`;

beforeAll(() => py.exec("import os\nos.environ['BUNPY_HOSTILE_SECRET'] = '1'"));
afterAll(() => py.exec("import os\nos.environ.pop('BUNPY_HOSTILE_SECRET', None)"));

const probe = async (sandbox: unknown) => {
  const ctx = await context({ mode: "owngil", sandbox: sandbox as SandboxPolicy });
  await ctx.exec(PROBE);
  return (await ctx.call("__main__", "probes")) as { env: boolean; processes: string };
};

describe.skipIf(!hasOwnGil)("sandbox policy objects", () => {
  test("the probe tells: an empty policy sees the environment and starts programs", async () => {
    const got = await probe({});
    expect(got.env).toBe(true);
    expect(got.processes).toBe("ok");
  });

  test("strict from a class getter is strict", async () => {
    class Locked {
      get strict() {
        return true;
      }
    }
    const got = await probe(new Locked());
    expect(got.env).toBe(false);
    expect(got.processes).toContain("PermissionError");
  });

  test("strict inherited through Object.create is strict", async () => {
    const got = await probe(Object.create({ strict: true }));
    expect(got.env).toBe(false);
    expect(got.processes).toContain("PermissionError");
  });

  test("a Proxy and a frozen policy are read as plain objects", async () => {
    expect((await probe(new Proxy({ strict: true }, {}))).env).toBe(false);
    expect((await probe(Object.freeze({ strict: true, env: Object.freeze(["BUNPY_HOSTILE_SECRET"]) }))).env).toBe(true);
  });

  test("a getter that changes its answer after the checks does not get a value past them", async () => {
    let reads = 0;
    const flips = {
      get processes() {
        return reads++ < 2 ? false : "yes"; // the checks read it twice before the fix
      },
    };
    const got = await probe(flips);
    expect(got.processes).toContain("PermissionError");
  });

  test("an array a Proxy changes after its check is read once", async () => {
    let reads = 0;
    const env = new Proxy(["BUNPY_HOSTILE_SECRET"], {
      get(target, key, receiver) {
        if (key === "length") reads++;
        return reads > 1 && key === "0" ? 42 : Reflect.get(target, key, receiver);
      },
    });
    // either refused as a whole (not an array of names) or taken as it first read: never a crash
    try {
      const got = await probe({ env });
      expect(got.env).toBe(true);
    } catch (e) {
      expect(e).toBeInstanceOf(TypeError);
    }
  });

  test("strict given as a non-boolean is a TypeError", async () => {
    for (const strict of [1, "true", null, {}])
      await expect(py.context({ mode: "owngil", sandbox: { strict } as unknown as SandboxPolicy })).rejects.toThrow(TypeError);
  });
});

test("a served app's pool keeps an inherited strict when its path is made readable", async () => {
  const { withReadable } = await import("../src/sandbox.ts");
  const got = withReadable(Object.create({ strict: true }), ["/srv/app"]) as SandboxPolicy;
  expect(got.strict).toBe(true);
  expect(got.readFiles).toEqual(["/srv/app"]);
  expect(withReadable({ readFiles: "/x" } as unknown as SandboxPolicy, ["/srv/app"])).toEqual({ readFiles: "/x" } as unknown as SandboxPolicy);
});
