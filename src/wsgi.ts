/**
 * WSGI apps on Bun.serve: the JS half (the Python half is python/bunpy/_wsgi.py).
 * One synchronous context call per request; a long body is pulled part by part (each a
 * call, so a context serves other requests between the parts of a streamed response).
 * Request bodies up to 1 MiB with a Content-Length are read before the call; others are
 * read on demand by wsgi.input through the registered `__bunpy_wsgi_read`.
 */
import type { MainInterpreter } from "./main-interpreter.ts";
import type { Pool } from "./pool.ts";
import type { CloseAppOptions, ServedApp } from "./asgi.ts";
import {
  checkRootPath,
  flatHeaders,
  internalError,
  worthReporting,
  loadApp,
  nullBodyStatus,
  pulledBody,
  router,
  targetOf,
  Tracker,
  unavailable,
  type Handler,
  type ServeAppOptions,
  serverAddress,
  type ServerLike,
} from "./serve-app.ts";

export interface WsgiOptions extends ServeAppOptions {}

const BODY_INLINE = 1 << 20;
const DONE = 0;
/** Streamed request bodies by request id, with the context serving each (only it reads). */
const readers = new Map<number, { owner: object; read(): Promise<{ value?: Uint8Array; done: boolean }> }>();
let nextRequest = 1;
const registered = new WeakSet<MainInterpreter>();

function register(rt: MainInterpreter): void {
  if (registered.has(rt)) return;
  registered.add(rt);
  rt.callbacks.registered.set("__bunpy_wsgi_read", async (rid: number) => {
    const r = readers.get(rid);
    // another context (a sandboxed one, say) naming this request's id gets nothing
    if (r === undefined || r.owner !== rt.callbacks.caller) return null;
    try {
      const { value, done } = await r.read();
      return done ? null : value;
    } catch {
      return null; // the client went away: the body ends here
    }
  });
}

export async function startWsgi(rt: MainInterpreter, target: string, options: WsgiOptions = {}, loaded?: { pool: Pool | undefined; id: number }): Promise<ServedApp> {
  if ((options.mode ?? options.pool?.mode) === "inline") throw new TypeError('mode "inline" serves ASGI apps only; serve a WSGI app in a pool ("owngil" or "worker")');
  const defaultRoot = checkRootPath(options.rootPath);
  const routeOf = router(options.route);
  register(rt);
  const loadedApp = loaded ?? (await loadApp(rt, target, options, "wsgi"));
  const id = loadedApp.id;
  const pool = loadedApp.pool!; // a pool: inline mode is refused above
  const tracker = new Tracker();

  async function serve(req: Request, server: ServerLike | undefined, rootPath: string): Promise<Response> {
    if (tracker.closing) return unavailable();
    tracker.enter();
    const rid = nextRequest++;
    let streaming = false;
    try {
      const ctx = pool.pick(routeOf(req, server));
      const url = req.url;
      const method = req.method;
      let body: Uint8Array | null = null;
      let more = false;
      if (req.body !== null) {
        const len = Number(req.headers.get("content-length") ?? NaN);
        if (len <= BODY_INLINE) body = new Uint8Array(await req.arrayBuffer());
        else {
          more = true;
          const reader = req.body.getReader();
          readers.set(rid, { owner: ctx, read: () => reader.read() });
        }
      }
      const ip = server?.requestIP?.(req) ?? null;
      const secure = url.charCodeAt(4) === 115;
      const addr = serverAddress(server);
      const [status, flat, first, flag] = (await ctx.call("bunpy._wsgi", "handle", [
        id, rid, method, targetOf(url), flatHeaders(req), ip?.address ?? null, ip?.port ?? null, body, more,
        secure ? "https" : "http", addr[0], addr[1], rootPath,
      ])) as [number, string[], Uint8Array, number];
      readers.delete(rid);
      const headers: [string, string][] = [];
      for (let i = 0; i < flat.length; i += 2) headers.push([flat[i]!, flat[i + 1]!]);
      const noBody = method === "HEAD" || nullBodyStatus(status);
      if (flag === DONE || noBody) {
        if (flag !== DONE) ctx.cast("bunpy._wsgi", "cancel", [rid]);
        return new Response(noBody ? null : first, { status, headers });
      }
      streaming = true;
      const stream = pulledBody(
        ctx,
        "bunpy._wsgi",
        rid,
        first,
        () => tracker.leave(),
        () => ctx.cast("bunpy._wsgi", "cancel", [rid]),
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
      readers.delete(rid);
      if (worthReporting(e)) console.error("bunpy: WSGI request failed:", e);
      return internalError();
    } finally {
      if (!streaming) tracker.leave();
    }
  }

  let closed: Promise<void> | undefined;
  return {
    fetch: (req, server) => serve(req, server, defaultRoot),
    mount(prefix: string): Handler {
      const root = checkRootPath(prefix);
      return (req, server) => serve(req, server, root);
    },
    pool,
    mode: pool.mode,
    interface: "wsgi",
    get inFlight() {
      return tracker.n;
    },
    close(opts?: CloseAppOptions): Promise<void> {
      closed ??= (async () => {
        tracker.closing = true;
        await tracker.drained(opts?.timeout ?? 10000);
        await pool.close();
      })();
      return closed;
    },
  };
}
