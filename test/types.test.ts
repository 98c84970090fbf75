// bunpy ships TypeScript sources, so a user's `tsc` checks them with the user's flags
// (skipLibCheck only skips .d.ts files). A user project (test/fixtures/types-project) with
// every stricter flag `bun init` lists turned on, bunpy installed in its node_modules as
// `bun add` puts it there, must type-check; and the check must reach bunpy's own files.
// No Python runs here: .ci/run runs the suite once per Python and sets
// BUNPY_CI_INDEPENDENT_RAN_ON=<version> on all but the first run, where these tests skip
// (they ran in full under that version already).
import { expect, test } from "bun:test";
import { independentOfPython } from "./ci-independent.ts";
import { appendFileSync, cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");
const TSC = join(ROOT, "node_modules", ".bin", "tsc");

/** A copy of the fixture project with bunpy (package.json + src) in node_modules/bunpy. */
function userProject(): { dir: string; bunpy: string } {
  const dir = mkdtempSync(join(tmpdir(), "bunpy-types-"));
  cpSync(join(import.meta.dir, "fixtures", "types-project"), dir, { recursive: true });
  const bunpy = join(dir, "node_modules", "bunpy");
  mkdirSync(bunpy, { recursive: true });
  cpSync(join(ROOT, "package.json"), join(bunpy, "package.json"));
  cpSync(join(ROOT, "src"), join(bunpy, "src"), { recursive: true });
  // "types": ["bun"] as in a bun init project (@types/bun resolves bun-types from its real path)
  mkdirSync(join(dir, "node_modules", "@types"));
  symlinkSync(join(ROOT, "node_modules", "@types", "bun"), join(dir, "node_modules", "@types", "bun"), "dir");
  return { dir, bunpy };
}

async function tsc(dir: string): Promise<{ code: number; out: string }> {
  const p = Bun.spawn([TSC, "-p", dir], { cwd: dir, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out: out + err };
}


independentOfPython("types", () => {
  test("a user project with the stricter flags of bun init type-checks against bunpy", async () => {
    const { dir } = userProject();
    try {
      const r = await tsc(dir);
      expect(r.out).toBe("");
      expect(r.code).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  test("the user's tsc reports an error inside bunpy's sources (skipLibCheck does not hide it)", async () => {
    const { dir, bunpy } = userProject();
    try {
      // one error for each of noUnusedParameters, noPropertyAccessFromIndexSignature,
      // exactOptionalPropertyTypes
      appendFileSync(
        join(bunpy, "src", "discover.ts"),
        "\nexport function bunpyTypesProbe(unused: number): string | undefined {\n" +
          "  const o: { mode?: string } = { mode: process.env.BUNPY_PROBE };\n" +
          "  return o.mode;\n}\n",
      );
      const r = await tsc(dir);
      expect(r.code).not.toBe(0);
      expect(r.out).toContain("node_modules/bunpy/src/discover.ts");
      expect(r.out).toContain("TS6133"); // 'unused' is declared but its value is never read
      expect(r.out).toContain("TS4111"); // env.BUNPY_PROBE comes from an index signature
      expect(r.out).toContain("TS2375"); // undefined for an optional property
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
