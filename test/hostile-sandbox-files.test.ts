/**
 * `files` / `readFiles` against code that tries to change files it may only read, or may
 * not reach at all, without opening them for writing: mode, owner, times, extended
 * attributes and size. Landlock has no right for metadata, so the audit hook checks these
 * (only beneath `files` directories, or through a descriptor open for writing). Each
 * refusal is checked against the same change in a writable directory, where it works.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { py, type ContextOptions } from "../src/index.ts";
import { closedAfterAll, contextModes, PY_ATTEMPT } from "./helpers.ts";

const { keep } = closedAfterAll();
const context = async (options: ContextOptions) => keep(await py.context(options));

const base = join(import.meta.dir, "..", ".cache");
mkdirSync(base, { recursive: true });
const ro = mkdtempSync(join(base, "hostile-ro-"));
const rw = mkdtempSync(join(base, "hostile-rw-"));
const out = mkdtempSync(join(base, "hostile-out-"));
for (const d of [ro, rw, out]) {
  writeFileSync(join(d, "f.txt"), "data");
  chmodSync(join(d, "f.txt"), 0o644);
}
symlinkSync(join(out, "f.txt"), join(rw, "to-out"));
afterAll(() => {
  for (const d of [ro, rw, out]) rmSync(d, { recursive: true, force: true });
});

const PROBE = PY_ATTEMPT + `
import os, pathlib
def fchmod_read_only(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.chmod(fd, 0o600)
    finally:
        os.close(fd)
def fchmod_writing(path):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.chmod(fd, 0o640)
    finally:
        os.close(fd)
def changes(d):
    f = d + "/f.txt"
    return {"chmod": attempt(lambda: os.chmod(f, 0o600)),
            "pathlib chmod": attempt(lambda: pathlib.Path(f).chmod(0o600)),
            "utime": attempt(lambda: os.utime(f, (0, 0))),
            "chown": attempt(lambda: os.chown(f, os.getuid(), os.getgid())),
            "truncate": attempt(lambda: os.truncate(f, 4))}
`;

describe.each(contextModes)("%s context with files and readFiles", (mode) => {
  const sandbox = { files: [rw], readFiles: [ro] };

  test("a writable directory's files can be changed (the probes tell)", async () => {
    const ctx = await context({ mode, sandbox });
    await ctx.exec(PROBE);
    const got = (await ctx.call("__main__", "changes", [rw])) as Record<string, string>;
    for (const v of Object.values(got)) expect(v).toBe("ok");
    expect(await ctx.call("__main__", "attempt", [await ctx.eval(`lambda: fchmod_writing(${JSON.stringify(join(rw, "f.txt"))})`)])).toBe("ok");
  });

  for (const [where, dir] of [["a readFiles directory", ro], ["a directory outside", out]] as const)
    test(`files in ${where} keep their mode, owner, times and size`, async () => {
      const before = statSync(join(dir, "f.txt"));
      const ctx = await context({ mode, sandbox });
      await ctx.exec(PROBE);
      const got = (await ctx.call("__main__", "changes", [dir])) as Record<string, string>;
      for (const [k, v] of Object.entries(got)) expect(`${k}: ${v}`).toContain("PermissionError");
      const after = statSync(join(dir, "f.txt"));
      expect(after.mode).toBe(before.mode);
      expect(after.mtimeMs).toBe(before.mtimeMs);
      expect(after.size).toBe(before.size);
    });

  test("through a symlink in a writable directory, or a descriptor opened for reading: refused", async () => {
    const ctx = await context({ mode, sandbox });
    await ctx.exec(PROBE);
    expect(await ctx.eval(`attempt(lambda: os.chmod(${JSON.stringify(join(rw, "to-out"))}, 0o600))`)).toContain("PermissionError");
    expect(await ctx.eval(`attempt(lambda: fchmod_read_only(${JSON.stringify(join(ro, "f.txt"))}))`)).toContain("PermissionError");
    expect(await ctx.eval(`attempt(lambda: os.chmod("f.txt", 0o600, dir_fd=os.open(${JSON.stringify(ro)}, os.O_RDONLY)))`)).toContain(
      "PermissionError",
    );
    expect(statSync(join(out, "f.txt")).mode & 0o777).toBe(0o644);
    expect(statSync(join(ro, "f.txt")).mode & 0o777).toBe(0o644);
  });
});
