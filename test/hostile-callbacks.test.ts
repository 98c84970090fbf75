// A hostile pass over JS functions called from contexts (src/hub.ts runCall): what a
// registered function returns is user code too. Every odd value gives Python a JSError;
// none leaves the call unanswered or throws uncaught in Bun.
import { describe, expect, test } from "bun:test";
import { py } from "../src/index.ts";
import { closedAfterAll, hasOwnGil } from "./helpers.ts";
import { linux } from "./kernel-escapes.ts";

const { keep } = closedAfterAll();
const modes: ("owngil" | "worker" | "process")[] = [...(hasOwnGil ? (["owngil"] as const) : []), "worker", ...(linux ? (["process"] as const) : [])];

const revoked = Proxy.revocable({}, {});
revoked.revoke();
const revokedPromise = Proxy.revocable(Promise.resolve(1), {});
revokedPromise.revoke();

/** [name, the function, what Python must get (a regexp over its repr or its error)] */
const returns: [string, () => unknown, RegExp][] = [
  ["a revoked Proxy", () => revoked.proxy, /^JSError: .*revoked/],
  ["a revoked Proxy of a Promise", () => revokedPromise.proxy, /^JSError: .*revoked/],
  ["a Proxy whose getPrototypeOf trap throws", () => new Proxy({}, { getPrototypeOf() { throw new RangeError("no prototype for you"); } }), /^JSError: RangeError: no prototype for you/],
  ["a Promise whose own then throws", () => Object.assign(Promise.resolve(1), { then() { throw new Error("then threw"); } }), /^JSError: Error: then threw/],
  ["a Promise whose own then calls both callbacks, twice", () => Object.assign(Promise.resolve(1), { then(ok: (v: unknown) => void, no: (e: unknown) => void) { ok(7); no(new Error("late")); ok(8); } }), /^7$/],
  ["a Promise whose then getter throws", () => Object.defineProperty(Promise.resolve(1), "then", { get() { throw new Error("getter threw"); } }), /^JSError: Error: getter threw/],
];

const PY = `
import bunpy, asyncio
def sync(n):
    try: return repr(bunpy.call(n))
    except BaseException as e: return type(e).__name__ + ': ' + str(e)
async def asy(n):
    try: return repr(await bunpy.async_call(n))
    except BaseException as e: return type(e).__name__ + ': ' + str(e)
`;

describe("registered functions that return hostile values, called from contexts", () => {
  for (const [i, [, fn]] of returns.entries()) py.register(`t_hcb_${i}`, fn);
  for (const mode of modes)
    test(`${mode}: each is a JSError in Python (bunpy.call and async_call); nothing hangs or throws uncaught`, async () => {
      const ctx = keep(await py.context({ mode }));
      await ctx.exec(PY);
      for (const [i, [what, , want]] of returns.entries())
        for (const f of ["sync", "asy"]) {
          const got = await ctx.call("__main__", f, [`t_hcb_${i}`], undefined, { timeout: 5000 }).catch((e) => `REJECTED ${e}`);
          expect({ what, f, got }).toEqual({ what, f, got: expect.stringMatching(want) });
        }
      expect(await ctx.eval("1 + 1")).toBe(2);
      await ctx.close();
    }, 60_000);
});
