/**
 * What ASGI and WSGI serving share: options, the pool the app runs in, loading the app
 * into every context, and the parts of a Bun Request that both scopes need.
 */
import { resolve } from "node:path";
import type { ContextMode } from "./context.ts";
import type { AppCaller } from "./inline.ts";
import { PythonError } from "./errors.ts";
import type { MainInterpreter } from "./main-interpreter.ts";
import { Pool, type PoolOptions } from "./pool.ts";
import { withReadable } from "./sandbox.ts";

export interface ServeAppOptions {
  /** The pool the app runs in: its size (default: the number of cores) and mode. */
  pool?: PoolOptions | undefined;
  /** Context mode (shortcut for pool.mode): "owngil" (default on 3.12+) or "worker"; for
      ASGI apps also "inline": no pool, the app runs in the main interpreter on this JS
      thread (one synchronous call per request; see docs/serving.md). */
  mode?: ContextMode | "inline" | undefined;
  /** Directories put in front of sys.path in every context before the app is imported
      (relative to the current directory). */
  path?: string[] | undefined;
  /** root_path (ASGI) / SCRIPT_NAME (WSGI) for requests given to `fetch`; `mount(prefix)`
      makes a handler with another one. Default "". */
  rootPath?: string | undefined;
  /** Which context serves a request, for apps that keep state per process: `"connection"`
      (every request of a keep-alive connection, and a websocket, on one context) or a
      function giving a key (a cookie, a header): requests with the same key go to the same
      context; `undefined` from it picks as usual. Default: an idle context, else the least loaded. */
  route?: "connection" | ((req: Request, server?: ServerLike) => string | number | undefined) | undefined;
  /** ASGI apps that use asgiref (Django): where a request's thread-sensitive sync code runs.
      "reuse" (default): on a thread of its own for the request, taken from idle threads kept
      per context and given back at the request's end; "per-request": asgiref's own way, a
      thread started and joined for every request (~0.6 ms each; see docs/serving.md). */
  threads?: "reuse" | "per-request" | undefined;
}

const NO_ROUTE: { key?: undefined } = Object.freeze({});

/** The `pool.pick` options of a request under `route` (checked when the app starts). */
export function router(route: ServeAppOptions["route"]): (req: Request, server: ServerLike | undefined) => { key?: string | number | undefined } {
  if (route === undefined) return () => NO_ROUTE;
  if (route === "connection")
    return (req, server) => {
      const ip = server?.requestIP?.(req);
      return { key: ip ? `${ip.address}:${ip.port}` : undefined };
    };
  if (typeof route !== "function") throw new TypeError(`route: expected "connection" or a function returning a key, got ${String(route)}`);
  return (req, server) => {
    const key = route(req, server);
    if (key !== undefined && typeof key !== "string" && typeof key !== "number")
      throw new TypeError(`route: the function must return a string, a number or undefined, got ${typeof key}`);
    return { key };
  };
}

/** A Bun server as far as serving needs it (the second argument of `fetch`). */
export interface ServerLike {
  requestIP?(req: Request): { address: string; port: number } | null;
  hostname?: string | undefined;
  port?: number | undefined;
  upgrade?(req: Request, options: unknown): boolean;
}

const NO_ADDRESS: readonly [null, null] = [null, null];
const addresses = new WeakMap<object, readonly [string | null, number | null]>();

/** The server's hostname and port for the scope, read once per server: Bun's `server.port`
    is a getsockname() system call at every read. */
export function serverAddress(server: ServerLike | undefined): readonly [string | null, number | null] {
  if (server === undefined) return NO_ADDRESS;
  let a = addresses.get(server);
  if (a === undefined) addresses.set(server, (a = [server.hostname ?? null, server.port ?? null]));
  return a;
}

/** A fetch handler; inline mode answers with a Response directly when the app finished at once. */
export type Handler = (req: Request, server?: ServerLike) => Response | Promise<Response>;

let nextApp = 1;

/** Starts the pool and imports `target` ("module:attr") in each context. Returns the pool,
    the app's id (its key in bunpy._asgi's registry) and what the object looks like. */
export interface LoadedApp {
  /** The pool the app runs in; undefined in inline mode (the main interpreter). */
  pool: Pool | undefined;
  id: number;
  kind: "asgi" | "wsgi";
  /** ASGI: "2.0" for a two-callable app (served through a wrapper), else "3.0". */
  asgiVersion: "2.0" | "3.0";
}

/** What the app is asked to be: "auto" (ASGI 3, ASGI 2 or WSGI, detected), "asgi" (ASGI 3
    or 2, detected), or one of them. */
export type Interface = "auto" | "asgi" | "asgi3" | "asgi2" | "wsgi";

export function checkInterface(i: unknown, allowed: readonly Interface[]): void {
  if (i !== undefined && !allowed.includes(i as Interface))
    throw new TypeError(`interface: expected ${allowed.map((a) => JSON.stringify(a)).join(", ")}, got ${JSON.stringify(i)}`);
}

function loaded(pool: Pool | undefined, id: number, k: string): LoadedApp {
  return { pool, id, kind: k === "wsgi" ? "wsgi" : "asgi", asgiVersion: k === "asgi2" ? "2.0" : "3.0" };
}

/** "module:attribute": dotted Python identifiers (Unicode ones too, as Python allows) on
    both sides of one colon. */
const NAME = String.raw`[\p{ID_Start}_]\p{ID_Continue}*`;
export const APP_TARGET = new RegExp(`^${NAME}(\\.${NAME})*:${NAME}(\\.${NAME})*$`, "u");

export async function loadApp(rt: MainInterpreter, target: string, options: ServeAppOptions, want: Interface = "auto"): Promise<LoadedApp> {
  if (typeof target !== "string" || !APP_TARGET.test(target))
    throw new TypeError(`expected "module:attribute" (e.g. "myapp:app"), got ${JSON.stringify(target)}`);
  const paths = (options.path ?? []).map((p) => {
    if (typeof p !== "string") throw new TypeError("path: expected an array of directory names");
    return resolve(p);
  });
  const threads = options.threads ?? "reuse";
  if (threads !== "reuse" && threads !== "per-request") throw new TypeError(`threads: expected "reuse" or "per-request", got ${JSON.stringify(threads)}`);
  const chosen = options.mode ?? options.pool?.mode;
  const id = nextApp++;
  if (chosen === "inline") {
    if (options.pool !== undefined)
      throw new TypeError('mode "inline" runs the app in the main interpreter on this JS thread: pool options do not apply (leave out `pool`)');
    return loaded(undefined, id, rt.callFunction("bunpy._asgi", "load", [id, target, paths, false, want, threads]) as string);
  }
  const code = `import bunpy._asgi as _bunpy_asgi\n_bunpy_asgi.load(${id}, ${JSON.stringify(target)}, ${JSON.stringify(paths)}, ${options.pool?.sandbox !== undefined ? "True" : "False"}, ${JSON.stringify(want)}, ${JSON.stringify(threads)})\n`;
  // a sandbox that limits files still reads the app's own code
  const sandbox = options.pool?.sandbox === undefined ? undefined : withReadable(options.pool.sandbox, paths);
  const start = async (mode: ContextMode | undefined) => {
    const pool = await Pool.start(rt, { ...options.pool, mode, sandbox });
    try {
      await pool.execAll(code);
      return loaded(pool, id, (await pool.contexts[0]!.call("bunpy._asgi", "kind_of", [id])) as string);
    } catch (e) {
      await pool.close();
      throw e;
    }
  };
  try {
    return await start(chosen);
  } catch (e) {
    // An app that imports an extension refusing subinterpreters (PyO3 modules such as
    // pydantic-core, single-phase modules) cannot run in owngil contexts: unless the user
    // chose the mode, serve it in worker contexts and say so in one line.
    if (chosen !== undefined || rt.info.minor < 12 || !refusesSubinterpreters(e)) throw e;
    console.warn(`bunpy: ${target} imports an extension that refuses subinterpreters (${(e as PythonError).pythonMessage.split("\n")[0]}); serving it in worker contexts (they share one GIL). Pass mode: "worker" to skip this attempt.`);
    return await start("worker");
  }
}

/** Whether `e` is an ImportError of an extension module that cannot load in an owngil context. */
function refusesSubinterpreters(e: unknown): boolean {
  return e instanceof PythonError && e.type === "ImportError" && /subinterpreter|owngil context/i.test(e.pythonMessage);
}

/** The request target (path and query as sent) and scheme of a Bun Request's URL. */
export function targetOf(url: string): string {
  if (url.charCodeAt(0) === 47) return url; // no Host header (HTTP/1.0): Bun gives the target as it came
  const i = url.indexOf("/", url.indexOf("//") + 2);
  return i < 0 ? "/" : url.slice(i);
}

/** Headers as a flat [name, value, name, value…] array: names lowercase, in Bun's order
    (repeated headers combined as the Fetch standard does, Set-Cookie kept apart). Read
    through toJSON(): one native call, where iterating the Headers costs an iterator step
    per header (a quarter of the JS time of an inline hello-world request). */
export function flatHeaders(req: Request): string[] {
  const all = req.headers.toJSON() as Record<string, string | string[]>;
  const out: string[] = [];
  for (const k in all) {
    const v = all[k]!;
    if (typeof v === "string") out.push(k, v);
    else for (const x of v) out.push(k, x);
  }
  return out;
}

export function checkRootPath(p: unknown): string {
  if (p === undefined) return "";
  if (typeof p !== "string" || (p !== "" && (!p.startsWith("/") || p.endsWith("/"))))
    throw new TypeError(`rootPath/mount prefix: expected "" or a path like "/api" (no trailing slash), got ${JSON.stringify(p)}`);
  return p;
}

/** Statuses whose response must not have a body. */
export function nullBodyStatus(status: number): boolean {
  return status === 101 || status === 204 || status === 205 || status === 304;
}

/**
 * A response body pulled from the app's context one chunk per read: `module.pull(rid)`
 * answers `[chunk, more]`, so Python produces only as fast as the client reads (no queue
 * on the JS side: highWaterMark 0). `done` runs once, when the body ended, failed or was
 * cancelled; `cancel` when the client went away first.
 */
export function pulledBody(ctx: AppCaller, module: string, rid: number, first: Uint8Array, done: () => void, cancel: () => void): ReadableStream<Uint8Array> {
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    done();
  };
  return new ReadableStream<Uint8Array>(
    {
      start(c) {
        if (first.length > 0) c.enqueue(first);
      },
      async pull(c) {
        try {
          const [chunk, more] = (await ctx.call(module, "pull", [rid])) as [Uint8Array, boolean];
          if (chunk.length > 0) c.enqueue(chunk);
          if (!more) {
            c.close();
            finish();
          }
        } catch (e) {
          finish();
          c.error(e);
        }
      },
      cancel() {
        cancel();
        finish();
      },
    },
    { highWaterMark: 0 },
  );
}

/** Counts requests in flight and lets close() wait for them. */
export class Tracker {
  n = 0;
  closing = false;
  private idle: (() => void)[] = [];
  enter(): void {
    this.n++;
  }
  leave(): void {
    if (--this.n === 0) for (const f of this.idle.splice(0)) f();
  }
  drained(timeout: number): Promise<void> {
    if (this.n === 0) return Promise.resolve();
    return new Promise((ok) => {
      // setTimeout fires at once for a delay past 2^31 - 1 ms: a longer grace is "wait"
      const t = setTimeout(ok, Math.min(timeout, 2 ** 31 - 1));
      this.idle.push(() => {
        clearTimeout(t);
        ok();
      });
    });
  }
}

/** A request's failure worth a line on stderr: not the app's own exception (Python printed
    it) and not the app being closed with the request in flight (its close did that). */
export function worthReporting(e: unknown): boolean {
  return !(e instanceof Error && (e.name === "PythonError" || e.name === "ContextClosedError"));
}

export function internalError(): Response {
  return new Response("Internal Server Error", { status: 500, headers: { "content-type": "text/plain; charset=utf-8" } });
}

export function unavailable(): Response {
  return new Response("Service Unavailable", { status: 503, headers: { "content-type": "text/plain; charset=utf-8", connection: "close" } });
}
