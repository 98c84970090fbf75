// Hostile pass on the C stream transports (shim/transport.c): protocol callbacks that change
// the transport under the read that called them. Each case is a client whose protocol does
// the odd thing, against an echo server on the same context's loop.
import { describe, expect, test } from "bun:test";
import { closedAfterAll, contextModes } from "./helpers.ts";

const { context } = closedAfterAll();

const SOURCE = `
import asyncio

class Echo(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t
    def data_received(self, d):
        self.t.write(d * 50)

class Plain(asyncio.Protocol):
    def __init__(self, seen, t, done):
        self.seen = seen
        self.t = t
        self.done = done
    def data_received(self, d):
        self.seen.append(len(d))
        self.t.close()
    def connection_lost(self, e):
        if not self.done.done():
            self.done.set_result(repr(e))

def client(kind, done, got, later):
    class Odd(asyncio.BufferedProtocol):
        def connection_made(self, t):
            self.t = t
            self.buf = bytearray(1024)
            t.write(b'x' * 100)
        def get_buffer(self, hint):
            if kind == 'set_protocol_in_get_buffer':
                self.t.set_protocol(Plain(later, self.t, done))
            return self.buf
        def buffer_updated(self, n):
            got.append(n)
            if kind == 'set_protocol_in_buffer_updated':
                self.t.set_protocol(Plain(later, self.t, done))
            if len(got) >= 2:
                self.t.close()
        def connection_lost(self, e):
            if not done.done():
                done.set_result(repr(e))
    return Odd

async def run(kind):
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Echo, '127.0.0.1', 0)
    done = loop.create_future()
    got, later = [], []
    t, _ = await loop.create_connection(client(kind, done, got, later), '127.0.0.1', srv.sockets[0].getsockname()[1])
    lost = await asyncio.wait_for(done, 10)
    srv.close()
    await srv.wait_closed()
    return [lost, len(got) > 0, sum(got) + sum(later) > 0, type(t).__name__]
`;

describe.each(contextModes)("C transports, %s context: set_protocol() from inside a read", (mode) => {
  // get_buffer() switching to a plain Protocol dropped the buffer_updated the read was about
  // to call: a NULL call, and Bun crashed (segfault at 0x8)
  test("in get_buffer(): the bytes read go to the protocol whose buffer they are in", async () => {
    const ctx = await context(mode);
    await ctx.exec(SOURCE);
    expect(await ctx.call("__main__", "run", ["set_protocol_in_get_buffer"])).toEqual(["None", true, true, "SocketTransport"]);
    expect(await ctx.call("operator", "add", [1, 2])).toBe(3);
  });

  test("in buffer_updated(): later reads go to the new protocol", async () => {
    const ctx = await context(mode);
    await ctx.exec(SOURCE);
    expect(await ctx.call("__main__", "run", ["set_protocol_in_buffer_updated"])).toEqual(["None", true, true, "SocketTransport"]);
  });
});
