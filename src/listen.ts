/**
 * pool.listen(): one listening socket per context of a pool, all on one port with
 * SO_REUSEPORT, so the kernel spreads connections over the contexts and no JS thread is in
 * their path (python/bunpy/_listen.py). JS only relays hand-offs: a context that gives a
 * connection to another (bunpy.hand_off) sends its fd and the bytes it read, and JS casts
 * them to the context they are for.
 */
import { closeSync } from "node:fs";
import type { Context } from "./context.ts";
import { ContextClosedError, ContextDiedError } from "./errors.ts";
import { hubOf } from "./hub.ts";
import type { MainInterpreter } from "./main-interpreter.ts";
import type { Pool } from "./pool.ts";

export interface ListenOptions {
  /** The TCP port (0: any free one, the same for every context). */
  port: number;
  /** The address to listen on (default "127.0.0.1"). */
  host?: string | undefined;
  /** "module:Factory": the asyncio protocol factory each context serves connections with. */
  protocol: string;
  /** The listen() backlog of each context's socket (default 100). */
  backlog?: number | undefined;
}

export interface Listener {
  /** The port every context listens on. */
  readonly port: number;
  readonly host: string;
  /** Stops accepting in every context; connections already made live on with their context. */
  close(): Promise<void>;
}

let nextListener = 1;

export async function listen(rt: MainInterpreter, pool: Pool, options: ListenOptions): Promise<Listener> {
  const { port, protocol } = options;
  const host = options.host ?? "127.0.0.1";
  const backlog = options.backlog ?? 100;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new TypeError(`pool.listen: port must be an integer from 0 to 65535, got ${String(port)}`);
  if (typeof host !== "string") throw new TypeError("pool.listen: host must be a string");
  if (typeof protocol !== "string" || !/^[\w.]+:[\w.]+$/.test(protocol))
    throw new TypeError(`pool.listen: protocol must be "module:Factory", got ${JSON.stringify(protocol)}`);
  if (!Number.isInteger(backlog) || backlog < 1) throw new TypeError(`pool.listen: backlog must be a positive integer, got ${String(backlog)}`);
  const id = nextListener++;
  let closed = false;

  // hand-offs between this listener's contexts: [listener id, to, fd, bytes already read]
  const stopRelay = hubOf(rt).on("__bunpy_handoff", (value, from) => {
    // what Python code sends here may be anything (this listener throwing would end the
    // process with an uncaught error): a message of another shape is dropped
    if (!Array.isArray(value) || value.length !== 4) return;
    const [lid, to, fd, data] = value as [unknown, unknown, unknown, unknown];
    // only this listener's contexts hand off: from anywhere else the fd number would make
    // JS close, or give to a context, an fd of its own choosing
    if (lid !== id || from === undefined || !pool.contexts.includes(from)) return;
    if (!(typeof fd === "number" && Number.isInteger(fd) && fd >= 0 && fd <= 0x7fffffff)) return;
    const closeFd = () => {
      try {
        closeSync(fd);
      } catch {
        // not open (the context sent a number it had not dup'ed): nothing to close
      }
    };
    if (!(data instanceof Uint8Array) || (typeof to !== "number" && typeof to !== "string")) return closeFd();
    let target: Context | undefined;
    if (!closed) target = typeof to === "number" ? pool.contexts[to] : pool.pick({ key: to });
    if (target === undefined) {
      closeFd(); // nobody will serve it: the client sees the connection close
      return;
    }
    // adopt serves a duplicate of the fd, so JS closes this one however the call ends:
    // also when it never ran (the target closed first), which used to leak the connection
    target
      .call("bunpy._listen", "adopt", [id, fd, data])
      .catch((e: unknown) => {
        if (!(e instanceof ContextClosedError || e instanceof ContextDiedError)) console.error("bunpy: a connection handed off between contexts was dropped:", e);
      })
      .finally(closeFd);
  });

  // A context that dies leaves its listening socket open and listening: the kernel would
  // go on giving it connections nobody accepts. Its fd is taken out of the port's group.
  const forgetDeaths: (() => void)[] = [];
  const start = async (ctx: Context, at: number): Promise<number> => {
    const [got, fd] = (await ctx.call("bunpy._listen", "start", [id, host, at, protocol, backlog])) as [number, number];
    forgetDeaths.push(ctx.onDied(() => void rt.callFunction("bunpy._listen", "stop_listening_fd", [fd])));
    return got;
  };
  // the first context picks the port when it is 0; the others join it
  let bound = port;
  try {
    bound = await start(pool.contexts[0]!, port);
    await Promise.all(pool.contexts.slice(1).map((c) => start(c, bound)));
  } catch (e) {
    stopRelay();
    for (const forget of forgetDeaths.splice(0)) forget();
    await Promise.allSettled(pool.contexts.map((c) => c.call("bunpy._listen", "stop", [id])));
    throw e;
  }
  // a context that replaces a dead one listens too
  const stopReplacing = pool.onReplace(async (ctx) => {
    if (!closed) await start(ctx, bound);
  });
  // the pool closed with this listener open: its contexts are gone (hand-offs sent before
  // they closed were relayed first, to a closed context: closed), so the relay goes too;
  // otherwise the hub's listener kept the pool and its contexts alive for good
  const stopOnClose = pool.onClose(() => {
    stopListening();
    stopRelay();
  });
  /** No new listeners in replacements, no more death watches (both ways of closing). */
  function stopListening(): void {
    closed = true;
    stopReplacing();
    for (const forget of forgetDeaths.splice(0)) forget();
  }
  let closing: Promise<void> | undefined;
  return {
    port: bound,
    host,
    close() {
      closing ??= (async () => {
        stopListening();
        await Promise.allSettled(pool.contexts.map((c) => c.call("bunpy._listen", "stop", [id])));
        stopRelay();
        stopOnClose();
      })();
      return closing;
    },
  };
}
