/**
 * The 1 KB document (bench/doc.ts) each way and round trip, as CPU time per call
 * (`process.cpuUsage()`), the minimum over rounds of calls, the cases interleaved round by
 * round: on a machine shared with other jobs CPU time stays comparable where wall-clock
 * time does not. Run it from two checkouts in turn to compare them:
 *
 *   bun bench/doc-min.ts [checkout root, default: this one] [rounds, default 25] [calls, default 20000]
 *
 * With DOC_STEPS=1 it also times the steps alone: JSON.stringify, the JS encoder and the JS
 * decoder on the port's buffer (no call); the C side is what is left of the round trip.
 *
 * Not run by `bun run bench` (no .bench.ts suffix).
 */
import { resolve } from "node:path";
import { doc } from "./doc.ts";

const root = resolve(process.argv[2] ?? resolve(import.meta.dir, ".."));
const rounds = Number(process.argv[3] ?? 25), N = Number(process.argv[4] ?? 20000);
const steps = process.env["DOC_STEPS"] === "1";
const { py, internals } = await import(`${root}/src/index.ts`);
py.exec(`
def ident(x):
    return x
def length(x):
    return len(x)
import json
kept = json.loads(${JSON.stringify(JSON.stringify(doc))})
def make():
    return kept
`);
const wire = internals.runtime().wire;
const cases: [string, () => unknown][] = [
  ["reference: JSON.parse(JSON.stringify(doc))", () => JSON.parse(JSON.stringify(doc))],
  ...(steps
    ? ([
        ["JSON.stringify(doc)", () => JSON.stringify(doc)],
        ["JS encodes doc (no call)", () => wire.writeCall([doc], undefined)],
        ["JS decodes doc (no call)", () => ((wire.pos = 0), wire.readValue())],
      ] as [string, () => unknown][])
    : []),
  ["JS -> Python: length(doc)", () => py.call("__main__", "length", [doc])],
  ["Python -> JS: make()", () => py.call("__main__", "make", [])],
  ["round trip: ident(doc)", () => py.call("__main__", "ident", [doc])],
];
const best = new Map<string, number>();
for (let r = 0; r < rounds; r++)
  for (const [name, f] of cases) {
    if (name.startsWith("JS decodes")) py.call("__main__", "make", []); // the document in the buffer
    const t0 = process.cpuUsage();
    for (let i = 0; i < N; i++) f();
    const t = process.cpuUsage(t0);
    const us = (t.user + t.system) / N;
    if (!(best.get(name)! <= us)) best.set(name, us);
  }
const ref = best.get(cases[0]![0])!;
const tag = root.split("/").pop();
for (const [name] of cases)
  console.log(`${tag}\t${name.padEnd(44)}\t${best.get(name)!.toFixed(3)} µs\t${(best.get(name)! / ref).toFixed(2)}×`);
