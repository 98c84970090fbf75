/**
 * bunpy's asyncio event loop (C reactor and timers) in the main interpreter: each test
 * runs a scenario on a fresh bunpy loop in Python and checks what it returns.
 */
import { describe, expect, test } from "bun:test";
import { py } from "../src/index.ts";
import { defineModule } from "./helpers.ts";

defineModule(
  "t_loop",
  `
import asyncio, gc, os, socket, tempfile, threading, time, logging
import bunpy

def run(coro_fn, *args, debug=False):
    return bunpy.run(coro_fn(*args), debug=debug)

def loop_type():
    loop = bunpy.new_event_loop()
    try:
        return [type(loop).__name__, isinstance(loop, asyncio.AbstractEventLoop)]
    finally:
        loop.close()

def c_calls():
    """call_soon, call_at, call_later, _timer_handle_cancelled: C functions on the instance
    (shim/loopcalls.c) that behave as asyncio's; a subclass's override or clock wins; debug
    mode and a closed loop get asyncio's own behaviour."""
    import contextvars, fractions
    out = []
    loop = bunpy.new_event_loop()
    kinds = sorted({type(getattr(loop, n)).__name__ for n in ("call_soon", "call_at", "call_later", "_timer_handle_cancelled")})
    cv = contextvars.ContextVar("cv", default="outer")
    ctx = contextvars.copy_context()
    ctx.run(cv.set, "inner")
    got = []
    loop.call_soon(lambda *a: got.append(("soon", a, cv.get())), 1, 2, context=ctx)
    h = loop.call_later(0.002, lambda a: got.append(("later", a, cv.get())), "x")
    loop.call_at(fractions.Fraction(loop.time()) + fractions.Fraction(1, 1000), got.append, "fraction")
    dead = loop.call_later(0.001, got.append, "never")
    dead.cancel()
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    handle_ok = [type(h).__name__, isinstance(h, asyncio.TimerHandle), h.cancelled(), dead.cancelled(), repr(dead).startswith("<TimerHandle cancelled when=")]
    errors = []
    for f in (lambda: loop.call_soon(print, nope=1), lambda: loop.call_at(None, print), lambda: loop.call_later(None, print), lambda: loop.call_soon()):
        try:
            f()
        except TypeError as e:
            errors.append("TypeError")
    loop.set_debug(True)
    traced = loop.call_soon(print)._source_traceback is not None and loop.call_later(1, print)._source_traceback is not None
    loop.set_debug(False)
    loop.close()
    try:
        loop.call_soon(print)
    except RuntimeError as e:
        errors.append(str(e))
    class Mine(bunpy.BunpyEventLoop):
        def call_soon(self, cb, *args, context=None):
            return super().call_soon(cb, "mine", context=context)
        def time(self):
            return 1000.0
    mine = Mine()
    overridden = [type(mine.call_soon).__name__, mine.call_later(5, print).when(), type(mine.call_at).__name__]
    mine.close()
    return [kinds, sorted(got, key=str), handle_ok, errors, traced, overridden]

async def timers_in_order():
    loop = asyncio.get_running_loop()
    fired = []
    done = loop.create_future()
    delays = [0.030, 0.001, 0.020, 0.0005, 0.010, 0.0, 0.002, 0.015]
    start = loop.time()
    for i, d in enumerate(delays):
        loop.call_later(d, lambda i=i, d=d: fired.append((i, d, loop.time() - start)))
    loop.call_at(start + 0.05, done.set_result, None)
    await done
    order = [i for i, _, _ in fired]
    early = [i for i, d, at in fired if at < d]
    return [order, early]

async def same_time_keeps_order():
    loop = asyncio.get_running_loop()
    when = loop.time() + 0.005
    seen = []
    for i in range(50):
        loop.call_at(when, seen.append, i)
    await asyncio.sleep(0.02)
    return seen == list(range(50))

async def cancelled_timers():
    loop = asyncio.get_running_loop()
    fired = []
    handles = [loop.call_later(0.001 * (i % 10), fired.append, i) for i in range(1000)]
    for i, h in enumerate(handles):
        if i % 5:
            h.cancel()   # 800 tombstones, most of the heap: it is swept
    sched_after_cancel = len(loop._scheduled)
    await asyncio.sleep(0.03)
    return [sorted(fired) == list(range(0, 1000, 5)), sched_after_cancel < 1000, len(loop._scheduled),
            all(h.cancelled() for i, h in enumerate(handles) if i % 5)]

async def timer_handle_api():
    loop = asyncio.get_running_loop()
    h = loop.call_later(10, print)
    out = [type(h).__name__, h.when() > loop.time(), h.cancelled()]
    h.cancel()
    out.append(h.cancelled())
    try:
        loop.call_at(None, print)
    except TypeError as e:
        out.append("TypeError")
    return out

async def threadsafe_wakeup():
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    def other():
        time.sleep(0.02)
        loop.call_soon_threadsafe(fut.set_result, threading.get_ident())
    t = threading.Thread(target=other)
    t.start()
    ident = await fut   # the loop sleeps in epoll with no timer: only the wake-up ends it
    t.join()
    return ident != threading.get_ident()

async def tcp_echo(n):
    async def handle(r, w):
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    got = []
    for i in range(n):
        msg = f"hello {i}\\n".encode()
        w.write(msg)
        got.append((await r.readline()).decode().strip())
    big = os.urandom(4 * 1024 * 1024)
    w.write(big)               # more than the socket buffers: writer interest toggles
    back = await r.readexactly(len(big))
    w.close()
    await w.wait_closed()
    srv.close()
    await srv.wait_closed()
    return [got[0], got[-1], len(got), back == big]

async def unix_echo():
    path = os.path.join(tempfile.mkdtemp(), "s.sock")
    async def handle(r, w):
        w.write((await r.readline()).upper())
        await w.drain()
        w.close()
    srv = await asyncio.start_unix_server(handle, path)
    r, w = await asyncio.open_unix_connection(path)
    w.write(b"over a unix socket\\n")
    line = await r.readline()
    w.close()
    srv.close()
    await srv.wait_closed()
    if os.path.exists(path):  # 3.13 removes it on close
        os.unlink(path)
    return line.decode()

async def udp_echo():
    loop = asyncio.get_running_loop()
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, t): self.t = t
        def datagram_received(self, data, addr): self.t.sendto(data[::-1], addr)
    class Client(asyncio.DatagramProtocol):
        def __init__(self): self.got = loop.create_future()
        def datagram_received(self, data, addr):
            if not self.got.done(): self.got.set_result(data)
    st, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    port = st.get_extra_info("sockname")[1]
    ct, cp = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    ct.sendto(b"datagram")
    data = await asyncio.wait_for(cp.got, 5)
    ct.close(); st.close()
    return data.decode()

async def sock_calls():
    loop = asyncio.get_running_loop()
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0)); lsock.listen(); lsock.setblocking(False)
    csock = socket.socket(); csock.setblocking(False)
    accept = asyncio.ensure_future(loop.sock_accept(lsock))
    await loop.sock_connect(csock, lsock.getsockname())
    conn, _ = await accept
    conn.setblocking(False)
    await loop.sock_sendall(csock, b"x" * 100000)
    got = b""
    while len(got) < 100000:
        got += await loop.sock_recv(conn, 65536)
    buf = bytearray(10)
    await loop.sock_sendall(conn, b"0123456789")
    n = await loop.sock_recv_into(csock, buf)
    for s in (conn, csock, lsock): s.close()
    return [len(got), n, bytes(buf).decode()]

async def readers_and_writers():
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False); b.setblocking(False)
    got = loop.create_future()
    loop.add_reader(a, lambda: got.set_result(a.recv(100)) if not got.done() else None)
    writable = loop.create_future()
    loop.add_writer(b, lambda: writable.set_result(True) if not writable.done() else None)
    await writable
    removed_w = loop.remove_writer(b)
    b.send(b"ping")
    data = await got
    removed_r = loop.remove_reader(a)
    again = loop.remove_reader(a)
    a.close(); b.close()
    return [data.decode(), removed_w, removed_r, again]

async def executor_and_dns():
    loop = asyncio.get_running_loop()
    ident = await loop.run_in_executor(None, threading.get_ident)
    infos = await loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    return [ident != threading.get_ident(), any(i[4][1] == 80 for i in infos)]

async def task_cancellation():
    started = asyncio.Event()
    async def worker():
        started.set()
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            return "cleaned up"
    t = asyncio.create_task(worker())
    await started.wait()
    t.cancel()
    result = await t
    async def slow():
        await asyncio.sleep(100)
    try:
        await asyncio.wait_for(slow(), 0.01)
    except TimeoutError:
        return [result, "timed out"]

async def exception_handler():
    loop = asyncio.get_running_loop()
    seen = []
    loop.set_exception_handler(lambda l, ctx: seen.append(type(ctx.get("exception")).__name__))
    loop.call_soon(lambda: 1 / 0)
    loop.call_later(0.001, lambda: [][1])
    await asyncio.sleep(0.01)
    return seen

async def asyncgens():
    loop = asyncio.get_running_loop()
    closed = []
    async def gen():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)
    g = gen()
    first = await g.__anext__()
    await loop.shutdown_asyncgens()
    return [first, closed]

async def debug_mode(caplog_records):
    loop = asyncio.get_running_loop()
    loop.slow_callback_duration = 0.001
    loop.call_soon(time.sleep, 0.01)
    await asyncio.sleep(0.02)
    return loop.get_debug()

def slow_callback_logged():
    records = []
    class H(logging.Handler):
        def emit(self, record): records.append(record.getMessage())
    log = logging.getLogger("asyncio")
    h = H()
    log.addHandler(h)
    try:
        on = run(debug_mode, records, debug=True)
    finally:
        log.removeHandler(h)
    return [on, any("took" in r for r in records)]

async def refused():
    loop = asyncio.get_running_loop()
    out = []
    try:
        await asyncio.create_subprocess_exec("true")
    except NotImplementedError as e:
        out.append(str(e))
    try:
        loop.add_signal_handler(2, print)
    except NotImplementedError as e:
        out.append(str(e))
    return out

def policy_and_asyncio_run():
    asyncio.set_event_loop_policy(bunpy.EventLoopPolicy())
    try:
        async def which():
            return type(asyncio.get_running_loop()).__name__
        return asyncio.run(which())
    finally:
        asyncio.set_event_loop_policy(None)

async def sleep_in_loop():
    t0 = time.monotonic()
    aw = bunpy.sleep(0.01)
    kind = type(aw).__name__
    await aw
    return [kind, time.monotonic() - t0 >= 0.01]

def sync_sleep():
    t0 = time.monotonic()
    r = bunpy.sleep(0.02)
    return [r, time.monotonic() - t0 >= 0.02]

def bad_sleeps():
    out = []
    for v in (-1, float("nan"), "x"):
        try:
            bunpy.sleep(v)
        except (ValueError, TypeError) as e:
            out.append(type(e).__name__)
    return out

def reactor_misuse():
    import _bunpy
    out = []
    def attempt(f):
        try:
            f()
            out.append("no error")
        except Exception as e:
            out.append(type(e).__name__)
    attempt(lambda: _bunpy.Reactor({}, True))          # not on a context's thread
    attempt(lambda: _bunpy.Reactor("keys"))
    r = _bunpy.Reactor({})
    attempt(lambda: r.register(-1, 1))
    attempt(lambda: r.register(2**40, 1))
    attempt(lambda: r.push(object()))
    attempt(lambda: r.soon(int, print, (), None, None, []))
    attempt(lambda: r.run_once(None, None, False, 0.0))
    r.close()
    attempt(lambda: r.select(0))
    attempt(lambda: r.register(0, 1))
    r.close()
    return out

async def idle_cpu():
    # after a wake-up from another thread, a loop waiting for a timer must sleep, not spin
    loop = asyncio.get_running_loop()
    t = threading.Thread(target=lambda: loop.call_soon_threadsafe(lambda: None))
    t.start()
    t.join()
    await asyncio.sleep(0.01)
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(0.2)
    return (time.process_time() - cpu0) / (time.monotonic() - wall0)

def churn(rounds):
    # timers (half of them cancelled), call_soon and threadsafe wake-ups on one loop:
    # returns the growth of Python's object count after the first round
    loop = bunpy.new_event_loop()
    counts = []
    try:
        for _ in range(rounds):
            done = loop.create_future()
            left = [20000]
            def tick():
                left[0] -= 1
                if left[0] == 0:
                    done.set_result(None)
            for i in range(10000):
                h = loop.call_later((i % 100) * 1e-5, tick)
                loop.call_later(1, print).cancel()
                loop.call_soon(tick)
            loop.call_soon_threadsafe(lambda: None)
            loop.run_until_complete(done)
            gc.collect()
            counts.append(len(gc.get_objects()))
    finally:
        loop.close()
    return counts[-1] - counts[0]

def open_fds():
    return len(os.listdir("/proc/self/fd"))

def many_loops(n):
    for _ in range(n):
        loop = bunpy.new_event_loop()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    gc.collect()
    return open_fds()

def closed_loop_errors():
    loop = bunpy.new_event_loop()
    loop.close()
    out = []
    coro = asyncio.sleep(0)
    for f in (lambda: loop.call_soon(print), lambda: loop.call_later(1, print), lambda: loop.run_until_complete(coro)):
        try:
            f()
        except RuntimeError as e:
            out.append(str(e))
    coro.close()
    loop.close()  # twice is fine
    return out
`,
);

const call = (f: string, args: unknown[] = []) => py.call("t_loop", f, args);
const run = (f: string, ...args: unknown[]) => py.call("t_loop", "run", [py.import("t_loop")[f], ...args]);

describe("bunpy event loop", () => {
  test("new_event_loop gives a BunpyEventLoop that is an asyncio loop", () => {
    expect(call("loop_type")).toEqual(["BunpyEventLoop", true]);
  });

  test("timers fire in time order and never early", () => {
    const [order, early] = run("timers_in_order");
    expect(order).toEqual([5, 3, 1, 6, 4, 7, 2, 0]);
    expect(early).toEqual([]);
  });

  test("timers due at the same time fire in the order they were scheduled", () => {
    expect(run("same_time_keeps_order")).toBe(true);
  });

  test("cancelled timers never fire and are swept from the heap", () => {
    const [rightOnes, swept, left, allCancelled] = run("cancelled_timers");
    expect(rightOnes).toBe(true);
    expect(swept).toBe(true);
    expect(left).toBe(0);
    expect(allCancelled).toBe(true);
  });

  test("call_later returns an asyncio TimerHandle; call_at(None) is a TypeError", () => {
    expect(run("timer_handle_api")).toEqual(["TimerHandle", true, false, true, "TypeError"]);
  });

  test("call_soon/call_at/call_later in C behave as asyncio's; overrides, debug mode and a closed loop too", () => {
    const [kinds, got, handle, errors, traced, overridden] = call("c_calls") as any[];
    expect(kinds).toEqual(["builtin_function_or_method"]);
    expect(got).toEqual([["later", "x", "outer"], ["soon", [1, 2], "inner"], "fraction"]);
    expect(handle).toEqual(["TimerHandle", true, false, true, true]);
    expect(errors).toEqual(["TypeError", "TypeError", "TypeError", "TypeError", "Event loop is closed"]);
    expect(traced).toBe(true);
    expect(overridden).toEqual(["method", 1005, "builtin_function_or_method"]);
  });

  test("call_soon_threadsafe wakes a loop sleeping in epoll", () => {
    expect(run("threadsafe_wakeup")).toBe(true);
  });

  test("TCP echo server and client on loopback, including a 4 MiB write", () => {
    expect(run("tcp_echo", 200)).toEqual(["hello 0", "hello 199", 200, true]);
  });

  test("Unix socket server and client", () => {
    expect(run("unix_echo")).toBe("OVER A UNIX SOCKET\n");
  });

  test("UDP endpoints", () => {
    expect(run("udp_echo")).toBe("margatad");
  });

  test("sock_accept, sock_connect, sock_sendall, sock_recv, sock_recv_into", () => {
    expect(run("sock_calls")).toEqual([100000, 10, "0123456789"]);
  });

  test("add_reader, add_writer and their removal", () => {
    expect(run("readers_and_writers")).toEqual(["ping", true, true, false]);
  });

  test("run_in_executor and getaddrinfo", () => {
    expect(run("executor_and_dns")).toEqual([true, true]);
  });

  test("task cancellation and wait_for timeouts", () => {
    expect(run("task_cancellation")).toEqual(["cleaned up", "timed out"]);
  });

  test("exceptions in callbacks and timers reach the exception handler", () => {
    expect(run("exception_handler")).toEqual(["ZeroDivisionError", "IndexError"]);
  });

  test("shutdown_asyncgens finalises open async generators", () => {
    expect(run("asyncgens")).toEqual([1, [true]]);
  });

  test("debug mode logs slow callbacks", () => {
    expect(call("slow_callback_logged")).toEqual([true, true]);
  });

  test("subprocesses and signal handlers are refused with the reason", () => {
    const [sub, sig] = run("refused");
    expect(sub).toContain("does not support subprocesses");
    expect(sub).toContain("Bun.spawn");
    expect(sig).toContain("does not support signal handlers");
  });

  test("bunpy.EventLoopPolicy makes asyncio.run use bunpy's loop", () => {
    expect(call("policy_and_asyncio_run")).toBe("BunpyEventLoop");
  });

  test("bunpy.sleep: awaitable inside a running loop, a real sleep outside", () => {
    expect(run("sleep_in_loop")).toEqual(["coroutine", true]);
    expect(call("sync_sleep")).toEqual([null, true]);
    expect(call("bad_sleeps")).toEqual(["ValueError", "ValueError", "TypeError"]);
  });

  test("a closed loop refuses work with asyncio's errors", () => {
    const errors = call("closed_loop_errors") as string[];
    expect(errors.length).toBe(3);
    for (const e of errors) expect(e).toContain("closed");
  });

  test("the C reactor refuses bad input with Python errors", () => {
    expect(call("reactor_misuse")).toEqual([
      "RuntimeError",
      "TypeError",
      "ValueError",
      "OverflowError",
      "AttributeError",
      "TypeError",
      "TypeError",
      "RuntimeError",
      "RuntimeError",
    ]);
  });

  test("an idle loop sleeps in epoll instead of spinning", () => {
    // the share of one core the process used while the loop waited 200 ms for a timer
    expect(run("idle_cpu") as number).toBeLessThan(0.5);
  });

  test("handles and timers are freed: the object count stays flat over 100,000s of them", () => {
    expect(call("churn", [6]) as number).toBeLessThan(500);
  });

  test("creating and closing loops leaks no file descriptors", () => {
    const before = call("many_loops", [5]) as number;
    const after = call("many_loops", [300]) as number;
    expect(after).toBe(before);
  });
});
