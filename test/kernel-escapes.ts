// The escapes test/sandbox-kernel.test.ts (thread contexts) and test/process-context.test.ts
// (process contexts) try against a sandboxed context: every escape is tried below the audit
// hook (raw system calls through ctypes, paths the hook resolves differently), so only the
// kernel can refuse it. Each test also checks that the main interpreter and an unsandboxed
// context are untouched.
import { describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir, arch } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { py, type Context, type SandboxPolicy } from "../src/index.ts";
import { closedAfterAll, contextModes } from "./helpers.ts";

/**
 * A directory below `dir` from which the relative path `rel` resolves to a file outside `dir`;
 * none where rel climbs fewer than two levels (a cwd directly below /).
 */
function dirFdLeavingDir(dir: string, rel: string): { sub: string; elsewhere: string } | undefined {
  for (let sub = join(dir, "sub"); sub.length < 1000; sub = join(sub, "sub")) {
    const elsewhere = resolve(sub, rel);
    if (!elsewhere.startsWith(dir + "/")) return { sub, elsewhere };
  }
  return undefined;
}

export const linux = process.platform === "linux" && (arch() === "x64" || arch() === "arm64");
const { keep } = closedAfterAll();
// Landlock's TCP rules (ABI 4+): what `network` needs
const landlockNet =
  linux &&
  (py.eval(
    "__import__('ctypes').CDLL(None, use_errno=True).syscall(444, None, 0, 1)",
  ) as number) >= 4;

// sc(name, *args) makes a raw system call and returns "ok" or the errno's name. A fork that
// gets through exits at once in the child, and the parent reaps it and reports "escaped".
const HELPERS = `
import errno, os, platform
def attempt(code):
    try:
        exec(code, globals())
        return "allowed"
    except PermissionError as e:
        return "refused: " + str(e)
    except Exception as e:
        return type(e).__name__ + ": " + str(e)

def sc(name, *args):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    nr = {
        "x86_64": dict(fork=57, clone=56, execve=59, execveat=322, ptrace=101, io_uring_setup=425,
                       userfaultfd=323, personality=135, memfd_create=319, socket=41, socketpair=53,
                       openat=257, kill=62, seccomp=317, prctl=157, prlimit64=302),
        "aarch64": dict(clone=220, execve=221, execveat=281, ptrace=117, io_uring_setup=425,
                        userfaultfd=282, personality=92, memfd_create=279, socket=198, socketpair=199,
                        openat=56, kill=129, seccomp=277, prctl=167, prlimit64=261),
    }[platform.machine()][name]
    conv = [ctypes.c_char_p(a) if isinstance(a, bytes) else ctypes.c_long(a) for a in args]
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *conv)
    if r == 0 and name in ("fork", "clone"):
        os._exit(0)  # the child of an escaped fork: leave at once
    if r > 0 and name in ("fork", "clone"):
        os.waitpid(r, 0)
        return "escaped"
    if r >= 0:
        if name in ("socket", "openat", "memfd_create"):
            os.close(r)
        return "ok"
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

def fork_raw():
    # aarch64 has no fork system call: clone(SIGCHLD) is the same thing
    return sc("fork") if platform.machine() == "x86_64" else sc("clone", 17, 0, 0, 0, 0)

def call_fork_exec(fork_exec):
    r, w = os.pipe()
    try:
        pid = fork_exec([b"/bin/true"], [b"/bin/true"], True, (w,), None, None, -1, -1, -1, -1, -1, -1,
                        r, w, True, False, -1, None, None, None, -1, None, True)
        os.waitpid(pid, 0)
        return "escaped"
    except PermissionError as e:
        return "EPERM" if e.errno == errno.EPERM else "refused: " + str(e)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    except RuntimeError as e:
        return "RuntimeError: " + str(e)
    finally:
        os.close(r)
        os.close(w)

def fresh_posixsubprocess():
    # a new module from the spec: no import of a module that is already imported
    import importlib.util, sys
    return importlib.util.module_from_spec(sys.modules["_posixsubprocess"].__spec__)

def raw_connect(port):
    # connect(2) through ctypes: below the audit hook
    import ctypes, socket, struct
    libc = ctypes.CDLL(None, use_errno=True)
    s = socket.socket()
    try:
        addr = struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton("127.0.0.1") + bytes(8)
        ctypes.set_errno(0)
        r = libc.connect(s.fileno(), addr, len(addr))
        return "ok" if r == 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    finally:
        s.close()

def has_ctypes():
    try:
        import ctypes
        return True
    except ImportError:
        return False
`;

export type EscapeMode = "owngil" | "worker" | "process";

export async function sandboxed(mode: EscapeMode, sandbox?: SandboxPolicy) {
  const ctx = keep(await py.context({ mode, sandbox }));
  await ctx.exec(HELPERS);
  return ctx;
}
export const run = (ctx: Context, code: string) => ctx.eval(code) as Promise<unknown>;
export const attempt = (ctx: Context, code: string) => ctx.call("__main__", "attempt", [code]) as Promise<string>;

// What the main interpreter and an unsandboxed context must still be able to do.
async function untouched(outside: string) {
  py.exec(HELPERS);
  expect(py.eval("__import__('subprocess').run(['true']).returncode")).toBe(0);
  expect(py.eval(`open(${JSON.stringify(outside)}).read()`)).toBe("outside");
  expect(py.eval("__import__('socket').socket(2, 1).close() is None")).toBe(true);
  expect(py.eval("sc('personality', 0xffffffff)")).toBe("ok");
  for (const mode of contextModes) {
    const free = await sandboxed(mode);
    expect(await run(free, "__import__('subprocess').run(['true']).returncode")).toBe(0);
    expect(await run(free, `open(${JSON.stringify(outside)}).read()`)).toBe("outside");
    expect(await run(free, "__import__('socket').socket(2, 1).close() is None")).toBe(true);
  }
}

export function outsideFile() {
  const outDir = mkdtempSync(join(tmpdir(), "bunpy-kout-"));
  const outside = join(outDir, "out.txt");
  writeFileSync(outside, "outside");
  return { outDir, outside };
}

/** The escape tests against a sandboxed context of `mode`. */
export function kernelEscapeTests(mode: EscapeMode): void {
  describe(`${mode} context`, () => {
    test("processes: false — raw fork/clone and execve are refused by the kernel (EPERM), threads still run", async () => {
      const ctx = await sandboxed(mode, { processes: false });
      if (await run(ctx, "has_ctypes()")) {
        expect(await run(ctx, "fork_raw()")).toBe("EPERM");
        expect(await run(ctx, "sc('execve', b'/nonexistent-bunpy', 0, 0)")).toBe("EPERM");
        // memfd_create works; executing it does not
        expect(
          await run(ctx, "(lambda fd: (sc('execveat', fd, b'', 0, 0, 0x1000), os.close(fd))[0])(os.memfd_create('x'))"),
        ).toBe("EPERM");
      }
      // the guarded fork_exec holds no original, and a fresh _posixsubprocess is refused
      expect(
        await run(
          ctx,
          "(lambda p: (getattr(p.fork_exec, '__closure__', None), getattr(p.fork_exec, '__wrapped__', None), p.fork_exec.__self__ is p, getattr(p.fork_exec, '__defaults__', None)))(__import__('_posixsubprocess'))",
        ),
      ).toEqual([null, null, true, null]);
      // (the module is put back: worker contexts share sys.modules with the main interpreter)
      const reimport = "import sys, _posixsubprocess as kept\ndel sys.modules['_posixsubprocess']\ntry:\n    import _posixsubprocess\nfinally:\n    sys.modules['_posixsubprocess'] = kept";
      expect(await attempt(ctx, reimport)).toMatch(/refused: .*rule: no processes/);
      // every way to the original passes the hook: subprocess's own reference, a module made from the spec
      expect(await run(ctx, "call_fork_exec(__import__('subprocess')._fork_exec)")).toMatch(/^refused: .*rule: no processes/);
      expect(await attempt(ctx, "fresh_posixsubprocess()")).toMatch(/^refused: .*rule: no processes/);
      if (mode === "worker") {
        // an original leaked by the host (worker contexts share objects with it): the kernel refuses the process
        py.exec(HELPERS);
        py.exec("import sys\nsys.modules['bunpy_test_leak'] = fresh_posixsubprocess()");
        try {
          expect(await run(ctx, "call_fork_exec(__import__('sys').modules['bunpy_test_leak'].fork_exec)")).toBe("EPERM");
          expect(py.eval("call_fork_exec(__import__('sys').modules['bunpy_test_leak'].fork_exec)")).toBe("escaped");
        } finally {
          py.exec("del sys.modules['bunpy_test_leak']");
        }
      }
      // threads are clone(CLONE_THREAD): allowed
      expect(
        await run(ctx, "(lambda t: (t.start(), t.join(), 'joined')[2])(__import__('threading').Thread(target=lambda: None))"),
      ).toBe("joined");
      await untouched(outsideFile().outside);
    });

    test("always refused: ptrace, io_uring, userfaultfd, personality, signals to the parent", async () => {
      const ctx = await sandboxed(mode, {});
      if (await run(ctx, "has_ctypes()")) {
        expect(await run(ctx, "sc('ptrace', 2, 2**30, 0, 0)")).toBe("EPERM");
        expect(await run(ctx, "sc('io_uring_setup', 0, 0)")).toBe("EPERM");
        expect(await run(ctx, "sc('userfaultfd', 1 | 0x40000000)")).toBe("EPERM");
        expect(await run(ctx, "sc('personality', 0xffffffff)")).toBe("EPERM");
        expect(await run(ctx, "sc('kill', os.getppid(), 0)")).toBe("EPERM");
        // no filters of its own (with TSYNC one would cover every thread of the process)
        expect(await run(ctx, "sc('seccomp', 1, 1, 0)")).toBe("EPERM");
        expect(await run(ctx, "sc('prctl', 4, 0, 0, 0, 0)")).toBe("EPERM"); // PR_SET_DUMPABLE
        expect(await run(ctx, "sc('prctl', 3, 0, 0, 0, 0)")).toBe("ok"); // PR_GET_DUMPABLE
        expect(await run(ctx, "sc('prlimit64', os.getppid(), 7, 0, 0)")).toBe("EPERM");
        expect(await run(ctx, "sc('prlimit64', 0, 7, 0, 0)")).toBe("ok");
      }
      expect(await attempt(ctx, "os.kill(os.getppid(), 0)")).toMatch(/refused: \[Errno 1\]/);
      expect(await attempt(ctx, "os.kill(0, 0)")).toMatch(/refused: \[Errno 1\]/);
      expect(await attempt(ctx, "os.kill(os.getpid(), 0)")).toBe("allowed");
      // the working directory is the process's: it stays where it is
      expect(await attempt(ctx, "os.chdir('/')")).toMatch(/refused: \[Errno 1\]/);
      // /proc is out of reach in every sandboxed context (its own memory included); other files are not
      expect(await attempt(ctx, "open('/proc/self/mem', 'rb')")).toMatch(/refused: \[Errno 13\]/);
      expect(await attempt(ctx, "os.listdir('/proc')")).toMatch(/refused: \[Errno 13\]/);
      expect(await attempt(ctx, "open('/etc/hostname').read()")).toBe("allowed");
      // processes are allowed here: fork + exec still works
      expect(await run(ctx, "__import__('subprocess').run(['true']).returncode")).toBe(0);
      await untouched(outsideFile().outside);
    });

    test("other interpreters cannot be created or entered", async () => {
      const ctx = await sandboxed(mode, {});
      for (const m of ["_interpreters", "_xxsubinterpreters", "_xxinterpchannels", "_interpqueues", "concurrent.interpreters"])
        expect(await attempt(ctx, `import ${m}`)).toMatch(/refused: .*rule: no other interpreters|ModuleNotFoundError/);
      const name = py.version >= "3.13" ? "_interpreters" : "_xxsubinterpreters";
      expect(await attempt(ctx, `import ${name}`)).toMatch(/rule: no other interpreters/);
    });

    test("sockets: false — AF_INET and AF_UNIX sockets refused by the kernel, socketpairs and the event loop work", async () => {
      const ctx = await sandboxed(mode, { sockets: false });
      if (await run(ctx, "has_ctypes()")) {
        expect(await run(ctx, "sc('socket', 2, 1, 0)")).toBe("EPERM");
        expect(await run(ctx, "sc('socket', 10, 1, 0)")).toBe("EPERM");
        // AF_UNIX sockets too (a Unix socket path reaches host services); socketpairs stay
        expect(await run(ctx, "sc('socket', 1, 1, 0)")).toBe("EPERM");
      }
      expect(await run(ctx, "(lambda p: (p[0].close(), p[1].close(), 'pair')[2])(__import__('socket').socketpair())")).toBe("pair");
      await ctx.exec("import asyncio\nasync def slept():\n    await asyncio.sleep(0.01)\n    return 'slept'");
      expect(await ctx.call("__main__", "slept")).toBe("slept");
      expect(
        await run(ctx, "(lambda l: (l.run_until_complete(__import__('asyncio').sleep(0.01)), l.close(), 'loop')[2])(__import__('asyncio').new_event_loop())"),
      ).toBe("loop");
      await untouched(outsideFile().outside);
    });

    test.skipIf(!landlockNet)("network — TCP to and on the listed ports only; other sockets refused", async () => {
      const handler = { data() {}, open() {} };
      const allowed = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: handler });
      const other = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: handler });
      try {
        const ctx = await sandboxed(mode, { network: { connect: [allowed.port] } });
        const conn = (port: number) => `import socket; socket.create_connection(('127.0.0.1', ${port}), timeout=5).close()`;
        expect(await attempt(ctx, conn(allowed.port))).toBe("allowed");
        expect(await attempt(ctx, conn(other.port))).toMatch(/refused: .*rule: network.connect/);
        expect(await attempt(ctx, "import socket; socket.socket().bind(('127.0.0.1', 0))")).toMatch(/refused: .*rule: network.bind/);
        expect(await attempt(ctx, "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)")).toMatch(/refused: \[Errno 1\]/);
        expect(await run(ctx, "(lambda p: (p[0].close(), p[1].close(), 'pair')[2])(__import__('socket').socketpair())")).toBe("pair");
        if (await run(ctx, "has_ctypes()")) {
          expect(await run(ctx, `raw_connect(${other.port})`)).toBe("EACCES");
          expect(await run(ctx, `raw_connect(${allowed.port})`)).toBe("ok");
        }
        expect(py.eval(`__import__('socket').create_connection(('127.0.0.1', ${other.port})).close() is None`)).toBe(true);
      } finally {
        allowed.stop(true);
        other.stop(true);
      }
    });

    test("files — the kernel refuses what the audit hook cannot see: dir_fd, hard links, sqlite, /proc/self/mem", async () => {
      const dir = mkdtempSync(join(tmpdir(), "bunpy-kin-"));
      writeFileSync(join(dir, "in.txt"), "inside");
      const { outDir, outside } = outsideFile();
      const ctx = await sandboxed(mode, { files: [dir] });
      const q = JSON.stringify;
      // rel leads from the cwd into <dir> (the hook, which resolves against the cwd, lets it
      // through) but from a dir_fd below <dir> somewhere outside it: the kernel resolves it
      // so, and refuses. How deep that dir_fd must be depends on how deep the cwd is.
      const rel = relative(process.cwd(), join(dir, "in.txt"));
      const leaving = dirFdLeavingDir(dir, rel);
      if (leaving) {
        mkdirSync(leaving.sub, { recursive: true });
        mkdirSync(dirname(leaving.elsewhere), { recursive: true });
        writeFileSync(leaving.elsewhere, "outside");
        await run(ctx, `globals().update(d=os.open(${q(leaving.sub)}, os.O_RDONLY)) or None`);
        const viaDirFd = `os.close(os.open(${q(rel)}, os.O_RDONLY, dir_fd=d))`;
        expect(await attempt(ctx, viaDirFd)).toMatch(/refused: \[Errno 13\] Permission denied/);
        await run(ctx, "os.close(d)");
      } else {
        console.warn(`dir_fd escape not tried: from ${process.cwd()} no path climbs out of a directory below ${dir}`);
      }
      // and a relative open that stays inside, through a dir_fd of the allowed directory: the
      // hook leaves relative paths to the kernel (the "open" audit event has no dir_fd)
      await run(ctx, `globals().update(top=os.open(${q(dir)}, os.O_RDONLY)) or None`);
      expect(await attempt(ctx, `os.close(os.open("in.txt", os.O_RDONLY, dir_fd=top))`)).toBe("allowed");
      expect(await attempt(ctx, `os.close(os.open("made.txt", os.O_WRONLY | os.O_CREAT, dir_fd=top))`)).toBe("allowed");
      await run(ctx, "os.close(top)");
      expect(await attempt(ctx, `os.link(${q(outside)}, ${q(join(dir, "ln.txt"))})`)).toMatch(/Errno 13|Errno 18/);
      expect(await attempt(ctx, `open(${q(join(dir, "new.txt"))}, 'w').write('x')`)).toBe("allowed");
      expect(await attempt(ctx, `open('/proc/self/mem', 'rb')`)).toMatch(/refused/);
      expect(await attempt(ctx, `exec(open(${q(outside)}).read())`)).toMatch(/refused/);
      expect(await attempt(ctx, `import runpy; runpy.run_path(${q(outside)})`)).toMatch(/refused/);
      const sqlite = await attempt(ctx, `import sqlite3; sqlite3.connect(${q(join(outDir, "x.db"))}).execute('create table t(x)')`);
      if (!/ImportError/.test(sqlite)) expect(sqlite).toMatch(/OperationalError: unable to open/);
      expect(
        await attempt(ctx, `import sqlite3; c = sqlite3.connect(${q(join(dir, "in.db"))}); c.execute('create table t(x)'); c.close()`),
      ).toMatch(/allowed|ImportError/);
      if (await run(ctx, "has_ctypes()")) {
        // below the hook: raw openat
        expect(await run(ctx, `sc('openat', -100, ${q(outside)}.encode(), 0, 0)`)).toBe("EACCES");
        expect(await run(ctx, `sc('openat', -100, b'/proc/self/mem', 0, 0)`)).toBe("EACCES");
        expect(await run(ctx, `sc('openat', -100, ${q(join(dir, "in.txt"))}.encode(), 0, 0)`)).toBe("ok");
      }
      expect(await attempt(ctx, "import email.mime.text, json, decimal")).toBe("allowed");
      await untouched(outside);
    });
  });
}
