/**
 * PyObject proxies: attribute access, calls, items, iteration, membership, conversion,
 * disposal, garbage collection and identity, against the real embedded CPython.
 */
import { describe, expect, test } from "bun:test";
import { BunpyError, PythonError, py, type PyObject } from "../src/index.ts";
import { defineModule } from "./helpers.ts";

defineModule(
  "t_proxy",
  `
import collections, sys, gc

class Point:
    """A small class for the tests."""
    kind = "point"
    def __init__(self, x, y=0, *, label="p"):
        self.x = x
        self.y = y
        self.label = label
    def norm2(self):
        return self.x * self.x + self.y * self.y
    def moved(self, dx, dy=0):
        return Point(self.x + dx, self.y + dy, label=self.label)
    def describe(self, prefix="", suffix=""):
        return f"{prefix}{self.label}({self.x}, {self.y}){suffix}"
    def __repr__(self):
        return f"Point({self.x}, {self.y})"
    def __str__(self):
        return f"<{self.x},{self.y}>"

class Counter:
    """An iterable that records how far it was iterated and whether it was closed."""
    def __init__(self, n):
        self.n = n
        self.produced = 0
        self.closed = False
    def __iter__(self):
        try:
            for i in range(self.n):
                self.produced += 1
                yield i
        finally:
            self.closed = True

class Holder:
    def __init__(self, o):
        self.o = o

sentinel = object()
def make_holder():
    return Holder(sentinel)
def refs():
    return sys.getrefcount(sentinel)

def kw(*args, **kwargs):
    return [list(args), kwargs]
def is_kw(f):
    return f is kw
def make_point(x):
    return Point(x)

shared = object()
def get_shared():
    return shared
def is_shared(x):
    return x is shared

OrderedDict = collections.OrderedDict
Named = collections.namedtuple("Named", "a b")
import weakref
_tracked = None
def track(o):
    global _tracked
    _tracked = weakref.ref(o)
def tracked_alive():
    return _tracked() is not None
`,
);

const mod = py.import("t_proxy");

describe("modules and attributes", () => {
  test("py.import gives a module proxy", () => {
    const math = py.import("math");
    expect(py.isPyObject(math)).toBe(true);
    expect(py.typeName(math)).toBe("module");
    expect(math["pi"]).toBe(Math.PI);
    expect(math["sqrt"](16)).toBe(4);
    expect(math["__name__"]).toBe("math");
    expect(() => py.import("no_such_module_xyz")).toThrow(PythonError);
  });

  test("attribute get, set and delete reach Python", () => {
    const p = new mod["Point"](3, 4);
    expect(p.x).toBe(3);
    expect(p.kind).toBe("point");
    p.x = 10;
    expect(py.call("builtins", "getattr", [p, "x"])).toBe(10);
    p.extra = { a: [1, 2] };
    expect(py.call("builtins", "repr", [py.call("builtins", "getattr", [p, "extra"])])).toBe("{'a': [1, 2]}");
    delete p.extra;
    expect(py.call("builtins", "hasattr", [p, "extra"])).toBe(false);
    expect(() => delete p.never_there).toThrow(PythonError);
  });

  test("a missing attribute reads as undefined", () => {
    const p = new mod["Point"](1);
    expect(p.nope).toBeUndefined();
    expect(mod["not_defined_anywhere"]).toBeUndefined();
    expect(py.import("math")["no_such_fn"]).toBeUndefined();
  });

  test("errors other than AttributeError propagate from getattr", () => {
    py.exec("class _Bad:\n    @property\n    def boom(self):\n        raise ValueError('from property')\n_bad = _Bad()");
    const b = py.eval("_bad");
    expect(() => b.boom).toThrow(PythonError);
    expect(() => b.boom).toThrow(/from property/);
  });
});

describe("calls", () => {
  test("calling a proxy with positional arguments and py.kw", () => {
    expect(mod["kw"](1, "a")).toEqual([[1, "a"], {}]);
    expect(mod["kw"](1, py.kw({ sep: ",", n: null }))).toEqual([[1], { sep: ",", n: null }]);
    expect(mod["kw"](py.kw({ only: true }))).toEqual([[], { only: true }]);
    const json = py.import("json");
    expect(json["dumps"]({ a: 1 }, py.kw({ indent: 2 }))).toBe('{\n  "a": 1\n}');
    expect(json["dumps"]([1, 2], py.kw({ separators: [",", ":"] }))).toBe("[1,2]");
  });

  test("py.kw must be last", () => {
    expect(() => mod["kw"](py.kw({ a: 1 }), 2)).toThrow(/py\.kw\(\) must be the last argument/);
  });

  test("new on a class constructs an instance", () => {
    const p = new mod["Point"](1, 2, py.kw({ label: "q" }));
    expect(py.typeName(p)).toBe("t_proxy.Point");
    expect(p.label).toBe("q");
    expect(py.call("builtins", "isinstance", [p, mod["Point"]])).toBe(true);
    // calling the class without new works too
    expect(mod["Point"](5).x).toBe(5);
  });

  test("new on something returning a plain value throws", () => {
    const int = py.builtins["int"];
    expect(() => new int("5")).toThrow(BunpyError);
    expect(int("5")).toBe(5);
  });

  test("method calls on instances", () => {
    const p = new mod["Point"](3, 4);
    expect(p.norm2()).toBe(25);
    const q = p.moved(1, py.kw({ dy: 2 }));
    expect(py.repr(q)).toBe("Point(4, 6)");
    expect(p.describe("[", py.kw({ suffix: "]" }))).toBe("[p(3, 4)]");
    // a method read off an object stays usable as a function
    const norm2 = p.norm2;
    p.x = 0;
    expect(norm2()).toBe(16);
    // builtin methods of containers
    const d = py.eval("{'a': 1}");
    expect(d).toEqual({ a: 1 }); // exact dicts convert
    const od = mod["OrderedDict"]([["a", 1], ["b", 2]]);
    expect(od.get("b")).toBe(2);
    expect(od.get("zz", "default")).toBe("default");
    od.move_to_end("a");
    expect(od.toJS()).toEqual({ b: 2, a: 1 });
    expect(Object.keys(od.toJS())).toEqual(["b", "a"]);
  });

  test("fn.call, fn.apply and fn.bind work on Python callables (JS code given one uses them), unless Python has such an attribute", () => {
    const add = py.eval("lambda a, b=10: a + b") as PyObject; // a function proxy
    const Point = mod["Point"]; // a class: a Proxy
    expect(add.call(null, 1, 2)).toBe(3);
    expect(add.apply(undefined, [5])).toBe(15);
    expect(add.bind(null, 7)(1)).toBe(8);
    expect(py.repr(Point.apply(null, [1, 2]))).toBe("Point(1, 2)");
    expect(py.repr(Point.call(null, 3, 4))).toBe("Point(3, 4)");
    const plus100 = add.bind(null, 100) as (x: number) => number;
    expect([1, 2].map((x) => plus100(x))).toEqual([101, 102]);
    // a Python attribute of that name wins
    const ns = py.eval("__import__('types').SimpleNamespace(call=5, bind='b')") as PyObject;
    expect(ns["call"] as unknown).toBe(5);
    expect(ns["bind"] as unknown).toBe("b");
    expect(typeof ns.apply).toBe("function");
  });

  test("Python exceptions from calls are PythonErrors", () => {
    const p = new mod["Point"](1);
    expect(() => p.moved()).toThrow(PythonError);
    expect(() => p.moved()).toThrow(/TypeError/);
  });
});

describe("items", () => {
  test("getItem, setItem and deleteItem", () => {
    const od = mod["OrderedDict"]();
    od.setItem("a", 1);
    od.setItem(2, [1, 2]);
    expect(od.getItem("a")).toBe(1);
    expect(od.getItem(2)).toEqual([1, 2]);
    od.deleteItem("a");
    expect(py.len(od)).toBe(1);
    expect(() => od.getItem("a")).toThrow(PythonError);
    expect(() => od.getItem("a")).toThrow(/KeyError/);
    const dq = py.call("collections", "deque", [[1, 2, 3]]);
    expect(dq.getItem(-1)).toBe(3);
    dq.setItem(0, "first");
    expect(dq.getItem(0)).toBe("first");
    dq.deleteItem(1);
    expect(py.repr(dq)).toBe("deque(['first', 3])");
    const t = py.eval("range(10)");
    expect(t.getItem(3)).toBe(3);
    expect(() => t.setItem(0, 1)).toThrow(/TypeError/);
  });

  test("py.len", () => {
    expect(py.len(py.eval("range(7)"))).toBe(7);
    expect(py.len(mod["OrderedDict"]([["a", 1]]))).toBe(1);
    expect(() => py.len(new mod["Point"](1))).toThrow(/TypeError/);
    expect(() => py.len({} as PyObject)).toThrow(TypeError);
  });
});

describe("iteration", () => {
  test("for..of iterates a Python iterable", () => {
    const out: unknown[] = [];
    for (const x of py.eval("range(5)")) out.push(x);
    expect(out).toEqual([0, 1, 2, 3, 4]);
    expect([...py.call("collections", "deque", [["a", "b"]])]).toEqual(["a", "b"]);
    expect([...py.eval("iter(())")]).toEqual([]);
    const gen = py.eval("(i * i for i in range(4))");
    expect([...gen]).toEqual([0, 1, 4, 9]);
    expect([...gen]).toEqual([]); // a generator is used up
  });

  test("iterating an iterator proxy leaves the proxy usable", () => {
    const it = py.eval("iter([1, 2, 3])");
    for (const x of it) {
      expect(x).toBe(1);
      break;
    }
    expect(it.__next__()).toBe(2);
    expect([...it]).toEqual([3]);
    expect(py.typeName(it)).toBe("list_iterator");
  });

  test("an exception during iteration propagates", () => {
    py.exec("def _bad_gen():\n    yield 1\n    raise ValueError('mid-iteration')");
    const seen: unknown[] = [];
    expect(() => {
      for (const x of py.eval("_bad_gen()")) seen.push(x);
    }).toThrow(/mid-iteration/);
    expect(seen).toEqual([1]);
  });

  test("an early break releases the iterator", async () => {
    const c = new mod["Counter"](100);
    for (const x of c) if (x === 2) break;
    expect(c.produced).toBe(3);
    // the generator was dropped by the break (not by a later GC), which runs its finally
    py.eval("1");
    expect(c.closed).toBe(true);
    // a complete loop also closes it
    const d = new mod["Counter"](3);
    expect([...d]).toEqual([0, 1, 2]);
    expect(d.closed).toBe(true);
  });
});

describe("membership", () => {
  test("in tests membership for containers", () => {
    const od = mod["OrderedDict"]([["a", 1]]);
    expect("a" in od).toBe(true);
    expect("b" in od).toBe(false);
    const s = py.call("builtins", "frozenset", [["x", "y"]]);
    expect(py.isPyObject(s)).toBe(false); // exact frozensets convert to a Set
    const dq = py.call("collections", "deque", [["x", "y"]]);
    expect("x" in dq).toBe(true);
    expect("z" in dq).toBe(false);
    // for a container, in is membership, not attribute presence
    expect("append" in dq).toBe(false);
  });

  test("in tests attribute presence for modules and plain objects", () => {
    const json = py.import("json");
    expect("dumps" in json).toBe(true);
    expect("no_such_thing" in json).toBe(false);
    const p = new mod["Point"](1);
    expect("x" in p).toBe(true);
    expect("norm2" in p).toBe(true);
    expect("z" in p).toBe(false);
  });
});

describe("strings and conversion", () => {
  test("String(proxy) is str(), py.repr is repr()", () => {
    const p = new mod["Point"](1, 2);
    expect(String(p)).toBe("<1,2>");
    expect(`${p}`).toBe("<1,2>");
    expect(p.toString()).toBe("<1,2>");
    expect(py.repr(p)).toBe("Point(1, 2)");
    expect(py.repr(py.import("math"))).toContain("<module 'math'");
    expect(py.typeName(p)).toBe("t_proxy.Point");
  });

  test("toJS() converts subclasses and buffers deeply", () => {
    const od = py.eval("__import__('collections').OrderedDict([('b', 1), ('a', [1, (2, 3)])])");
    expect(py.isPyObject(od)).toBe(true);
    const js = od.toJS();
    expect(js).toEqual({ b: 1, a: [1, [2, 3]] });
    expect(Object.keys(js)).toEqual(["b", "a"]);
    const dd = py.eval("__import__('collections').defaultdict(list, {'k': [1]})");
    expect(py.isPyObject(dd)).toBe(true);
    expect(dd.toJS()).toEqual({ k: [1] });
    const nt = mod["Named"](1, "two");
    expect(py.isPyObject(nt)).toBe(true);
    expect(nt.a).toBe(1);
    expect(nt.toJS()).toEqual([1, "two"]);
    const ba = py.eval("bytearray(b'\\x00ab')");
    expect(py.isPyObject(ba)).toBe(true);
    const bytes = ba.toJS();
    expect(bytes).toBeInstanceOf(Uint8Array);
    expect([...bytes]).toEqual([0, 97, 98]);
    const nested = py.eval("__import__('collections').OrderedDict(x=__import__('collections').Counter('aab'))");
    expect(nested.toJS()).toEqual({ x: { a: 2, b: 1 } });
    // non-convertible members stay proxies
    const withObj = py.eval("__import__('collections').OrderedDict(p=object())").toJS();
    expect(py.isPyObject(withObj.p)).toBe(true);
  });

  test("JSON.stringify uses toJS", () => {
    const od = py.eval("__import__('collections').OrderedDict(a=1)");
    expect(JSON.stringify({ v: od })).toBe('{"v":{"a":1}}');
  });
});

describe("builtins", () => {
  test("py.builtins reaches the builtins module", () => {
    const b = py.builtins;
    expect(py.typeName(b)).toBe("module");
    expect(b["len"]([1, 2, 3])).toBe(3);
    expect(b["sorted"]([3, 1, 2])).toEqual([1, 2, 3]);
    expect(b["dict"](py.kw({ a: 1 }))).toEqual({ a: 1 });
    expect(b["max"](1, 5, 3)).toBe(5);
    expect(py.builtins).toBe(b);
  });
});

describe("disposal", () => {
  test("Symbol.dispose releases the object; use after dispose throws", () => {
    const p = new mod["Point"](1);
    p[Symbol.dispose]();
    expect(() => p.x).toThrow(BunpyError);
    expect(() => p.norm2).toThrow(/disposed/);
    expect(() => String(p)).toThrow(BunpyError);
    expect(() => py.repr(p)).toThrow(BunpyError);
    expect(() => py.call("builtins", "id", [p])).toThrow(BunpyError);
    p[Symbol.dispose](); // twice is fine
  });

  test("using disposes at the end of the block", () => {
    let kept: PyObject;
    {
      using p = new mod["Point"](7);
      kept = p;
      mod["track"](p);
      expect(p.x).toBe(7);
      expect(mod["tracked_alive"]()).toBe(true);
    }
    expect(() => kept["x"]).toThrow(BunpyError);
    // the Python object itself is gone once the queued release runs (no GC involved)
    expect(mod["tracked_alive"]()).toBe(false);
  });
});

describe("lifetime", () => {
  const gcAll = async () => {
    for (let i = 0; i < 4; i++) {
      Bun.gc(true);
      await Bun.sleep(5);
    }
    py.eval("0"); // one more call processes the queued drops
  };

  test("proxies collected by GC release their Python reference", async () => {
    const before = mod["refs"]() as number;
    const N = 5000;
    let held: PyObject[] = [];
    const make = () => {
      for (let i = 0; i < N; i++) held.push(mod["make_holder"]());
    };
    make();
    expect((mod["refs"]() as number) - before).toBe(N);
    held = [];
    await gcAll();
    const after = mod["refs"]() as number;
    // a handful may be pinned by conservative stack scanning; nearly all must be gone
    expect(after - before).toBeLessThan(N / 100);
    expect(after - before).toBeGreaterThanOrEqual(0);
  });

  test("the same Python object gives the same proxy while it is alive", () => {
    const a = mod["get_shared"]();
    const b = mod["get_shared"]();
    expect(a).toBe(b);
    expect(mod["is_shared"](a)).toBe(true);
    const p = new mod["Point"](1);
    const items = py.call("builtins", "list", [[p, p]]);
    expect(items[0]).toBe(p);
    expect(items[1]).toBe(p);
  });

  test("a disposed proxy is not handed out again", () => {
    const a = mod["get_shared"]();
    a[Symbol.dispose]();
    const b = mod["get_shared"]();
    expect(b).not.toBe(a);
    expect(mod["is_shared"](b)).toBe(true);
    expect(() => a.x).toThrow(BunpyError);
  });

  test("await proxy does not hang: proxies are not thenables", async () => {
    const p = new mod["Point"](2);
    expect(p.then).toBeUndefined();
    const v = await p;
    expect(v).toBe(p);
    const r = await Promise.resolve(p);
    expect(r.x).toBe(2);
  });
});

test("console.log and Bun.inspect show the Python repr", () => {
  const c = py.import("collections")["Counter"]("aab");
  expect(Bun.inspect(c)).toBe("Counter({'a': 2, 'b': 1})");
  expect(Bun.inspect([py.eval("bytearray(b'ab')")])).toContain("bytearray(b'ab')");
});

describe("proxy identity table (issue 11)", () => {
  test("HandleTable agrees with a Map over random set/delete churn, through growth and shrinking", async () => {
    const { HandleTable } = await import("../src/handle-table.ts");
    const t = new HandleTable<number>();
    const m = new Map<number, number>();
    let seed = 12345;
    const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
    const keys = Array.from({ length: 5000 }, (_, i) => 0x7f0000000000 + (i % 3 === 0 ? i * 16 : (rand() % 100000) * 16));
    for (let step = 0; step < 200_000; step++) {
      const k = keys[rand() % keys.length]!;
      if (rand() % 3 === 0 || step > 150_000) {
        t.delete(k);
        m.delete(k);
      } else {
        t.set(k, step);
        m.set(k, step);
      }
      if (step % 997 === 0) for (const kk of keys.slice(0, 200)) expect(t.get(kk)).toBe(m.get(kk));
    }
    expect(t.size).toBe(m.size);
    for (const k of keys) expect(t.get(k)).toBe(m.get(k));
  });

  test("one Python object keeps one proxy while alive, also after many others were created and disposed", () => {
    py.exec("import types as _t\nidentity_obj = _t.SimpleNamespace(a=1)");
    const a = py.eval("identity_obj");
    for (let i = 0; i < 20_000; i++) (py.eval("object()") as any)[Symbol.dispose]();
    expect(py.eval("identity_obj")).toBe(a);
    a[Symbol.dispose]();
    const b = py.eval("identity_obj");
    expect(b).not.toBe(a);
    expect(b.a).toBe(1);
  });
});

describe("attribute shapes that change (issue 11: what a method cache must keep right)", () => {
  py.exec(`
class Shape:
    def area(self):
        return 1
    @property
    def prop(self):
        return "p1"
class Dyn:
    def __getattr__(self, name):
        return f"dyn:{name}"
shape = Shape()
dyn = Dyn()
`);

  test("a method replaced on the class, shadowed on the instance, then the type mutated", () => {
    const shape = py.eval("shape");
    expect(shape.area()).toBe(1);
    expect(shape.area()).toBe(1);
    py.exec("Shape.area = lambda self: 2");
    expect(shape.area()).toBe(2);
    py.exec("shape.area = lambda: 3"); // instance attribute shadows the method
    expect(shape.area()).toBe(3);
    py.exec("shape.area = 4"); // not callable any more
    expect(shape.area).toBe(4);
    py.exec("del shape.area");
    expect(shape.area()).toBe(2);
    py.exec("del Shape.area");
    expect(shape.area).toBeUndefined();
    py.exec("Shape.area = lambda self: 5");
    expect(shape.area()).toBe(5);
  });

  test("properties and __getattr__ are evaluated at every read", () => {
    const shape = py.eval("shape");
    expect(shape.prop).toBe("p1");
    py.exec("Shape.prop = property(lambda self: 'p2')");
    expect(shape.prop).toBe("p2");
    const dyn = py.eval("dyn");
    expect(dyn.anything).toBe("dyn:anything");
    py.exec("Dyn.anything = lambda self: 'method'");
    expect(dyn.anything()).toBe("method");
  });
});

describe("plain functions are real JS functions (issue 11: calls as fast as py.call)", () => {
  const kinds = () => ({
    def: mod["kw"] as PyObject,
    lambda: py.eval("lambda a, b=2: a * b") as PyObject,
    builtin: py.import("operator")["add"] as PyObject,
    bound: py.eval("[].append") as PyObject,
  });

  test("def, lambda, builtin and bound method are functions without a Proxy; classes and instances stay proxies", () => {
    // a Proxy reports its target's prototype (Function.prototype); the function form has
    // the attribute Proxy as its prototype
    for (const [kind, f] of Object.entries(kinds())) {
      expect(typeof f).toBe("function");
      expect(Object.getPrototypeOf(f) === Function.prototype, kind).toBe(false);
    }
    expect(Object.getPrototypeOf(mod["Point"])).toBe(Function.prototype);
    expect(Object.getPrototypeOf(new mod["Point"](1))).toBe(Function.prototype);
  });

  test("calls, keyword arguments and errors", () => {
    const { def, lambda, builtin } = kinds();
    expect(def(1, "a", py.kw({ k: 2 }))).toEqual([[1, "a"], { k: 2 }]);
    expect(lambda(3)).toBe(6);
    expect(lambda(3, py.kw({ b: 5 }))).toBe(15);
    expect(builtin(40, 2)).toBe(42);
    expect(() => builtin(1)).toThrow(PythonError);
    expect(() => builtin(1, "x")).toThrow(/unsupported operand/);
  });

  test("attributes read, write and `in` reach Python; name and length are Python attributes", () => {
    const { def, builtin } = kinds();
    expect(def["__name__"]).toBe("kw");
    expect(builtin["__name__"]).toBe("add");
    expect(def["name"]).toBeUndefined(); // not JS's Function#name
    expect(def["length"]).toBeUndefined();
    def["tag"] = [1, 2];
    expect(py.call("builtins", "getattr", [def, "tag"])).toEqual([1, 2]);
    expect("tag" in def).toBe(true);
    expect("__name__" in builtin).toBe(true);
    expect("nope" in def).toBe(false);
    expect(def["nope"]).toBeUndefined();
    expect(String(def)).toMatch(/^<function kw at 0x/);
    expect(Bun.inspect(builtin)).toBe("<built-in function add>");
    expect(Object.prototype.toString.call(def)).toBe("[object PyObject]");
    expect(def["then"]).toBeUndefined();
    // what a function cannot forward: delete stays in JS (documented)
    expect(delete def["tag"]).toBe(true);
    expect(py.call("builtins", "hasattr", [def, "tag"])).toBe(true);
    py.call("builtins", "delattr", [def, "tag"]);
    expect("tag" in def).toBe(false);
  });

  test("new on a function: an object result is returned, a plain value throws", () => {
    const makePoint = mod["make_point"] as PyObject;
    const p = new makePoint(4) as PyObject;
    expect(p["x"]).toBe(4);
    const lambda = kinds().lambda;
    expect(() => new lambda(2)).toThrow(BunpyError);
  });

  test("identity, passing back to Python, disposal", () => {
    const f1 = mod["kw"];
    expect(mod["kw"]).toBe(f1);
    expect(py.call("builtins", "callable", [f1])).toBe(true);
    expect(mod["is_kw"](f1)).toBe(true);
    const g = py.eval("lambda: 1") as PyObject;
    g[Symbol.dispose]();
    expect(() => g()).toThrow(/disposed/);
    expect(() => g["__name__"]).toThrow(BunpyError);
    expect(() => py.call("builtins", "callable", [g])).toThrow(BunpyError);
  });
});
