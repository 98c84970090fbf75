// Docs that run: every ```ts / ```typescript snippet of README.md and docs/*.md is run as a
// program (`bun snippet.ts`, "bunpy" resolving to this repo) and must exit with status 0.
// A marker comment on the line before the fence changes that (see docs/contributing.md):
//   <!-- snippet: skip (why it cannot run) -->   not run (declarations, needs a server, ...)
//   <!-- snippet: file NAME -->                  written as NAME next to the other snippets of
//                                                the same document (a module one of them loads)
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { findPython } from "../src/discover.ts";

const ROOT = join(import.meta.dir, "..");
/** Seconds a snippet may run before it is killed (and fails). */
const SNIPPET_TIMEOUT_S = 30;
/** Snippets running at once: each is a Bun process with its own Python. */
const CONCURRENCY = 3;

interface Snippet {
  doc: string; // "docs/guide.md"
  line: number; // of the opening fence, 1-based
  code: string;
  skip?: string; // the reason given by a skip marker
  file?: string; // the name given by a file marker
  bad?: string; // an unknown marker
}

function snippetsOf(doc: string): Snippet[] {
  const lines = readFileSync(join(ROOT, doc), "utf8").split("\n");
  const out: Snippet[] = [];
  for (let i = 0; i < lines.length; i++) {
    const fence = /^(\s*)```(ts|typescript)\s*$/.exec(lines[i]!); // also indented, in a list
    if (!fence) continue;
    const indent = fence[1]!.length;
    const start = i;
    let end = i + 1;
    while (end < lines.length && !/^\s*```\s*$/.test(lines[end]!)) end++;
    const code = lines.slice(start + 1, end).map((l) => l.slice(Math.min(indent, l.length - l.trimStart().length)));
    const snippet: Snippet = { doc, line: start + 1, code: code.join("\n") + "\n" };
    let m = start - 1;
    while (m >= 0 && lines[m]!.trim() === "") m--;
    const marker = m >= 0 ? /^<!--\s*snippet:\s*(.*?)\s*-->$/.exec(lines[m]!.trim()) : null;
    if (marker) {
      const text = marker[1]!;
      const skip = /^skip\s*\((.+)\)$/.exec(text);
      const file = /^file\s+([\w.-]+\.ts)$/.exec(text);
      if (skip) snippet.skip = skip[1]!;
      else if (file) snippet.file = file[1]!;
      else snippet.bad = text;
    }
    out.push(snippet);
    i = end;
  }
  return out;
}

const docs = ["README.md", ...readdirSync(join(ROOT, "docs")).filter((f) => f.endsWith(".md")).sort().map((f) => `docs/${f}`)];
const byDoc = docs.map((doc) => ({ doc, snippets: snippetsOf(doc) })).filter((d) => d.snippets.length > 0);

// One directory per document: its snippets as snippet-LINE.ts, "file" snippets under their
// names, node_modules/bunpy linked to the repo as an installed package would be.
const work = mkdtempSync(join(tmpdir(), "bunpy-snippets-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const dirOf = new Map<string, string>();
for (const { doc, snippets } of byDoc) {
  const dir = join(work, basename(doc, ".md"));
  mkdirSync(join(dir, "node_modules"), { recursive: true });
  symlinkSync(ROOT, join(dir, "node_modules", "bunpy"), "dir");
  dirOf.set(doc, dir);
  for (const s of snippets) if (s.file !== undefined) writeFileSync(join(dir, s.file), s.code);
}

// Snippets run in a temp dir, where discovery would not see this project's .venv or
// .python-version: they get the Python this test process uses.
const env: Record<string, string | undefined> = { ...process.env };
try {
  env["BUNPY_PYTHON"] ??= findPython().executable;
} catch {
  // no usable Python: each snippet reports it
}

interface Run {
  code: number | null;
  output: string;
  seconds: number;
}

let running = 0;
const waiting: (() => void)[] = [];
async function limited<T>(fn: () => Promise<T>): Promise<T> {
  if (running >= CONCURRENCY) await new Promise<void>((r) => waiting.push(r));
  running++;
  try {
    return await fn();
  } finally {
    running--;
    waiting.shift()?.();
  }
}

async function run(s: Snippet): Promise<Run> {
  const dir = dirOf.get(s.doc)!;
  const path = join(dir, `snippet-${s.line}.ts`);
  writeFileSync(path, s.code);
  return limited(async () => {
    const t0 = performance.now();
    const p = Bun.spawn([process.execPath, path], { cwd: dir, env, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
    const timer = setTimeout(() => p.kill("SIGKILL"), SNIPPET_TIMEOUT_S * 1000);
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    clearTimeout(timer);
    return { code: p.signalCode ? null : code, output: out + err, seconds: (performance.now() - t0) / 1000 };
  });
}

// Started now, all of them (CONCURRENCY at a time); each test awaits its own.
const runs = new Map<Snippet, Promise<Run>>();
for (const { snippets } of byDoc)
  for (const s of snippets) if (s.skip === undefined && s.file === undefined && s.bad === undefined) runs.set(s, run(s));

const t0 = performance.now();
describe("doc snippets", () => {
  test("README.md and docs/*.md have snippets to run", () => {
    expect(byDoc.some((d) => d.doc === "README.md")).toBe(true);
    expect(runs.size).toBeGreaterThan(10);
  });

  for (const { doc, snippets } of byDoc) {
    describe(doc, () => {
      for (const s of snippets) {
        const name = `${doc}:${s.line}`;
        if (s.bad !== undefined) {
          test(`${name} has a known marker`, () => {
            throw new Error(`${name}: unknown marker "<!-- snippet: ${s.bad} -->" (use "skip (reason)" or "file NAME.ts")`);
          });
        } else if (s.skip !== undefined) {
          test.skip(`${name} (${s.skip})`, () => {});
        } else if (s.file === undefined) {
          test(`${name} runs`, async () => {
            const r = await runs.get(s)!;
            if (r.code !== 0) {
              const how = r.code === null ? `was killed after ${SNIPPET_TIMEOUT_S} s` : `exited with ${r.code}`;
              throw new Error(`the snippet at ${name} ${how}:\n${r.output}\n--- snippet ---\n${s.code}`);
            }
          }, (SNIPPET_TIMEOUT_S + 5) * 1000 * runs.size);
        }
      }
    });
  }

  test("all snippets ran", async () => {
    const all = await Promise.all(runs.values());
    const slowest = Math.max(...all.map((r) => r.seconds));
    console.log(`doc snippets: ${all.length} run in ${((performance.now() - t0) / 1000).toFixed(1)} s (${CONCURRENCY} at a time, slowest ${slowest.toFixed(1)} s)`);
  }, (SNIPPET_TIMEOUT_S + 5) * 1000 * runs.size);
});
