// Test files whose outcome does not depend on BUNPY_PYTHON (setup, types, package) run
// once per CI run: .ci/run sets BUNPY_CI_INDEPENDENT_RAN_ON to the first run's Python on
// the later runs, and there their groups skip, saying where they ran.
import { describe } from "bun:test";

const ranOn = process.env["BUNPY_CI_INDEPENDENT_RAN_ON"];

/** describe(), or on CI's later runs describe.skip() saying where the tests ran. */
export function independentOfPython(name: string, fn: () => void): void {
  if (ranOn) describe.skip(`${name} (skipped: independent of BUNPY_PYTHON, these ran under Python ${ranOn} earlier in this CI run)`, fn);
  else describe(name, fn);
}
