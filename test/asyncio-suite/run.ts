/**
 * Runs the installed Python's own test.test_asyncio modules with bunpy's event loop as the
 * loop under test, one Bun process per module (a hang or crash costs one test, not the run).
 *
 *   npx bun test/asyncio-suite/run.ts [module ...] [options]
 *
 *   module ...            test_events test_tasks ... (default: the list below; names
 *                         absent from this Python are reported as such)
 *   --stock               asyncio's own loop instead: asyncio is not patched; BunpyLoopTests
 *                         (below) run on SelectorEventLoop(EpollSelector()), so ids match
 *   --compare             run both, and tell the failures that are bunpy's alone
 *   --json                print the results as JSON (also: ASYNCIO_SUITE_JSON=1)
 *   --out FILE            also write the JSON results to FILE
 *   --only SUBSTR         run only tests whose id contains SUBSTR (repeatable)
 *   --jobs N              modules run at once (default 1: timing-sensitive tests)
 *   --test-timeout S      a test running longer is a hang: cut, reported, the module resumes (default 120)
 *   --module-timeout S    a module process running longer is killed (default 1800)
 *   --log-dir DIR         per-module stdout/stderr, faulthandler dumps, events (default: a new
 *                         /tmp/asyncio-suite-XXXXXX per run, so concurrent runs do not mix)
 *   --verbose             print every failure's traceback
 *   --preload FILE        run this Python file in each module's process before the tests
 *                         (e.g. to try a fix by patching bunpy's classes)
 *   --bunpy-sigint        leave SIGINT as bunpy sets it (default: Python's default_int_handler,
 *                         as in a plain python; without it test_runners' interrupt tests hang)
 *
 * Python: BUNPY_PYTHON=/path/to/python3 (as for bunpy itself).
 *
 * Failures with bunpy's loop are tagged expected (EXPECTED below: refused signal handlers and
 * subprocesses, the Unix policy's child watchers, fork) or UNEXPECTED. The JSON report:
 *   { python, commit, modes, wall, unexpected: [{id, outcome, stock, summary}],
 *     modules: [{module, mode, status, counts: {run, passed, failed, errors, skipped, xfail,
 *               xpass, hung, crashed}, loops, tests: [{id, outcome, time, details, loops,
 *               expected?}], ...}], comparison?, stockOnly? }
 *
 * Each module runs in `bun run.ts --child ...`, which loads harness.py into bunpy's main
 * interpreter: in bunpy mode every loop asyncio hands out (SelectorEventLoop, EventLoop,
 * the default policy, new_event_loop, asyncio.run, IsolatedAsyncioTestCase) is a
 * BunpyEventLoop, and the per-selector test classes of test_events, test_sock_lowlevel and
 * test_sendfile are replaced by one class (BunpyLoopTests) on the loop under test.
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, existsSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";

const here = dirname(import.meta.path);

const DEFAULT_MODULES = [
  "test_events",
  "test_base_events",
  "test_tasks",
  "test_futures",
  "test_futures2",
  "test_sock_lowlevel",
  "test_server",
  "test_streams",
  "test_timeouts",
  "test_taskgroups",
  "test_locks",
  "test_queues",
  "test_sendfile",
  "test_buffered_proto",
  "test_context",
  "test_pep492",
  "test_runners",
  "test_waitfor",
  "test_sslproto",
  "test_unix_events",
  "test_selector_events",
];
/** Modules that test the stock loop's internals (mocks, private classes): reported apart. */
const STOCK_INTERNALS = new Set(["test_selector_events"]);

/**
 * Failures expected with bunpy's loop: what it refuses by design (signal handlers and
 * subprocesses: Bun owns the process's signals and children), asyncio's Unix-policy child
 * watcher API (bunpy's policy has none), what bunpy's sandbox refuses in any loop (fork), and
 * a failure caused by another's leftovers. `requires`: only if that test failed too.
 */
const EXPECTED: { why: string; id?: RegExp; summary?: RegExp; requires?: string }[] = [
  { why: "subprocesses refused by bunpy's loop", summary: /does not support subprocesses/ },
  { why: "signal handlers refused by bunpy's loop", summary: /does not support signal handlers/ },
  { why: "signal handlers refused (test of the stock loop's signal code, with mocks)", id: /test_unix_events\.SelectorEventLoopSignalTests\./ },
  { why: "child watcher API of asyncio's Unix policy: bunpy's policy has none", id: /test_unix_events\.PolicyTests\..*child_watcher/ },
  { why: "os.fork refused by bunpy's sandbox (any loop)", summary: /os\.fork is refused/ },
  {
    why: "bunpy's C stream transport has no native sendfile: loop.sendfile uses asyncio's fallback",
    id: /test_sendfile\.BunpyLoopTests\.test_sendfile_(force_unsupported_native|prevents_bare_write)$/,
  },
  {
    why: "leftovers (unclosed pipe transport) of test_read_all_from_pipe_reader, which needs a subprocess",
    id: /test_streams\.StreamTests\.test_unclosed_resource_warnings$/,
    requires: "test.test_asyncio.test_streams.StreamTests.test_read_all_from_pipe_reader",
  },
];

type Mode = "bunpy" | "stock";
type Outcome = "pass" | "fail" | "error" | "skip" | "xfail" | "xpass" | "hung" | "crashed";

interface Detail {
  subtest?: string | null;
  summary: string;
  where?: string | null;
  traceback?: string;
}
interface TestResult {
  id: string;
  outcome: Outcome;
  time: number;
  details: Detail[];
  loops: Record<string, number>;
  /** bunpy mode: why this failure is expected (see EXPECTED); absent if it is not */
  expected?: string;
}
interface ModuleResult {
  module: string;
  mode: Mode;
  python?: string;
  status: "ok" | "absent" | "skipped" | "incomplete";
  note?: string;
  notes?: string[];
  checks?: Record<string, string>;
  loops: Record<string, number>;
  counts: { run: number; passed: number; failed: number; errors: number; skipped: number; xfail: number; xpass: number; hung: number; crashed: number };
  tests: TestResult[];
  wall: number;
  attempts: number;
}

// ---------------------------------------------------------------------------- child ----

async function child(argv: string[]): Promise<void> {
  const opt = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const only = argv.flatMap((a, i) => (argv[i - 1] === "--only" ? [a] : []));
  const { py } = await import("../../src/index.ts");
  py.exec(`import sys\nif ${JSON.stringify(here)} not in sys.path: sys.path.insert(0, ${JSON.stringify(here)})`);
  const harness = py.import("harness");
  harness["run_module"](
    opt("--child"),
    opt("--mode"),
    opt("--events"),
    py.kw({
      skip_path: opt("--skip") ?? null,
      test_timeout: Number(opt("--test-timeout") ?? 120),
      dump_path: opt("--dump") ?? null,
      only: only.length ? only : null,
      sigint: !argv.includes("--bunpy-sigint"),
      preload: opt("--preload") ?? null,
    }),
  );
  process.exit(0);
}

// --------------------------------------------------------------------------- parent ----

interface Options {
  modules: string[];
  modes: Mode[];
  json: boolean;
  out?: string;
  only: string[];
  jobs: number;
  testTimeout: number;
  moduleTimeout: number;
  logDir: string;
  verbose: boolean;
  bunpySigint: boolean;
  preload?: string;
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    modules: [],
    modes: ["bunpy"],
    json: !!process.env["ASYNCIO_SUITE_JSON"] && process.env["ASYNCIO_SUITE_JSON"] !== "0",
    only: [],
    jobs: 1,
    testTimeout: 120,
    moduleTimeout: 1800,
    logDir: "",
    verbose: false,
    bunpySigint: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i]!;
    };
    if (a === "--stock") o.modes = ["stock"];
    else if (a === "--compare") o.modes = ["bunpy", "stock"];
    else if (a === "--json") o.json = true;
    else if (a === "--out") o.out = val();
    else if (a === "--only") o.only.push(val());
    else if (a === "--jobs") o.jobs = Math.max(1, Number(val()));
    else if (a === "--test-timeout") o.testTimeout = Number(val());
    else if (a === "--module-timeout") o.moduleTimeout = Number(val());
    else if (a === "--log-dir") o.logDir = val();
    else if (a === "--verbose") o.verbose = true;
    else if (a === "--bunpy-sigint") o.bunpySigint = true;
    else if (a === "--preload") o.preload = resolve(val());
    else if (a.startsWith("-")) throw new Error(`unknown option ${a}`);
    else o.modules.push(a.replace(/^test\.test_asyncio\./, ""));
  }
  if (o.modules.length === 0) o.modules = DEFAULT_MODULES;
  return o;
}

function readEvents(path: string): any[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l.trim())
    .flatMap((l) => {
      try {
        return [JSON.parse(l)];
      } catch {
        return []; // a line cut by the process's death
      }
    });
}

/** Runs one module, again without the test that hung or crashed until the module ends. */
async function runModule(module: string, mode: Mode, o: Options): Promise<ModuleResult> {
  const base = join(o.logDir, `${module}.${mode}`);
  const tests = new Map<string, TestResult>();
  const bad: Record<string, string> = {};
  const res: ModuleResult = {
    module,
    mode,
    status: "incomplete",
    loops: {},
    counts: { run: 0, passed: 0, failed: 0, errors: 0, skipped: 0, xfail: 0, xpass: 0, hung: 0, crashed: 0 },
    tests: [],
    wall: 0,
    attempts: 0,
  };
  const t0 = performance.now();
  for (let attempt = 1; attempt <= 8; attempt++) {
    res.attempts = attempt;
    const events = `${base}.events.${attempt}.ndjson`;
    const dump = `${base}.faulthandler.${attempt}.txt`;
    const skipFile = `${base}.skip.json`;
    for (const f of [events, dump]) rmSync(f, { force: true });
    const skip: Record<string, string> = { ...bad };
    for (const id of tests.keys()) skip[id] = "done";
    writeFileSync(skipFile, JSON.stringify(skip));
    const args = [process.execPath, import.meta.path, "--child", module, "--mode", mode, "--events", events, "--skip", skipFile, "--dump", dump, "--test-timeout", String(o.testTimeout)];
    for (const s of o.only) args.push("--only", s);
    if (o.bunpySigint) args.push("--bunpy-sigint");
    if (o.preload) args.push("--preload", o.preload);
    const proc = Bun.spawn(args, {
      stdout: Bun.file(`${base}.stdout.${attempt}.txt`),
      stderr: Bun.file(`${base}.stderr.${attempt}.txt`),
      stdin: "ignore",
      env: process.env,
    });
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      proc.kill("SIGKILL");
    }, o.moduleTimeout * 1000);
    const code = await proc.exited;
    clearTimeout(timer);
    const evs = readEvents(events);
    let started: string | undefined;
    let done: any;
    for (const e of evs) {
      if (e.ev === "info") {
        res.python = e.python;
        res.checks = e.checks ?? res.checks;
        res.notes = e.notes ?? res.notes;
        if (e.absent) res.status = "absent";
        if (e.module_skipped) {
          res.status = "skipped";
          res.note = e.module_skipped;
        }
      } else if (e.ev === "start") started = e.id;
      else if (e.ev === "end") {
        started = undefined;
        tests.set(e.id, { id: e.id, outcome: e.outcome, time: e.time, details: e.details ?? [], loops: e.loops ?? {} });
      } else if (e.ev === "done") done = e;
    }
    if (done) {
      for (const [k, v] of Object.entries(done.loops ?? {})) res.loops[k] = (res.loops[k] ?? 0) + (v as number);
      if (res.status === "incomplete") res.status = "ok";
      break;
    }
    // the process died: a test hung (faulthandler exits after --test-timeout), crashed, or
    // the whole module timed out
    const dumpText = existsSync(dump) ? readFileSync(dump, "utf8") : "";
    const stderrText = existsSync(`${base}.stderr.${attempt}.txt`) ? readFileSync(`${base}.stderr.${attempt}.txt`, "utf8") : "";
    const hung = killed || /Timeout \(\d+:\d\d:\d\d\)!/.test(dumpText);
    const why = killed ? `module process killed after ${o.moduleTimeout}s` : hung ? `no end after ${o.testTimeout}s (faulthandler)` : `process exited with ${proc.signalCode ?? code}`;
    const id = started ?? `<${module}: outside any test>`;
    const stack = lastStack(dumpText) || stderrText.trim().split("\n").slice(-15).join("\n");
    tests.set(id, { id, outcome: hung ? "hung" : "crashed", time: 0, details: [{ summary: why, traceback: stack }], loops: {} });
    bad[id] = hung ? "hung" : "crashed";
    if (!started) break; // nothing to leave out: do not loop
  }
  res.wall = Math.round((performance.now() - t0) / 100) / 10;
  res.tests = [...tests.values()];
  const c = res.counts;
  for (const t of res.tests) {
    if (t.id.includes("(") && t.id.includes(" ") && (t.outcome === "skip" || t.outcome === "error") && !t.id.startsWith("test.")) {
      // a class/module fixture (setUpClass, setUpModule...): not a test
      if (t.outcome === "error") c.errors++;
      else c.skipped++;
      continue;
    }
    c.run++;
    if (t.outcome === "pass") c.passed++;
    else if (t.outcome === "fail") c.failed++;
    else if (t.outcome === "error") c.errors++;
    else if (t.outcome === "skip") c.skipped++;
    else if (t.outcome === "xfail") c.xfail++;
    else if (t.outcome === "xpass") c.xpass++;
    else if (t.outcome === "hung") c.hung++;
    else if (t.outcome === "crashed") c.crashed++;
  }
  if (mode === "bunpy") {
    const failing = new Set(res.tests.filter((t) => isProblem(t.outcome)).map((t) => t.id));
    for (const t of res.tests) {
      if (!failing.has(t.id)) continue;
      const text = t.details.map((d) => d.summary).join("\n");
      const e = EXPECTED.find((e) => (!e.id || e.id.test(t.id)) && (!e.summary || e.summary.test(text)) && (!e.requires || failing.has(e.requires)));
      if (e) t.expected = e.why;
    }
  }
  return res;
}

/** The traceback of the thread faulthandler names "most recent call first" (the main one). */
function lastStack(dump: string): string {
  if (!dump.trim()) return "";
  const lines = dump.trim().split("\n");
  const cur = lines.findIndex((l) => /Current thread|Thread 0x.*most recent call first/.test(l) && /Current|\(most recent call first\)/.test(l));
  return lines.slice(Math.max(0, cur), Math.max(0, cur) + 25).join("\n");
}

const isProblem = (o: Outcome) => o === "fail" || o === "error" || o === "hung" || o === "crashed";
const shortId = (id: string) => id.replace(/^test\.test_asyncio\./, "");
const oneLine = (t: TestResult) => {
  const d = t.details.find((d) => d.summary) ?? t.details[0];
  if (!d) return "";
  const sub = t.details.length > 1 ? ` (+${t.details.length - 1} more)` : "";
  return `${d.subtest ? d.subtest + ": " : ""}${d.summary}${d.where ? `  [${d.where}]` : ""}${sub}`;
};

function table(results: ModuleResult[]): string {
  const head = ["module", "mode", "run", "pass", "fail", "error", "skip", "xfail", "hung", "crash", "secs", "loops"];
  const rows = results.map((r) => {
    const c = r.counts;
    const loops = Object.entries(r.loops)
      .map(([k, v]) => `${k}:${v}`)
      .join(" ");
    const status = r.status === "ok" ? "" : ` (${r.status}${r.note ? ": " + r.note : ""})`;
    return [r.module + status, r.mode, c.run, c.passed, c.failed, c.errors, c.skipped, c.xfail + c.xpass, c.hung, c.crashed, r.wall, loops].map(String);
  });
  const all = [head, ...rows];
  const w = head.map((_, i) => Math.max(...all.map((r) => (i === head.length - 1 ? 0 : r[i]!.length))));
  return all.map((r) => r.map((v, i) => (i === 0 || i === head.length - 1 ? v.padEnd(w[i]!) : v.padStart(w[i]!))).join("  ")).join("\n");
}

/** The bunpy checkout under test: HEAD, "+dirty" with changes under python/ shim/ src/. */
function gitCommit(): string {
  const root = join(here, "..", "..");
  const git = (...a: string[]) => Bun.spawnSync(["git", "-C", root, ...a]).stdout.toString().trim();
  try {
    const head = git("rev-parse", "--short", "HEAD");
    const dirty = git("status", "--porcelain", "--", "python", "shim", "src");
    return head ? head + (dirty ? "+dirty" : "") : "unknown";
  } catch {
    return "unknown";
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes("--child")) return child(argv);
  const o = parseArgs(argv);
  if (o.logDir === "") o.logDir = mkdtempSync(join(tmpdir(), "asyncio-suite-"));
  mkdirSync(o.logDir, { recursive: true });
  const commitAtStart = gitCommit();
  const jobs: { module: string; mode: Mode }[] = [];
  for (const module of o.modules) for (const mode of o.modes) jobs.push({ module, mode });
  const results: ModuleResult[] = new Array(jobs.length);
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      const { module, mode } = jobs[i]!;
      const r = await runModule(module, mode, o);
      results[i] = r;
      if (!o.json) {
        const c = r.counts;
        console.error(`[${mode}] ${module}: ${r.status} run=${c.run} pass=${c.passed} fail=${c.failed} error=${c.errors} skip=${c.skipped} hung=${c.hung} crashed=${c.crashed} (${r.wall}s)`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.jobs, jobs.length) }, worker));
  const wall = Math.round((performance.now() - t0) / 100) / 10;
  const python = results.find((r) => r.python)?.python;
  const commitAtEnd = gitCommit();
  const commit = commitAtStart === commitAtEnd ? commitAtStart : `${commitAtStart} -> ${commitAtEnd} (changed during the run)`;

  // bunpy vs stock: the failures that are bunpy's alone
  const stockById = new Map<string, TestResult>();
  for (const r of results) if (r.mode === "stock") for (const t of r.tests) stockById.set(t.id, t);
  const comparison =
    o.modes.length === 2
      ? results
          .filter((r) => r.mode === "bunpy")
          .flatMap((r) =>
            r.tests
              .filter((t) => isProblem(t.outcome))
              .map((t) => ({ module: r.module, id: t.id, bunpy: t.outcome, stock: stockById.get(t.id)?.outcome ?? "absent", expected: t.expected, summary: oneLine(t) })),
          )
      : undefined;
  const stockOnly =
    o.modes.length === 2
      ? results
          .filter((r) => r.mode === "stock")
          .flatMap((r) => r.tests.filter((t) => isProblem(t.outcome)))
          .filter((t) => {
            const b = results.find((r) => r.mode === "bunpy" && t.id.startsWith(`test.test_asyncio.${r.module}.`))?.tests.find((x) => x.id === t.id);
            return !b || !isProblem(b.outcome);
          })
          .map((t) => ({ id: t.id, stock: t.outcome, summary: oneLine(t) }))
      : undefined;

  const unexpected = results
    .filter((r) => r.mode === "bunpy")
    .flatMap((r) => r.tests.filter((t) => isProblem(t.outcome) && !t.expected))
    .map((t) => ({ id: t.id, outcome: t.outcome, stock: stockById.get(t.id)?.outcome, summary: oneLine(t) }));
  const report = { python, commit, modes: o.modes, wall, modules: results, unexpected, comparison, stockOnly };
  if (o.out) writeFileSync(o.out, JSON.stringify(report, null, 1));
  if (o.json) {
    process.stdout.write(JSON.stringify(report) + "\n");
    return;
  }

  console.log(`\nPython ${python}; bunpy ${commit}; modes: ${o.modes.join(", ")}; wall ${wall}s; logs in ${o.logDir}`);
  for (const mode of o.modes) {
    const checks = results.find((r) => r.mode === mode && r.checks)?.checks;
    if (checks) console.log(`[${mode}] loops handed out: ${Object.entries(checks).map(([k, v]) => `${k} -> ${v}`).join(", ")}`);
  }
  const notes = [...new Set(results.flatMap((r) => (r.notes ?? []).map((n) => `${r.module}: ${n}`)))];
  for (const n of notes) console.log(`  ${n}`);
  // the loop under test must be bunpy's: name the tests that made asyncio's own loop
  const STOCK_LOOPS = ["_UnixSelectorEventLoop", "SelectorEventLoop", "EventLoop"];
  for (const r of results.filter((r) => r.mode === "bunpy")) {
    const stray = r.tests.filter((t) => STOCK_LOOPS.some((k) => t.loops[k]));
    if (stray.length) console.log(`  WARNING ${r.module}: asyncio's own loop made in bunpy mode by ${stray.map((t) => shortId(t.id)).join(", ")}`);
  }
  const main = results.filter((r) => !STOCK_INTERNALS.has(r.module));
  const internals = results.filter((r) => STOCK_INTERNALS.has(r.module));
  console.log("\n" + table(main));
  if (internals.length) console.log("\nTests of the stock loop's internals (mocks, private classes):\n" + table(internals));
  const sum = (mode: Mode) => {
    const t = { run: 0, passed: 0, failed: 0, errors: 0, skipped: 0, hung: 0, crashed: 0 };
    for (const r of main) if (r.mode === mode) for (const k of Object.keys(t) as (keyof typeof t)[]) t[k] += r.counts[k];
    return t;
  };
  for (const mode of o.modes) console.log(`total [${mode}] (without stock internals): ${JSON.stringify(sum(mode))}`);
  if (o.modes.includes("bunpy")) console.log(`unexpected failures with bunpy's loop: ${unexpected.length}`);

  for (const r of results) {
    const bad = r.tests.filter((t) => isProblem(t.outcome));
    if (!bad.length) continue;
    console.log(`\n== ${r.module} [${r.mode}]: ${bad.length} failing`);
    for (const t of bad) {
      const stock = comparison && r.mode === "bunpy" ? ` {stock: ${stockById.get(t.id)?.outcome ?? "absent"}}` : "";
      const tag = r.mode === "bunpy" ? (t.expected ? ` [expected: ${t.expected}]` : " [UNEXPECTED]") : "";
      console.log(`  ${t.outcome.toUpperCase()} ${shortId(t.id)}${stock}${tag}\n      ${oneLine(t)}`);
      if (o.verbose) for (const d of t.details) if (d.traceback) console.log(d.traceback.replace(/^/gm, "        "));
    }
  }
  if (comparison) {
    const only = comparison.filter((c) => !isProblem(c.stock as Outcome));
    const surprising = only.filter((c) => !c.expected);
    console.log(`\n== failing with bunpy's loop only: ${only.length} (${only.length - surprising.length} expected, ${surprising.length} not):`);
    for (const c of surprising) console.log(`  ${c.bunpy.toUpperCase()} ${shortId(c.id)} {stock: ${c.stock}}\n      ${c.summary}`);
    const byWhy = new Map<string, number>();
    for (const c of only) if (c.expected) byWhy.set(c.expected, (byWhy.get(c.expected) ?? 0) + 1);
    for (const [why, n] of byWhy) console.log(`  expected: ${n} x ${why}`);
    console.log(`\n== failing with the stock loop only (${stockOnly!.length}):`);
    for (const c of stockOnly!) console.log(`  ${c.stock.toUpperCase()} ${shortId(c.id)}\n      ${c.summary}`);
  }
}

await main();
