/**
 * bunpy's stream transports in C (shim/transport.c, transmit.c, python/bunpy/_transport.py):
 * echo over TCP and Unix sockets with tiny and large writes, writes gathered per loop
 * iteration, back-pressure both ways (also with small writes), half-close,
 * abort while writing, peers that vanish, BufferedProtocol, set_protocol, TLS on top,
 * thousands of connections on one context, and contexts closed with live connections.
 * Each check runs with the C transports, with asyncio's own (the switch), and with the C
 * transports registered level-triggered (the benchmark's comparison mode): the results must
 * be the same.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { py } from "../src/index.ts";
import { closedAfterAll, contextModes, defineModule } from "./helpers.ts";

const { context } = closedAfterAll();

const SOURCE = String.raw`
import asyncio, hashlib, os, socket, ssl, sys, tempfile
import _bunpy, bunpy

def new_loop(c):
    loop = bunpy.new_event_loop()
    loop._bunpy_c_transports = bool(c)
    if c == "level":  # the comparison mode: fds re-registered on every change of interest
        loop._reactor.registration("level")
    return loop

def run(c, coro_fn, *args):
    loop = new_loop(c)
    try:
        return loop.run_until_complete(coro_fn(*args))
    finally:
        loop.close()

class Echo(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t
    def data_received(self, d):
        self.t.write(d)
    def eof_received(self):
        return False  # closes: the client sees the EOF after the echoed bytes

class Collect(asyncio.Protocol):
    """Collects what it receives until EOF; records pause/resume_writing and the loss."""
    def __init__(self):
        self.chunks = []
        self.events = []
        self.done = asyncio.get_running_loop().create_future()
    def connection_made(self, t):
        self.t = t
    def data_received(self, d):
        self.chunks.append(bytes(d))
    def eof_received(self):
        self.events.append("eof")
        return False  # closes: connection_lost follows
    def pause_writing(self):
        self.events.append("pause_writing")
    def resume_writing(self):
        self.events.append("resume_writing")
    def connection_lost(self, exc):
        self.events.append(("lost", type(exc).__name__ if exc else None))
        if not self.done.done():
            self.done.set_result(b"".join(self.chunks))

async def listen(loop, factory, unix):
    if unix:
        path = tempfile.mktemp(prefix="bunpy-tr-", suffix=".sock")
        srv = await loop.create_unix_server(factory, path)
        return srv, (lambda f, **kw: loop.create_unix_connection(f, path, **kw))
    srv = await loop.create_server(factory, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    return srv, (lambda f, **kw: loop.create_connection(f, "127.0.0.1", port, **kw))

async def registration_masks():
    """The epoll events the client transport's fd is registered with (the kernel's own view:
    /proc/self/fdinfo of the loop's epoll fd) after it starts, paused and resumed; None while
    it is not in the set."""
    loop = asyncio.get_running_loop()
    srv, connect = await listen(loop, Echo, False)
    t, p = await connect(Collect)
    epfd, fd = loop._reactor.fileno(), t.get_extra_info("socket").fileno()
    def mask():
        with open(f"/proc/self/fdinfo/{epfd}") as f:
            for line in f:
                parts = line.split()
                if parts[:1] == ["tfd:"] and int(parts[1]) == fd:
                    return int(parts[3], 16)
        return None
    seen = [mask()]
    t.pause_reading()
    seen.append(mask())
    t.resume_reading()
    seen.append(mask())
    t.close()
    await p.done
    srv.close()
    await srv.wait_closed()
    return seen

async def echo(unix, sizes):
    """Writes chunks of the given sizes, half-closes, returns what came back (digest, length)
    and the client transport's class."""
    loop = asyncio.get_running_loop()
    srv, connect = await listen(loop, Echo, unix)
    t, p = await connect(Collect)
    sent = hashlib.sha256()
    total = 0
    for i, n in enumerate(sizes):
        block = bytes([i % 251]) * n
        sent.update(block)
        total += n
        t.write(block)
        if i % 64 == 0:
            await asyncio.sleep(0)
    t.write_eof()
    while "eof" not in p.events:
        await asyncio.sleep(0.001)
    got = b"".join(p.chunks)
    t.close()
    await p.done
    srv.close()
    await srv.wait_closed()
    return [len(got) == total, hashlib.sha256(got).hexdigest() == sent.hexdigest(), type(t).__name__, p.events]

async def gathered(unix):
    """Writes gathered in one loop iteration (shim/transmit.c) arrive whole and in order:
    many small writes from data_received, writelines, a callback's; get_write_buffer_size()
    is 0 after small writes to a writable socket; close(), write_eof() and abort() right
    after writes send them first."""
    loop = asyncio.get_running_loop()
    class Chatty(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t
        def data_received(self, d):
            for i in range(50):
                self.t.write(b"%d," % i)
            loop.call_soon(self.t.write, b"soon;")
            self.t.writelines([b"lines", b",", b"end;"])
    srv, connect = await listen(loop, Chatty, unix)
    t, p = await connect(Collect)
    t.write(b"go")
    t.write(b"!")
    sizes = [t.get_write_buffer_size()]
    expected = b"".join(b"%d," % i for i in range(50)) + b"lines,end;soon;"
    while len(b"".join(p.chunks)) < len(expected):
        await asyncio.sleep(0.001)
    in_order = b"".join(p.chunks) == expected
    t.close()
    await p.done
    srv.close()
    await srv.wait_closed()
    ends = []
    for how in ("close", "write_eof", "abort"):
        server_side = []
        class Keep(Collect):
            def connection_made(self, t):
                super().connection_made(t)
                server_side.append(self)
        srv, connect = await listen(loop, Keep, unix)
        t, p = await connect(Collect)
        while not server_side:
            await asyncio.sleep(0.001)
        for i in range(100):
            t.write(b"%d;" % i)
        getattr(t, how)()
        while "eof" not in server_side[0].events and ("lost", None) not in server_side[0].events:
            await asyncio.sleep(0.001)
        got = b"".join(server_side[0].chunks)
        ends.append(got == b"".join(b"%d;" % i for i in range(100)))
        t.close()
        server_side[0].t.close()
        srv.close()
        await srv.wait_closed()
    return [in_order, sizes, ends]

async def not_reading_peer(unix):
    """A server whose side of the connection does not read, and a client connected to it."""
    loop = asyncio.get_running_loop()
    server_side = []
    class Slow(Collect):
        def connection_made(self, t):
            super().connection_made(t)
            t.pause_reading()
            server_side.append(self)
    srv, connect = await listen(loop, Slow, unix)
    t, p = await connect(Collect)
    while not server_side:
        await asyncio.sleep(0.001)
    return srv, t, p, server_side[0]

async def read_all_then_close(srv, t, p, server):
    """The peer reads again: waits for resume_writing, sends EOF, returns all the peer got."""
    server.t.resume_reading()
    while "resume_writing" not in p.events:
        await asyncio.sleep(0.001)
    t.write_eof()
    while "eof" not in server.events:
        await asyncio.sleep(0.001)
    t.close()
    server.t.close()
    srv.close()
    await srv.wait_closed()
    return b"".join(server.chunks)

async def small_backpressure(unix):
    """Small writes to a peer that does not read: they are gathered while the kernel takes
    them, then queued, counted and paused for; all arrive once the peer reads."""
    srv, t, p, server = await not_reading_peer(unix)
    n = 0
    while "pause_writing" not in p.events and n < 200_000:  # the kernel takes megabytes first
        t.write(b"%07d" % n * 73)  # 511 bytes
        n += 1
        if n % 50 == 0:
            await asyncio.sleep(0)  # iterations end: the gathered writes go out
    over_high = t.get_write_buffer_size() > t.get_write_buffer_limits()[1]
    got = await read_all_then_close(srv, t, p, server)
    return [p.events[:2], over_high, got == b"".join(b"%07d" % i * 73 for i in range(n))]

async def backpressure(unix):
    """The server stops reading; the client's writes pile up until pause_writing, then the
    server reads again and resume_writing follows; everything arrives."""
    srv, t, p, server = await not_reading_peer(unix)
    block = os.urandom(64 * 1024)
    n = 0
    while "pause_writing" not in p.events and n < 2000:
        t.write(block)
        n += 1
    buffered = t.get_write_buffer_size()
    limits = t.get_write_buffer_limits()
    paused_reading = not server.t.is_reading()
    got = await read_all_then_close(srv, t, p, server)
    return [p.events[:2], buffered > limits[1], paused_reading, len(got) == n * len(block), got == block * n]

async def half_close(unix):
    """Client half-closes; the server answers after the EOF, then closes."""
    loop = asyncio.get_running_loop()
    class Answer(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t
            self.got = b""
        def data_received(self, d):
            self.got += d
        def eof_received(self):
            self.t.write(b"you said " + self.got)
            self.t.close()
            return True
    srv, connect = await listen(loop, Answer, unix)
    t, p = await connect(Collect)
    t.write(b"hello")
    t.write_eof()
    closing_after_eof = t.is_closing()
    got = await p.done
    srv.close()
    await srv.wait_closed()
    return [got.decode(), p.events, closing_after_eof, t.can_write_eof()]

async def abort_while_writing(unix):
    loop = asyncio.get_running_loop()
    srv, connect = await listen(loop, Collect, unix)
    t, p = await connect(Collect)
    t.write(b"x" * (8 << 20))
    queued = t.get_write_buffer_size()
    t.abort()
    await p.done
    srv.close()
    await srv.wait_closed()
    return [queued > 0, t.get_write_buffer_size(), t.is_closing(), p.events, t.get_extra_info("socket") is not None]

async def peer_vanishes(unix):
    """The peer resets the connection (SO_LINGER 0): the reader gets connection_lost with
    the error; then writing to a dead connection is dropped without raising."""
    loop = asyncio.get_running_loop()
    server_side = []
    class Vanish(asyncio.Protocol):
        def connection_made(self, t):
            server_side.append(t)
    srv, connect = await listen(loop, Vanish, unix)
    t, p = await connect(Collect)
    while not server_side:
        await asyncio.sleep(0.001)
    sock = server_side[0].get_extra_info("socket")
    if not unix:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    server_side[0].abort()
    await p.done
    for _ in range(10):
        t.write(b"into the void")
    srv.close()
    await srv.wait_closed()
    return p.events

async def buffered(unix):
    """A BufferedProtocol gets the bytes in its own buffer."""
    loop = asyncio.get_running_loop()
    class Into(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(1000)
            self.got = bytearray()
            self.calls = 0
            self.done = loop.create_future()
        def get_buffer(self, hint):
            return self.buf
        def buffer_updated(self, n):
            self.calls += 1
            self.got += self.buf[:n]
        def eof_received(self):
            self.done.set_result(bytes(self.got))
    data = os.urandom(300_000)
    class Send(asyncio.Protocol):
        def connection_made(self, t):
            t.write(data)
            t.close()
    srv, connect = await listen(loop, Send, unix)
    t, p = await connect(Into)
    got = await p.done
    t.close()
    srv.close()
    await srv.wait_closed()
    return [got == data, p.calls >= 300]

async def switch_protocol(unix):
    """set_protocol mid-stream: later bytes go to the new protocol; extra info is there."""
    loop = asyncio.get_running_loop()
    srv, connect = await listen(loop, Echo, unix)
    t, first = await connect(Collect)
    t.write(b"one")
    while not first.chunks:
        await asyncio.sleep(0.001)
    second = Collect()
    t.set_protocol(second)
    t.write(b"two")
    while not second.chunks:
        await asyncio.sleep(0.001)
    info = [t.get_protocol() is second, t.get_extra_info("peername") is not None or unix,
            t.get_extra_info("sockname") is not None, t.get_extra_info("socket").fileno() >= 0,
            t.get_extra_info("missing", 42)]
    t.close()
    await second.done
    srv.close()
    await srv.wait_closed()
    return [b"".join(first.chunks), b"".join(second.chunks), info]

def cert_file():
    import test
    base = os.path.dirname(test.__file__)
    for p in (os.path.join(base, "certdata", "keycert.pem"), os.path.join(base, "keycert.pem")):
        if os.path.exists(p):
            return p
    return None

async def tls_echo():
    """TLS (asyncio's SSLProtocol) on top: an echo of 1 MB with streams."""
    loop = asyncio.get_running_loop()
    cert = cert_file()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    async def handle(r, w):
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()
    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = srv.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
    data = os.urandom(1 << 20)
    async def send():
        w.write(data)
        await w.drain()
    sender = asyncio.ensure_future(send())
    got = await r.readexactly(len(data))
    await sender
    raw = type(w.transport._ssl_protocol._transport).__name__
    cipher = w.get_extra_info("cipher") is not None
    w.close()
    await w.wait_closed()
    srv.close()
    await srv.wait_closed()
    return [got == data, raw, cipher]

async def start_tls_echo():
    """A plain connection upgraded to TLS on both ends (loop.start_tls, as STARTTLS does)."""
    cert = cert_file()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    async def handle(r, w):
        assert await r.readline() == b"STARTTLS\n"
        w.write(b"go\n")
        await w.drain()
        await w.start_tls(server_ctx)
        w.write((await r.readline()).upper())
        await w.drain()
        w.close()
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    r, w = await asyncio.open_connection(*srv.sockets[0].getsockname()[:2])
    w.write(b"STARTTLS\n")
    assert await r.readline() == b"go\n"
    await w.start_tls(client_ctx)
    w.write(b"secret\n")
    answer = await r.readline()
    tls = w.get_extra_info("ssl_object") is not None
    w.close()
    srv.close()
    await srv.wait_closed()
    return [answer.decode(), tls]

async def streams_echo(lines):
    async def handle(r, w):
        while line := await r.readline():
            w.write(line.upper())
        w.close()
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    r, w = await asyncio.open_connection(*srv.sockets[0].getsockname()[:2])
    out = []
    for line in lines:
        w.write(line.encode() + b"\n")
        out.append((await r.readline()).decode().strip())
    w.close()
    await w.wait_closed()
    srv.close()
    await srv.wait_closed()
    return [out, type(w.transport).__name__]

def raise_fd_limit(n):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, n))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want

async def callback_raises(unix):
    """data_received raising: reported to the loop's exception handler, connection lost."""
    loop = asyncio.get_running_loop()
    reported = []
    loop.set_exception_handler(lambda l, ctx: reported.append((ctx["message"], type(ctx["exception"]).__name__)))
    class Bad(Collect):
        def data_received(self, d):
            raise ValueError("bad data")
    srv, connect = await listen(loop, Echo, unix)
    t, p = await connect(Bad)
    t.write(b"x")
    await p.done
    srv.close()
    await srv.wait_closed()
    return [reported, p.events]

def leftovers(c, rounds):
    """Connections made, used and closed leave no transport object behind."""
    import gc
    async def cycle():
        loop = asyncio.get_running_loop()
        srv, connect = await listen(loop, Echo, False)
        for _ in range(rounds):
            t, p = await connect(Collect)
            t.write(b"ping")
            while not p.chunks:
                await asyncio.sleep(0)
            t.close()
            await p.done
        srv.close()
        await srv.wait_closed()
    run(c, cycle)
    gc.collect()
    from bunpy._transport import SocketTransport
    return sum(isinstance(o, (SocketTransport, _bunpy.StreamCore)) for o in gc.get_objects())

def bad_input():
    import _bunpy
    out = []
    for args in [(None, None, None), (asyncio.SelectorEventLoop(), socket.socket(), asyncio.Protocol())]:
        try:
            _bunpy.StreamCore(*args)
            out.append("made")
        except Exception as e:
            out.append(type(e).__name__)
        if hasattr(args[0], "close"):
            args[0].close()
            args[1].close()
    loop = bunpy.new_event_loop()
    s = socket.socket()
    s.close()
    try:
        _bunpy.StreamCore(loop, s, asyncio.Protocol())
    except Exception as e:
        out.append(type(e).__name__)
    loop.close()
    return out

async def many(n):
    """n connections on one loop, each echoing one message."""
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Echo, "127.0.0.1", 0, backlog=4096)
    port = srv.sockets[0].getsockname()[1]
    conns = []
    for i in range(0, n, 500):
        batch = await asyncio.gather(*(loop.create_connection(Collect, "127.0.0.1", port) for _ in range(min(500, n - i))))
        conns += batch
    for i, (t, p) in enumerate(conns):
        t.write(b"%d;" % i)
    ok = 0
    for i, (t, p) in enumerate(conns):
        while not p.chunks:
            await asyncio.sleep(0.001)
        ok += b"".join(p.chunks) == b"%d;" % i
    for t, p in conns:
        t.close()
    await asyncio.gather(*(p.done for _, p in conns))
    srv.close()
    await srv.wait_closed()
    return ok
`;
defineModule("loop_transports", SOURCE);

const call = (fn: string, c: boolean | "level", ...args: unknown[]) =>
  py.call("loop_transports", "run", [c, py.eval(`__import__("loop_transports").${fn}`), ...args]);

const impls = [
  { name: "C transports", c: true, cls: "SocketTransport" },
  { name: "asyncio's transports (switch)", c: false, cls: "_SelectorSocketTransport" },
  // what bench/loop.bench.ts compares the lifetime registration with (BUNPY_LOOP_REGISTRATION=level)
  { name: "C transports, registered level-triggered", c: "level", cls: "SocketTransport" },
] as const;

for (const { name, c, cls } of impls) {
  describe(name, () => {
    for (const unix of [false, true]) {
      const kind = unix ? "Unix" : "TCP";
      test(`${kind} echo: 3,000 one-byte writes, then half-close`, () => {
        const [sameLength, sameBytes, type, events] = call("echo", c, unix, Array(3000).fill(1)) as any[];
        expect([sameLength, sameBytes, type]).toEqual([true, true, cls]);
        expect(events).toEqual(["eof", ["lost", null]]);
      });

      test(`${kind} echo: 8 MB in writes from 1 B to 1 MB`, () => {
        const sizes = [1, 1 << 20, 7, 65536, 300_000, 3 << 20, 1, 4 << 20].filter((_, i) => i < 8);
        const [sameLength, sameBytes, type] = call("echo", c, unix, sizes) as any[];
        expect([sameLength, sameBytes, type]).toEqual([true, true, cls]);
      });

      test(`${kind} back-pressure both ways: pause_reading holds the sender, pause/resume_writing follow`, () => {
        const [events, overHigh, pausedReading, allArrived, sameBytes] = call("backpressure", c, unix) as any[];
        expect(events).toEqual(["pause_writing", "resume_writing"]);
        expect([overHigh, pausedReading, allArrived, sameBytes]).toEqual([true, true, true, true]);
      });

      test(`${kind} writes gathered in one iteration arrive in order; close, write_eof, abort send them first`, () => {
        expect(call("gathered", c, unix)).toEqual([true, [0], [true, true, true]]);
      });

      test(`${kind} small writes to a peer that does not read: queued, paused for, all delivered`, () => {
        expect(call("small_backpressure", c, unix)).toEqual([["pause_writing", "resume_writing"], true, true]);
      });

      test(`${kind} half-close: the peer answers after the EOF`, () => {
        expect(call("half_close", c, unix)).toEqual(["you said hello", ["eof", ["lost", null]], false, true]);
      });

      test(`${kind} abort while writing drops the queue and loses the connection`, () => {
        const [queued, after, closing, events, sock] = call("abort_while_writing", c, unix) as any[];
        expect([queued, after, closing, sock]).toEqual([true, 0, true, true]);
        expect(events).toEqual(["pause_writing", ["lost", null]]); // 8 MB is over the high-water mark
      });

      test(`${kind} a peer that vanishes: connection_lost, then writes are dropped`, () => {
        const events = call("peer_vanishes", c, unix) as any[];
        // TCP with SO_LINGER 0 resets; a Unix peer's close is an EOF
        if (unix) expect(events).toEqual(["eof", ["lost", null]]);
        else expect(events).toEqual([["lost", "ConnectionResetError"]]);
      });

      test(`${kind} BufferedProtocol gets the bytes in its own buffer`, () => {
        expect(call("buffered", c, unix)).toEqual([true, true]);
      });

      test(`${kind} set_protocol mid-stream; extra info`, () => {
        const [first, second, info] = call("switch_protocol", c, unix) as any[];
        expect(new TextDecoder().decode(first)).toBe("one");
        expect(new TextDecoder().decode(second)).toBe("two");
        expect(info).toEqual([true, true, true, true, 42]);
      });
    }

    test("a protocol callback that raises is reported and loses the connection", () => {
      for (const unix of [false, true]) {
        const [reported, events] = call("callback_raises", c, unix) as any[];
        expect(reported).toEqual([["Fatal error: protocol.data_received() call failed.", "ValueError"]]);
        expect(events).toEqual([["lost", "ValueError"]]);
      }
    });

    test("TLS on top (asyncio's SSLProtocol): 1 MB echo with streams", () => {
      expect(call("tls_echo", c)).toEqual([true, cls, true]);
    });

    test("start_tls upgrades a plain connection on both ends", () => {
      expect(call("start_tls_echo", c)).toEqual(["SECRET\n", true]);
    });

    test("streams (start_server / open_connection) run on them", () => {
      expect(call("streams_echo", c, ["a", "bc", "def"])).toEqual([["A", "BC", "DEF"], cls]);
    });
  });
}

test("C transports are registered once for their life, edge-triggered; the comparison mode re-registers", () => {
  // EPOLLERR | EPOLLHUP: the kernel adds them to every registration
  const [IN, OUT, RDHUP, ET, ALWAYS] = [0x1, 0x4, 0x2000, 0x80000000, 0x8 | 0x10];
  const life = (IN | OUT | RDHUP | ET | ALWAYS) >>> 0;
  // pausing and resuming make no epoll_ctl: the kernel's registration stays as it was
  expect(call("registration_masks", true)).toEqual([life, life, life]);
  // level-triggered, as asyncio's add_reader/remove_reader: the fd leaves the set while paused
  expect(call("registration_masks", "level")).toEqual([IN | RDHUP | ALWAYS, null, IN | RDHUP | ALWAYS]);
  const loop = py.eval(`__import__("bunpy").new_event_loop()`) as any;
  try {
    expect(() => loop._reactor.registration("sideways")).toThrow(/edge.*level/);
  } finally {
    loop.close();
  }
});

test("connections made and closed leave no transport behind", () => {
  expect(py.call("loop_transports", "leftovers", [true, 300])).toBe(0);
});

test("the C core refuses a loop that is not bunpy's and a closed socket, with Python errors", () => {
  expect(py.call("loop_transports", "bad_input")).toEqual(["TypeError", "TypeError", "ValueError"]);
});

test("the switch: BUNPY_LOOP_TRANSPORTS=python makes new loops use asyncio's transports", () => {
  const r = py.eval(`(lambda os, bunpy: (os.environ.__setitem__("BUNPY_LOOP_TRANSPORTS", "python"), bunpy.new_event_loop())[1])(__import__("os"), __import__("bunpy"))`) as any;
  try {
    expect(py.eval(`__import__("os").environ.pop("BUNPY_LOOP_TRANSPORTS")`)).toBe("python");
    expect(r._bunpy_c_transports).toBe(false);
  } finally {
    r.close();
  }
  const d = py.eval(`__import__("bunpy").new_event_loop()`) as any;
  expect(d._bunpy_c_transports).toBe(true);
  d.close();
});

// the clients of the 10,000-connection test: a plain python process (its own fd limit)
const CLIENTS = String.raw`
import asyncio, resource, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
async def one(i, sem):
    async with sem:
        r, w = await asyncio.open_connection("127.0.0.1", port)
    return r, w
async def main():
    sem = asyncio.Semaphore(500)
    conns = await asyncio.gather(*(one(i, sem) for i in range(n)))
    for i, (r, w) in enumerate(conns):
        w.write(b"%d;" % i)
    ok = 0
    for i, (r, w) in enumerate(conns):
        ok += await r.readexactly(len(b"%d;" % i)) == b"%d;" % i
    print(ok, flush=True)
    sys.stdin.readline()   # all n stay connected until the test has counted them
    for r, w in conns:
        w.close()
asyncio.run(main())
`;

describe.each(contextModes)("%s context", (mode) => {
  test("10,000 connections on one context, from a client process", async () => {
    const ctx = await context(mode);
    await ctx.exec(SOURCE);
    const limit = (await ctx.call("__main__", "raise_fd_limit", [20_000])) as number;
    expect(limit).toBeGreaterThan(10_500);
    await ctx.exec(`
async def serve_many():
    global big_server
    loop = asyncio.get_running_loop()
    big_server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=4096)
    return big_server.sockets[0].getsockname()[1]
def live_connections():
    return len(big_server._clients) if hasattr(big_server, "_clients") else big_server._active_count
`);
    const port = (await ctx.call("__main__", "serve_many")) as number;
    const proc = Bun.spawn([py.executable, "-c", CLIENTS, String(port), "10000"], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    const reader = proc.stdout.getReader();
    let out = "";
    while (!out.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      out += new TextDecoder().decode(value);
    }
    let live: unknown;
    try {
      live = await ctx.call("__main__", "live_connections");
    } finally {
      proc.stdin.write("\n");
      proc.stdin.end();
      await proc.exited;
      await ctx.close(); // its 10,000 fds go now, before the next test needs them
    }
    expect(out.trim()).toBe("10000");
    expect(live).toBe(10000);
  }, 120_000);

  test("thousands of connections on one context's loop, both ends in it", async () => {
    const ctx = await context(mode);
    await ctx.exec(SOURCE);
    // both ends live in this process: two fds per connection, under RLIMIT_NOFILE
    const limit = (await ctx.call("__main__", "raise_fd_limit", [20_000])) as number;
    const n = Math.min(9_000, Math.floor((limit - readdirSync("/proc/self/fd").length - 500) / 2));
    expect(n).toBeGreaterThan(1000);
    expect(await ctx.call("__main__", "many", [n])).toBe(n);
  }, 120_000);

  test("closing a context with live connections mid-transfer closes every fd and does not hang", async () => {
    const before = readdirSync("/proc/self/fd").length;
    const ctx = await py.context({ mode });
    await ctx.exec(SOURCE);
    await ctx.exec(`
async def live(n):
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Echo, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    global conns
    conns = [await loop.create_connection(Collect, "127.0.0.1", port) for _ in range(n)]
    for t, p in conns:
        t.write(os.urandom(4 << 20))   # more than the kernel buffers: the rest stays queued
    return sum(t.get_write_buffer_size() > 0 for t, p in conns)
`);
    expect(await ctx.call("__main__", "live", [20])).toBe(20);
    await ctx.close(); // a hang fails the test by its timeout
    expect(readdirSync("/proc/self/fd").length).toBeLessThanOrEqual(before);
  }, 30_000);
});
