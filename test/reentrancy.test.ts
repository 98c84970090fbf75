// Re-entrancy and values read by user code while they are converted: getters and Proxy
// traps may call bunpy (main interpreter and contexts) and may change what is being
// converted; Python gets exactly what was read, or the call fails with a ConversionError.
// Also NUL characters in source and names, str subclasses in String(), and misuse of py.kw.
import { describe, expect, test } from "bun:test";
import { ConversionError, PythonError, PyRef, internals, py, type Context } from "../src/index.ts";
import { closedAfterAll, contextModes, defineModule } from "./helpers.ts";

defineModule(
  "t_reent",
  `
def t(*args, **kwargs):
    return [list(args), kwargs]

def ident(x):
    return x

class S(str):
    def __str__(self):
        return self

class R:
    def __repr__(self):
        return S("custom repr")
    def __str__(self):
        return S("custom str")
`,
);

const { context, keep } = closedAfterAll();

function thrown(fn: () => unknown): any {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error("expected a throw");
}

describe("calls made while arguments are encoded", () => {
  test("a getter calling py.eval does not change the outer call's arguments (issue 9, item 3)", () => {
    const got = py.call("t_reent", "t", [
      "secret",
      {
        get a() {
          py.eval("['evil', 1]");
          return 1;
        },
      },
    ]);
    expect(got).toEqual([["secret", { a: 1 }], {}]);
  });

  test("nested calls of every kind inside getters, three levels deep", () => {
    const d = py.eval("__import__('collections').OrderedDict(k=1)") as any;
    const inner = {
      get x() {
        // a compile, a cached eval, an attribute, a proxy call, a module call
        return [py.eval("2 ** 10"), py.eval("2 ** 10"), d.get("k"), py.call("t_reent", "ident", [{ y: "deep" }])];
      },
    };
    const middle = {
      get m() {
        return py.call("t_reent", "ident", [["mid", inner]]);
      },
    };
    const got = py.call("t_reent", "t", ["a", middle, "z"], {
      kw: {
        get v() {
          return py.call("operator", "add", [40, 2]);
        },
      },
    });
    expect(got).toEqual([["a", { m: ["mid", { x: [1024, 1024, 1, { y: "deep" }] }] }, "z"], { kw: { v: 42 } }]);
  });

  test("a Proxy whose traps call bunpy converts to what the traps returned", () => {
    const target = { a: 1, b: 2 };
    const p = new Proxy(target, {
      get(t, k) {
        py.exec("trap_ran = True");
        return typeof k === "string" ? `${String(Reflect.get(t, k))}!` : Reflect.get(t, k);
      },
      ownKeys(t) {
        py.eval("1 + 1");
        return Reflect.ownKeys(t);
      },
    });
    expect(py.call("t_reent", "ident", [[p, "after"]])).toEqual([{ a: "1!", b: "2!" }, "after"]);
    expect(py.eval("trap_ran")).toBe(true);
  });

  test("proxy methods, setattr and setitem with getters that call bunpy", () => {
    const d = py.eval("__import__('collections').OrderedDict()") as any;
    d.setItem(
      "key",
      {
        get v() {
          py.eval("['evil']");
          return "value";
        },
      },
    );
    expect(d.toJS()).toEqual({ key: { v: "value" } });
    const ns = py.eval("type('NS', (), {})()") as any;
    ns.attr = [
      "x",
      {
        get g() {
          return py.eval("'nested'");
        },
      },
    ];
    expect(ns.attr).toEqual(["x", { g: "nested" }]);
  });

  test("a JS function returned to Python with a getter that calls back", () => {
    py.exec("def call_it(f):\n    return f()");
    const value = py.call("t_reent", "t", [
      "outer",
      () => ({
        get deep() {
          return py.call("t_reent", "ident", ["from getter"]);
        },
      }),
    ]);
    expect((value as any)[0][0]).toBe("outer");
    const r = py.call("__main__", "call_it", [
      () => ({
        get deep() {
          return py.call("t_reent", "ident", ["from getter"]);
        },
      }),
    ]);
    expect(r).toEqual({ deep: "from getter" });
  });

  test("a proxy disposed by a getter after it was written is still valid when Python reads it", () => {
    const obj = py.eval("object()") as any;
    const got = py.call("t_reent", "t", [
      obj,
      {
        get a() {
          obj[Symbol.dispose]();
          py.eval("0"); // a nested call must not drop the handle the outer message holds
          return 1;
        },
      },
    ]) as any;
    expect(got[0][1]).toEqual({ a: 1 });
    expect(String(got[0][0])).toContain("object object");
  });

  test("a nested call that shrinks a large buffer: the outer message is put back whole", () => {
    const big = "x".repeat(6 << 20); // past the size at which the shim trims its buffer
    const got = py.call("t_reent", "t", [
      big,
      {
        get a() {
          return py.eval("'small'");
        },
      },
      "é".repeat(1000),
    ]) as any;
    expect(got[0][0].length).toBe(big.length);
    expect(got[0][0] === big).toBe(true);
    expect(got[0].slice(1)).toEqual([{ a: "small" }, "é".repeat(1000)]);
  });

  test("a ConversionError from a call a getter made keeps its own path", () => {
    const e = thrown(() =>
      py.call("t_reent", "ident", [
        {
          get a() {
            return py.call("t_reent", "ident", [[Symbol("inner")]]);
          },
        },
      ]),
    );
    expect(e).toBeInstanceOf(ConversionError);
    expect(e.path).toBe("args[0][0]");
    expect(e.bunpyPath).toBe("args[0].a");
  });

  test("dropped proxies and nested calls leave the interpreter healthy", () => {
    for (let i = 0; i < 2000; i++) {
      py.call("t_reent", "ident", [
        {
          get a() {
            return (py.eval(`[${i}]`) as any[])[0];
          },
        },
      ]);
    }
    expect(py.call("operator", "add", [1, 2])).toBe(3);
  });
});

describe("containers changed while they are converted (issue 9, item 4)", () => {
  test("an argument array growing from a getter is a ConversionError, not kwargs", () => {
    const args: unknown[] = [];
    args.push({
      get a() {
        args.push({ injected_kw: 42 });
        return 1;
      },
    });
    const e = thrown(() => py.call("t_reent", "t", args));
    expect(e).toBeInstanceOf(ConversionError);
    expect(e.path).toBe("args");
    expect(e.message).toContain("changed while it was converted");
  });

  test("a nested array growing or shrinking is a ConversionError naming its path", () => {
    const arr: unknown[] = [1, 2];
    arr.push({
      get g() {
        arr.push("more");
        return 0;
      },
    });
    const e = thrown(() => py.call("t_reent", "t", ["x", { a: [0, arr] }]));
    expect(e).toBeInstanceOf(ConversionError);
    expect(e.path).toBe("args[1].a[1]");
    const shrink: unknown[] = [
      {
        get g() {
          shrink.length = 1;
          return 0;
        },
      },
      "gone",
    ];
    expect(thrown(() => py.call("t_reent", "ident", [shrink])).path).toBe("args[0]");
  });

  test("Map.set, Map.delete and Set.add from getters are ConversionErrors", () => {
    const m = new Map<unknown, unknown>([["a", 1]]);
    m.set("b", {
      get g() {
        m.set("c", 3);
        return 1;
      },
    });
    const e1 = thrown(() => py.call("t_reent", "ident", [m]));
    expect(e1).toBeInstanceOf(ConversionError);
    expect(e1.path).toBe("args[0]");
    const m2 = new Map<unknown, unknown>();
    m2.set("a", {
      get g() {
        m2.delete("b");
        return 1;
      },
    });
    m2.set("b", 2);
    expect(thrown(() => py.call("t_reent", "ident", [m2]))).toBeInstanceOf(ConversionError);
    const s = new Set<unknown>();
    s.add({
      get g() {
        s.add("x");
        return 1;
      },
    });
    expect(thrown(() => py.call("t_reent", "ident", [s]))).toBeInstanceOf(ConversionError);
  });

  test("object keys added or deleted by getters are ConversionErrors", () => {
    const added: Record<string, unknown> = {
      get a() {
        added["extra"] = 1;
        return 1;
      },
    };
    expect(thrown(() => py.call("t_reent", "ident", [{ o: added }])).path).toBe("args[0].o");
    const deleted: Record<string, unknown> = {
      get a() {
        delete deleted["b"];
        return 1;
      },
      b: 2,
    };
    expect(thrown(() => py.call("t_reent", "ident", [deleted])).path).toBe("args[0]");
    const kwargs: Record<string, unknown> = {
      get a() {
        kwargs["injected"] = 1;
        return 1;
      },
    };
    expect(thrown(() => py.call("t_reent", "t", [], kwargs)).path).toBe("kwargs");
  });

  test("after a failed conversion the next call is clean", () => {
    const args: unknown[] = [
      {
        get a() {
          args.push("x");
          return 1;
        },
      },
    ];
    expect(() => py.call("t_reent", "t", args)).toThrow(ConversionError);
    expect(py.call("t_reent", "t", [1], { k: 2 })).toEqual([[1], { k: 2 }]);
  });
});

describe("errors with paths (issue 9, item 18)", () => {
  test("py.kw() passed to py.call is a TypeError that says what to do", () => {
    // @ts-expect-error py.call takes keyword arguments as a plain object
    const e = thrown(() => py.call("json", "dumps", [[1]], py.kw({ indent: 1 })));
    expect(e).toBeInstanceOf(TypeError);
    expect(e.message).toContain("plain object");
    expect(py.call("json", "dumps", [[1]], { indent: 1 })).toBe("[\n 1\n]");
  });

  test("a Map key whose toString throws gives a ConversionError with a path, not the raw error", () => {
    const key = {
      toString() {
        throw new Error("boom");
      },
    };
    const e = thrown(() => py.call("t_reent", "ident", [{ m: new Map<unknown, unknown>([[key, Symbol("x")]]) }]));
    expect(e).toBeInstanceOf(ConversionError);
    expect(e.path).toBe("args[0].m[key 0]");
  });

  test("a Map value failing under a string key names the key", () => {
    const e = thrown(() => py.call("t_reent", "ident", [new Map([["k", Symbol("x")]])]));
    expect(e.path).toBe("args[0][k]");
  });

  test("a getter that throws: the same error object, carrying the path in bunpyPath", () => {
    class Mine extends Error {}
    const err = new Mine("from getter");
    const e = thrown(() =>
      py.call("t_reent", "ident", [
        {
          a: [
            0,
            {
              get b() {
                throw err;
              },
            },
          ],
        },
      ]),
    );
    expect(e).toBe(err);
    expect(e.bunpyPath).toBe("args[0].a[1].b");
    expect(py.call("operator", "add", [1, 2])).toBe(3);
  });

  test("Proxies of Maps, Sets, Dates and buffers are ConversionErrors, never an empty or wrong value", () => {
    for (const target of [new Map([[1, 2]]), new Set([1]), new Date(0), new ArrayBuffer(4), new Uint8Array(4), new Float64Array(1)]) {
      const e = thrown(() => py.call("t_reent", "ident", [{ v: new Proxy(target, {}) }]));
      expect(e).toBeInstanceOf(ConversionError);
      expect(e.path).toBe("args[0].v");
      expect(e.message).toContain("Proxy");
    }
    // arrays and plain objects read through a Proxy are fine
    expect(py.call("t_reent", "ident", [new Proxy([1, { a: 2 }], {})])).toEqual([1, { a: 2 }]);
    // a SharedArrayBuffer and a DataView are bytes
    const sab = new SharedArrayBuffer(3);
    new Uint8Array(sab).set([1, 2, 3]);
    expect(py.call("t_reent", "ident", [sab])).toEqual(new Uint8Array([1, 2, 3]));
    expect(py.call("t_reent", "ident", [new DataView(sab, 1, 2)])).toEqual(new Uint8Array([2, 3]));
  });

  test("a message beyond the buffer's limit is a ConversionError, not a RangeError", () => {
    const w = internals.runtime().wire;
    const saved = w.maxMessage;
    w.maxMessage = 1 << 20;
    try {
      const e = thrown(() => py.call("t_reent", "ident", [["ok", "é".repeat(1 << 20)]]));
      expect(e).toBeInstanceOf(ConversionError);
      expect(e.path).toBe("args[0][1]");
      expect(e.message).toContain("too large");
      expect(thrown(() => py.call("t_reent", "ident", [new Uint8Array(2 << 20)]))).toBeInstanceOf(ConversionError);
    } finally {
      w.maxMessage = saved;
    }
    expect(py.call("t_reent", "ident", ["é".repeat(1 << 20)])).toHaveLength(1 << 20);
  });
});

describe("NUL characters (issue 9, item 5)", () => {
  test("py.eval and py.exec refuse source with a NUL as Python does", () => {
    for (const run of [() => py.eval("1\0+2"), () => py.exec("x='a'\0\nx='b'")]) {
      const e = thrown(run);
      expect(e).toBeInstanceOf(PythonError);
      expect(e.type).toBe("SyntaxError");
      expect(e.message).toContain("null bytes");
    }
    expect(py.eval("1+2")).toBe(3);
  });

  test("a NUL in a module name is a ValueError; in a function or attribute name, an AttributeError", () => {
    const e = thrown(() => py.call("os\0junk", "getpid"));
    expect(e).toBeInstanceOf(PythonError);
    expect(e.type).toBe("ValueError");
    expect(e.message).toContain("null character");
    expect(thrown(() => py.import("os\0junk")).type).toBe("ValueError");
    expect(thrown(() => py.call("os", "getpid\0junk")).type).toBe("AttributeError");
    const os = py.import("os") as any;
    expect(os["getpid\0junk"]).toBeUndefined();
    expect(py.call("t_reent", "ident", ["a\0b"])).toBe("a\0b");
  });

  for (const mode of contextModes) {
    test(`${mode} context: eval, exec and module names with NUL`, async () => {
      const ctx = await context(mode);
      for (const run of [() => ctx.eval("1\0+2"), () => ctx.exec("x='a'\0\nx='b'")]) {
        const e = await run().catch((x: unknown) => x);
        expect(e).toBeInstanceOf(PythonError);
        expect(e.type).toBe("SyntaxError");
      }
      const e = await ctx.call("os\0junk", "getpid").catch((x: unknown) => x);
      expect(e.type).toBe("ValueError");
      expect(await ctx.eval("1+2")).toBe(3);
      expect(await ctx.call("builtins", "str", ["a\0b"])).toBe("a\0b");
    });
  }
});

describe("String() of str subclasses (issue 9, item 15)", () => {
  test("a str subclass whose __str__ returns itself becomes a JS string", () => {
    const s = py.call("t_reent", "S", ["<b>safe</b>"]) as any;
    expect(typeof s).toBe("function"); // a proxy: subclasses are not converted
    expect(String(s)).toBe("<b>safe</b>");
    expect(`${s}`).toBe("<b>safe</b>");
    expect(s.toString()).toBe("<b>safe</b>");
    expect(typeof s.toString()).toBe("string");
    const r = py.call("t_reent", "R", []) as any;
    expect(String(r)).toBe("custom str");
    expect(Bun.inspect(r)).toBe("custom repr");
  });
});

for (const mode of contextModes) {
  describe(`${mode} context`, () => {
    test("a getter calling py.eval during ctx.call gets a main-interpreter proxy (issue 9, item 1)", async () => {
      const ctx = await context(mode);
      py.exec("import collections\nd = collections.deque()");
      let ref: any;
      const len = await ctx.call("builtins", "len", [
        {
          get a() {
            ref = py.eval("d");
            return 1;
          },
        },
      ]);
      expect(len).toBe(1);
      expect(ref).not.toBeInstanceOf(PyRef);
      expect(typeof ref).toBe("function"); // a main-interpreter proxy
      ref.append(1);
      expect(py.eval("len(d)")).toBe(1);
      await ctx.exec("def f(x):\n    for i in range(1000): x.append([i])");
      // a main-interpreter object cannot go to a context
      await expect(ctx.call("__main__", "f", [ref])).rejects.toThrow(ConversionError);
      py.exec("d.clear()");
      expect(py.eval("len(d)")).toBe(0);
    });

    test("ctx.call inside a getter of ctx.call: both get their own arguments", async () => {
      const ctx = await context(mode);
      let inner: Promise<unknown> | undefined;
      const outer = ctx.call("builtins", "list", [
        [
          "a",
          {
            get g() {
              inner = ctx.call("builtins", "list", [["inner", py.eval("'main'")]]);
              return "b";
            },
          },
        ],
      ]);
      expect(await outer).toEqual(["a", { g: "b" }]);
      expect(await inner).toEqual(["inner", "main"]);
    });

    test("a PyRef read from a context inside a py.call getter stays the context's", async () => {
      const ctx = await context(mode);
      const ref = (await ctx.eval("object()")) as PyRef;
      let started: Promise<unknown> | undefined;
      const r = py.call("t_reent", "t", [
        {
          get a() {
            started = ctx.call("builtins", "repr", [ref]);
            return 1;
          },
        },
      ]);
      expect(r).toEqual([[{ a: 1 }], {}]);
      expect(await started).toContain("object object");
    });

    test("pool.call with a getter that calls py.eval", async () => {
      const pool = await py.pool({ size: 1, mode });
      try {
        let ref: any;
        const n = await pool.call("builtins", "len", [
          {
            get a() {
              ref = py.eval("__import__('collections').deque([1, 2])");
              return 1;
            },
          },
        ]);
        expect(n).toBe(1);
        expect(ref).not.toBeInstanceOf(PyRef);
        expect(py.call("builtins", "list", [ref])).toEqual([1, 2]);
      } finally {
        await pool.close();
      }
    });

    test("a JS function called by the context returns a value whose getter calls bunpy", async () => {
      const ctx = await context(mode);
      py.register("reent_answer", (x: number) => ({
        get a() {
          return [py.eval("'main'"), py.call("operator", "add", [x, 1])];
        },
      }));
      await ctx.exec("import bunpy\ndef ask(x):\n    return bunpy.call('reent_answer', x)");
      expect(await ctx.call("__main__", "ask", [41])).toEqual({ a: ["main", 42] });
    });

    test("ctx.callSync inside a getter of py.call", () => {
      return context(mode).then((ctx) => {
        const got = py.call("t_reent", "t", [
          "outer",
          {
            get a() {
              return ctx.callSync("builtins", "list", [["sync", { n: 1 }]]);
            },
          },
        ]);
        expect(got).toEqual([["outer", { a: ["sync", { n: 1 }] }], {}]);
      });
    });

    test("py.context() with a sandbox policy, started from a getter", async () => {
      let started: Promise<Context> | undefined;
      const got = py.call("t_reent", "t", [
        "before",
        {
          get a() {
            started = py.context({ mode, sandbox: { denyImports: ["tabnanny"] } });
            return 1;
          },
        },
        "after",
      ]);
      expect(got).toEqual([["before", { a: 1 }, "after"], {}]);
      const ctx = keep(await started!);
      // a module nothing else imports: in worker mode an import already done by the main
      // interpreter is shared (docs/sandbox.md)
      await expect(ctx.exec("import tabnanny")).rejects.toThrow(PythonError);
      expect(await ctx.eval("1 + 1")).toBe(2);
    });

    test("a container changed by a getter during ctx.call rejects with a ConversionError", async () => {
      const ctx = await context(mode);
      const args: unknown[] = [];
      args.push({
        get a() {
          args.push({ injected_kw: 42 });
          return 1;
        },
      });
      await expect(ctx.call("__main__", "len", args)).rejects.toThrow(ConversionError);
      expect(await ctx.eval("2")).toBe(2);
    });
  });
}
