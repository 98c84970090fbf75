/**
 * The 1 KB document's round trip cut into its steps, CPU time per step (minimum over
 * rounds): the JS encoder alone (writeCall into the port's buffer, nothing sent), the JS
 * decoder alone (the result of make() decoded again and again), and the whole calls, so the
 * C side is what is left. `bun bench/doc-steps.ts [checkout root] [rounds] [calls]`
 */
import { resolve } from "node:path";
import { doc } from "./doc.ts";

const root = resolve(process.argv[2] ?? resolve(import.meta.dir, ".."));
const rounds = Number(process.argv[3] ?? 25), N = Number(process.argv[4] ?? 20000);
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
  ["JSON.stringify(doc)", () => JSON.stringify(doc)],
  ["JS encodes doc (no call)", () => wire.writeCall([doc], undefined)],
  ["JS decodes doc (no call)", () => { wire.pos = 0; return wire.readValue(); }],
  ["JS -> Python: length(doc)", () => py.call("__main__", "length", [doc])],
  ["Python -> JS: make()", () => py.call("__main__", "make", [])],
  ["round trip: ident(doc)", () => py.call("__main__", "ident", [doc])],
];
const best = new Map<string, number>();
for (let r = 0; r < rounds; r++)
  for (const [name, f] of cases) {
    if (name.startsWith("JS decodes")) py.call("__main__", "make", []);
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
