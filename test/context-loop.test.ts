/**
 * A context's own event loop: coroutines returned to JS settle their Promise, run
 * interleaved, are cancelled with the JS call; background tasks run between calls; fds
 * move between contexts; bunpy.sleep is cancellable; closing a context with timers,
 * sockets and pending coroutines settles everything and leaks nothing.
 */
import { describe, expect, test } from "bun:test";
import { CallTimeoutError, ContextClosedError, py, PythonError } from "../src/index.ts";
import { closedAfterAll, contextModes } from "./helpers.ts";

const { context } = closedAfterAll();

const SOURCE = `
import asyncio, os, socket, threading, time
import bunpy

async def double(x, delay):
    await asyncio.sleep(delay)
    return x * 2

log = []
async def traced(i, delay):
    log.append(("start", i))
    await asyncio.sleep(delay)
    log.append(("end", i))
    return i

async def fails():
    await asyncio.sleep(0.001)
    raise KeyError("missing")

cancelled = []
async def waits_forever(tag):
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        cancelled.append(tag)
        raise

async def stubborn():
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        await asyncio.sleep(60)   # ignores the cancel: the close must not wait for it

def returns_future():
    loop = asyncio.get_event_loop()
    fut = loop.create_future()
    loop.call_later(0.01, fut.set_result, "from a future")
    return fut

ticks = 0
def start_ticker():
    async def ticker():
        global ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.002)
    global ticker_task
    ticker_task = asyncio.get_event_loop().create_task(ticker())

def sync_sleep(s):
    bunpy.sleep(s)
    return "slept"

def loop_name():
    return type(asyncio.get_event_loop()).__name__

def run_nested():
    async def inner():
        await asyncio.sleep(0.001)
        return type(asyncio.get_running_loop()).__name__
    return asyncio.run(inner())

async def tcp_round_trips(n):
    async def handle(r, w):
        while data := await r.read(1024):
            w.write(data)
        w.close()
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    r, w = await asyncio.open_connection(*srv.sockets[0].getsockname()[:2])
    for i in range(n):
        w.write(b"%d\\n" % i)
        assert int(await r.readline()) == i
    w.close()
    srv.close()
    await srv.wait_closed()
    return n

async def executor_and_dns():
    loop = asyncio.get_running_loop()
    ident = await loop.run_in_executor(None, threading.get_ident)
    infos = await loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    return [ident != threading.get_ident(), len(infos) > 0]

async def sub_ms_sleeps():
    loop = asyncio.get_running_loop()
    early = 0
    for _ in range(20):
        t0 = loop.time()
        await asyncio.sleep(0.0003)
        early += loop.time() - t0 < 0.0003
    return early

def open_fds():
    return len(os.listdir("/proc/self/fd"))

# fd ownership: a reader on one end of a socketpair, registered in this context's loop
watched = {}
def watch(fd):
    seen = watched.setdefault(fd, [])
    def on_ready():
        try:
            seen.append(os.read(fd, 100))
        except BlockingIOError:
            pass
    asyncio.get_event_loop().add_reader(fd, on_ready)

def seen(fd):
    return [b.decode() for b in watched.get(fd, [])]

def pending_work_then_return():
    loop = asyncio.get_event_loop()
    for i in range(100):
        loop.call_later(60 + i, print, "never")
    async def server():
        srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        await srv.serve_forever()
    loop.create_task(server())
    return True
`;

for (const mode of contextModes) {
  describe(`${mode} context loop`, () => {
    test("a coroutine returned to JS settles the Promise with its result", async () => {
      const ctx = await context(mode);
      await ctx.exec(SOURCE);
      expect(await ctx.call("__main__", "double", [21, 0.001])).toBe(42);
      expect(await ctx.eval("double(5, 0)")).toBe(10);
      expect(await ctx.call("__main__", "returns_future")).toBe("from a future");
    });

    test("a coroutine from code that never imported asyncio; JS awaiting an earlier call into the same context from inside it", async () => {
      const ctx = await context(mode);
      await ctx.exec(
        "import bunpy\nasync def outer(x):\n    return await bunpy.async_call('t_ctx_loop_js', x)\ndef inner(x):\n    return x + 1",
      );
      py.register("t_ctx_loop_js", async (x: number) => ((await ctx.call("__main__", "inner", [x])) as number) * 10);
      try {
        expect(await ctx.call("__main__", "outer", [4])).toBe(50);
        expect(await ctx.eval("type(__import__('asyncio').get_event_loop()).__name__")).toBe("BunpyEventLoop");
      } finally {
        py.unregister("t_ctx_loop_js");
      }
    });

    test("many coroutine calls interleave on one context", async () => {
      const ctx = await context(mode);
      await ctx.exec(SOURCE);
      const n = 50;
      const results = await Promise.all(Array.from({ length: n }, (_, i) => ctx.call("__main__", "traced", [i, 0.02])));
      expect(results).toEqual(Array.from({ length: n }, (_, i) => i));
      const log = (await ctx.eval("log")) as [string, number][];
      // every coroutine started before the first one ended: they ran concurrently
      const firstEnd = log.findIndex(([what]) => what === "end");
      expect(firstEnd).toBe(n);
    });

    test("an exception in the coroutine rejects with a PythonError", async () => {
      const ctx = await context(mode);
      await ctx.exec(SOURCE);
      const err = await ctx.call("__main__", "fails").catch((e) => e);
      expect(err).toBeInstanceOf(PythonError);
      expect(err.type).toBe("KeyError");
      expect(err.traceback).toContain("fails");
      expect(await ctx.eval("1 + 1")).toBe(2);
    });

    test("a timeout or an abort cancels the coroutine's task", async () => {
      const ctx = await context(mode);
      await ctx.exec(SOURCE);
      const timedOut = await ctx.call("__main__", "waits_forever", ["timeout"], {}, { timeout: 20 }).catch((e) => e);
      expect(timedOut).toBeInstanceOf(CallTimeoutError);
      const ac = new AbortController();
      const aborted = ctx.call("__main__", "waits_forever", ["abort"], {}, { signal: ac.signal }).catch((e) => e);
      await Bun.sleep(10);
      ac.abort(new Error("stop"));
      expect((await aborted).message).toBe("stop");
      for (let i = 0; i < 100 && ((await ctx.eval("len(cancelled)")) as number) < 2; i++) await Bun.sleep(5);
      expect(((await ctx.eval("sorted(cancelled)")) as string[])).toEqual(["abort", "timeout"]);
    });

    test("tasks started in the context keep running between calls", async () => {
      const ctx = await context(mode);
      await ctx.exec(SOURCE);
      expect(await ctx.call("__main__", "loop_name")).toBe("BunpyEventLoop");
      await ctx.call("__main__", "start_ticker");
      const first = (await ctx.eval("ticks")) as number;
      await Bun.sleep(50);
      const later = (await ctx.eval("ticks")) as number;
      expect(later).toBeGreaterThan(first);
      await ctx.exec("ticker_task.cancel()");
    });

    test("run_in_executor, getaddrinfo and sub-millisecond sleeps on the context's loop", async () => {
      const ctx = await context(mode);
      await ctx.exec(SOURCE);
      expect(await ctx.call("__main__", "executor_and_dns")).toEqual([true, true]);
      expect(await ctx.call("__main__", "sub_ms_sleeps")).toBe(0);
    });

    test("callSync, cast and pools take coroutines too", async () => {
      const ctx = await context(mode);
      await ctx.exec(SOURCE);
      expect(ctx.callSync("__main__", "double", [4, 0.001])).toBe(8);
      ctx.cast("__main__", "traced", [99, 0]);
      expect(await ctx.call("__main__", "double", [1, 0.01])).toBe(2);
      expect(((await ctx.eval("log")) as [string, number][]).filter(([, i]) => i === 99).length).toBe(2);
      const pool = await py.pool({ size: 2, mode });
      try {
        await pool.execAll(SOURCE);
        expect(await Promise.all([1, 2, 3, 4].map((i) => pool.call("__main__", "double", [i, 0.001])))).toEqual([2, 4, 6, 8]);
      } finally {
        await pool.close();
      }
    });

    test("asyncio.run inside a call runs a nested bunpy loop", async () => {
      const ctx = await context(mode);
      await ctx.exec(SOURCE);
      expect(await ctx.call("__main__", "run_nested")).toBe("BunpyEventLoop");
    });

    test("TCP server and client on the context's loop", async () => {
      const ctx = await context(mode);
      await ctx.exec(SOURCE);
      expect(await ctx.call("__main__", "tcp_round_trips", [100])).toBe(100);
    });

    test("bunpy.sleep in sync code: returns, and a timeout interrupts it", async () => {
      const ctx = await context(mode);
      await ctx.exec(SOURCE);
      expect(await ctx.call("__main__", "sync_sleep", [0.005])).toBe("slept");
      const t0 = performance.now();
      const err = await ctx.call("__main__", "sync_sleep", [30], {}, { timeout: 30 }).catch((e) => e);
      expect(err).toBeInstanceOf(CallTimeoutError);
      // the context is free again long before the 30 s sleep would have ended
      expect(await ctx.eval("'free'")).toBe("free");
      expect(performance.now() - t0).toBeLessThan(20000);
    });
  });
}

describe("context loops and fds", () => {
  test("an fd watched in one context moves to the other that watches it", async () => {
    const a = await context();
    const b = await context();
    await a.exec(SOURCE);
    await b.exec(SOURCE);
    py.exec("import socket as _s; _pair = _s.socketpair(); _pair[0].setblocking(False)");
    const fd = py.eval("_pair[0].fileno()") as number;
    await a.call("__main__", "watch", [fd]);
    py.exec("_pair[1].send(b'one')");
    for (let i = 0; i < 200 && ((await a.call("__main__", "seen", [fd])) as string[]).length === 0; i++) await Bun.sleep(5);
    expect(await a.call("__main__", "seen", [fd])).toEqual(["one"]);
    await b.call("__main__", "watch", [fd]); // moves the fd to b's loop
    py.exec("_pair[1].send(b'two')");
    for (let i = 0; i < 200 && ((await b.call("__main__", "seen", [fd])) as string[]).length === 0; i++) await Bun.sleep(5);
    await Bun.sleep(20);
    expect(await b.call("__main__", "seen", [fd])).toEqual(["two"]);
    expect(await a.call("__main__", "seen", [fd])).toEqual(["one"]);
    py.exec("_pair[0].close(); _pair[1].close()");
  });

  test("closing a context with timers, a server and pending coroutines settles everything and frees the fds", async () => {
    py.exec("import os as _os, gc as _gc");
    // descriptors only this process's Python side opens: sockets, epoll sets, eventfds
    // (Bun opens and closes some of its own meanwhile, so the total count is noisy)
    const fds = () => {
      Bun.gc(true);
      return py.eval(
        "_gc.collect() * 0 + sum(1 for f in _os.listdir('/proc/self/fd') if _os.path.exists('/proc/self/fd/' + f) and _os.readlink('/proc/self/fd/' + f).startswith(('socket:', 'anon_inode:[eventfd]', 'anon_inode:[eventpoll]')))",
      ) as number;
    };
    const before = fds();
    for (const mode of [...contextModes, ...contextModes]) {
      const ctx = await py.context({ mode });
      await ctx.exec(SOURCE);
      await ctx.call("__main__", "pending_work_then_return");
      const pending = ctx.call("__main__", "waits_forever", ["close"]).catch((e) => e);
      const stubborn = ctx.call("__main__", "stubborn").catch((e) => e);
      const during = ctx.call("__main__", "sync_sleep", [30]).catch((e) => e);
      await Bun.sleep(20);
      await ctx.close();
      const err = await pending;
      expect(err).toBeInstanceOf(ContextClosedError);
      expect(await stubborn).toBeInstanceOf(ContextClosedError);
      const slept = await during;
      expect(slept).toBeInstanceOf(PythonError);
      expect(slept.message).toContain("closing");
      expect(await ctx.call("__main__", "double", [1, 0]).catch((e) => e)).toBeInstanceOf(ContextClosedError);
    }
    expect(fds()).toBeLessThanOrEqual(before);
  }, 30_000); // ~4.4 s on an idle machine (a close waits out its grace period)

  test("code that closes its loop's private reactor: its call fails, the next gets a new loop, sockets are freed", async () => {
    py.exec("import os as _os");
    const sockets = () =>
      py.eval("sum(1 for f in _os.listdir('/proc/self/fd') if _os.path.exists('/proc/self/fd/' + f) and _os.readlink('/proc/self/fd/' + f).startswith('socket:'))") as number;
    const before = sockets();
    for (const mode of contextModes) {
      const ctx = await py.context({ mode });
      await ctx.exec(`
import asyncio
async def break_loop():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    await asyncio.sleep(0.01)
    loop._reactor.close()
    await asyncio.sleep(0.01)
async def later():
    await asyncio.sleep(0.001)
    return "later"
def break_sync():
    asyncio.get_event_loop()._reactor.close()
`);
      // its call can never finish on that loop: it fails (it used to wait for ever)
      const broke = await ctx.call("__main__", "break_loop").catch((e) => e);
      expect(broke).toBeInstanceOf(PythonError);
      expect(broke.message).toContain("event loop was closed by code running in it");
      // the next coroutine call gets a new loop
      expect(await ctx.call("__main__", "later")).toBe("later");
      expect(await ctx.eval("1 + 1")).toBe(2);
      // closed from synchronous code, with a coroutine call already queued behind: that
      // call runs on a new loop too, not on the dead one
      const [closed, queued] = await Promise.all([ctx.call("__main__", "break_sync"), ctx.call("__main__", "later")]);
      expect([closed, queued]).toEqual([null, "later"]);
      await ctx.close();
      expect(ctx.state).toBe("closed");
    }
    for (let i = 0; i < 50 && sockets() > before; i++) await Bun.sleep(20);
    expect(sockets()).toBeLessThanOrEqual(before);
  });

  test("loops keep working across contexts that come and go (nothing of a closed interpreter is reused)", async () => {
    py.exec("import bunpy as _bunpy, asyncio as _asyncio");
    for (let round = 0; round < 6; round++) {
      const ctx = await py.context({ mode: contextModes[round % contextModes.length] });
      await ctx.exec(SOURCE);
      expect(await ctx.call("__main__", "tcp_round_trips", [5])).toBe(5);
      expect(await ctx.call("__main__", "double", [round, 0.001])).toBe(2 * round);
      await ctx.close();
      expect(py.eval("_bunpy.run(_asyncio.sleep(0.001, 'main'))")).toBe("main");
    }
  });

  test("many coroutine calls leave memory flat", async () => {
    const ctx = await context();
    await ctx.exec(SOURCE);
    const round = async () => {
      for (let k = 0; k < 20; k++)
        await Promise.all(Array.from({ length: 100 }, (_, i) => ctx.call("__main__", "double", [i, 0])));
    };
    await round();
    Bun.gc(true);
    const before = process.memoryUsage().rss;
    for (let r = 0; r < 5; r++) await round();
    Bun.gc(true);
    const grown = process.memoryUsage().rss - before;
    expect(grown).toBeLessThan(32 * 1024 * 1024);
    expect(await ctx.eval("len(asyncio.all_tasks(asyncio.get_event_loop()))")).toBe(0);
  });
});
