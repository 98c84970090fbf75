// Parallel Python: one subinterpreter with its own GIL per core.
// Run with `npx bun examples/parallel.ts`
import { py } from "bunpy";

const COUNT_PRIMES = `
def count_primes(lo, hi):
    n = 0
    for k in range(max(lo, 2), hi):
        if all(k % d for d in range(2, int(k ** 0.5) + 1)):
            n += 1
    return n
`;
const pool = await py.pool(); // one context per core
await pool.execAll(COUNT_PRIMES);

const chunks = Array.from({ length: 8 }, (_, i) => [i * 25_000, (i + 1) * 25_000]);
let t = performance.now();
const counts = await Promise.all(chunks.map(([lo, hi]) => pool.call("__main__", "count_primes", [lo, hi])));
const parallel = performance.now() - t;

py.exec(COUNT_PRIMES); // the same function in the main interpreter, for comparison
t = performance.now();
for (const [lo, hi] of chunks) py.call("__main__", "count_primes", [lo, hi]);
const serial = performance.now() - t;

console.log(`primes below 200,000: ${counts.reduce((a, b) => a + b, 0)}`);
console.log(`${pool.contexts.length} contexts: ${parallel.toFixed(0)} ms; main interpreter alone: ${serial.toFixed(0)} ms`);

// Python can call back into JS and send messages from any context
py.register("progress", (done: number) => console.log(`  context reports ${done}`));
py.on("status", (v) => console.log("  status:", v));
await pool.contexts[0]!.exec("import bunpy\nbunpy.call('progress', 1)\nbunpy.send('status', 'ok')");
await Bun.sleep(10); // messages arrive asynchronously
await pool.close();
