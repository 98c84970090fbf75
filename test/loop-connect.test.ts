/**
 * Connecting and accepting on bunpy's loop without asyncio's Task and futures per connection
 * (python/bunpy/_connect.py, shim/accept.c, shim/connect.c): many connects and accepts one
 * after the other and at once, protocol factories that raise on either side, a refused
 * connect, a connect cancelled while in progress (no fd left behind), a server closed while
 * connections are accepted, and EMFILE pausing and resuming the accepts. Each check runs with
 * the accept loop in C ("c", the default), in a reader callback ("python") and with asyncio's
 * own code ("stock", BUNPY_LOOP_CONNECT=stock): the results must be the same.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { py } from "../src/index.ts";
import { defineModule } from "./helpers.ts";

const SOURCE = String.raw`
import asyncio, os, socket, sys, tempfile
import bunpy

def fds():
    return len(os.listdir("/proc/self/fd"))

def run(mode, coro_fn, *args):
    loop = bunpy.new_event_loop()
    loop._bunpy_connect = mode
    errors = []
    loop.set_exception_handler(lambda l, ctx: errors.append(ctx))
    try:
        out = loop.run_until_complete(coro_fn(*args))
    finally:
        loop.close()
    return [out, [str(c.get("message")) for c in errors]]

class Server(asyncio.Protocol):
    made = lost = 0
    def connection_made(self, t):
        Server.made += 1
        self.t = t
    def data_received(self, d):
        self.t.write(d)
    def connection_lost(self, exc):
        Server.lost += 1

class Client(asyncio.Protocol):
    def __init__(self):
        self.lost = asyncio.get_running_loop().create_future()
        self.data = b""
        self.made = False
    def connection_made(self, t):
        self.made = True
    def data_received(self, d):
        self.data += d
    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)

async def serve(unix, factory=Server, **kw):
    loop = asyncio.get_running_loop()
    if unix:
        path = os.path.join(tempfile.mkdtemp(), "s")
        srv = await loop.create_unix_server(factory, path, **kw)
        return srv, (lambda f=Client: loop.create_unix_connection(f, path))
    srv = await loop.create_server(factory, "127.0.0.1", 0, **kw)
    port = srv.sockets[0].getsockname()[1]
    return srv, (lambda f=Client: loop.create_connection(f, "127.0.0.1", port))

async def sequential(unix, n):
    Server.made = Server.lost = 0
    before = fds()
    srv, connect = await serve(unix)
    kinds = set()
    for _ in range(n):
        t, p = await connect()
        assert p.made  # connection_made ran before create_connection returned
        kinds.add(type(t).__name__)
        t.close()
        await p.lost
    srv.close()
    await srv.wait_closed()
    for _ in range(5):
        await asyncio.sleep(0)
    return [Server.made, Server.lost, fds() - before, sorted(kinds)]

async def concurrent(unix, n):
    Server.made = Server.lost = 0
    before = fds()
    srv, connect = await serve(unix)
    pairs = await asyncio.gather(*(connect() for _ in range(n)))
    for i, (t, p) in enumerate(pairs):
        t.write(b"%d;" % i)
    for _ in range(10000):  # (a test that fails, not one that hangs)
        if all(p.data for _, p in pairs):
            break
        await asyncio.sleep(0.001)
    echoed = all(p.data == b"%d;" % i for i, (_, p) in enumerate(pairs))
    for t, _ in pairs:
        t.close()
    await asyncio.gather(*(p.lost for _, p in pairs))
    srv.close()
    await srv.wait_closed()
    for _ in range(10000):
        if Server.lost >= n:
            break
        await asyncio.sleep(0.001)
    return [Server.made, echoed, fds() - before]

async def server_factory_raises(unix):
    """A protocol factory that raises: asyncio closes the connection (and reports the error in
    debug mode only); the server goes on accepting."""
    Server.made = Server.lost = 0
    before = fds()
    calls = []
    def factory():
        calls.append(1)
        if len(calls) == 1:
            raise ZeroDivisionError("no protocol")
        return Server()
    srv, connect = await serve(unix, factory)
    t1, p1 = await connect()
    exc = await asyncio.wait_for(p1.lost, 5)  # the server side is gone: EOF
    t2, p2 = await connect()
    t2.write(b"ok")
    while not p2.data:
        await asyncio.sleep(0.001)
    t2.close()
    await p2.lost
    srv.close()
    await srv.wait_closed()
    for _ in range(5000):  # (3.11's wait_closed does not wait for the connections)
        if Server.lost >= 1:
            break
        await asyncio.sleep(0.001)
    return [len(calls), exc, p2.data.decode(), fds() - before]

async def client_factory_raises():
    before = fds()
    srv, connect = await serve(False)
    def factory():
        raise ValueError("client protocol")
    try:
        await connect(factory)
        got = None
    except ValueError as e:
        got = str(e)
    srv.close()
    await srv.wait_closed()
    for _ in range(5):
        await asyncio.sleep(0)
    return [got, fds() - before]

async def refused():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there
    before = fds()
    loop = asyncio.get_running_loop()
    out = []
    for _ in range(3):
        try:
            await loop.create_connection(Client, "127.0.0.1", port)
        except ConnectionRefusedError as e:
            out.append([type(e).__name__, e.errno, str(e)])
    return [out, fds() - before]

async def cancelled_in_progress(how):
    """A listener whose accept queue is full (backlog 0, nobody accepts): Linux drops the
    SYNs, so a connect to it stays in progress until cancelled."""
    loop = asyncio.get_running_loop()
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fill = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fill.append(c)
    await asyncio.sleep(0.05)
    before = fds()
    results = []
    for _ in range(3):
        task = loop.create_task(loop.create_connection(Client, "127.0.0.1", port))
        await asyncio.sleep(0.05)
        in_progress = not task.done()
        if how == "cancel":
            task.cancel()
        try:
            if how == "cancel":
                await task
            else:
                await asyncio.wait_for(task, 0.05)
            results.append([in_progress, "connected"])
        except (asyncio.CancelledError, asyncio.TimeoutError) as e:
            results.append([in_progress, type(e).__name__])
    after = fds() - before
    for c in fill:
        c.close()
    lsock.close()
    # the fds are reused by new connections, which work (no stale registration)
    srv, connect = await serve(False)
    t, p = await connect()
    t.write(b"x")
    while not p.data:
        await asyncio.sleep(0.001)
    t.close()
    await p.lost
    srv.close()
    await srv.wait_closed()
    return [results, after, p.data.decode()]

async def server_closed_while_accepting(unix, n):
    """The 5th protocol made closes the server: connections accepted after that are closed,
    none leaks, and wait_closed returns once the accepted ones are gone."""
    before = fds()
    holder = {}
    made = []
    class Closer(Server):
        def connection_made(self, t):
            super().connection_made(t)
            made.append(t)
            if len(made) == 5:
                holder["srv"].close()
    srv, connect = await serve(unix, Closer)
    holder["srv"] = srv
    results = await asyncio.gather(*(connect() for _ in range(n)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    bad = {type(r).__name__ for r in results if isinstance(r, BaseException)}
    for t in made:
        t.close()
    for t, p in ok:
        t.close()
    await asyncio.gather(*(p.lost for _, p in ok))
    await asyncio.wait_for(srv.wait_closed(), 5)
    for _ in range(5):
        await asyncio.sleep(0)
    return [len(made) >= 5, sorted(bad - {"ConnectionRefusedError", "ConnectionResetError", "FileNotFoundError"}), srv.is_serving(), fds() - before]
`;
defineModule("loop_connect", SOURCE);

const call = (fn: string, mode: string, ...args: unknown[]) =>
  py.call("loop_connect", "run", [mode, py.eval(`__import__("loop_connect").${fn}`), ...args]) as [any, string[]];

const modes = ["c", "python", "stock"] as const;

for (const mode of modes) {
  describe(`accept/connect: ${mode}`, () => {
    for (const unix of [false, true]) {
      const kind = unix ? "Unix" : "TCP";
      test(`${kind}: 1,000 connects and closes one after the other; no fd left`, () => {
        const [[made, lost, leftFds, kinds], errors] = call("sequential", mode, unix, 1000);
        expect([made, lost, leftFds]).toEqual([1000, 1000, 0]);
        expect(kinds).toEqual(["SocketTransport"]);
        expect(errors).toEqual([]);
      });

      // (Unix: fewer than the listen backlog, 100: a non-blocking connect to a full Unix
      // listener fails with EAGAIN, which asyncio's sock_connect takes for "in progress")
      const n = unix ? 90 : 500;
      test(`${kind}: ${n} connects at once, each echoed; no fd left`, () => {
        const [[made, echoed, leftFds], errors] = call("concurrent", mode, unix, n);
        expect([made, echoed, leftFds]).toEqual([n, true, 0]);
        expect(errors).toEqual([]);
      });

      test(`${kind}: a server protocol factory that raises closes that connection; the next one is served`, () => {
        const [[calls, exc, data, leftFds], errors] = call("server_factory_raises", mode, unix);
        expect([calls, exc, data, leftFds]).toEqual([2, null, "ok", 0]);
        expect(errors).toEqual([]); // asyncio reports it in debug mode only
      });

      test(`${kind}: the server closed while connections are being accepted`, () => {
        const [[fiveMade, unexpected, serving, leftFds], errors] = call("server_closed_while_accepting", mode, unix, 60);
        expect([fiveMade, unexpected, serving, leftFds]).toEqual([true, [], false, 0]);
        expect(errors).toEqual([]);
      });
    }

    test("a client protocol factory that raises: create_connection raises it, the socket is closed", () => {
      expect(call("client_factory_raises", mode)).toEqual([["client protocol", 0], []]);
    });

    test("connection refused: ConnectionRefusedError as asyncio raises it; no fd left", () => {
      const [[out, leftFds], errors] = call("refused", mode);
      expect(out.length).toBe(3);
      for (const [name, errno, message] of out) {
        expect([name, errno]).toEqual(["ConnectionRefusedError", 111]);
        expect(message).toMatch(/Connect call failed \('127\.0\.0\.1', \d+\)/);
      }
      expect([leftFds, errors]).toEqual([0, []]);
    });

    for (const how of ["cancel", "timeout"]) {
      test(`a connect in progress ended by ${how === "cancel" ? "task.cancel()" : "wait_for's timeout"}: fd closed, the fd reused fine`, () => {
        const [[results, leftFds, data], errors] = call("cancelled_in_progress", mode, how);
        const ended = how === "cancel" ? "CancelledError" : "TimeoutError";
        expect(results).toEqual([
          [true, ended],
          [true, ended],
          [true, ended],
        ]);
        expect([leftFds, data, errors]).toEqual([0, "x", []]);
      });
    }
  });
}

// EMFILE: in a process of its own (the lowered RLIMIT_NOFILE must not touch this one)
const EMFILE_SCRIPT = (src: string) => `
import { py } from ${JSON.stringify(resolve(import.meta.dir, "../src/index.ts"))};
py.exec(${JSON.stringify(src)});
console.log(JSON.stringify(py.call("__main__", "main", [process.argv[2]])));
`;
const EMFILE_PY = String.raw`
import asyncio, json, os, resource, socket
import bunpy

async def emfile():
    """10 clients connect (to the kernel's backlog) before the limit leaves room for only 3
    more fds: the server accepts 3, hits EMFILE, reports it and pauses; once the limit is
    back, accepting resumes (after asyncio's ACCEPT_RETRY_DELAY) and all 10 are served."""
    loop = asyncio.get_running_loop()
    errors = []
    loop.set_exception_handler(lambda l, ctx: errors.append([ctx["message"], getattr(ctx.get("exception"), "errno", None)]))
    made = []
    class P(asyncio.Protocol):
        def connection_made(self, t):
            made.append(t)
    srv = await loop.create_server(P, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    used = max(int(f) for f in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 4, hard))
    try:
        for _ in range(50):
            await asyncio.sleep(0.01)
            if errors:
                break
        during = len(made)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for _ in range(300):
        if len(made) == 10:
            break
        await asyncio.sleep(0.01)
    after = len(made)
    for t in made:
        t.close()
    for c in clients:
        c.close()
    srv.close()
    await srv.wait_closed()
    return [during, after, errors[:1]]

def main(mode):
    loop = bunpy.new_event_loop()
    loop._bunpy_connect = mode
    try:
        return loop.run_until_complete(emfile())
    finally:
        loop.close()
`;

describe("EMFILE", () => {
  const dir = mkdtempSync(join(tmpdir(), "bunpy-emfile-"));
  const script = join(dir, "emfile.ts");
  writeFileSync(script, EMFILE_SCRIPT(EMFILE_PY));
  for (const mode of modes) {
    test(`${mode}: accept pauses on EMFILE, reports it, and resumes`, () => {
      const r = Bun.spawnSync([process.execPath, script, mode], { stdout: "pipe", stderr: "pipe", timeout: 60_000 });
      const out = r.stdout.toString().trim().split("\n").pop() ?? "";
      if (r.exitCode !== 0) throw new Error(r.stderr.toString().slice(-2000));
      const [during, after, errors] = JSON.parse(out);
      expect(during).toBeLessThan(10);
      expect(after).toBe(10);
      expect(errors).toEqual([["socket.accept() out of system resource", 24]]);
    }, 60_000);
  }
  test("cleanup", () => rmSync(dir, { recursive: true, force: true }));
});
