// A context's own event loop: a Python asyncio TCP server keeps running between calls,
// JS talks to it over a real socket, and Python coroutines come back as Promises.
// Run with `npx bun examples/asyncio.ts`
import { py } from "bunpy";

const ctx = await py.context();
await ctx.exec(`
import asyncio

served = 0

async def handle(reader, writer):
    global served
    while line := await reader.readline():
        served += 1
        writer.write(line.upper())
        await writer.drain()
    writer.close()

async def start_server():
    global server
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server.sockets[0].getsockname()[1]

async def slow_square(x):
    await asyncio.sleep(0.05)
    return x * x
`);

// start_server is a coroutine: the Promise settles when the server listens; the server
// then keeps running on the context's loop
const port = (await ctx.call("__main__", "start_server")) as number;

const answers: string[] = [];
const { promise: gotAll, resolve } = Promise.withResolvers<void>();
const socket = await Bun.connect({
  hostname: "127.0.0.1",
  port,
  socket: {
    data(_s, data) {
      answers.push(...data.toString().trim().split("\n"));
      if (answers.length === 3) resolve();
    },
  },
});
socket.write("hello\nfrom\nbun\n");

// meanwhile, three coroutines in flight on the same context: about 50 ms in all
const t = performance.now();
const squares = await Promise.all([2, 3, 4].map((x) => ctx.call("__main__", "slow_square", [x])));
console.log(`squares ${squares.join(", ")} in ${(performance.now() - t).toFixed(0)} ms`);

await gotAll;
console.log(`the Python server answered: ${answers.join(" ")}`);
console.log(`lines served: ${await ctx.eval("served")}`);
socket.end();
await ctx.close(); // cancels the server's tasks and closes its socket
