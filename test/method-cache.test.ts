/**
 * `proxy.method` answered from JS without asking Python (shim/methods.c, MethodCache in
 * src/proxy.ts): every way the answer can change gives the right answer at the next read,
 * what cannot be watched is never cached, and the cache keeps nothing alive.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { py, type PyObject } from "../src/index.ts";
import { stateOf } from "../src/proxy.ts";
import { defineModule } from "./helpers.ts";

const minor = Number(py.version.split(".")[1]);
/** Objects with an instance dict are cached only where dicts can be watched (3.12+). */
const dictsCached = minor >= 12;

defineModule(
  "t_mcache",
  `
import collections, gc, sys, threading

class Counter:
    def __init__(self):
        self.n = 0
    def bump(self, k):
        self.n += k
        return self.n
    def other(self, k):
        return -k

class Base:
    def hello(self):
        return "base"
class Child(Base):
    pass

class Slotted:
    __slots__ = ("n",)
    def __init__(self):
        self.n = 0
    def bump(self, k):
        self.n += k
        return self.n

class Other:
    @property
    def bump(self):
        return "a property"

class Dynamic:
    def __getattr__(self, name):
        return lambda *a: ("dynamic", name)
    def bump(self, k):
        return k

class Everything:
    def __getattribute__(self, name):
        if name == "bump":
            return lambda k: ("intercepted", k)
        return object.__getattribute__(self, name)
    def bump(self, k):
        return k

class Methods:
    def m(self):
        return "m"
    @classmethod
    def cm(cls):
        return cls.__name__
    @staticmethod
    def sm(x):
        return x * 2

def new(cls):
    return cls()

def replace_in_thread(cls, name, value):
    t = threading.Thread(target=setattr, args=(cls, name, value))
    t.start()
    t.join()

def refcount(o):
    return sys.getrefcount(o)

def count_of(cls):
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is cls)
`,
);

// `any`: these tests read Python attributes by name throughout
const m: any = py.import("t_mcache");
const fresh = (cls: string): any => m.new(m[cls]);
const cached = (p: PyObject, name: string): boolean => stateOf(p)?.mc?.names.has(name) === true;

describe("answers stay right", () => {
  test("a method read twice is the same function, and is cached where it can be", () => {
    const c = fresh("Counter");
    expect(c.bump).toBe(c.bump);
    expect(c.bump(2)).toBe(2);
    expect(cached(c, "bump")).toBe(dictsCached);
    const s = fresh("Slotted");
    expect(s.bump(3)).toBe(3);
    expect(s.bump).toBe(s.bump);
    expect(cached(s, "bump")).toBe(true); // no instance dict: every version
  });

  test("the class attribute replaced, by a function, a non-callable and a property", () => {
    py.exec("import t_mcache; t_mcache.Replaced = type('Replaced', (t_mcache.Counter,), {})");
    const c = fresh("Replaced");
    expect(c.bump(1)).toBe(1);
    expect(c.bump(1)).toBe(2);
    m.Replaced.bump = m.Counter.other;
    expect(c.bump(5)).toBe(-5);
    m.Replaced.bump = 5;
    expect(c.bump).toBe(5);
    py.exec("t_mcache.Replaced.bump = property(lambda self: 'prop')");
    expect(c.bump).toBe("prop");
    py.exec("del t_mcache.Replaced.bump"); // back to Counter.bump
    expect(c.bump(1)).toBe(3);
  });

  test("a base class modified", () => {
    const c = fresh("Child");
    expect(c.hello()).toBe("base");
    expect(c.hello()).toBe("base");
    py.exec("import t_mcache; t_mcache.Base.hello = lambda self: 'changed'");
    expect(c.hello()).toBe("changed");
    py.exec("t_mcache.Child.hello = 42");
    expect(c.hello).toBe(42);
    py.exec("del t_mcache.Child.hello; t_mcache.Base.hello = lambda self: 'base'");
  });

  test("an instance attribute shadows the method, then is deleted", () => {
    const c = fresh("Counter");
    expect(c.bump(1)).toBe(1);
    c.bump = 5; // setattr from JS
    expect(c.bump).toBe(5);
    delete c.bump;
    expect(c.bump(1)).toBe(2);
    expect(c.bump(1)).toBe(3);
    py.exec("import t_mcache");
    const set = py.eval("lambda o, v: setattr(o, 'bump', v)") as PyObject;
    set(c, "from python");
    expect(c.bump).toBe("from python");
    py.eval("lambda o: o.__dict__.pop('bump')")(c);
    expect(c.bump(1)).toBe(4);
    py.eval("lambda o: o.__dict__.update(bump=7)")(c);
    expect(c.bump).toBe(7);
    py.eval("lambda o: o.__dict__.clear()")(c);
    expect(c.bump).toBeInstanceOf(Function);
  });

  test("the instance dict replaced (the old one freed, or kept alive elsewhere)", () => {
    const c = fresh("Counter");
    expect(c.bump(1)).toBe(1);
    py.eval("lambda o: setattr(o, '__dict__', {'n': 10, 'bump': 'replaced'})")(c);
    expect(c.bump).toBe("replaced");
    py.eval("lambda o: setattr(o, '__dict__', {'n': 10})")(c);
    expect(c.bump(1)).toBe(11);
    py.exec("import t_mcache; t_mcache.kept = []");
    py.eval("lambda o: (t_mcache.kept.append(o.__dict__), setattr(o, '__dict__', {'n': 0, 'bump': 'again'}))")(c);
    expect(c.bump).toBe("again");
  });

  test("the instance dict stays the same object, with its items in order", () => {
    py.exec("import t_mcache; t_mcache.held = t_mcache.Counter(); t_mcache.held.a = 1; t_mcache.held.b = 2; t_mcache.held_dict = vars(t_mcache.held)");
    const c = m.held;
    expect(c.bump(1)).toBe(1);
    expect(c.bump(1)).toBe(2);
    expect(py.eval("vars(t_mcache.held) is t_mcache.held_dict") as boolean).toBe(true);
    expect(py.eval("list(vars(t_mcache.held).items())")).toEqual([["n", 2], ["a", 1], ["b", 2]]);
    py.exec("t_mcache.held_dict['bump'] = 'through the held dict'");
    expect(c.bump).toBe("through the held dict");
  });

  test("__class__ reassigned", () => {
    const c = fresh("Counter");
    expect(c.bump(1)).toBe(1);
    py.eval("lambda o, k: setattr(o, '__class__', k)")(c, m.Other);
    expect(c.bump).toBe("a property");
    py.eval("lambda o, k: setattr(o, '__class__', k)")(c, m.Counter);
    expect(c.bump(1)).toBe(2);
  });

  test("__slots__ classes: class changes are seen", () => {
    const s = fresh("Slotted");
    expect(s.bump(2)).toBe(2);
    py.exec("import t_mcache; t_mcache.Slotted.bump = lambda self, k: 'new'");
    expect(s.bump(1)).toBe("new");
    py.exec("t_mcache.Slotted.bump = lambda self, k: self.n + k");
    expect(s.bump(1)).toBe(3);
  });

  test("builtin methods (deque.append) are cached and work", () => {
    const d: any = py.eval("__import__('collections').deque()");
    d.append(1);
    d.append(2);
    expect(cached(d, "append")).toBe(true);
    expect(py.builtins["list"](d)).toEqual([1, 2]);
    expect(d.append).toBe(d.append);
  });

  test("classmethod, staticmethod, property", () => {
    const o = fresh("Methods");
    for (let i = 0; i < 2; i++) {
      expect(o.m()).toBe("m");
      expect(o.cm()).toBe("Methods");
      expect(o.sm(4)).toBe(8);
      expect(cached(o, "cm")).toBe(false); // bound to the class, not to o
    }
    const p = fresh("Other");
    expect(p.bump).toBe("a property");
    expect(p.bump).toBe("a property");
  });

  test("__getattr__ and __getattribute__ classes are never cached", () => {
    const d = fresh("Dynamic");
    expect(d.bump(1)).toBe(1);
    expect(d.bump(1)).toBe(1);
    expect(cached(d, "bump")).toBe(false);
    expect(d.anything()).toEqual(["dynamic", "anything"]);
    const e = fresh("Everything");
    expect(e.bump(3)).toEqual(["intercepted", 3]);
    expect(cached(e, "bump")).toBe(false);
  });

  test("a __getattribute__ added to the class later takes over", () => {
    py.exec("import t_mcache; t_mcache.Late = type('Late', (t_mcache.Slotted,), {'__slots__': ()})");
    const s = fresh("Late");
    expect(s.bump(1)).toBe(1);
    expect(cached(s, "bump")).toBe(true);
    py.exec("t_mcache.Late.__getattribute__ = lambda self, name: 'late'");
    expect(s.bump).toBe("late");
  });

  test("the type modified from another Python thread", () => {
    const c = fresh("Counter");
    py.exec("import t_mcache; t_mcache.Threaded = type('Threaded', (t_mcache.Counter,), {})");
    const t = fresh("Threaded");
    expect(t.bump(1)).toBe(1);
    m.replace_in_thread(m.Threaded, "bump", 99);
    expect(t.bump).toBe(99);
    expect(c.bump(1)).toBe(1); // another class, untouched
  });

  test("a method answer is not reused after the proxy is disposed", () => {
    const c = fresh("Counter");
    c.bump(1);
    c[Symbol.dispose]();
    expect(() => c.bump).toThrow(/disposed/);
  });
});

describe("lifetimes", () => {
  test("the cache holds the type only while proxies that used it live", () => {
    py.exec("import t_mcache; t_mcache.Temp = type('Temp', (t_mcache.Slotted,), {'__slots__': ()})");
    const before = m.refcount(m.Temp) as number;
    const proxies: any[] = [];
    for (let i = 0; i < 50; i++) {
      const s = fresh("Temp");
      s.bump(1);
      s.bump(1);
      proxies.push(s);
    }
    expect(m.refcount(m.Temp) as number).toBeGreaterThanOrEqual(before + 50);
    for (const p of proxies) p[Symbol.dispose]();
    expect(m.refcount(m.Temp)).toBe(before);
  });

  test("the instance dict is held only while the proxy lives", () => {
    py.exec("import t_mcache; t_mcache.one = t_mcache.Counter()");
    const rc = py.eval("lambda: __import__('sys').getrefcount(vars(t_mcache.one))") as () => number;
    const before = rc();
    const c = m.one;
    c.bump(1);
    c.bump(1);
    expect(rc()).toBe(dictsCached ? before + 1 : before);
    c[Symbol.dispose]();
    expect(rc()).toBe(before);
  });

  test("object counts stay flat over many method calls", () => {
    const c = fresh("Counter");
    const s = fresh("Slotted");
    for (let i = 0; i < 1000; i++) { c.bump(1); s.bump(1); }
    const counts = [m.count_of(m.Counter), m.count_of(m.Slotted), m.refcount(m.Counter), m.refcount(m.Slotted)];
    for (let i = 0; i < 20000; i++) { c.bump(1); s.bump(1); }
    expect([m.count_of(m.Counter), m.count_of(m.Slotted), m.refcount(m.Counter), m.refcount(m.Slotted)]).toEqual(counts);
  });
});

describe("Bun Workers", () => {
  test("a class changed by a Worker is seen by the main thread's cached proxies", async () => {
    const c = fresh("Counter");
    py.exec("import t_mcache; t_mcache.Shared = type('Shared', (t_mcache.Counter,), {})");
    const s = fresh("Shared");
    expect(s.bump(1)).toBe(1);
    const w = new Worker(join(import.meta.dir, "fixtures", "method-cache-worker.ts"));
    const reply = await new Promise<unknown>((resolve, reject) => {
      w.onmessage = (e) => resolve(e.data);
      w.onerror = (e) => reject(e);
      w.postMessage("go");
    });
    w.terminate();
    expect(reply).toBe("worker:-3");
    expect(s.bump(4)).toBe(-4); // the Worker set Shared.bump = Counter.other
    expect(c.bump(1)).toBe(1);
  });
});
