// Shared by the test files: defines a Python module from source in the main interpreter,
// so each file's helpers live in their own namespace.
import { py } from "../src/index.ts";

py.exec(`
def _bunpy_test_module(name, src):
    import sys, types
    m = types.ModuleType(name)
    exec(src, m.__dict__)
    sys.modules[name] = m
`);

export function defineModule(name: string, source: string): void {
  py.call("__main__", "_bunpy_test_module", [name, source]);
}
