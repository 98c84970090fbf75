/**
 * `bunx bunpy serve module:app [options]`: serves an ASGI or WSGI app with Bun.serve and a
 * pool of contexts, the way `uvicorn module:app` does. SIGTERM/SIGINT close it gracefully:
 * the server stops listening, requests in flight finish (bounded by
 * --timeout-graceful-shutdown), the lifespan shutdown runs, the process exits 0.
 * --reload and --processes N run the server in child processes of this one: see
 * src/cli-supervise.ts.
 */
import type { TLSOptions } from "bun";
import { accessSync, constants, statSync } from "node:fs";
import { CHILD_ENV, superviseProcesses, superviseReloads, withoutFlags, type ReadyMessage } from "./cli-supervise.ts";
import { py } from "./index.ts";
import type { AsgiApp } from "./asgi.ts";
import { APP_TARGET } from "./serve-app.ts";
import type { ServeOptions } from "./serve.ts";

export const SERVE_USAGE = `usage: bunpy serve MODULE:APP [options]
  --host HOST                 address to listen on (default 127.0.0.1)
  --port PORT                 port (default 8000; 0 picks a free one)
  --workers N                 contexts in the pool of each process (default: the number of
                              cores, divided by --processes)
  --processes N               N server processes on the same host and port (SO_REUSEPORT:
                              Linux spreads the connections), watched by this one, which
                              starts a process again when it dies (default: 1, no supervisor)
  --mode owngil|worker|inline context mode (default owngil on Python 3.12+); inline: the app
                              runs in the main interpreter on Bun's thread (ASGI, one core)
  --interface auto|asgi3|asgi2|wsgi  default auto: an async callable is ASGI 3, a class
                              or a one-argument callable ASGI 2, else WSGI (asgi: 3 or 2)
  --root-path PATH            root_path / SCRIPT_NAME (e.g. /api)
  --app-dir DIR               put DIR first on sys.path (default: the current directory)
  --lifespan auto|on|off      ASGI lifespan (default auto)
  --threads reuse|per-request where asgiref (Django) runs a request's sync code: a reused
                              thread of its own (default), or a new thread per request
  --ssl-keyfile FILE          serve https/wss with this private key (PEM)
  --ssl-certfile FILE         and this certificate chain (PEM); both are needed
  --ssl-keyfile-password PW   passphrase of an encrypted key
  --ssl-ca-certs FILE         CA certificates (PEM) to verify client certificates with
  --ssl-cert-reqs 0|1|2       client certificates: 0 none (default), 1 asked for, 2 required
  --ws-max-queue N            websocket frames that may wait for the app before bunpy
                              stops reading the socket (default 32)
  --access-log                log each request: client - "METHOD path HTTP/1.1" status
  --timeout-graceful-shutdown SECONDS  wait for requests in flight on shutdown (default 10)
  --reload                    restart when a .py file changes (for development)
  --reload-dir DIR            watch DIR (repeatable; default: the --app-dir directories)`;

class UsageError extends Error {}

/** py.pool's limit (src/pool.ts), checked here for a usage error rather than a stack trace. */
const MAX_POOL_SIZE = 1024;
/** --processes: each is a Bun process with its own pool. */
const MAX_PROCESSES = 1024;

interface Parsed {
  options: ServeOptions;
  accessLog: boolean;
  graceMs: number;
  /** --reload: the directories to watch, else undefined */
  reload: string[] | undefined;
  /** --processes N, else undefined */
  processes: number | undefined;
  /** --workers was given */
  workers: boolean;
}

function parse(argv: string[]): Parsed {
  const options: ServeOptions = { app: "", port: 8000 };
  let accessLog = false;
  let reload = false;
  let processes: number | undefined;
  const reloadDirs: string[] = [];
  let graceMs = 10000;
  const appDirs: string[] = [];
  const ssl: { keyfile?: string; certfile?: string; password?: string; ca?: string; reqs?: number } = {};
  const value = (i: number, flag: string): string => {
    const v = argv[i + 1];
    if (v === undefined || v.startsWith("--")) throw new UsageError(`${flag} needs a value`);
    return v;
  };
  // digits only: Number() would take "" and " " as 0, and "1e3" or "0x10" silently
  const int = (s: string, flag: string, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const n = /^\d+$/.test(s) ? Number(s) : NaN;
    if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`${flag}: expected an integer ≥ ${min}, got ${/^\d+$/.test(s) ? s : JSON.stringify(s)}`);
    if (n > max) throw new UsageError(`${flag}: expected an integer ≤ ${max}, got ${s}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    switch (a) {
      case "--host": options.hostname = value(i++, a); break;
      case "--port": options.port = int(value(i++, a), a, 0, 65535); break;
      case "--workers": options.pool = { ...options.pool, size: int(value(i++, a), a, 1, MAX_POOL_SIZE) }; break;
      case "--processes": processes = int(value(i++, a), a, 1, MAX_PROCESSES); break;
      case "--mode": {
        const m = value(i++, a);
        if (m !== "owngil" && m !== "worker" && m !== "inline") throw new UsageError(`--mode: expected owngil, worker or inline, got ${m}`);
        options.mode = m;
        break;
      }
      case "--interface": {
        const m = value(i++, a);
        if (m !== "auto" && m !== "asgi" && m !== "asgi3" && m !== "asgi2" && m !== "wsgi")
          throw new UsageError(`--interface: expected auto, asgi3, asgi2, asgi or wsgi, got ${m}`);
        if (m !== "auto") options.interface = m;
        break;
      }
      case "--root-path": options.rootPath = value(i++, a); break;
      case "--app-dir": appDirs.push(value(i++, a)); break;
      case "--lifespan": {
        const m = value(i++, a);
        if (m !== "auto" && m !== "on" && m !== "off") throw new UsageError(`--lifespan: expected auto, on or off, got ${m}`);
        options.lifespan = m;
        break;
      }
      case "--threads": {
        const m = value(i++, a);
        if (m !== "reuse" && m !== "per-request") throw new UsageError(`--threads: expected reuse or per-request, got ${m}`);
        options.threads = m;
        break;
      }
      case "--ssl-keyfile": ssl.keyfile = value(i++, a); break;
      case "--ssl-certfile": ssl.certfile = value(i++, a); break;
      case "--ssl-keyfile-password": ssl.password = value(i++, a); break;
      case "--ssl-ca-certs": ssl.ca = value(i++, a); break;
      case "--ssl-cert-reqs": {
        const n = int(value(i++, a), a, 0);
        if (n > 2) throw new UsageError(`--ssl-cert-reqs: expected 0, 1 or 2, got ${n}`);
        ssl.reqs = n;
        break;
      }
      case "--ws-max-queue": options.wsMaxQueue = int(value(i++, a), a, 1); break;
      case "--access-log": accessLog = true; break;
      case "--timeout-graceful-shutdown": graceMs = int(value(i++, a), a, 0) * 1000; break;
      case "--reload": reload = true; break;
      case "--reload-dir": reloadDirs.push(value(i++, a)); break;
      default:
        if (a.startsWith("-") || options.app !== "") throw new UsageError(`unknown argument ${a}`);
        options.app = a;
    }
  }
  if (options.app === "") throw new UsageError("which app? give MODULE:APP");
  if (!APP_TARGET.test(options.app)) throw new UsageError(`expected MODULE:APP (e.g. myapp:app, pkg.main:app), got ${options.app}`);
  if (options.mode === "inline" && options.pool !== undefined)
    throw new UsageError("--workers does not apply to --mode inline (the app runs on Bun's thread: use --processes N for more cores)");
  options.path = appDirs.length > 0 ? appDirs : ["."];
  const tls = tlsOptions(ssl);
  if (tls !== undefined) options.tls = tls;
  if (reloadDirs.length > 0 && !reload) throw new UsageError("--reload-dir needs --reload");
  if (reload && processes !== undefined)
    throw new UsageError("--reload and --processes cannot be combined (--reload runs one server process, for development)");
  return {
    options,
    accessLog,
    graceMs,
    reload: reload ? (reloadDirs.length > 0 ? reloadDirs : options.path) : undefined,
    processes,
    workers: options.pool !== undefined,
  };
}

/** The --ssl-* flags as Bun.serve's `tls` option; undefined without them. */
function tlsOptions(ssl: { keyfile?: string; certfile?: string; password?: string; ca?: string; reqs?: number }): TLSOptions | undefined {
  const { keyfile, certfile } = ssl;
  if (keyfile === undefined && certfile === undefined) {
    for (const [flag, v] of [["--ssl-keyfile-password", ssl.password], ["--ssl-ca-certs", ssl.ca], ["--ssl-cert-reqs", ssl.reqs]] as const)
      if (v !== undefined) throw new UsageError(`${flag} needs --ssl-keyfile and --ssl-certfile`);
    return undefined;
  }
  if (keyfile === undefined) throw new UsageError("--ssl-certfile needs --ssl-keyfile (the private key; the same file if it holds both)");
  if (certfile === undefined) throw new UsageError("--ssl-keyfile needs --ssl-certfile (the certificate chain)");
  const file = (path: string, flag: string) => {
    try {
      accessSync(path, constants.R_OK);
      if (!statSync(path).isFile()) throw new Error("not a file");
    } catch (e) {
      throw new UsageError(`${flag}: cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    // (Bun.serve throws a TypeError of its own for an empty one, which is no TLS error)
    if (statSync(path).size === 0) throw new UsageError(`${flag}: ${path} is empty`);
    return Bun.file(path);
  };
  const tls: TLSOptions = { key: file(keyfile, "--ssl-keyfile"), cert: file(certfile, "--ssl-certfile") };
  if (ssl.password !== undefined) tls.passphrase = ssl.password;
  if (ssl.ca !== undefined) tls.ca = file(ssl.ca, "--ssl-ca-certs");
  if (ssl.reqs !== undefined && ssl.reqs > 0) {
    tls.requestCert = true;
    tls.rejectUnauthorized = ssl.reqs === 2;
  }
  return tls;
}

export async function serveCommand(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parse(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`bunpy serve: ${e.message}\n${SERVE_USAGE}`);
    return 2;
  }
  if (parsed.reload !== undefined) return superviseReloads(argv, parsed.reload, parsed.graceMs);
  if (parsed.processes !== undefined) {
    const childArgv = withoutFlags(argv, { "--processes": true });
    // the cores shared out: N processes of cores/N contexts, unless --workers says otherwise
    if (!parsed.workers && parsed.options.mode !== "inline")
      childArgv.push("--workers", String(Math.max(1, Math.ceil((navigator.hardwareConcurrency ?? 1) / parsed.processes))));
    return superviseProcesses({
      argv: childArgv,
      processes: parsed.processes,
      port: parsed.options.port ?? 8000,
      hostname: parsed.options.hostname ?? "127.0.0.1",
      app: parsed.options.app,
      graceMs: parsed.graceMs,
    });
  }
  // a child of the supervisor (--reload, --processes): it reports when it listens and stops
  // when the supervisor goes away; with --processes it shares the port and stays quiet
  const role = process.env[CHILD_ENV];
  const child = role !== undefined && typeof process.send === "function";
  const quiet = child && role === "processes";
  if (quiet) parsed.options.reusePort = true;
  const { options, accessLog, graceMs } = parsed;
  let s;
  try {
    s = await py.serve(options);
  } catch (e) {
    // a key that does not decrypt or match the certificate, a file that is no PEM
    const code = String((e as { code?: unknown }).code ?? "");
    // a port in use or not ours to take, an address not of this host: no stack trace
    if (/^E(ADDRINUSE|ADDRNOTAVAIL|ACCES|INVAL|PERM)$/.test(code)) {
      console.error(`bunpy serve: cannot listen on ${options.hostname ?? "127.0.0.1"} port ${options.port ?? 8000}: ${(e as Error).message}`);
      await py.close();
      return 1;
    }
    if (options.tls === undefined || !(code.startsWith("ERR_OSSL") || /PEM|X509|SSL|key|certificate/i.test(String(e)))) throw e;
    console.error(`bunpy serve: the TLS key or certificate cannot be used: ${(e as Error).message}\n${SERVE_USAGE}`);
    await py.close();
    return 2;
  }
  if (accessLog) {
    // wrap the handler: one line per response, as uvicorn's access log
    const inner = s.app.fetch;
    s.server.reload({
      fetch: async (req: Request, server: any) => {
        const res: Response | undefined = await inner(req, server);
        const ip = server.requestIP(req);
        const u = req.url;
        const target = u.slice(u.indexOf("/", u.indexOf("//") + 2));
        console.log(`INFO:     ${ip ? `${ip.address}:${ip.port}` : "-"} - "${req.method} ${target} HTTP/1.1" ${res === undefined ? 101 : res.status}`); // undefined: upgraded to a websocket
        return res;
      },
    });
  }
  const contexts = s.app.pool?.contexts.length ?? 0;
  const where = s.app.pool === undefined ? "inline: the main interpreter on Bun's thread" : `${contexts} ${s.app.mode} context${contexts === 1 ? "" : "s"}`;
  const kind = s.app.interface === "asgi" && (s.app as AsgiApp).asgiVersion === "2.0" ? "asgi2" : s.app.interface;
  // the signal handlers first: a SIGTERM sent as soon as the banner is read must be graceful
  const stopped = new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      if (!quiet) console.log(`bunpy: ${signal}: shutting down (requests in flight finish, up to ${graceMs / 1000} s)`);
      s.close({ timeout: graceMs }).then(resolve, (e) => {
        console.error("bunpy: shutdown failed:", e);
        resolve();
      });
    };
    // the same signal again while stopping (Ctrl-C twice): exit now, as uvicorn does; the
    // contexts' threads end with the process, process contexts' hosts with their parent.
    // Only the same one: one Ctrl-C reaches a child of --processes/--reload twice, as SIGINT
    // from the terminal (its process group) and as the SIGTERM its supervisor relays, and
    // that must stay one graceful stop.
    const seen = new Set<string>();
    const onSignal = (signal: string) => {
      const first = seen.size === 0, again = seen.has(signal);
      seen.add(signal);
      if (first) return stop(signal);
      if (!again) return;
      console.error(`bunpy: ${signal} again: exiting now`);
      process.exit(1);
    };
    process.on("SIGTERM", () => onSignal("SIGTERM"));
    process.on("SIGINT", () => onSignal("SIGINT"));
    if (child) {
      // the channel may have closed while the app was loading (the supervisor was killed)
      process.on("disconnect", () => stop("the supervisor is gone"));
      if (!process.connected) stop("the supervisor is gone");
      else {
        const ready: ReadyMessage = { bunpy: "ready", port: s.port, url: s.url.href, kind, where };
        process.send!(ready);
      }
    }
  });
  if (!quiet) console.log(`bunpy: serving ${options.app} (${kind}, ${where}) on ${s.url}`);
  // uvicorn's --workers are processes: say what ours are where the difference shows
  if (!quiet && s.app.mode === "worker" && contexts > 1)
    console.error(`bunpy: the ${contexts} worker contexts share one GIL (Python runs on one core at a time in this process); --processes N runs N processes`);
  await stopped;
  await py.close();
  if (!quiet) console.log("bunpy: stopped");
  return 0;
}
