// Interrupts that always land (issue 9, items 7-10): a timeout, an AbortSignal or close()
// reaches Python however it waits or spins — a coroutine spinning after an await, asyncio.run
// inside a sync call, a wait for a JS answer, bunpy.sleep, send back-pressure — and Python
// sees bunpy.Interrupted, which asyncio does not swallow.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { CallTimeoutError, ContextClosedError, PythonError, py, type Context } from "../src/index.ts";
import { closedAfterAll, contextModes } from "./helpers.ts";

const { context } = closedAfterAll();

const SOURCE = `
import asyncio, bunpy, time
seen = []

def note(e):
    seen.append(f"{type(e).__name__}: {e}")

async def spin_after_await():
    await asyncio.sleep(0)
    try:
        while True:
            pass
    except BaseException as e:
        note(e)
        raise

async def spin_catching_cancel():
    # a task that ignores its cancellation (CancelledError) and spins
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        pass
    try:
        while True:
            pass
    except BaseException as e:
        note(e)
        raise

logged = []

def run_spinning():
    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: logged.append(ctx["message"]))
        await asyncio.sleep(0)
        while True:
            await asyncio.sleep(0)   # most of the time goes to the loop's own callbacks
    try:
        return asyncio.run(main())
    except BaseException as e:
        note(e)
        raise

def run_swallowing():
    # code that swallows every Exception, as retry loops do
    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: logged.append(ctx["message"]))
        while True:
            try:
                await asyncio.sleep(0)
                sum(range(100))
            except Exception:
                pass
    try:
        asyncio.run(main())
    except BaseException as e:
        note(e)
        raise

def spin():
    while True:
        pass

def run_callback_spin():
    # a plain loop callback (not a task) spins
    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: logged.append(ctx["message"]))
        asyncio.get_running_loop().call_soon(spin)
        await asyncio.sleep(3600)
    try:
        asyncio.run(main())
    except BaseException as e:
        note(e)
        raise

def call_js(name):
    try:
        return bunpy.call(name)
    except BaseException as e:
        note(e)
        raise

async def call_js_after_await(name):
    await asyncio.sleep(0)
    return call_js(name)

def sleep(s):
    try:
        bunpy.sleep(s)
    except BaseException as e:
        note(e)
        raise
    return "slept"

def send_forever():
    try:
        while True:
            bunpy.send("interrupts-flood", 1)
    except BaseException as e:
        note(e)
        raise

caught_once = []
def catch_once():
    try:
        while True:
            pass
    except BaseException as e:
        caught_once.append(type(e).__name__)
    while True:   # goes on after catching it: the interrupt comes again
        pass

def is_keyboard_interrupt():
    return issubclass(bunpy.Interrupted, KeyboardInterrupt) and not issubclass(bunpy.Interrupted, Exception)
`;

async function ready(mode: string): Promise<Context> {
  const ctx = await context(mode as "owngil" | "worker");
  await ctx.exec(SOURCE);
  return ctx;
}

/** The context answers again (its earlier call is really gone), within `ms`. */
async function answers(ctx: Context, ms = 5000): Promise<boolean> {
  const free = ctx.eval("'free'").then((v) => v === "free");
  return Promise.race([free, Bun.sleep(ms).then(() => false)]);
}

async function seen(ctx: Context): Promise<string[]> {
  for (let i = 0; i < 200; i++) {
    const s = (await ctx.eval("seen")) as string[];
    if (s.length > 0) return s;
    await Bun.sleep(5);
  }
  return [];
}

for (const mode of contextModes) {
  describe(`${mode} context`, () => {
    test("bunpy.Interrupted is a KeyboardInterrupt, not an Exception", async () => {
      const ctx = await ready(mode);
      expect(await ctx.call("__main__", "is_keyboard_interrupt")).toBe(true);
    });

    test("the interrupt is raised again while the interrupted call still runs, and never hits the next call", async () => {
      const ctx = await ready(mode);
      const err = await ctx.call("__main__", "catch_once", [], {}, { timeout: 50 }).catch((e) => e);
      expect(err).toBeInstanceOf(CallTimeoutError);
      expect(await answers(ctx)).toBe(true);
      expect(await ctx.eval("caught_once")).toEqual(["Interrupted"]);
      await Bun.sleep(100);
      expect(await ctx.eval("sum(range(1000000))")).toBe(499999500000);
    });

    test.each([
      ["a coroutine spinning after its first await", "spin_after_await"],
      ["a task that ignores its cancellation and spins", "spin_catching_cancel"],
    ])("item 7: %s is interrupted by a timeout", async (_what, fn) => {
      const ctx = await ready(mode);
      const err = await ctx.call("__main__", fn, [], {}, { timeout: 100 }).catch((e) => e);
      expect(err).toBeInstanceOf(CallTimeoutError);
      expect(await answers(ctx)).toBe(true);
      expect((await seen(ctx))[0]).toStartWith("Interrupted");
    });

    test("item 7: ... and by an AbortSignal", async () => {
      const ctx = await ready(mode);
      const ac = new AbortController();
      const call = ctx.call("__main__", "spin_after_await", [], {}, { signal: ac.signal }).catch((e) => e);
      await Bun.sleep(50);
      ac.abort(new Error("stop"));
      expect((await call).message).toBe("stop");
      expect(await answers(ctx)).toBe(true);
    });

    test("item 7: close() ends a spinning coroutine nobody cancelled (after its grace period)", async () => {
      const ctx = await py.context({ mode });
      await ctx.exec(SOURCE);
      const call = ctx.call("__main__", "spin_after_await").catch((e) => e);
      await Bun.sleep(50);
      await ctx.close({ timeout: 200 });
      expect(ctx.state).toBe("closed");
      expect(await call).toBeInstanceOf(ContextClosedError);
    });

    for (const fn of ["run_spinning", "run_swallowing", "run_callback_spin"]) {
      test(`item 8: asyncio.run inside a sync call is interrupted, not logged and swallowed (${fn})`, async () => {
        const ctx = await ready(mode);
        const err = await ctx.call("__main__", fn, [], {}, { timeout: 100 }).catch((e) => e);
        expect(err).toBeInstanceOf(CallTimeoutError);
        expect(await answers(ctx)).toBe(true);
        expect((await seen(ctx))[0]).toStartWith("Interrupted");
        expect(await ctx.eval("logged")).toEqual([]); // no "Exception in callback"
        // the next call is not hit by a late interrupt
        expect(await ctx.call("builtins", "sum", [[1, 2, 3]])).toBe(6);
        await Bun.sleep(50);
        expect(await ctx.eval("sum(range(100000))")).toBe(4999950000);
      });
    }

    test("item 9: a sync bunpy.call to a JS function that never settles is interrupted by a timeout", async () => {
      const ctx = await ready(mode);
      py.register("interrupts_never", () => new Promise(() => {}));
      const err = await ctx.call("__main__", "call_js", ["interrupts_never"], {}, { timeout: 100 }).catch((e) => e);
      expect(err).toBeInstanceOf(CallTimeoutError);
      expect(await answers(ctx)).toBe(true);
      expect((await seen(ctx))[0]).toBe("Interrupted: bunpy: the call was cancelled from JS (timeout or AbortSignal)");
    });

    test("item 9: ... from a coroutine, by an AbortSignal", async () => {
      const ctx = await ready(mode);
      py.register("interrupts_never2", () => new Promise(() => {}));
      const ac = new AbortController();
      const call = ctx.call("__main__", "call_js_after_await", ["interrupts_never2"], {}, { signal: ac.signal }).catch((e) => e);
      await Bun.sleep(50);
      ac.abort(new Error("stop"));
      expect((await call).message).toBe("stop");
      expect(await answers(ctx)).toBe(true);
      expect((await seen(ctx))[0]).toStartWith("Interrupted");
    });

    test("item 9: ... and by close(), which then finishes", async () => {
      const ctx = await py.context({ mode });
      await ctx.exec(SOURCE);
      py.register("interrupts_never3", () => new Promise(() => {}));
      const call = ctx.call("__main__", "call_js", ["interrupts_never3"]).catch((e) => e);
      await Bun.sleep(50);
      await ctx.close();
      expect(ctx.state).toBe("closed");
      const err = await call;
      expect(err).toBeInstanceOf(PythonError);
      expect(err.type).toBe("Interrupted");
      expect(err.message).toContain("closing");
    });

    test("item 10: a JS function that awaits close() of the context calling it does not deadlock", async () => {
      const ctx = await py.context({ mode });
      await ctx.exec(SOURCE);
      let closed = false;
      py.register("interrupts_close_me", async () => {
        await ctx.close();
        closed = true;
        return 1;
      });
      const err = await ctx.call("__main__", "call_js", ["interrupts_close_me"]).catch((e) => e);
      expect(err).toBeInstanceOf(PythonError);
      expect(err.type).toBe("Interrupted");
      expect(err.message).toContain("closing");
      for (let i = 0; i < 400 && !closed; i++) await Bun.sleep(5);
      expect(closed).toBe(true);
      expect(ctx.state).toBe("closed");
    });

    test("bunpy.sleep ends with Interrupted on a timeout and on close()", async () => {
      const ctx = await py.context({ mode });
      await ctx.exec(SOURCE);
      expect(await ctx.call("__main__", "sleep", [30], {}, { timeout: 50 }).catch((e) => e)).toBeInstanceOf(CallTimeoutError);
      expect(await answers(ctx)).toBe(true);
      expect((await seen(ctx))[0]).toStartWith("Interrupted: bunpy: the call was cancelled");
      const during = ctx.call("__main__", "sleep", [30]).catch((e) => e);
      await Bun.sleep(30);
      await ctx.close();
      expect((await during).type).toBe("Interrupted");
    });

    test("close() ends a bunpy.send waiting at its back-pressure limit", async () => {
      const ctx = await py.context({ mode });
      await ctx.exec(SOURCE);
      const call = ctx.call("__main__", "send_forever").catch((e) => e);
      py.exec("import time; time.sleep(0.3)"); // the JS thread reads nothing: the context fills its queue and waits
      const t0 = performance.now();
      await ctx.close({ timeout: 60_000 });
      expect(performance.now() - t0).toBeLessThan(10_000);
      const err = await call;
      expect(err.type).toBe("Interrupted");
      expect(err.message).toContain("closing");
    });
  });
}

test("item 9: a process whose context waited for a JS function that never settles exits, and py.close() works", () => {
  for (const mode of contextModes) {
    const r = Bun.spawnSync([process.execPath, join(import.meta.dir, "fixtures", "never-settles.ts"), mode], {
      stdout: "pipe",
      stderr: "pipe",
      timeout: 30_000,
    });
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(r.stdout.toString().trim())).toEqual({ timedOut: true, state: "closed", pyClosed: true });
  }
});
