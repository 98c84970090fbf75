/**
 * `bun run bench [name…]`: runs every bench/*.bench.ts (or the ones whose file name
 * contains a given word), each in its own Bun process so they do not disturb each other.
 * Output written to a file or a pipe is plain text: mitata's ANSI colours only on a terminal.
 */
import { readdirSync } from "node:fs";
import { join } from "node:path";

const wanted = process.argv.slice(2);
const files = readdirSync(import.meta.dir)
  .filter((f) => f.endsWith(".bench.ts"))
  .filter((f) => wanted.length === 0 || wanted.some((w) => f.includes(w)))
  .sort();
// mitata colours its output unless NO_COLOR is set; FORCE_COLOR still forces them
const env = { ...process.env };
if (!process.stdout.isTTY && !env["FORCE_COLOR"]) env["NO_COLOR"] = "1";
let failed = 0;
for (const f of files) {
  console.log(`\n=== ${f} ===`);
  const r = Bun.spawnSync([process.execPath, join(import.meta.dir, f)], { stdout: "inherit", stderr: "inherit", env });
  if (r.exitCode !== 0) failed++;
}
process.exit(failed ? 1 : 0);
