// Sandbox policies: a C audit hook with a policy per context. Each rule is checked both
// refusing (when on) and allowing (when off).
import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { py, type Context, type SandboxPolicy } from "../src/index.ts";
import { closedAfterAll, closeLeavingThreadBehind, contextModes, hasOwnGil } from "./helpers.ts";

const modes = contextModes;
const ATTEMPT = `
def attempt(code):
    try:
        exec(code, {})
        return "allowed"
    except PermissionError as e:
        return "refused: " + str(e)
    except Exception as e:
        return type(e).__name__ + ": " + str(e)
`;
const { keep } = closedAfterAll();
async function sandboxed(mode: "owngil" | "worker", sandbox?: SandboxPolicy) {
  const ctx = keep(await py.context({ mode, sandbox }));
  await ctx.exec(ATTEMPT);
  return ctx;
}
const attempt = (ctx: Context, code: string) => ctx.call("__main__", "attempt", [code]) as Promise<string>;

test("forking without exec is refused in the main interpreter, naming the rule", () => {
  expect(() => py.exec("import os\nos.fork()")).toThrow(/bunpy sandbox: os.fork is refused \(rule: no fork without exec\)/);
  expect(() => py.exec("import os\nos.forkpty()")).toThrow(/PermissionError/);
  expect(() => py.exec("import ctypes\nctypes.CDLL(None).fork")).toThrow(/no fork without exec/);
  // fork + exec (subprocess) stays allowed by default
  expect(py.eval("__import__('subprocess').run(['true']).returncode")).toBe(0);
});

for (const mode of modes) {
  describe(`${mode} context`, () => {
    test("by default: fork refused, everything else allowed", async () => {
      const ctx = await sandboxed(mode);
      expect(await attempt(ctx, "import os; os.fork()")).toMatch(/refused|fork not supported/);
      expect(await attempt(ctx, "import subprocess; subprocess.run(['true'], check=True)")).toBe("allowed");
      expect(await attempt(ctx, "import socket; socket.socket().close()")).toBe("allowed");
      expect(await attempt(ctx, "open('/etc/hostname').read()")).toBe("allowed");
    });

    test("processes: false refuses every way to start a process, known escapes included", async () => {
      const ctx = await sandboxed(mode, { processes: false });
      for (const code of [
        "import subprocess; subprocess.run(['true'])",
        "import os; os.system('true')",
        "import os; os.posix_spawn('/bin/true', ['true'], {})",
        "import _posixsubprocess; _posixsubprocess.fork_exec()",
      ])
        expect(await attempt(ctx, code)).toMatch(/refused: bunpy sandbox: .* \(rule: no processes\)/);
      // owngil subinterpreters refuse exec themselves (allow_exec = 0) before the audit hook
      expect(await attempt(ctx, "import os; os.execv('/bin/true', ['true'])")).toMatch(
        /rule: no processes|exec not supported for isolated subinterpreters/,
      );
      if (mode === "worker" || py.version >= "3.13") {
        // ctypes is multi-phase from 3.13 (3.12 refuses it in owngil contexts anyway)
        expect(await attempt(ctx, "import ctypes; ctypes.CDLL(None).system")).toMatch(/rule: no processes/);
      }
    });

    test("ctypes: false refuses ctypes", async () => {
      const ctx = await sandboxed(mode, { ctypes: false });
      expect(await attempt(ctx, "import ctypes; ctypes.CDLL(None)")).toMatch(/rule: no ctypes/);
    });

    test("sockets: false refuses sockets", async () => {
      const ctx = await sandboxed(mode, { sockets: false });
      expect(await attempt(ctx, "import socket; socket.socket()")).toMatch(/rule: no sockets/);
      expect(await attempt(ctx, "import socket; socket.create_connection(('127.0.0.1', 9))")).toMatch(/rule: no sockets/);
    });

    test("denyImports refuses listed modules and their submodules, others load", async () => {
      const ctx = await sandboxed(mode, { denyImports: ["xml", "wave"] });
      expect(await attempt(ctx, "import wave")).toMatch(/rule: denied imports/);
      expect(await attempt(ctx, "import xml.dom.minidom")).toMatch(/rule: denied imports/);
      expect(await attempt(ctx, "import colorsys")).toBe("allowed");
    });

    test("files: only inside the allowed directories; Python's own files stay readable", async () => {
      const dir = mkdtempSync(join(tmpdir(), "bunpy-files-"));
      writeFileSync(join(dir, "in.txt"), "inside");
      const outside = join(mkdtempSync(join(tmpdir(), "bunpy-out-")), "out.txt");
      writeFileSync(outside, "outside");
      const ctx = await sandboxed(mode, { files: [dir] });
      expect(await attempt(ctx, `assert open(${JSON.stringify(join(dir, "in.txt"))}).read() == 'inside'`)).toBe("allowed");
      expect(await attempt(ctx, `open(${JSON.stringify(join(dir, "new.txt"))}, 'w').write('x')`)).toBe("allowed");
      expect(await attempt(ctx, `open(${JSON.stringify(outside)}).read()`)).toMatch(/rule: files only in allowed directories/);
      expect(await attempt(ctx, `open(${JSON.stringify(join(dir, "..", "escape.txt"))}, 'w')`)).toMatch(/refused/);
      expect(await attempt(ctx, "import email.mime.text")).toBe("allowed"); // reads stdlib files
    });

    test("maxThreads: starting more threads than the cap is refused; ended threads free their place", async () => {
      const ctx = await sandboxed(mode, { maxThreads: 2 });
      const other = await sandboxed(mode); // no cap
      const THREADS = `
import threading
stop = threading.Event()
started = []
def try_start():
    try:
        t = threading.Thread(target=stop.wait)
        t.start()
        started.append(t)
        return "ok"
    except PermissionError as e:
        return str(e)
def release():
    stop.set()
    for t in started:
        t.join()
    started.clear()
    stop.clear()
`;
      await ctx.exec(THREADS);
      await other.exec(THREADS);
      const tryStart = (c: Context) => c.call("__main__", "try_start", []) as Promise<string>;
      try {
        expect(await tryStart(ctx)).toBe("ok");
        expect(await tryStart(ctx)).toBe("ok");
        // 3.12+: the audit event of _thread; 3.11 has none, threading.Thread.start checks
        const refused = /bunpy sandbox: (_thread\.start_\w+|threading\.Thread\.start) is refused \(rule: maxThreads\)/;
        expect(await tryStart(ctx)).toMatch(refused);
        if (py.version >= "3.12")
          expect(await attempt(ctx, "import _thread; _thread.start_new_thread(print, ())")).toMatch(/rule: maxThreads/);
        // other contexts and the main interpreter have no cap
        for (let i = 0; i < 3; i++) expect(await tryStart(other)).toBe("ok");
        expect(py.eval("(lambda t: (t.start(), t.join()))(__import__('threading').Thread(target=int))")).toEqual([null, null]);
        await ctx.call("__main__", "release", []);
        expect(await tryStart(ctx)).toBe("ok");
      } finally {
        // a failed expectation must not leave threads behind
        await ctx.call("__main__", "release", []);
        await other.call("__main__", "release", []);
      }
    });

    test("maxThreads: 0 refuses every thread; an executor's submit raises PermissionError", async () => {
      const ctx = await sandboxed(mode, { maxThreads: 0 });
      expect(await attempt(ctx, "import threading; threading.Thread(target=int).start()")).toMatch(/rule: maxThreads/);
      expect(
        await attempt(ctx, "from concurrent.futures import ThreadPoolExecutor\nwith ThreadPoolExecutor(2) as ex: ex.submit(int)"),
      ).toMatch(/rule: maxThreads/);
      expect(await attempt(ctx, "x = sum(range(10))")).toBe("allowed");
    });

    test("rules that are off allow what others refuse (policies are per context)", async () => {
      const strict = await sandboxed(mode, { processes: false, sockets: false });
      const loose = await sandboxed(mode, { processes: true, sockets: true });
      expect(await attempt(strict, "import os; os.system('true')")).toMatch(/refused/);
      expect(await attempt(loose, "import os; os.system('true')")).toBe("allowed");
      expect(await attempt(loose, "import socket; socket.socket().close()")).toBe("allowed");
      // and the main interpreter is not affected by a context's policy
      expect(py.eval("__import__('os').system('true')")).toBe(0);
    });
  });
}

test("bad policies are rejected with a TypeError", async () => {
  await expect(py.context({ sandbox: { procesess: false } as never })).rejects.toThrow(/unknown rule "procesess"/);
  await expect(py.context({ sandbox: { files: "/tmp" } as never })).rejects.toThrow(/files must be an array/);
  for (const bad of [-1, 1.5, "2", Number.NaN, 2 ** 53])
    await expect(py.context({ sandbox: { maxThreads: bad as never } })).rejects.toThrow(/maxThreads must be a non-negative integer/);
  await expect(py.context({ sandbox: { requireKernel: "yes" as never } })).rejects.toThrow(/requireKernel must be a boolean/);
});

// A thread that outlives its owngil context's close (it ignores interrupts) keeps the
// context's policy: the interpreter is left behind, not its rules.
test.skipIf(!hasOwnGil)(
  "a thread still running in an owngil interpreter left behind at close keeps its policy",
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "bunpy-left-"));
    const flag = join(dir, "go");
    const out = join(dir, "result");
    const ctx = await py.context({ mode: "owngil", sandbox: { ctypes: false } });
    await ctx.exec(`
import os, threading, time
def stubborn():
    deadline = time.monotonic() + 30
    while not os.path.exists(${JSON.stringify(flag)}) and time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except BaseException:
            pass                      # ignores the interrupts of close()
    try:
        import ctypes
        result = "imported"
    except PermissionError:
        result = "refused"
    except BaseException as e:
        result = type(e).__name__
    with open(${JSON.stringify(out)}, "w") as f:
        f.write(result)
threading.Thread(target=stubborn, daemon=True).start()
`);
    expect(await closeLeavingThreadBehind(ctx, flag, out)).toBe("refused");
    expect(py.eval("1 + 1")).toBe(2);
  },
  30_000,
);
