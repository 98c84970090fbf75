/**
 * SIGINT and SIGTERM in contexts: signal.signal and loop.add_signal_handler register a
 * handler that runs on the context's thread when the process gets the signal, or when the
 * context is closed; a program written for the main thread (uvicorn) runs in a context,
 * serves HTTP over loopback and stops when asked. The process-signal tests run in a child
 * Bun (test/fixtures/loop-signals.ts), which signals itself.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { py, PythonError } from "../src/index.ts";
import { packageVenv } from "./fixtures/venv.ts";
import { closedAfterAll, contextModes } from "./helpers.ts";

const { context } = closedAfterAll();
const minor = Number(py.version.split(".")[1]);

// the child processes must not each spend the first-run shim build inside a test's time
beforeAll(() => void py.version, 120_000);

async function child(...args: string[]) {
  return childWith({}, ...args);
}

async function childWith(env: Record<string, string>, ...args: string[]) {
  const proc = Bun.spawn([process.execPath, join(import.meta.dir, "fixtures", "loop-signals.ts"), ...args], {
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, ...env },
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 60_000);
  const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  await proc.exited;
  clearTimeout(timer);
  const line = out.split("\n").find((l) => l.startsWith("{"));
  return { json: line ? JSON.parse(line) : undefined, out, err, code: proc.exitCode, signal: proc.signalCode };
}

const fdCount = () => readdirSync("/proc/self/fd").length;

describe.each(contextModes)("%s context", (mode) => {
  test("the process's SIGTERM and SIGINT run the context's handlers on its thread; the process goes on", async () => {
    const r = await child(mode, "handlers");
    expect(r.code).toBe(0);
    expect(r.json).toEqual({
      previous: ["<Handlers.SIG_DFL: 0>", "<built-in function default_int_handler>"],
      afterTerm: [["signal.signal", 15, true, true]],
      afterInt: [
        ["signal.signal", 15, true, true],
        ["add_signal_handler", "int"],
      ],
      removed: [true, false],
    });
  }, 90_000);

  // its own fd table: the handler, on another thread, reaches its loop through an eventfd
  // made before the context's thread started (shim/fdtable.c)
  test.skipIf(mode !== "owngil")("sandboxed, the same handlers run", async () => {
    const r = await childWith({ BUNPY_TEST_SANDBOXED: "1" }, mode, "handlers");
    expect(r.code).toBe(0);
    expect(r.json?.afterInt).toEqual([
      ["signal.signal", 15, true, true],
      ["add_signal_handler", "int"],
    ]);
  }, 90_000);

  test("a handler set back to SIG_DFL no longer holds SIGTERM: the process ends by it", async () => {
    const r = await child(mode, "restored");
    expect(r.out).toContain("ready");
    expect(r.out).not.toContain("survived");
    expect(r.signal).toBe("SIGTERM");
  }, 90_000);

  test("other signals, bad handlers and coroutines are refused as Python refuses them", async () => {
    const ctx = await context(mode);
    await ctx.exec(`
import asyncio, signal
def outcome(f, *a):
    try:
        return ["ok", repr(f(*a))]
    except BaseException as e:
        return [type(e).__name__, str(e)]
loop = asyncio.get_event_loop()
async def coro(): pass
results = [
    outcome(signal.signal, signal.SIGUSR1, lambda s, f: None),
    outcome(signal.signal, signal.SIGTERM, 42),
    outcome(loop.add_signal_handler, signal.SIGUSR1, print),
    outcome(loop.add_signal_handler, "x", print),
    outcome(loop.add_signal_handler, 0, print),
    outcome(loop.add_signal_handler, signal.SIGTERM, coro),
    outcome(loop.remove_signal_handler, signal.SIGTERM),
    outcome(signal.getsignal, signal.SIGTERM),
]
`);
    const results = (await ctx.eval("results")) as [string, string][];
    const refused = results[2]!;
    expect(results[0]).toEqual(["ValueError", "signal only works in main thread of the main interpreter"]);
    expect(results[1]).toEqual(["TypeError", "signal handler must be signal.SIG_IGN, signal.SIG_DFL, or a callable object"]);
    expect(refused[0]).toBe("NotImplementedError");
    expect(refused[1]).toContain("SIGINT and SIGTERM only");
    expect(results[3]).toEqual(["TypeError", "sig must be an int, not 'x'"]);
    expect(results[4]).toEqual(["ValueError", "invalid signal number 0"]);
    expect(results[5]).toEqual(["TypeError", "coroutines cannot be used with add_signal_handler()"]);
    expect(results[6]).toEqual(["ok", "False"]);
    expect(results[7]).toEqual(["ok", "<Handlers.SIG_DFL: 0>"]);
  });

  test("closing the context runs its SIGTERM handler and lets its tasks finish; its fds are closed", async () => {
    const dir = mkdtempSync(join(tmpdir(), "bunpy-sig-"));
    try {
      const before = fdCount();
      const ctx = await py.context({ mode });
      await ctx.exec(`
import asyncio, signal
stop = asyncio.Event()
signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
async def job(path):
    await stop.wait()
    await asyncio.sleep(0.01)   # still runs: the loop keeps going until the tasks end
    with open(path, "w") as f:
        f.write("finished after SIGTERM")
`);
      const pending = ctx.call("__main__", "job", [join(dir, "out")]).catch((e) => e);
      await ctx.close();
      expect(await pending).toBeInstanceOf(Error);
      expect(readFileSync(join(dir, "out"), "utf8")).toBe("finished after SIGTERM");
      expect(fdCount()).toBeLessThanOrEqual(before);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("closing runs a SIGINT loop handler when there is no SIGTERM one", async () => {
    const dir = mkdtempSync(join(tmpdir(), "bunpy-sig-"));
    try {
      const ctx = await py.context({ mode });
      await ctx.exec(`
import asyncio, signal
stop = asyncio.Event()
async def job(path):
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    with open(path, "w") as f:
        f.write("stopped by SIGINT handler")
`);
      const pending = ctx.call("__main__", "job", [join(dir, "out")]).catch((e) => e);
      await Bun.sleep(20);
      await ctx.close();
      await pending;
      expect(readFileSync(join(dir, "out"), "utf8")).toBe("stopped by SIGINT handler");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("raise_signal in a context runs the context's handler, not the process's", async () => {
    const ctx = await context(mode);
    await ctx.exec(`
import signal
seen = []
signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
signal.raise_signal(signal.SIGTERM)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
signal.raise_signal(signal.SIGTERM)      # the default in a context: nothing
def interrupt():
    signal.raise_signal(signal.SIGINT)    # default_int_handler: KeyboardInterrupt
`);
    expect(await ctx.eval("seen")).toEqual([15]);
    const err = await ctx.call("__main__", "interrupt").catch((e) => e);
    expect(err).toBeInstanceOf(PythonError);
    expect((err as PythonError).type).toBe("KeyboardInterrupt");
  });
});

test("outside contexts nothing changes: the main interpreter's loop refuses signal handlers", () => {
  const r = py.eval(`(lambda bunpy, signal: [
      type(signal.getsignal(signal.SIGTERM)).__name__,
      (lambda loop: (lambda: loop.add_signal_handler(signal.SIGINT, print)))(bunpy.new_event_loop()),
  ])(__import__("bunpy"), __import__("signal"))`) as [string, () => unknown];
  expect(r[0]).toBe("Handlers");
  let err: unknown;
  try {
    (r[1] as any)();
  } catch (e) {
    err = e;
  }
  expect((err as PythonError).type).toBe("NotImplementedError");
  expect((err as PythonError).message).toContain("outside a context");
});

// ---- uvicorn, a server written for the main thread ---------------------------------------

const venv = minor === 11 ? packageVenv("loop", ["uvicorn", "httptools", "uvloop"]) : packageVenv("loop-uvicorn", ["uvicorn"]);
const skip = "skip" in venv ? venv.skip : undefined;
if (skip) console.warn(`loop-signals: uvicorn tests skipped: ${skip}`);
const site = "site" in venv ? venv.site : "";

describe.skipIf(skip !== undefined).each(contextModes)("uvicorn in a %s context", (mode) => {
  for (const sig of ["SIGTERM", "SIGINT"]) {
    test(`serves HTTP over loopback and shuts down gracefully on the process's ${sig}`, async () => {
      const r = await child(mode, "uvicorn", site, sig);
      expect(r.code).toBe(0);
      const { body, outcome, exit } = r.json;
      expect(body).toBe("hello from a context");
      const [shouldExit, captured, uvicornInstalls] = exit;
      expect(shouldExit).toBe(true);
      expect(captured).toEqual([sig === "SIGTERM" ? 15 : 2]);
      // uvicorn re-raises the signal it caught once it has stopped: with its own handlers,
      // SIGINT's default in a context is KeyboardInterrupt, SIGTERM's is nothing
      if (uvicornInstalls && sig === "SIGINT") expect(outcome).toEqual({ error: "KeyboardInterrupt" });
      else expect(outcome).toEqual({ ok: "returned" });
    }, 90_000);
  }

  test("ctx.close() stops it gracefully: serve() returns, the port is closed", async () => {
    const dir = mkdtempSync(join(tmpdir(), "bunpy-uvicorn-"));
    try {
      const ctx = await py.context({ mode });
      await ctx.exec(`
import sys
sys.path.insert(0, ${JSON.stringify(site)})
import asyncio, signal, threading, uvicorn
async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", ws="none", log_level="warning"))
async def serve(path):
    if threading.current_thread() is not threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, server.handle_exit)
    await server.serve()
    with open(path, "w") as f:
        f.write("serve returned")
async def port():
    while not server.started:
        await asyncio.sleep(0.005)
    return server.servers[0].sockets[0].getsockname()[1]
`);
      const serving = ctx.call("__main__", "serve", [join(dir, "out")]).catch((e) => e);
      const port = (await ctx.call("__main__", "port")) as number;
      expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe("hi");
      await ctx.close();
      await serving;
      expect(readFileSync(join(dir, "out"), "utf8")).toBe("serve returned");
      const refused = await fetch(`http://127.0.0.1:${port}/`).then(
        () => false,
        () => true,
      );
      expect(refused).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
