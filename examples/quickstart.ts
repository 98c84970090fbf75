// bunpy quickstart: run with `npx bun examples/quickstart.ts`
import { py, PythonError } from "bunpy";

console.log(`Python ${py.version} (${py.executable})`);

// Expressions, statements and calls
console.log("1 + 2 =", py.eval("1 + 2"));
py.exec("def greet(name):\n    return f'hello, {name}!'");
console.log(py.call("__main__", "greet", ["bun"]));
console.log("sqrt(16) =", py.call("math", "sqrt", [16]));

// Modules as proxies, keyword arguments with py.kw
const { dumps } = py.import("json");
console.log(dumps({ lang: "python", fast: true }, py.kw({ sort_keys: true })));

// Values convert both ways: big ints stay exact, dicts become objects
console.log("2 ** 100 =", py.eval("2 ** 100"));
console.log(py.eval("{'a': [1, 2.5, None], 'b': (True, 'x')}"));

// Objects without a JS form stay Python objects
const { Counter } = py.import("collections");
const counts = Counter("mississippi");
console.log("most common:", counts.most_common(2));

// Python calls back into JS
py.register("shout", (s: string) => s.toUpperCase() + "!");
py.exec("import bunpy\nloud = bunpy.call('shout', 'hello from python')");
console.log(py.eval("loud"));

// Python exceptions are PythonError with type, message and traceback
try {
  py.eval("1 / 0");
} catch (e) {
  if (e instanceof PythonError) console.log(`caught ${e.type}: ${e.pythonMessage}`);
}
