// Process contexts: Python in a bunpy-host process (shim/host.c) behind a relay in the Bun
// process (shim/relay.c), with the same Context API. First the host's build and
// confinement, then contexts: calls, errors, timeouts, close, messages, callbacks, deaths
// (segfault, os._exit, memory), pools, and no fd or child process left behind.
import { describe, expect, test } from "bun:test";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureShim, hostPath } from "../src/build.ts";
import { findPython } from "../src/discover.ts";
import { ContextDiedError, PythonError, py, type SandboxPolicy } from "../src/index.ts";
import { CallTimeoutError, ContextClosedError } from "../src/context.ts";
import { closedAfterAll, contextModes } from "./helpers.ts";
import { kernelEscapeTests, linux } from "./kernel-escapes.ts";

const shim = ensureShim(findPython());
const host = hostPath(shim);

function check(...args: string[]): { code: number | null; out: any; err: string } {
  const r = Bun.spawnSync([host!, "--check", ...args], { stdout: "pipe", stderr: "pipe" });
  const text = r.stdout.toString();
  return { code: r.exitCode, out: text ? JSON.parse(text) : undefined, err: r.stderr.toString() };
}

describe("bunpy-host", () => {
  test("is built next to the shim", () => {
    expect(host).toBeString();
    expect(host!.endsWith("/bunpy-host")).toBe(true);
  });

  test("applies rlimits and its own namespaces (or says which it could not)", () => {
    const r = check("--memory", String(256 * 1024 * 1024), "--cpu", "5", "--files", "64");
    expect(r.code).toBe(0);
    expect(r.out.rlimitErrors).toBe(0);
    expect(r.out.memory).toBe(256 * 1024 * 1024);
    // this machine (root in a VM) allows them; elsewhere mountns false means no private /tmp
    expect(r.out.mountns).toBe(true);
    expect(r.out.netns).toBe(true);
    expect(r.out.tmp).toBe("private");
  });

  test("--network keeps the parent's network namespace", () => {
    const r = check("--network");
    expect(r.code).toBe(0);
    expect(r.out.netns).toBe(false);
    expect(r.out.memory).toBe(0);
  });

  test("bad arguments are refused with exit code 64, not a crash", () => {
    expect(check("--memory", "lots").code).toBe(64);
    expect(check("--bogus").code).toBe(64);
  });

  test("a parent pid that is not its parent ends it at once (PR_SET_PDEATHSIG race check)", () => {
    const r = Bun.spawnSync([host!, "--check", "--parent", "1"], { stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).toBe(1);
    expect(r.stdout.toString()).toBe("");
  });
});

const { keep } = closedAfterAll();
const proc = async (sandbox?: SandboxPolicy) => keep(await py.context({ mode: "process", sandbox }));

/** The Bun process's open fds and its child processes (from /proc). */
function fdCount(): number {
  return readdirSync("/proc/self/fd").length;
}
function children(): number[] {
  const out: number[] = [];
  for (const task of readdirSync("/proc/self/task")) {
    try {
      const text = readFileSync(`/proc/self/task/${task}/children`, "utf8").trim();
      if (text) out.push(...text.split(/\s+/).map(Number));
    } catch {}
  }
  return out;
}

describe("process contexts", () => {
  test("calls run in another process, with the same API", async () => {
    const ctx = await proc();
    expect(ctx.mode).toBe("process");
    expect(ctx.state).toBe("running");
    expect(await ctx.eval("1 + 2")).toBe(3);
    const pid = await ctx.call("os", "getpid");
    expect(pid).not.toBe(process.pid);
    expect(await ctx.call("os", "getppid")).toBe(process.pid);
    await ctx.exec("def f(x, y=1):\n    return {'x': x * 2, 'y': y, 'l': [1, 'a', None]}");
    expect(await ctx.call("__main__", "f", [21], { y: 5 })).toEqual({ x: 42, y: 5, l: [1, "a", null] });
    expect(ctx.callSync("__main__", "f", [1])).toEqual({ x: 2, y: 1, l: [1, "a", null] });
    // big values cross (frames larger than the socket's buffer)
    const big = "x".repeat(3_000_000);
    expect(await ctx.call("builtins", "len", [big])).toBe(3_000_000);
    expect(((await ctx.eval("'y' * 2_500_000")) as string).length).toBe(2_500_000);
    // many large calls in flight both ways at once: neither side's writes wait on the other's
    const mb = "z".repeat(1 << 20);
    const echoes = await Promise.all(Array.from({ length: 24 }, (_, i) => ctx.call("builtins", "str", [mb + i])));
    expect(echoes.map((e) => (e as string).length)).toEqual(Array.from({ length: 24 }, (_, i) => (1 << 20) + String(i).length));
    // objects stay in the host as PyRefs, usable through later calls
    await ctx.exec("class Box:\n    def __init__(self): self.items = [3, 1, 2]\n    def count(self): return len(self.items)");
    const ref = await ctx.eval("Box()");
    expect(String(ref)).toContain("process context");
    expect(await ref.get("items")).toEqual([3, 1, 2]);
    expect(await (await ref.get("count")).call()).toBe(3);
    ref.release();
    expect(ctx.completed).toBeGreaterThan(5);
  });

  test("py.buffer cannot go to a process context (a ConversionError, the host is untouched); py.iter sources stream to it", async () => {
    const ctx = await proc();
    await expect(ctx.call("builtins", "len", [py.buffer(new Uint8Array(10))])).rejects.toThrow(/cannot go to a process context/);
    await ctx.exec("def total(it):\n    return sum(len(x) for x in it)\n");
    expect(await ctx.call("__main__", "total", [py.iter([new Uint8Array(3), new Uint8Array(4)])])).toBe(7);
    expect(await ctx.eval("1 + 1")).toBe(2);
  });

  test("a Python exception arrives as PythonError with its traceback", async () => {
    const ctx = await proc();
    await ctx.exec("def boom():\n    raise KeyError('nope')");
    const e = (await ctx.call("__main__", "boom").catch((x) => x)) as PythonError;
    expect(e).toBeInstanceOf(PythonError);
    expect(e.type).toBe("KeyError");
    expect(e.traceback).toContain("in boom");
    expect(e.traceback).toContain("KeyError: 'nope'");
    expect(await ctx.eval("'still fine'")).toBe("still fine");
  });

  test("timeouts and AbortSignal interrupt the call inside the host; the context goes on", async () => {
    const ctx = await proc();
    const t = await ctx.exec("while True: pass", { timeout: 50 }).catch((e) => e);
    expect(t).toBeInstanceOf(CallTimeoutError);
    expect(await ctx.eval("'next'")).toBe("next");
    const ac = new AbortController();
    const p = ctx.exec("while True: pass", { signal: ac.signal }).catch((e) => e);
    setTimeout(() => ac.abort(new Error("stop")), 50);
    expect(((await p) as Error).message).toBe("stop");
    expect(await ctx.eval("'after'")).toBe("after");
  });

  test("messages (bunpy.send) and calls into JS (bunpy.call, async_call) are relayed", async () => {
    const ctx = await proc();
    const got: unknown[] = [];
    const off = py.on("proc-test", (v, from) => got.push([v, from === ctx]));
    py.register("procTwice", (x: number) => x * 2);
    py.register("procLater", async (x: number) => (await Bun.sleep(5), x + 1));
    py.register("procThrows", () => {
      throw new RangeError("from JS");
    });
    try {
      await ctx.exec("import bunpy\nfor i in range(3): bunpy.send('proc-test', {'i': i})");
      expect(await ctx.eval("bunpy.call('procTwice', 21)")).toBe(42);
      await ctx.exec("async def g(x):\n    return await bunpy.async_call('procLater', x)");
      expect(await ctx.call("__main__", "g", [1])).toBe(2);
      const err = await ctx
        .exec("try:\n    bunpy.call('procThrows')\nexcept bunpy.JSError as e:\n    r = (e.js_name, e.js_message)")
        .then(() => ctx.eval("r"));
      expect(err).toEqual(["RangeError", "from JS"]);
      // callSync blocks the JS thread, which still answers the host's bunpy.call meanwhile
      await ctx.exec("def h(x):\n    return bunpy.call('procTwice', x) + 1");
      expect(ctx.callSync("__main__", "h", [20])).toBe(41);
      // JS -> Python (host) -> JS -> Python (host again, served while bunpy.call waits)
      py.register("procBack", async () => (await ctx.call("builtins", "abs", [-7])) as number);
      expect(await ctx.eval("bunpy.call('procBack')")).toBe(7);
      for (let i = 0; i < 100 && got.length < 3; i++) await Bun.sleep(5);
      expect(got).toEqual([
        [{ i: 0 }, true],
        [{ i: 1 }, true],
        [{ i: 2 }, true],
      ]);
    } finally {
      off();
    }
  });

  test("bunpy.send floods are held back until JS reads (the host waits), and none is lost", async () => {
    const ctx = await proc();
    let n = 0, last = -1, inOrder = true;
    const off = py.on("proc-flood", (v: number) => {
      if (v !== last + 1) inOrder = false;
      last = v;
      n++;
    });
    try {
      await ctx.exec("import bunpy\nfor i in range(5000): bunpy.send('proc-flood', i)");
      for (let i = 0; i < 200 && n < 5000; i++) await Bun.sleep(10);
      expect(n).toBe(5000);
      expect(inOrder).toBe(true);
      expect(await ctx.eval("'after the flood'")).toBe("after the flood");
    } finally {
      off();
    }
  });

  test("close() with calls in flight: queued ones run, a running one is interrupted after the grace period", async () => {
    const ctx = await py.context({ mode: "process" });
    const quick = ctx.eval("6 * 7");
    const slow = ctx.exec("while True: pass").catch((e) => e);
    const closed = ctx.close({ timeout: 100 });
    const late = ctx.eval("1").catch((e) => e);
    expect(await quick).toBe(42);
    await closed;
    expect(await slow).toBeInstanceOf(Error);
    expect(await late).toBeInstanceOf(ContextClosedError);
    expect(ctx.state).toBe("closed");
  });

  test("close() of a context stuck in C (time.sleep) still ends: the host is stopped, its call rejects", async () => {
    const ctx = await py.context({ mode: "process" });
    const pid = (await ctx.call("os", "getpid")) as number;
    const stuck = ctx.call("time", "sleep", [60]).catch((e) => e);
    await Bun.sleep(30);
    await ctx.close({ timeout: 50 });
    expect(ctx.state).toBe("closed");
    expect(await stuck).toBeInstanceOf(ContextClosedError);
    expect(() => process.kill(pid, 0)).toThrow(); // reaped: no such process
  });

  test("a segfault kills only the host: ContextDiedError for that call and the next; the rest runs on", async () => {
    const ctx = await proc();
    const other = keep(await py.context({ mode: "worker" }));
    const e = (await ctx.exec("import ctypes; ctypes.string_at(0)").catch((x) => x)) as Error;
    expect(e).toBeInstanceOf(ContextDiedError);
    expect(e.message).toContain("SIGSEGV");
    expect(ctx.isDead).toBe(true);
    expect(ctx.state).toBe("dead");
    const next = (await ctx.eval("1").catch((x) => x)) as Error;
    expect(next).toBeInstanceOf(ContextDiedError);
    expect(next.message).toContain("SIGSEGV");
    expect(() => ctx.callSync("builtins", "abs", [-1])).toThrow(ContextDiedError);
    expect(await other.eval("40 + 2")).toBe(42);
    expect(py.eval("1 + 1")).toBe(2);
    await ctx.close(); // joins the relay; nothing else to end
    expect(ctx.state).toBe("closed");
  });

  test("os._exit(3) in the host: ContextDiedError naming the exit code, for the calls queued behind it too", async () => {
    const ctx = await proc();
    await ctx.exec("import os, time");
    const exit = ctx.exec("time.sleep(0.05); os._exit(3)").catch((x) => x);
    const queued = ctx.eval("'never runs'").catch((x) => x);
    const e = (await exit) as Error;
    expect(e).toBeInstanceOf(ContextDiedError);
    expect(e.message).toContain("exited with code 3");
    expect(await queued).toBeInstanceOf(ContextDiedError);
    expect(ctx.isDead).toBe(true);
  });

  test("a host killed from outside (SIGKILL): ContextDiedError; closing it still works", async () => {
    const ctx = await proc();
    const pid = (await ctx.call("os", "getpid")) as number;
    const running = ctx.exec("while True: pass").catch((x) => x);
    await Bun.sleep(20);
    process.kill(pid, "SIGKILL");
    const e = (await running) as Error;
    expect(e).toBeInstanceOf(ContextDiedError);
    expect(e.message).toContain("SIGKILL");
    await ctx.close();
    expect(ctx.state).toBe("closed");
  });

  test("memoryLimit: MemoryError inside the host, and the context goes on", async () => {
    const ctx = await proc({ memoryLimit: 512 * 1024 * 1024 });
    const e = (await ctx.eval("len(bytearray(1024 * 1024 * 1024))").catch((x) => x)) as PythonError;
    expect(e).toBeInstanceOf(PythonError);
    expect(e.type).toBe("MemoryError");
    expect(await ctx.eval("len(bytearray(64 * 1024 * 1024))")).toBe(64 * 1024 * 1024);
    // growing a list until the limit: MemoryError, or the host dies cleanly
    const r = await ctx.exec("l = []\nwhile True: l.append(bytearray(1 << 20))").catch((x) => x);
    expect(r instanceof ContextDiedError || (r instanceof PythonError && r.type === "MemoryError")).toBe(true);
    expect(py.eval("1 + 1")).toBe(2);
  }, 30_000); // fills 512 MiB page by page: over 5 s when the cores are busy

  test("cpuTime: past it the kernel ends the host (ContextDiedError naming SIGXCPU)", async () => {
    const ctx = await proc({ cpuTime: 1 });
    const e = (await ctx.exec("while True: pass").catch((x) => x)) as Error;
    expect(e).toBeInstanceOf(ContextDiedError);
    expect(e.message).toMatch(/SIGXCPU|SIGKILL/);
    expect(py.eval("1 + 1")).toBe(2);
  }, 30_000); // a second of the host's CPU time: more than 5 s of wall time when the cores are busy

  test("the process-only limits are refused with a TypeError on thread contexts; memoryLimit on worker contexts", async () => {
    await expect(py.context({ mode: "worker", sandbox: { memoryLimit: 1 << 30 } })).rejects.toThrow(/shares the main interpreter's memory/);
    for (const mode of contextModes) {
      await expect(py.context({ mode, sandbox: { cpuTime: 5 } })).rejects.toThrow(/mode: "process"/);
      await expect(py.context({ mode, sandbox: { maxFiles: 10 } })).rejects.toThrow(TypeError);
    }
    await expect(py.context({ mode: "process", sandbox: { memoryLimit: 1000 } })).rejects.toThrow(/at least/);
    await expect(py.context({ mode: "process", sandbox: { maxFiles: -1 } })).rejects.toThrow(TypeError);
    await expect(py.context({ mode: "nope" as "worker" })).rejects.toThrow(/"process"/);
  });

  test("the host has a private /tmp (its own mount namespace)", async () => {
    const marker = `/tmp/bunpy-proc-marker-${process.pid}`;
    await Bun.write(marker, "x");
    try {
      const ctx = await proc({ sockets: false });
      expect(await ctx.eval(`__import__('os').path.exists(${JSON.stringify(marker)})`)).toBe(false);
      expect(await ctx.eval("open('/tmp/own', 'w').write('y')")).toBe(1);
      expect(await Bun.file("/tmp/own").exists()).toBe(false);
      const free = await proc();
      expect(await free.eval("__import__('os').listdir('/tmp')")).toEqual([]);
    } finally {
      await Bun.file(marker).delete();
    }
  });

  test("bunpy installed under /tmp (a project there): the host keeps /tmp shared and finds bunpy", () => {
    const copy = mkdtempSync("/tmp/bunpy-copy-");
    try {
      const root = join(import.meta.dir, "..");
      for (const d of ["src", "python", "shim", "package.json", "build.zig"]) cpSync(join(root, d), join(copy, d), { recursive: true });
      symlinkSync(join(root, "node_modules"), join(copy, "node_modules"));
      const r = Bun.spawnSync([process.execPath, join(import.meta.dir, "fixtures", "process-from-tmp.ts"), join(copy, "src", "index.ts")], {
        cwd: tmpdir(),
        env: process.env,
        timeout: 60_000,
      });
      expect(r.stderr.toString()).not.toContain("No module named");
      expect(r.stdout.toString().trim()).toBe('"bunpy"');
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  }, 70_000);

  test("the host's main thread (which only relays) has a seccomp filter of its own; the context thread has the policy's", async () => {
    const ctx = await proc();
    await ctx.exec(
      "import os, threading\ndef seccomp(tid):\n    for line in open(f'/proc/self/task/{tid}/status'):\n        if line.startswith('Seccomp:'): return int(line.split()[1])",
    );
    expect(await ctx.eval("seccomp(os.getpid())")).toBe(2); // the main thread: filtered
    expect(await ctx.eval("seccomp(threading.get_native_id())")).toBe(0); // no sandbox asked
  });

  test("the host is in its own process group (Ctrl-C is Bun's) and dies with a Bun process that exits without closing", async () => {
    const ctx = await proc();
    expect(await ctx.call("os", "getpgrp")).toBe(await ctx.call("os", "getpid"));
    const dir = mkdtempSync(join(tmpdir(), "bunpy-proc-exit-"));
    const script = join(dir, "exit.ts");
    writeFileSync(
      script,
      `import { py } from ${JSON.stringify(join(import.meta.dir, "..", "src", "index.ts"))};\n` +
        `const ctx = await py.context({ mode: "process" });\nconsole.log(await ctx.call("os", "getpid"));\nprocess.exit(0);\n`,
    );
    const r = Bun.spawnSync([process.execPath, script], { stdout: "pipe", stderr: "pipe", env: process.env });
    expect(r.exitCode).toBe(0);
    const pid = Number(r.stdout.toString().trim());
    expect(pid).toBeGreaterThan(0);
    let alive = true;
    for (let i = 0; i < 100 && alive; i++) {
      try {
        process.kill(pid, 0);
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        alive = !/\) Z /.test(stat); // a zombie waiting for init is gone already
        if (alive) await Bun.sleep(20);
      } catch {
        alive = false;
      }
    }
    expect(alive).toBe(false);
  });

  test("a pool of process contexts replaces a dead one", async () => {
    const pool = await py.pool({ mode: "process", size: 2 });
    try {
      await pool.execAll("import os\nvalue = 7");
      const first = pool.contexts[0]!;
      const e = await pool.call("os", "_exit", [9], undefined, { context: first }).catch((x) => x);
      expect(e).toBeInstanceOf(ContextDiedError);
      for (let i = 0; i < 200 && pool.stats().replaced === 0; i++) await Bun.sleep(10);
      expect(pool.stats().replaced).toBe(1);
      expect(pool.contexts[0]).not.toBe(first);
      // the replacement ran the pool's execAll code
      expect(await pool.contexts[0]!.eval("value")).toBe(7);
      expect(await pool.call("builtins", "abs", [-3], undefined, { key: "k" })).toBe(3);
      await expect(pool.listen({ port: 0, protocol: "asyncio:Protocol" })).rejects.toThrow(/mode "process"/);
    } finally {
      await pool.close();
    }
  });

  test("50 create/close cycles leave no fd and no child process behind", async () => {
    const warm = await py.context({ mode: "process" });
    await warm.close();
    const fds = fdCount();
    const before = new Set(children()); // the other tests' contexts, closed after all
    for (let i = 0; i < 50; i++) {
      const ctx = await py.context({ mode: "process" });
      if (i % 10 === 0) await ctx.eval("1");
      if (i % 7 === 0) await ctx.exec("import os; os._exit(0)").catch(() => {});
      await ctx.close();
    }
    expect(children().filter((c) => !before.has(c))).toEqual([]);
    expect(fdCount()).toBeLessThanOrEqual(fds);
  }, 90_000); // 50 host starts: over 20 s on a loaded machine (3.12, load 7-10)
});

// The escape classes of the kernel-rules tests, against process contexts: the host applies
// the same kernel rules on its context thread (plus its own namespaces and rlimits).
describe.skipIf(!linux)("kernel rules in a process context", () => {
  kernelEscapeTests("process");
});
