#!/usr/bin/env bun
/**
 * `bunx bunpy-build` (or `bun run build` in this repository): finds Python and builds (or finds cached) the shim for it, printing
 * what it used. Useful to pay the one-time build before the first script or in a Docker
 * image layer.
 */
import { ensureShim } from "./build.ts";
import { findPython } from "./discover.ts";
import { BunpyError } from "./errors.ts";

try {
  const py = findPython();
  const path = ensureShim(py);
  console.log(`Python ${py.version} (${py.executable})${py.freeThreaded ? " free-threaded" : ""}`);
  console.log(`shim: ${path}`);
} catch (e) {
  // the message says what is wrong and how to fix it: no stack needed
  if (!(e instanceof BunpyError)) throw e;
  console.error(`${e.name}: ${e.message}`);
  process.exit(1);
}
