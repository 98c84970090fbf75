/**
 * The supervisor of `bunpy serve`'s child processes, one for both flags that need one:
 *   --reload        one child, stopped and started again when a .py file changes;
 *   --processes N   N children listening on one host and port with SO_REUSEPORT (Linux
 *                   spreads the connections), one started again when it dies.
 * A child is `bunpy serve` itself without those flags, spawned with an IPC channel and
 * CHILD_ENV set: it tells the supervisor `ready` (its port and what it serves) once it
 * listens, and it stops gracefully when the channel closes, so a supervisor that is killed
 * with SIGKILL leaves no server behind. SIGTERM/SIGINT to the supervisor reach every child
 * as SIGTERM (requests in flight finish, bounded by --timeout-graceful-shutdown); the
 * supervisor exits once they all have. A child that outlives that bound by KILL_MARGIN_MS
 * gets SIGKILL.
 */
import type { Subprocess } from "bun";
import { existsSync, watch, type FSWatcher } from "node:fs";
import { join, resolve } from "node:path";

/** In a child's environment: "reload" (it prints its own banner) or "processes" (it listens
    with reusePort and leaves the banner and the shutdown lines to the supervisor). */
export const CHILD_ENV = "BUNPY_SERVE_CHILD";

/** What a child sends over IPC once it listens. */
export interface ReadyMessage {
  bunpy: "ready";
  port: number;
  url: string;
  /** "asgi", "asgi2" or "wsgi" */
  kind: string;
  /** "1 owngil context", "inline: the main interpreter on Bun's thread" */
  where: string;
}

/** How long past the graceful timeout a stopping child may take (the lifespan shutdown, py.close). */
const KILL_MARGIN_MS = 5000;
/** Restart delays after a child that died young: 0.1 s, doubling up to 10 s. */
const BACKOFF_FIRST_MS = 100;
const BACKOFF_MAX_MS = 10000;
/** --reload: how often a deleted watched directory is looked for. */
const LOST_DIR_POLL_MS = 500;
/** A child that served this long before it died is not part of a crash loop. */
const HEALTHY_AFTER_MS = 30000;
/** After the server is up, a slot whose child failed to start this many times in a row gives up. */
const MAX_FAILED_STARTS = 5;

const CLI = join(import.meta.dir, "cli.ts");

function isReady(m: unknown): m is ReadyMessage {
  if (m === null || typeof m !== "object") return false;
  const r = m as Record<string, unknown>;
  return r["bunpy"] === "ready" && typeof r["port"] === "number" && typeof r["url"] === "string";
}

export interface Child {
  readonly slot: number;
  readonly proc: Subprocess;
  readonly pid: number;
  /** set once the child listens */
  ready: ReadyMessage | undefined;
  readyAt: number;
  /** the supervisor asked it to stop */
  stopping: boolean;
  /** resolves once the process has exited */
  readonly exited: Promise<void>;
}

interface Hooks {
  ready?(c: Child): void;
  /** a child exited; `c.stopping` says whether the supervisor asked for it */
  exited(c: Child, how: string, code: number): void;
}

/** The running children: start, stop (graceful, then SIGKILL past the bound), stop all. */
class Children {
  private readonly live = new Set<Child>();

  constructor(
    private readonly role: "reload" | "processes",
    private readonly graceMs: number,
    private readonly hooks: Hooks,
  ) {}

  start(slot: number, args: string[]): Child {
    let child: Child | undefined;
    const early: ReadyMessage[] = [];
    const proc = Bun.spawn([process.execPath, CLI, "serve", ...args], {
      stdio: ["ignore", "inherit", "inherit"],
      env: { ...process.env, [CHILD_ENV]: this.role },
      ipc: (m) => {
        if (!isReady(m)) return;
        if (child === undefined) early.push(m);
        else this.markReady(child, m);
      },
    });
    const c: Child = {
      slot,
      proc,
      pid: proc.pid,
      ready: undefined,
      readyAt: 0,
      stopping: false,
      exited: proc.exited.then(() => {
        this.live.delete(c);
        const how = proc.signalCode !== null ? `signal ${proc.signalCode}` : `code ${proc.exitCode}`;
        this.hooks.exited(c, how, proc.exitCode ?? 1);
      }),
    };
    child = c;
    this.live.add(c);
    for (const m of early) this.markReady(c, m);
    return c;
  }

  private markReady(c: Child, m: ReadyMessage): void {
    if (c.ready !== undefined) return;
    c.ready = m;
    c.readyAt = performance.now();
    this.hooks.ready?.(c);
  }

  async stop(c: Child): Promise<void> {
    if (!this.live.has(c)) return c.exited;
    c.stopping = true;
    c.proc.kill("SIGTERM");
    const timer = setTimeout(
      () => {
        console.error(`bunpy: process ${c.pid} did not stop within ${(this.graceMs + KILL_MARGIN_MS) / 1000} s; killing it`);
        c.proc.kill("SIGKILL");
      },
      // setTimeout fires at once for a delay past 2^31 - 1 ms (--timeout-graceful-shutdown
      // 2147484 and up): a longer grace waits that long, it does not SIGKILL at once
      Math.min(this.graceMs + KILL_MARGIN_MS, 2 ** 31 - 1),
    );
    await c.exited;
    clearTimeout(timer);
  }

  stopAll(): Promise<void> {
    return Promise.all([...this.live].map((c) => this.stop(c))).then(() => {});
  }

  killAll(): void {
    for (const c of this.live) {
      c.stopping = true;
      c.proc.kill("SIGKILL");
    }
  }
}

/** Calls first(signal) on the first SIGTERM/SIGINT, again() on any later one. */
function onStopSignals(first: (signal: string) => void, again: () => void): void {
  let seen = false;
  const handler = (signal: NodeJS.Signals) => {
    if (!seen) {
      seen = true;
      first(signal);
    } else again();
  };
  process.on("SIGTERM", handler);
  process.on("SIGINT", handler);
}

/** argv without the given flags (each followed by a value when `withValue`). */
export function withoutFlags(argv: string[], flags: Record<string, boolean>): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const withValue = flags[argv[i]!];
    if (withValue === undefined) out.push(argv[i]!);
    else if (withValue) i++;
  }
  return out;
}

/**
 * --reload: the server runs in a child process, and this one watches the directories; a
 * changed .py file stops the child gracefully and starts a new one, as uvicorn --reload
 * does. A whole new process, not a re-import: modules, the lifespan state and C extensions
 * all start fresh. A child that fails (say, a syntax error) is started again at the next
 * change.
 */
export async function superviseReloads(argv: string[], dirs: string[], graceMs: number): Promise<number> {
  const childArgs = withoutFlags(argv, { "--reload": false, "--reload-dir": true });
  let stopping = false;
  let current: Child | undefined;
  const kids = new Children("reload", graceMs, {
    exited(c, how) {
      if (c === current && !c.stopping && !stopping) console.error(`bunpy: the server exited (${how}); waiting for a change to start it again`);
    },
  });
  const start = () => {
    current = kids.start(0, childArgs);
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  let restarting = Promise.resolve();
  const changed = (file: string) => {
    clearTimeout(timer);
    // editors write a file in several steps: restart once they are done
    timer = setTimeout(() => {
      restarting = restarting.then(async () => {
        if (stopping) return;
        console.error(`bunpy: ${file} changed; reloading`);
        if (current !== undefined) await kids.stop(current);
        if (!stopping) start();
      });
    }, 150);
  };
  const watchers = new Set<FSWatcher>();
  const polls = new Set<ReturnType<typeof setInterval>>();
  // A watched directory deleted (or moved away) ends its watcher: the event names no file
  // (name undefined) and nothing after it is seen, the directory made again included. Say
  // so, and look for the directory every LOST_DIR_POLL_MS: once it is back, watch it again
  // and reload. The server keeps running what it had loaded meanwhile.
  const lost = (dir: string, w: FSWatcher) => {
    if (!watchers.delete(w)) return;
    w.close();
    if (stopping) return;
    console.error(`bunpy: ${dir} was deleted: no changes are seen until it is back`);
    const poll = setInterval(() => {
      if (stopping || !existsSync(dir)) return;
      clearInterval(poll);
      polls.delete(poll);
      try {
        watchDir(dir);
      } catch (e) {
        console.error(`bunpy: cannot watch ${dir} again: ${(e as Error).message}`);
        return;
      }
      console.error(`bunpy: ${dir} is back`);
      changed(dir);
    }, LOST_DIR_POLL_MS);
    polls.add(poll);
  };
  const watchDir = (dir: string) => {
    const w: FSWatcher = watch(dir, { recursive: true }, (_event, name) => {
      if (typeof name === "string") {
        if (name.endsWith(".py")) changed(name);
      } else if (!existsSync(dir)) lost(dir, w);
    });
    w.on("error", () => lost(dir, w));
    watchers.add(w);
  };
  for (const d of dirs) watchDir(resolve(d));
  console.error(`bunpy: watching ${dirs.map((d) => resolve(d)).join(", ")} for changes to .py files`);
  start();
  await new Promise<void>((done) => {
    onStopSignals(
      () => {
        stopping = true;
        clearTimeout(timer);
        for (const w of watchers) w.close();
        watchers.clear();
        for (const p of polls) clearInterval(p);
        polls.clear();
        void restarting.then(() => kids.stopAll()).then(done);
      },
      () => kids.killAll(),
    );
  });
  return 0;
}

export interface ProcessesOptions {
  /** the `serve` arguments without --processes */
  argv: string[];
  processes: number;
  /** --port as given (0: the first child picks one and the others take the same) */
  port: number;
  /** --host as given */
  hostname: string;
  app: string;
  graceMs: number;
}

/**
 * SO_REUSEPORT lets any process of the same user share the port, a server started earlier
 * included: make sure nothing listens there yet, with a socket of our own that does not
 * share (it cannot bind while any socket is bound to the port). Undefined when free, else
 * why not.
 */
function portTaken(hostname: string, port: number): string | undefined {
  try {
    Bun.listen({ hostname, port, socket: { data() {} } }).stop(true);
    return undefined;
  } catch (e) {
    return String((e as { code?: unknown }).code ?? (e as Error).message);
  }
}

/**
 * --processes N: starts the first child, takes its port (so --port 0 works), then starts
 * the others on that port (a port given is first checked to be free: with SO_REUSEPORT the
 * children would otherwise share it with whatever listens there already); prints one line per child that listens and the banner once all
 * do. A child that fails while the server starts (an import error, a bad TLS key) stops
 * the others: the command exits with the child's code, the child having printed its error
 * once. Once the server is up, a child that dies is started again, after a delay that
 * doubles while children die young; a slot whose children fail to start MAX_FAILED_STARTS
 * times in a row stops the server (exit code 1).
 */
export async function superviseProcesses(o: ProcessesOptions): Promise<number> {
  const taken = o.port === 0 ? undefined : portTaken(o.hostname, o.port);
  if (taken !== undefined) {
    console.error(`bunpy: cannot listen on ${o.hostname}:${o.port} (${taken}): is another server there?`);
    return 1;
  }
  return new Promise<number>((finish) => {
    let phase: "starting" | "running" | "stopping" = "starting";
    let port = o.port;
    const slots = Array.from({ length: o.processes }, () => ({
      child: undefined as Child | undefined,
      quickDeaths: 0,
      failedStarts: 0,
      timer: undefined as ReturnType<typeof setTimeout> | undefined,
    }));
    const argsFor = () => [...o.argv, "--port", String(port)];
    const shutdown = (code: number) => {
      if (phase === "stopping") return;
      phase = "stopping";
      for (const s of slots) clearTimeout(s.timer);
      void kids.stopAll().then(() => finish(code));
    };
    const kids: Children = new Children("processes", o.graceMs, {
      ready(c) {
        const s = slots[c.slot]!;
        s.failedStarts = 0;
        if (phase === "stopping") return;
        console.log(`bunpy: process ${c.pid} started (${c.slot + 1} of ${o.processes})`);
        if (phase !== "starting") return;
        if (c.slot === 0) {
          port = c.ready!.port;
          try {
            for (let i = 1; i < slots.length; i++) slots[i]!.child = kids.start(i, argsFor());
          } catch (e) {
            console.error(`bunpy: cannot start a process: ${(e as Error).message}; stopping`);
            shutdown(1);
            return;
          }
        }
        if (slots.every((x) => x.child?.ready !== undefined)) {
          phase = "running";
          const r = c.ready!;
          console.log(`bunpy: serving ${o.app} (${r.kind}, ${o.processes} process${o.processes === 1 ? "" : "es"} × ${r.where}) on ${r.url}`);
        }
      },
      exited(c, how, code) {
        const s = slots[c.slot]!;
        if (s.child === c) s.child = undefined;
        if (phase === "stopping" || c.stopping) return;
        if (phase === "starting") {
          console.error(`bunpy: the server failed to start: process ${c.pid} exited (${how}); stopping`);
          shutdown(code === 0 ? 1 : code);
          return;
        }
        if (c.ready === undefined && ++s.failedStarts >= MAX_FAILED_STARTS) {
          console.error(`bunpy: process ${c.pid} failed to start (${how}), ${s.failedStarts} times in a row: giving up`);
          shutdown(1);
          return;
        }
        const lived = c.ready === undefined ? 0 : performance.now() - c.readyAt;
        s.quickDeaths = lived >= HEALTHY_AFTER_MS ? 0 : s.quickDeaths + 1;
        const delay = s.quickDeaths === 0 ? 0 : Math.min(BACKOFF_FIRST_MS * 2 ** (s.quickDeaths - 1), BACKOFF_MAX_MS);
        console.error(
          `bunpy: process ${c.pid} ${c.ready === undefined ? "failed to start" : "exited"} (${how}); starting another${delay > 0 ? ` in ${delay / 1000} s` : ""}`,
        );
        s.timer = setTimeout(() => {
          if (phase !== "running") return;
          try {
            s.child = kids.start(c.slot, argsFor());
          } catch (e) {
            console.error(`bunpy: cannot start a process: ${(e as Error).message}; stopping`);
            shutdown(1);
          }
        }, delay);
      },
    });
    onStopSignals(
      (signal) => {
        if (phase !== "stopping")
          console.log(`bunpy: ${signal}: stopping ${o.processes} process${o.processes === 1 ? "" : "es"} (requests in flight finish, up to ${o.graceMs / 1000} s)`);
        shutdown(0);
      },
      () => {
        console.error("bunpy: stopping now (SIGKILL)");
        kids.killAll();
      },
    );
    slots[0]!.child = kids.start(0, argsFor());
  }).then((code) => {
    if (code === 0) console.log("bunpy: stopped");
    return code;
  });
}
