/**
 * Sandbox policies as JS gives them (on Linux also enforced by the kernel on the context's
 * thread: a seccomp filter and a Landlock domain, see shim/seccomp.c and shim/landlock.c) (py.context({ sandbox })), checked and turned into the
 * dict that python/bunpy/_context.py and shim/sandbox.c read. See docs/sandbox.md.
 */

export interface SandboxPolicy {
  /** Refuse every rule left out instead of allowing it: no processes, ctypes, sockets,
      files (Python's own stay readable), environment variables, registered JS functions or
      bunpy.shared, and the kernel rules required (requireKernel). Rules given next to it
      allow what they list. Owngil and process contexts only (TypeError for worker: it
      shares the main interpreter). `sandbox: "strict"` is short for `{ strict: true }`. */
  strict?: boolean | undefined;
  /** Start processes (subprocess, os.system, os.exec*, posix_spawn, and their libc
      functions through ctypes; on Linux the kernel also refuses fork/clone/execve). Default true. */
  processes?: boolean | undefined;
  /** Use ctypes at all. Default true. */
  ctypes?: boolean | undefined;
  /** Use sockets other than AF_UNIX (on Linux refused by the kernel too). Default true. */
  sockets?: boolean | undefined;
  /** TCP only, to and on these ports (Linux with Landlock ABI 4+, enforced by the kernel;
      elsewhere the context does not start). Sockets other than TCP and AF_UNIX are refused.
      Leaving a list out allows no port for it. */
  network?: { connect?: number[] | undefined; bind?: number[] | undefined } | undefined;
  /** Modules (and their submodules) that cannot be imported. */
  denyImports?: string[] | undefined;
  /** Directories files may be opened in (read or write). Python's own files stay readable.
      On Linux enforced by Landlock for every open of the context's thread. Default: anywhere
      (but /proc is never reachable from a sandboxed context on Linux). */
  files?: string[] | undefined;
  /** More directories files may be read from, not written, where `files` limits them
      (next to `files`, or with `strict`): data or code the context needs to see. */
  readFiles?: string[] | undefined;
  /** How many threads the context may have running at once besides its own (threading,
      _thread, executors' workers). Starting one more raises PermissionError (rule:
      maxThreads). Default: no cap. */
  maxThreads?: number | undefined;
  /** Use bunpy.shared, the store JS and every context share. Default true. */
  shared?: boolean | undefined;
  /** The functions registered with py.register that the context may call (bunpy.call,
      bunpy.async_call); calling another is a ReferenceError in Python. Default: all. */
  jsFunctions?: string[] | undefined;
  /** The environment variables (names) the context sees in `os.environ`, and that programs
      it starts get; `os.system` is refused (its shell would get the whole environment).
      Default: all of the process's. Owngil and process contexts only: a worker context
      shares the main interpreter's `os.environ` (TypeError). */
  env?: string[] | undefined;
  /** Refuse to start the context when a kernel rule (Linux seccomp and Landlock on the
      context's thread) cannot be applied, instead of falling back to the audit hook alone
      (other systems, kernels without Landlock). Default false. */
  requireKernel?: boolean | undefined;
  /** Memory the context may use, in bytes; past it Python raises MemoryError there.
      `mode: "process"`: the host process's address-space limit (RLIMIT_AS; at least
      256 MiB), covering everything; if the host dies of it anyway, the context dies with
      ContextDiedError. `mode: "owngil"`: what the context's interpreter allocates through
      Python's allocators (objects, strings, buffers; at least 1 MiB, counted from the
      context's start), not memory C extensions take with malloc themselves (numpy's data).
      Worker contexts refuse it (TypeError): they share the main interpreter. */
  memoryLimit?: number | undefined;
  /** `mode: "process"` only: CPU seconds the host process may use in all (RLIMIT_CPU);
      past it the kernel kills it (ContextDiedError, SIGXCPU). */
  cpuTime?: number | undefined;
  /** `mode: "process"` only: open files the host process may have (RLIMIT_NOFILE). */
  maxFiles?: number | undefined;
}

/** The limits of a process context's host (see SandboxPolicy). */
export interface ProcessLimits {
  memoryLimit?: number;
  cpuTime?: number;
  maxFiles?: number;
}

/** A sandbox as py.context() takes it: a policy, or "strict" for `{ strict: true }`. */
export type SandboxOption = SandboxPolicy | "strict";

/** The policy with `strict` spelled out: each rule left out becomes its refusing value. */
export function resolveStrict(p: SandboxOption | undefined, mode: "owngil" | "worker" | "process"): SandboxPolicy | undefined {
  if (p === "strict") p = { strict: true };
  if (typeof p === "string") throw new TypeError(`py.context({ sandbox }): sandbox must be an object or "strict", not "${p}"`);
  if (p === undefined || typeof p !== "object" || p === null) return p;
  const { strict, ...rules } = snapshot(p);
  if (strict === undefined) return rules;
  if (typeof strict !== "boolean") throw new TypeError("py.context({ sandbox }): strict must be a boolean");
  if (!strict) return rules;
  if (mode === "worker")
    throw new TypeError(
      'py.context({ sandbox: "strict" }): a worker context shares the main interpreter (its environment, files and memory), so it cannot be strict; use { mode: "owngil" } or { mode: "process" }',
    );
  const refused: SandboxPolicy = {
    processes: false,
    ctypes: false,
    sockets: rules.network !== undefined,
    files: [],
    env: [],
    jsFunctions: [],
    shared: false,
    requireKernel: true,
  };
  for (const [k, v] of Object.entries(rules)) if (v !== undefined) (refused as Record<string, unknown>)[k] = v;
  return refused;
}

const RULES = ["strict", "processes", "ctypes", "sockets", "network", "denyImports", "files", "readFiles", "maxThreads", "requireKernel", "env", "jsFunctions", "shared", "memoryLimit", "cpuTime", "maxFiles"] as const;

/** The policy as a plain object, each rule read once: an inherited rule (a class getter,
    Object.create) counts as an own one does, and a getter or Proxy answering differently
    later cannot change a value after it was checked (arrays and `network` are copied too).
    Own keys that are not rules stay, for policyValue to report. */
function snapshot(p: object): SandboxPolicy & { strict?: unknown } {
  const src = p as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(p)) out[k] = src[k];
  for (const k of RULES) if (!Object.hasOwn(out, k) && src[k] !== undefined) out[k] = src[k];
  const copy = (v: unknown): unknown => (Array.isArray(v) ? Array.from(v as unknown[]) : v);
  for (const k of Object.keys(out)) out[k] = copy(out[k]);
  const n = out["network"];
  if (typeof n === "object" && n !== null && !Array.isArray(n)) {
    const net = n as Record<string, unknown>;
    const c: Record<string, unknown> = {};
    for (const k of Object.keys(net)) c[k] = copy(net[k]);
    for (const k of ["connect", "bind"]) if (!Object.hasOwn(c, k) && net[k] !== undefined) c[k] = copy(net[k]);
    out["network"] = c;
  }
  return out as SandboxPolicy & { strict?: unknown };
}

/** The sandbox with `dirs` readable too (an app's `path`: the code it is asked to run). */
export function withReadable(p: SandboxOption, dirs: readonly string[]): SandboxOption {
  if (dirs.length === 0) return p;
  const rules: SandboxPolicy = p === "strict" ? { strict: true } : p;
  if (typeof rules !== "object" || rules === null) return p; // policyValue reports it
  const s = snapshot(rules); // a spread would drop an inherited `strict`
  if (s.readFiles !== undefined && !Array.isArray(s.readFiles)) return s; // policyValue reports it
  return { ...s, readFiles: [...(s.readFiles ?? []), ...dirs] };
}

const PROCESS_ONLY = ["memoryLimit", "cpuTime", "maxFiles"] as const;
/** The smallest memoryLimit: Python, the shim and two threads' stacks need about 100 MiB. */
export const MIN_MEMORY_LIMIT = 256 * 1024 * 1024;

/** The smallest memoryLimit of an owngil context (counted from its start). */
export const MIN_OWNGIL_MEMORY_LIMIT = 1024 * 1024;

/** Checks the resource limits: process contexts take them all, owngil contexts
    memoryLimit (counted by the shim), worker contexts none. */
export function processLimits(p: SandboxPolicy | undefined, mode: "owngil" | "worker" | "process"): ProcessLimits {
  if (p === undefined || typeof p !== "object" || p === null) return {};
  const out: ProcessLimits = {};
  for (const k of PROCESS_ONLY) {
    const v = p[k];
    if (v === undefined) continue;
    if (mode === "worker" || (mode === "owngil" && k !== "memoryLimit"))
      throw new TypeError(
        k === "memoryLimit"
          ? `py.context({ sandbox: { memoryLimit } }): a worker context shares the main interpreter's memory, so it cannot have a limit of its own; use { mode: "owngil" } or { mode: "process" }`
          : `py.context({ sandbox: { ${k} } }): ${k} is enforced only for process contexts; use { mode: "process" } ` +
              "(a thread context shares the Bun process's CPU and files)",
      );
    if (!(Number.isSafeInteger(v) && v > 0)) throw new TypeError(`py.context({ sandbox }): ${k} must be a positive integer`);
    const least = mode === "process" ? MIN_MEMORY_LIMIT : MIN_OWNGIL_MEMORY_LIMIT;
    if (k === "memoryLimit" && v < least)
      throw new TypeError(`py.context({ sandbox }): memoryLimit must be at least ${least} bytes (${least >> 20} MiB) for a ${mode} context`);
    out[k] = v;
  }
  return out;
}

export function policyValue(p: SandboxPolicy | undefined, mode: "owngil" | "worker" | "process"): Record<string, unknown> | null {
  if (p === undefined) return null;
  if (typeof p !== "object" || p === null) throw new TypeError('py.context({ sandbox }): sandbox must be an object or "strict"');
  const known = new Set<string>(RULES.filter((k) => k !== "strict")); // (resolveStrict took strict out)
  for (const k of Object.keys(p)) if (!known.has(k)) throw new TypeError(`py.context({ sandbox }): unknown rule "${k}"`);
  for (const k of ["processes", "ctypes", "sockets", "requireKernel", "shared"] as const)
    if (p[k] !== undefined && typeof p[k] !== "boolean") throw new TypeError(`py.context({ sandbox }): ${k} must be a boolean`);
  if (p.env !== undefined) {
    if (!Array.isArray(p.env) || !p.env.every((x) => typeof x === "string" && x !== "" && !x.includes("=") && !x.includes("\0")))
      throw new TypeError("py.context({ sandbox }): env must be an array of environment variable names");
    if (mode === "worker")
      throw new TypeError(
        'py.context({ sandbox: { env } }): a worker context shares the main interpreter\'s os.environ; use { mode: "owngil" } or { mode: "process" }',
      );
  }
  for (const k of ["denyImports", "files", "readFiles", "jsFunctions"] as const)
    if (p[k] !== undefined && (!Array.isArray(p[k]) || !p[k]!.every((x) => typeof x === "string")))
      throw new TypeError(`py.context({ sandbox }): ${k} must be an array of strings`);
  if (p.maxThreads !== undefined && !(Number.isSafeInteger(p.maxThreads) && p.maxThreads >= 0))
    throw new TypeError("py.context({ sandbox }): maxThreads must be a non-negative integer");
  let network: { connect: number[]; bind: number[] } | null = null;
  if (p.network !== undefined) {
    const n = p.network as Record<string, unknown>;
    if (typeof n !== "object" || n === null) throw new TypeError("py.context({ sandbox }): network must be an object");
    for (const k of Object.keys(n))
      if (k !== "connect" && k !== "bind") throw new TypeError(`py.context({ sandbox }): unknown network rule "${k}"`);
    const ports = (k: "connect" | "bind"): number[] => {
      const v = n[k];
      if (v === undefined) return [];
      if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x) && x >= 0 && x <= 65535))
        throw new TypeError(`py.context({ sandbox }): network.${k} must be an array of port numbers (0-65535)`);
      return v as number[];
    };
    network = { connect: ports("connect"), bind: ports("bind") };
    if (p.sockets === false) throw new TypeError("py.context({ sandbox }): network and sockets: false contradict each other");
  }
  return {
    network,
    processes: p.processes ?? true,
    ctypes: p.ctypes ?? true,
    sockets: p.sockets ?? true,
    deny_imports: p.denyImports ?? null,
    files: p.files ?? null,
    read_files: p.readFiles ?? null,
    max_threads: p.maxThreads ?? null,
    require_kernel: p.requireKernel ?? false,
    env: p.env ?? null,
    shared: p.shared ?? true,
  };
}
