// Preloaded by `bun test` (bunfig.toml): gets the C shim ready before any test runs. A first
// run builds it with zig (15–30 s); inside a test that would hit bun test's per-test timeout
// (5 s unless --timeout is given: bunfig.toml has no key for it), and bun test ends a
// timed-out test's child processes, zig included.
import { ensureShim } from "../src/build.ts";
import { findPython } from "../src/discover.ts";

try {
  ensureShim(findPython());
} catch {
  // no usable Python or no zig: the tests that need them report it
}
