/**
 * ASGI apps on Bun.serve: the JS half (the Python half is python/bunpy/_asgi.py).
 *
 * One context call per request (`handle`): the request travels as positional arguments,
 * the response comes back as [status, flat headers, body, DONE|STREAM]. A streamed response
 * becomes a ReadableStream whose pull() calls `pull` in the same context (back-pressure:
 * Python's send() waits once 64 KiB are queued and nobody pulled). Request bodies up to
 * 64 KiB with a Content-Length are read before the call; larger or chunked ones are read
 * one chunk per receive() through the registered `__bunpy_asgi_read`.
 */
import type { ContextMode } from "./context.ts";
import { inlineRunner, type AppCaller, type InlineRunner } from "./inline.ts";
import type { MainInterpreter } from "./main-interpreter.ts";
import type { Pool } from "./pool.ts";
import type { WebSocketHandler } from "bun";
import { closeSockets, handshake, sharedHandlers, websocketHandlers, type Upgrader } from "./asgi-websocket.ts";
import {
  checkInterface,
  checkRootPath,
  flatHeaders,
  internalError,
  loadApp,
  nullBodyStatus,
  pulledBody,
  router,
  targetOf,
  Tracker,
  unavailable,
  worthReporting,
  type Handler,
  type LoadedApp,
  type ServeAppOptions,
  serverAddress,
  type ServerLike,
} from "./serve-app.ts";

export interface AsgiOptions extends ServeAppOptions {
  /** "auto" (default): run lifespan startup/shutdown in every context, and go on without
      it when the app does not support it. "on": an app that does not support it is an
      error. "off": never send lifespan events. */
  lifespan?: "auto" | "on" | "off" | undefined;
  /** "asgi" (default): ASGI 3 or ASGI 2 (two callables: `app(scope)` makes an instance,
      `await instance(receive, send)` runs it), detected as uvicorn does; "asgi3" or
      "asgi2" to say which. */
  interface?: "asgi" | "asgi3" | "asgi2" | undefined;
  /** Websocket frames from a client that may wait for the app's receive() (default 32,
      uvicorn's ws_max_queue): beyond that bunpy stops reading the socket until the app
      takes half of them. */
  wsMaxQueue?: number | undefined;
  /** JS websocket handlers for the same server: `app.websocket` then passes the sockets
      a JS route upgraded (not the app's) to them (open, message, close, drain, ping, pong),
      and carries their settings (maxPayloadLength, idleTimeout...) to Bun.serve. */
  websocket?: WebSocketHandler<any> | undefined;
}

export interface CloseAppOptions {
  /** Milliseconds to wait for requests in flight before the lifespan shutdown (default 10000). */
  timeout?: number | undefined;
}

export interface ServedApp {
  /** The handler for Bun.serve({ fetch }) or a route: (req, server) => Response | Promise<Response>. */
  readonly fetch: Handler;
  /** A handler for a route under `prefix` (e.g. "/api"): root_path / SCRIPT_NAME is `prefix`. */
  mount(prefix: string): Handler;
  /** The pool the app runs in; undefined in inline mode (the app runs in the main interpreter). */
  readonly pool: Pool | undefined;
  /** Where the app runs: the pool's context mode, or "inline" (the main interpreter, on this JS thread). */
  readonly mode: ContextMode | "inline";
  /** ASGI: the handlers for Bun.serve({ websocket }) (websocket scopes); undefined for WSGI. */
  readonly websocket?: WebSocketHandler<any>;
  /** "asgi" or "wsgi". */
  readonly interface: "asgi" | "wsgi";
  /** Requests being served. */
  readonly inFlight: number;
  /** Refuses new requests (503), waits for those in flight, runs the lifespan shutdown in
      every context (ASGI), then closes the pool. */
  close(options?: CloseAppOptions): Promise<void>;
}

/** What py.asgi returns: a ServedApp whose websocket handlers are always there. */
export interface AsgiApp extends ServedApp {
  readonly websocket: WebSocketHandler<any>;
  /** "3.0", or "2.0" for a two-callable app (served through a wrapper; its scopes say "2.0"). */
  readonly asgiVersion: "2.0" | "3.0";
}

const BODY_INLINE = 65536;
const DONE = 0;
const PATHSEND = 2; // STREAM is 1

interface Live {
  ctx: AppCaller;
  /** The context serving it (undefined: inline, the main interpreter): only it reads the body. */
  owner: object | undefined;
  reader?: { read(): Promise<{ value?: Uint8Array; done: boolean }> };
  gone: boolean;
}

/** Requests whose Python side may still call back (read a body chunk), by id: per JS thread. */
const live = new Map<number, Live>();
let nextRequest = 1;
const registered = new WeakSet<MainInterpreter>();

function register(rt: MainInterpreter): void {
  if (registered.has(rt)) return;
  registered.add(rt);
  // receive(): the next chunk of a request body (null at the end, false when the client left)
  rt.callbacks.registered.set("__bunpy_asgi_read", async (rid: number) => {
    const l = live.get(rid);
    // another context (a sandboxed one, say) naming this request's id gets nothing
    if (l === undefined || l.reader === undefined || l.owner !== rt.callbacks.caller) return null;
    if (l.gone) return false;
    try {
      const { value, done } = await l.reader.read();
      return done ? null : value;
    } catch {
      return false;
    }
  });
}

export async function startAsgi(rt: MainInterpreter, target: string, options: AsgiOptions = {}, loaded?: LoadedApp): Promise<AsgiApp> {
  checkInterface(options.interface, ["asgi", "asgi3", "asgi2"]);
  const lifespan = options.lifespan ?? "auto";
  if (lifespan !== "auto" && lifespan !== "on" && lifespan !== "off") throw new TypeError(`lifespan: expected "auto", "on" or "off"`);
  const defaultRoot = checkRootPath(options.rootPath);
  const routeOf = router(options.route);
  const wsMaxQueue = options.wsMaxQueue ?? 32;
  if (!Number.isInteger(wsMaxQueue) || wsMaxQueue < 1) throw new TypeError(`wsMaxQueue: expected an integer ≥ 1, got ${String(options.wsMaxQueue)}`);
  const wsHandlers = options.websocket !== undefined ? sharedHandlers(options.websocket) : websocketHandlers;
  register(rt);
  const { pool, id, asgiVersion } = loaded ?? (await loadApp(rt, target, options, options.interface ?? "asgi"));
  const sandboxed = options.pool?.sandbox !== undefined;
  // inline mode: one runner, the main interpreter on this JS thread
  const inline = pool === undefined ? inlineRunner(rt) : undefined;
  const callers: AppCaller[] = inline !== undefined ? [inline] : pool!.contexts;
  const release = async () => {
    if (inline !== undefined) {
      inline.release();
      rt.callFunction("bunpy._asgi", "forget", [id]);
    } else await pool!.close();
  };
  if (inline !== undefined) inline.users++;
  let lifespanRan = false;
  if (lifespan !== "off") {
    try {
      const supported = await Promise.all(callers.map((c) => c.call("bunpy._asgi", "lifespan_startup", [id])));
      lifespanRan = supported.some(Boolean);
      if (lifespan === "on" && !lifespanRan) throw new TypeError(`${target} does not support the ASGI lifespan protocol (lifespan: "on")`);
    } catch (e) {
      await release();
      throw e;
    }
  }
  const tracker = new Tracker();

  /**
   * Inline mode: a request without a body is one synchronous call, and when the app finished
   * in its first step the Response is built here, with no Promise, no abort listener and no
   * request record in JS. Anything else (a body, a websocket, a response streamed or not
   * ready yet) goes on in serve().
   */
  function fetchInline(runner: InlineRunner, req: Request, server: ServerLike | undefined, rootPath: string): Response | Promise<Response> {
    if (tracker.closing || req.body !== null) return serve(req, server, rootPath);
    const method = req.method;
    if (method === "GET" && server?.upgrade !== undefined && req.headers.get("upgrade") !== null) return serve(req, server, rootPath);
    tracker.enter();
    const rid = nextRequest++;
    const url = req.url;
    const ip = server?.requestIP?.(req) ?? null;
    let res: unknown[] | number;
    try {
      const addr = serverAddress(server);
      res = runner.handle([
        false, id, rid, method, targetOf(url), flatHeaders(req), ip?.address ?? null, ip?.port ?? null, null, false,
        url.charCodeAt(4) === 115 ? "https" : "http", addr[0], addr[1], rootPath,
      ]);
    } catch (e) {
      tracker.leave();
      if (worthReporting(e)) console.error("bunpy: ASGI request failed:", e);
      return internalError();
    }
    if (typeof res !== "number" && res[3] === DONE) {
      tracker.leave();
      const status = res[0] as number;
      const flat = res[1] as string[];
      const headers: [string, string][] = [];
      for (let i = 0; i < flat.length; i += 2) headers.push([flat[i]!, flat[i + 1]!]);
      try {
        return new Response(method === "HEAD" || nullBodyStatus(status) ? null : (res[2] as Uint8Array), { status, headers });
      } catch (e) {
        console.error("bunpy: ASGI request failed:", e);
        return internalError();
      }
    }
    return serve(req, server, rootPath, { rid, res: typeof res === "number" ? runner.wait(res) : res });
  }

  /** `early`: inline mode already made the call (fetchInline): its request id and result. */
  async function serve(req: Request, server: ServerLike | undefined, rootPath: string, early?: { rid: number; res: unknown }): Promise<Response> {
    if (early === undefined) {
      if (tracker.closing) return unavailable();
      tracker.enter();
    }
    const rid = early?.rid ?? nextRequest++;
    let streaming = false;
    let stopListening: (() => void) | undefined; // the abort listener, once added
    try {
      const ctx: AppCaller = inline ?? pool!.pick(routeOf(req, server));
      const url = req.url;
      const method = req.method;
      if (early === undefined && server?.upgrade !== undefined && method === "GET" && req.headers.get("upgrade")?.toLowerCase() === "websocket") {
        const ip = server.requestIP?.(req) ?? null;
        const res = await handshake(rt, ctx, id, rid, req, server as Upgrader, {
          target: targetOf(url), headers: flatHeaders(req), host: ip?.address ?? null, port: ip?.port ?? null,
          scheme: url.charCodeAt(4) === 115 ? "wss" : "ws", serverHost: serverAddress(server)[0], serverPort: serverAddress(server)[1], rootPath,
          maxQueue: wsMaxQueue,
        });
        return res as Response; // undefined once upgraded: Bun.serve accepts that
      }
      let body: Uint8Array | null = null;
      let more = false;
      const l: Live = { ctx, owner: inline === undefined ? ctx : undefined, gone: false };
      if (early === undefined && req.body !== null) {
        const len = Number(req.headers.get("content-length") ?? NaN);
        if (len <= BODY_INLINE) body = new Uint8Array(await req.arrayBuffer());
        else {
          more = true;
          l.reader = req.body.getReader();
        }
      }
      live.set(rid, l);
      const signal = req.signal;
      const onAbort = () => {
        if (l.gone) return;
        l.gone = true;
        ctx.cast("bunpy._asgi", "disconnect", [rid]);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      stopListening = () => signal.removeEventListener("abort", onAbort);
      if (early !== undefined && signal.aborted) onAbort(); // the client left during the call
      const ip = server?.requestIP?.(req) ?? null;
      const secure = url.charCodeAt(4) === 115; // "https:"
      const addr = serverAddress(server);
      const args = [
        id, rid, method, targetOf(url), flatHeaders(req), ip?.address ?? null, ip?.port ?? null, body, more,
        secure ? "https" : "http", addr[0], addr[1], rootPath,
      ];
      // inline: the app's first step runs in this call (in an eagerly started task)
      let pending: unknown;
      if (early !== undefined) pending = early.res;
      else if (inline !== undefined) {
        const r = inline.handle([false, ...args]);
        pending = typeof r === "number" ? inline.wait(r) : r;
      } else pending = ctx.call("bunpy._asgi", "handle", args);
      const res = (await pending) as [
        number, string[], Uint8Array | string, number,
      ];
      const [status, flat, first, flag] = res;
      const headers: [string, string][] = [];
      for (let i = 0; i < flat.length; i += 2) headers.push([flat[i]!, flat[i + 1]!]);
      const noBody = method === "HEAD" || nullBodyStatus(status);
      if (flag === PATHSEND) {
        // http.response.pathsend: Bun sends the file (sendfile where it can), opened here,
        // outside any sandbox: a sandboxed app is not offered the extension, and since its
        // Python side (bunpy's included) is the app's to change, JS refuses it too
        if (sandboxed) throw new Error("bunpy: a sandboxed app cannot use http.response.pathsend (Bun would open the file outside its sandbox)");
        signal.removeEventListener("abort", onAbort);
        live.delete(rid);
        return new Response(noBody ? null : Bun.file(first as string), { status, headers });
      }
      if (flag === DONE || noBody) {
        if (flag !== DONE) onAbort(); // HEAD / 204 streamed: nothing more is wanted
        signal.removeEventListener("abort", onAbort);
        live.delete(rid);
        return new Response(noBody ? null : first, { status, headers });
      }
      streaming = true;
      const stream = pulledBody(
        ctx,
        "bunpy._asgi",
        rid,
        first as Uint8Array,
        () => {
          signal.removeEventListener("abort", onAbort);
          live.delete(rid);
          tracker.leave();
        },
        onAbort,
      );
      try {
        return new Response(stream, { status, headers });
      } catch (e) {
        // a status or header Bun refuses: the body is never read, so end it here (this runs
        // its `done` once: the request is forgotten and leaves the in-flight count)
        void stream.cancel(e);
        throw e;
      }
    } catch (e) {
      live.delete(rid);
      stopListening?.();
      if (worthReporting(e)) console.error("bunpy: ASGI request failed:", e);
      return internalError();
    } finally {
      if (!streaming) tracker.leave();
    }
  }

  let closed: Promise<void> | undefined;
  const app: AsgiApp = {
    fetch: inline !== undefined ? (req, server) => fetchInline(inline, req, server, defaultRoot) : (req, server) => serve(req, server, defaultRoot),
    mount(prefix: string): Handler {
      const root = checkRootPath(prefix);
      return inline !== undefined ? (req, server) => fetchInline(inline, req, server, root) : (req, server) => serve(req, server, root);
    },
    pool,
    mode: inline !== undefined ? "inline" : pool!.mode,
    websocket: wsHandlers,
    interface: "asgi",
    asgiVersion,
    get inFlight() {
      return tracker.n;
    },
    close(opts?: CloseAppOptions): Promise<void> {
      closed ??= (async () => {
        tracker.closing = true;
        closeSockets(id);
        const timeout = opts?.timeout ?? 10000;
        const start = Date.now();
        await tracker.drained(timeout);
        const left = Math.max(0, timeout - (Date.now() - start)) / 1000;
        // bounded in JS too: an app blocked in C (time.sleep in its lifespan shutdown)
        // blocks its context's loop, and Python's own bounds never fire there
        const bound = Math.min(Math.round(left * 1000 + Math.max(left * 1000, 1000) + 1000), 2 ** 31 - 1);
        await Promise.allSettled(
          pool !== undefined
            ? pool.contexts.map((c) => c.call("bunpy._asgi", "shutdown", [id, left, lifespanRan], undefined, { timeout: bound }))
            : callers.map((c) => c.call("bunpy._asgi", "shutdown", [id, left, lifespanRan])),
        );
        await release();
      })();
      return closed;
    },
  };
  return app;
}
