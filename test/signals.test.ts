// Ctrl-C (SIGINT) must end a Bun script that embeds Python, even after Python code
// imported `signal` and `asyncio` (which would otherwise install Python's own handler).
import { beforeAll, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { py } from "../src/index.ts";

// the child processes must not each spend the first-run shim build inside a test's time
beforeAll(() => void py.version, 120_000);

/** Starts a fixture in a child Bun and waits until it prints "ready". */
async function spawnReady(fixture: string, arg: string) {
  const proc = Bun.spawn([process.execPath, join(import.meta.dir, "fixtures", fixture), arg], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const reader = proc.stdout.getReader();
  const out = { text: "" };
  while (!out.text.includes("ready")) {
    const { value, done } = await reader.read();
    if (done) break;
    out.text += new TextDecoder().decode(value);
  }
  expect(out.text).toContain("ready");
  return { proc, reader, out };
}

async function interrupt(where: "js" | "python") {
  const { proc } = await spawnReady("sigint.ts", where);
  await Bun.sleep(200);
  proc.kill("SIGINT");
  const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
  await proc.exited;
  clearTimeout(timer);
  return proc.signalCode;
}

test("SIGINT ends the script while JS is idle, after Python imported signal and asyncio", async () => {
  expect(await interrupt("js")).toBe("SIGINT");
});

test("SIGINT ends the script while a Python call is running", async () => {
  expect(await interrupt("python")).toBe("SIGINT");
});

// ---- with a JS listener: Python is interrupted, then the listener runs --------------------

async function withListener(what: string, wait = 200, toOtherThread = false, times = 1) {
  const { proc, reader, out } = await spawnReady("sigint-listener.ts", what);
  await Bun.sleep(wait);
  if (toOtherThread) {
    // a signal sent to one thread's id is delivered to that thread (Linux): not the JS thread
    const tid = readdirSync(`/proc/${proc.pid}/task`).map(Number).filter((t) => t !== proc.pid).pop()!;
    process.kill(tid, "SIGINT");
  } else {
    for (let i = 0; i < times; i++) {
      if (i > 0) await Bun.sleep(300);
      proc.kill("SIGINT");
    }
  }
  const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    out.text += new TextDecoder().decode(value);
  }
  await proc.exited;
  clearTimeout(timer);
  const lines = out.text.split("\n").filter((l) => l !== "" && l !== "ready");
  return { lines, code: proc.exitCode, signal: proc.signalCode, stderr: await new Response(proc.stderr).text() };
}

test("with a SIGINT listener, Ctrl-C interrupts a spinning Python call with KeyboardInterrupt, then the listener runs", async () => {
  const r = await withListener("spin");
  expect(r.lines).toEqual(["PythonError KeyboardInterrupt", "listener"]);
  expect(r.code).toBe(0);
});

test("with a SIGINT listener, Ctrl-C interrupts Python blocked in time.sleep", async () => {
  const r = await withListener("sleep");
  expect(r.lines).toEqual(["PythonError KeyboardInterrupt", "listener"]);
  expect(r.code).toBe(0);
});

test("a listener added after Python started, in the same tick as the call, works the same", async () => {
  const r = await withListener("spin-late");
  expect(r.lines).toEqual(["PythonError KeyboardInterrupt", "listener"]);
  expect(r.code).toBe(0);
});

test("Ctrl-C delivered to another thread of the process still interrupts Python on the JS thread", async () => {
  const r = await withListener("spin", 200, true);
  expect(r.lines).toEqual(["PythonError KeyboardInterrupt", "listener"]);
  expect(r.code).toBe(0);
});

test("the interrupt does not linger: the next calls run normally", async () => {
  const r = await withListener("twice");
  expect(r.lines).toEqual(["PythonError KeyboardInterrupt", "next 45", "returned", "listener"]);
  expect(r.code).toBe(0);
});

test("asyncio.run in the main interpreter does not take Ctrl-C over from the JS listener", async () => {
  const r = await withListener("asyncio-run");
  expect(r.lines).toEqual(["PythonError KeyboardInterrupt", "listener"]);
  expect(r.code).toBe(0);
});

test("inside asyncio.run, a coroutine that never yields to the loop is interrupted by a second Ctrl-C", async () => {
  const r = await withListener("asyncio-never-yields", 200, false, 2);
  expect(r.lines[0]).toBe("PythonError KeyboardInterrupt");
  expect(r.lines).toContain("listener");
  expect(r.code).toBe(0);
});

test("Ctrl-C while JS awaits a context call runs the listener", async () => {
  const r = await withListener("await-context");
  expect(r.lines).toEqual(["listener"]);
  expect(r.code).toBe(0);
});

test("SIGINT with no listener ends the script during a spinning Python call", async () => {
  const proc = Bun.spawn([process.execPath, "-e", `
    const { py } = await import(${JSON.stringify(join(import.meta.dir, "..", "src", "index.ts"))});
    py.exec("import signal, asyncio");
    process.on("SIGINT", () => {}); process.removeAllListeners("SIGINT"); // added and gone again
    console.log("ready");
    py.exec("while True: pass");
  `], { stdout: "pipe", stderr: "pipe" });
  const reader = proc.stdout.getReader();
  let out = "";
  while (!out.includes("ready")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += new TextDecoder().decode(value);
  }
  await Bun.sleep(200);
  proc.kill("SIGINT");
  const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
  await proc.exited;
  clearTimeout(timer);
  expect(proc.signalCode).toBe("SIGINT");
});

// close() gives the running call its grace time, then interrupts it (docs/contexts.md).
test("a SIGINT listener that closes a context spinning in Python finishes", async () => {
  const r = await withListener("close-spinning-context");
  expect(r.lines).toContain("listener");
  expect(r.lines).toContain("closed");
  expect(r.code).toBe(0);
}, 20_000);
