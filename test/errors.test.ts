/**
 * Python exceptions as seen from JS: PythonError fields, custom exception classes,
 * syntax errors with positions, lookup failures, argument checks, and exceptions that
 * would end a normal Python program (SystemExit, KeyboardInterrupt).
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BunpyError, ConversionError, PythonError, py } from "../src/index.ts";
import { defineModule } from "./helpers.ts";

defineModule(
  "t_errors",
  `
import sys

class AppError(Exception):
    """A custom exception class."""
    def __init__(self, code, text):
        super().__init__(f"{text} (code {code})")
        self.code = code

def raise_app():
    raise AppError(7, "app failed")

def raise_key():
    return {}["missing-key"]

def raise_chained():
    try:
        raise_key()
    except KeyError as e:
        raise ValueError("while handling") from e

def do_exit(code):
    sys.exit(code)

def raise_kbd():
    raise KeyboardInterrupt("pressed")

def raise_unicode():
    raise ValueError("bad value: é中😀")

def add_path(p):
    sys.path.insert(0, p)

def exit_count():
    return 1
`,
);

// A module in a real file, so that tracebacks show its source lines.
const dir = mkdtempSync(join(tmpdir(), "bunpy-errors-"));
writeFileSync(
  join(dir, "t_errors_file.py"),
  "def innermost(x):\n    return 1 / x\n\ndef middle(x):\n    return innermost(x) + 1\n\ndef outer_call(x):\n    return middle(x)\n",
);
py.call("t_errors", "add_path", [dir]);

function catchError(fn: () => unknown): PythonError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(PythonError);
    return e as PythonError;
  }
  throw new Error("expected a PythonError, nothing was thrown");
}

describe("PythonError fields", () => {
  test("type, module, message, pythonMessage and traceback", () => {
    const e = catchError(() => py.call("t_errors_file", "outer_call", [0]));
    expect(e).toBeInstanceOf(BunpyError);
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe("PythonError");
    expect(e.type).toBe("ZeroDivisionError");
    expect(e.module).toBe("builtins");
    expect(e.pythonMessage).toBe("division by zero");
    expect(e.message).toBe("ZeroDivisionError: division by zero");
    expect(e.lineno).toBeUndefined();
    expect(e.offset).toBeUndefined();
    // the traceback names the Python frames, innermost last
    expect(e.traceback).toContain("Traceback (most recent call last)");
    const frames = ["outer_call", "middle", "innermost"].map((f) => e.traceback.indexOf(`in ${f}`));
    expect(frames.every((i) => i >= 0)).toBe(true);
    expect(frames).toEqual([...frames].sort((a, b) => a - b));
    expect(e.traceback).toContain("return 1 / x");
    expect(e.traceback).toContain(join(dir, "t_errors_file.py"));
    expect(e.traceback).toContain("line 2, in innermost");
    expect(e.traceback.trimEnd().endsWith("ZeroDivisionError: division by zero")).toBe(true);
  });

  test("errors from py.eval and py.exec", () => {
    const e = catchError(() => py.eval("[][1]"));
    expect(e.type).toBe("IndexError");
    expect(e.pythonMessage).toBe("list index out of range");
    expect(e.traceback).toContain("<py.eval>");
    const x = catchError(() => py.exec("a = 1\nb = undefined_name + a"));
    expect(x.type).toBe("NameError");
    expect(x.pythonMessage).toContain("undefined_name");
    expect(x.traceback).toContain("line 2");
  });

  test("KeyError and chained exceptions", () => {
    const k = catchError(() => py.call("t_errors", "raise_key"));
    expect(k.type).toBe("KeyError");
    expect(k.pythonMessage).toBe("'missing-key'");
    const c = catchError(() => py.call("t_errors", "raise_chained"));
    expect(c.type).toBe("ValueError");
    expect(c.pythonMessage).toBe("while handling");
    expect(c.traceback).toContain("KeyError");
    expect(c.traceback).toContain("direct cause");
  });

  test("non-ASCII messages survive", () => {
    const e = catchError(() => py.call("t_errors", "raise_unicode"));
    expect(e.pythonMessage).toBe("bad value: é中😀");
    expect(e.traceback).toContain("é中😀");
  });

  test("a custom exception class from py.exec", () => {
    const e = catchError(() => py.call("t_errors", "raise_app"));
    expect(e.type).toBe("AppError");
    expect(e.module).toBe("t_errors");
    expect(e.pythonMessage).toBe("app failed (code 7)");
    expect(e.message).toBe("AppError: app failed (code 7)");
    expect(e.traceback).toContain("raise_app");
    py.exec("class LocalError(LookupError):\n    pass\ndef _raise_local():\n    raise LocalError('local')");
    const l = catchError(() => py.call("__main__", "_raise_local"));
    expect(l.type).toBe("LocalError");
    expect(l.module).toBe("__main__");
    expect(l.pythonMessage).toBe("local");
  });

  test("an exception with an empty message", () => {
    const e = catchError(() => py.exec("raise RuntimeError"));
    expect(e.type).toBe("RuntimeError");
    expect(e.pythonMessage).toBe("");
  });
});

describe("syntax errors", () => {
  test("in eval, with line and column", () => {
    const e = catchError(() => py.eval("(1, 2"));
    expect(e.type).toBe("SyntaxError");
    expect(e.module).toBe("builtins");
    expect(e.lineno).toBe(1);
    expect(e.offset).toBe(1);
    expect(e.pythonMessage).toContain("never closed");
    expect(e.message).toContain("line 1");
    const f = catchError(() => py.eval("1 + * 2"));
    expect(f.type).toBe("SyntaxError");
    expect(f.lineno).toBe(1);
    expect(f.offset).toBeGreaterThan(0);
    // statements are not expressions
    expect(catchError(() => py.eval("x = 1")).type).toBe("SyntaxError");
  });

  test("in exec, with line and column", () => {
    const e = catchError(() => py.exec("x = 1\ny = 2\nz = (3 +\n"));
    expect(e.type).toBe("SyntaxError");
    expect(e.lineno).toBe(3);
    expect(e.offset).toBe(5);
    expect(e.message).toBe(`SyntaxError: ${e.pythonMessage} (line 3, column 5)`);
    const i = catchError(() => py.exec("if True:\n    a = 1\n      b = 2\n"));
    expect(i.type).toBe("IndentationError");
    expect(i.lineno).toBe(3);
    const d = catchError(() => py.exec("def f(:\n    pass"));
    expect(d.lineno).toBe(1);
    expect(d.offset).toBe(7);
  });

  test("a syntax error is not cached: the corrected code runs", () => {
    expect(() => py.eval("2 +")).toThrow(PythonError);
    expect(py.eval("2 + 3")).toBe(5);
  });
});

describe("lookups and arguments", () => {
  test("an unknown module is ModuleNotFoundError naming it", () => {
    const e = catchError(() => py.call("no_such_module", "f"));
    expect(e.type).toBe("ModuleNotFoundError");
    expect(e.pythonMessage).toContain("no_such_module");
    // and again: the failure is not cached as a module
    expect(catchError(() => py.call("no_such_module", "f")).type).toBe("ModuleNotFoundError");
    expect(catchError(() => py.import("no_such_module.sub")).type).toBe("ModuleNotFoundError");
  });

  test("an unknown function is AttributeError", () => {
    const e = catchError(() => py.call("math", "no_such_function", [1]));
    expect(e.type).toBe("AttributeError");
    expect(e.pythonMessage).toContain("no_such_function");
    expect(e.pythonMessage).toContain("math");
  });

  test("calling a non-callable is TypeError", () => {
    const e = catchError(() => py.call("math", "pi"));
    expect(e.type).toBe("TypeError");
    expect(e.pythonMessage).toContain("not callable");
  });

  test("args that are not an array are a TypeError", () => {
    expect(() => py.call("math", "sqrt", 4 as unknown as unknown[])).toThrow(TypeError);
    expect(() => py.call("math", "sqrt", "16" as unknown as unknown[])).toThrow(/args must be an array/);
    expect(() => py.call("math", "sqrt", { 0: 16, length: 1 } as unknown as unknown[])).toThrow(TypeError);
    expect(py.call("math", "sqrt", [16])).toBe(4);
  });

  test("wrong argument types are PythonErrors, not crashes", () => {
    const e = catchError(() => py.call("math", "sqrt", ["x"]));
    expect(e.type).toBe("TypeError");
    expect(catchError(() => py.call("math", "sqrt", [-1])).type).toBe("ValueError");
  });

  test("non-string module or source is a TypeError", () => {
    expect(() => py.call(5 as unknown as string, "f")).toThrow(TypeError);
    expect(() => py.eval(5 as unknown as string)).toThrow(TypeError);
    expect(() => py.exec(null as unknown as string)).toThrow(TypeError);
  });

  test("conversion problems are ConversionErrors, not PythonErrors", () => {
    expect(() => py.call("math", "sqrt", [Symbol("x")])).toThrow(ConversionError);
  });
});

describe("exceptions that end Python programs do not end the process", () => {
  test("SystemExit from sys.exit(3) becomes a PythonError", () => {
    const e = catchError(() => py.call("t_errors", "do_exit", [3]));
    expect(e.type).toBe("SystemExit");
    expect(e.pythonMessage).toBe("3");
    const s = catchError(() => py.exec("import sys\nsys.exit('bye')"));
    expect(s.type).toBe("SystemExit");
    expect(s.pythonMessage).toBe("bye");
    expect(catchError(() => py.exec("raise SystemExit")).type).toBe("SystemExit");
    expect(py.call("t_errors", "exit_count")).toBe(1);
    expect(py.eval("'still running'")).toBe("still running");
  });

  test("KeyboardInterrupt raised in Python becomes a PythonError", () => {
    const e = catchError(() => py.call("t_errors", "raise_kbd"));
    expect(e.type).toBe("KeyboardInterrupt");
    expect(e.pythonMessage).toBe("pressed");
    expect(catchError(() => py.exec("raise KeyboardInterrupt")).type).toBe("KeyboardInterrupt");
    expect(py.eval("6 * 7")).toBe(42);
  });

  test("GeneratorExit and BaseException subclasses too", () => {
    expect(catchError(() => py.exec("raise GeneratorExit('g')")).type).toBe("GeneratorExit");
    py.exec("class _Base(BaseException):\n    pass");
    expect(catchError(() => py.exec("raise _Base('b')")).type).toBe("_Base");
    expect(py.eval("1")).toBe(1);
  });
});

test("the Python error state is clean after an error", () => {
  for (let i = 0; i < 100; i++) expect(() => py.eval("1/0")).toThrow(PythonError);
  expect(py.eval("__import__('sys').exc_info()")).toEqual([null, null, null]);
  expect(py.call("operator", "add", [1, 2])).toBe(3);
});

describe("tracebacks are formatted when first read (issue 11)", () => {
  defineModule(
    "t_errors_late",
    `
import gc, weakref

refs = []

class Tracked(Exception):
    def __init__(self, text):
        super().__init__(text)
        refs.append(weakref.ref(self))

def outer_frame(n):
    return inner_frame(n)

def inner_frame(n):
    raise Tracked(f"late {n}")

def other_failure():
    raise KeyError("unrelated")

def alive():
    gc.collect()
    return sum(1 for r in refs if r() is not None)

def forget():
    refs.clear()

class Big:
    pass

held = []

def fail_holding(n):
    big = Big()              # only this frame's local refers to it
    held.append(weakref.ref(big))
    cause_of(n)

def cause_of(n):
    try:
        raise ValueError(n)
    except ValueError:
        local_in_context = Big()
        held.append(weakref.ref(local_in_context))
        raise RuntimeError("while handling")

def held_alive():
    return sum(1 for r in held if r() is not None)
`,
  );

  test("an error JS keeps holds no local variables of its frames (chained ones too), and still formats them", () => {
    let kept: PythonError | undefined;
    try {
      py.call("t_errors_late", "fail_holding", [7]);
    } catch (e) {
      kept = e as PythonError;
    }
    // freed at once, not when the JS error is collected (which may be never, for a tiny object)
    expect(py.call("t_errors_late", "held_alive", [])).toBe(0);
    const tb = kept!.traceback;
    expect(tb).toContain("fail_holding");
    expect(tb).toContain("cause_of");
    expect(tb).toContain("ValueError: 7");
    expect(tb).toContain("RuntimeError: while handling");
  });

  test("a traceback read after other calls, other errors and a gc shows the frames of its own raise", async () => {
    let late: PythonError | undefined;
    try {
      py.call("t_errors_late", "outer_frame", [1]);
    } catch (e) {
      late = e as PythonError;
    }
    // the interpreter runs other code, raises other exceptions, collects garbage
    for (let i = 0; i < 50; i++) {
      py.eval("sum(range(100))");
      expect(() => py.call("t_errors_late", "other_failure", [])).toThrow(PythonError);
    }
    py.exec("import gc; gc.collect()");
    Bun.gc(true);
    await Bun.sleep(1);
    const tb = late!.traceback;
    expect(tb).toContain("Traceback (most recent call last):");
    expect(tb).toContain("in outer_frame");
    expect(tb).toContain("in inner_frame");
    expect(tb).toContain("Tracked: late 1");
    expect(tb).not.toContain("KeyError");
    expect(late!.traceback).toBe(tb); // formatted once, then kept
    const stack = late!.stack!;
    expect(stack.split("\n")[0]).toBe("PythonError: Tracked: late 1");
    expect(stack).toContain("at inner_frame (");
    expect(late!.message).toBe("Tracked: late 1");
  });

  test("the exception is released once the traceback is read, or when the error is collected", async () => {
    py.call("t_errors_late", "forget", []);
    // made and read in a frame of its own, so that no stale reference to an error stays in
    // this frame's stack, which JavaScriptCore's collector scans conservatively
    const readHalf = (): void => {
      const kept: PythonError[] = [];
      for (let i = 0; i < 20; i++) {
        try {
          py.call("t_errors_late", "outer_frame", [i]);
        } catch (e) {
          kept.push(e as PythonError);
        }
      }
      expect(py.call("t_errors_late", "alive", [])).toBe(20); // held for the unread tracebacks
      for (const e of kept.slice(0, 10)) expect(e.traceback).toContain("inner_frame");
      expect(py.call("t_errors_late", "alive", [])).toBe(10);
    };
    readHalf();
    // errors dropped unread: collected, their exceptions released without another call
    for (let i = 0; i < 50 && py.call("t_errors_late", "alive", []) !== 0; i++) {
      Bun.gc(true);
      await Bun.sleep(10);
    }
    expect(py.call("t_errors_late", "alive", [])).toBe(0);
  });

  test("reading .message does not format the traceback", () => {
    py.call("t_errors_late", "forget", []);
    let err: PythonError | undefined;
    try {
      py.call("t_errors_late", "outer_frame", [2]);
    } catch (e) {
      err = e as PythonError;
    }
    expect(err!.message).toBe("Tracked: late 2");
    expect(err!.type).toBe("Tracked");
    expect(err!.module).toBe("t_errors_late");
    expect(err!.pythonMessage).toBe("late 2");
    expect(py.call("t_errors_late", "alive", [])).toBe(1); // still kept: nothing formatted it
    expect(Object.keys(err!)).toEqual([]);
    expect(err!.name).toBe("PythonError");
  });
});

test("an error still alive at py.close() keeps its traceback", () => {
  const dir = mkdtempSync(join(tmpdir(), "bunpy-close-tb-"));
  const script = join(dir, "close.ts");
  writeFileSync(
    script,
    `import { py } from ${JSON.stringify(join(import.meta.dir, "../src/index.ts"))};
py.exec("def deep():\\n    raise ValueError('after close')");
let err: any;
try { py.call("__main__", "deep", []); } catch (e) { err = e; }
py.close();
console.log(JSON.stringify({ tb: err.traceback, message: err.message }));
`,
  );
  const r = Bun.spawnSync([process.execPath, script], { env: process.env, stderr: "pipe" });
  expect(r.stderr.toString()).toBe("");
  const out = JSON.parse(r.stdout.toString());
  expect(out.message).toBe("ValueError: after close");
  expect(out.tb).toContain("in deep");
  expect(out.tb).toContain("ValueError: after close");
});
