/**
 * Shared by the benchmarks: after mitata has printed its own table, print each
 * benchmark's median as a ratio of the baseline measured in the same run. Ratios hold on
 * a noisy machine where absolute times do not.
 */
import { run } from "mitata";

/** mitata's options: colours only on a terminal (and not with NO_COLOR), also when a bench
    file is run directly rather than through bench/run.ts. */
export const runOptions = { colors: process.stdout.isTTY === true && !process.env["NO_COLOR"] };

export async function runWithRatios(baselineName: string): Promise<void> {
  const { benchmarks } = await run(runOptions);
  const median = (name: string) => {
    const t = benchmarks.find((b) => b.alias === name);
    return t?.runs[0]?.stats?.p50;
  };
  const base = median(baselineName);
  if (base === undefined) return;
  console.log(`\nmedian, and ratio to "${baselineName}" (same run):`);
  for (const b of benchmarks) {
    const m = b.runs[0]?.stats?.p50;
    if (m === undefined) continue;
    const time = m >= 1000 ? `${(m / 1000).toFixed(2)} µs` : `${m.toFixed(1)} ns`;
    console.log(`  ${b.alias.padEnd(44)} ${time.padStart(11)}   ${(m / base).toFixed(2)}×`);
  }
}
