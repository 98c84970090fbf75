/**
 * py.serve: loads an app, detects ASGI or WSGI (an async callable is ASGI), and serves it
 * with Bun.serve. close() stops listening, lets requests in flight finish, runs the
 * lifespan shutdown, closes the pool.
 */
import type { MainInterpreter } from "./main-interpreter.ts";
import { startAsgi, type AsgiOptions, type CloseAppOptions, type ServedApp } from "./asgi.ts";
import { startWsgi } from "./wsgi.ts";
import { checkInterface, loadApp } from "./serve-app.ts";

export interface ServeOptions extends Omit<AsgiOptions, "interface"> {
  /** "module:attr" of the app. */
  app: string;
  /** "wsgi", "asgi" (ASGI 3 or 2, detected), "asgi3" or "asgi2"; all three detected when absent. */
  interface?: "asgi" | "asgi3" | "asgi2" | "wsgi" | undefined;
  port?: number | undefined;
  hostname?: string | undefined;
  /** Passed to Bun.serve (several processes can listen on one port). */
  reusePort?: boolean | undefined;
  /** Passed to Bun.serve: larger request bodies get 413 (Bun's default is 128 MiB). */
  maxRequestBodySize?: number | undefined;
  /** Passed to Bun.serve: serve https/wss (`{ cert, key, passphrase?, ca?, requestCert? }`). */
  tls?: import("bun").TLSOptions | undefined;
}

export interface ServedServer {
  readonly app: ServedApp;
  readonly server: ReturnType<typeof Bun.serve>;
  readonly port: number;
  readonly url: URL;
  close(options?: CloseAppOptions): Promise<void>;
}

export async function startServe(rt: MainInterpreter, options: ServeOptions): Promise<ServedServer> {
  if (options === null || typeof options !== "object" || typeof options.app !== "string")
    throw new TypeError('py.serve(options): options.app must be "module:attribute"');
  checkInterface(options.interface, ["asgi", "asgi3", "asgi2", "wsgi"]);
  const loaded = await loadApp(rt, options.app, options, options.interface ?? "auto");
  let app: ServedApp;
  try {
    const { interface: _, ...rest } = options;
    app = loaded.kind === "asgi" ? await startAsgi(rt, options.app, rest, loaded) : await startWsgi(rt, options.app, options, loaded);
  } catch (e) {
    await loaded.pool?.close(); // a bad option (route, rootPath, lifespan) or a failed startup
    throw e;
  }
  let server: ReturnType<typeof Bun.serve>;
  try {
    server = Bun.serve({
      port: options.port ?? 8000,
      hostname: options.hostname ?? "127.0.0.1",
      reusePort: options.reusePort ?? false,
      ...(options.maxRequestBodySize !== undefined && { maxRequestBodySize: options.maxRequestBodySize }),
      ...(options.tls !== undefined && { tls: options.tls }),
      fetch: app.fetch,
      websocket: app.websocket ?? { message() {} },
    });
  } catch (e) {
    await app.close(); // the port is taken, say: lifespan shutdown and the pool, then the error
    throw e;
  }
  let closed: Promise<void> | undefined;
  return {
    app,
    server,
    port: server.port!,
    url: server.url,
    close(opts?: CloseAppOptions) {
      closed ??= (async () => {
        const stopped = server.stop(false); // stop listening; connections in flight go on
        await app.close(opts);
        await stopped;
      })();
      return closed;
    },
  };
}
