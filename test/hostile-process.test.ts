// A hostile pass over process contexts (shim/relay.c, ring.c, host.c): Python in the host is
// the attacker. Whatever it does to its own process (start children that keep its fds,
// exit, stop answering), Bun gets typed errors, never a hang, and close() ends it all.
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ContextDiedError, py } from "../src/index.ts";
import { closedAfterAll } from "./helpers.ts";
import { linux } from "./kernel-escapes.ts";

const { keep } = closedAfterAll();
const proc = async () => keep(await py.context({ mode: "process" }));

/** pids of the processes whose command line holds `marker` */
function withArg(marker: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, "utf8");
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      if (cmd.split("\0").includes(marker) && !/\) Z /.test(stat)) out.push(Number(d));
    } catch {}
  }
  return out;
}

/** How many `sleep marker` processes run (a `setsid sleep marker` on its way to becoming one
    carries the marker too, for a moment). */
function sleeping(marker: string): number {
  return withArg(marker).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "sleep";
    } catch {
      return false;
    }
  }).length;
}

async function gone(marker: string): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if (withArg(marker).length === 0) return true;
    await Bun.sleep(20);
  }
  return false;
}

describe.skipIf(!linux)("hostile process contexts", () => {
  test("a host that exits while a child it started holds its socket: ContextDiedError, not a hang; the child is ended", async () => {
    const ctx = await proc();
    const marker = `${1000 + Math.floor(Math.random() * 1000)}.25`; // sleep's argument, unique
    const e = await ctx
      .exec(`import subprocess, os\nsubprocess.Popen(['sleep', '${marker}'], pass_fds=(3, 4, 5, 6), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\nos._exit(1)`)
      .catch((x) => x);
    expect(e).toBeInstanceOf(ContextDiedError);
    expect((e as Error).message).toMatch(/exited with code 1/);
    await expect(ctx.eval("1")).rejects.toBeInstanceOf(ContextDiedError);
    expect(await gone(marker)).toBe(true);
    await ctx.close();
  });

  test("close() ends the processes the host started (its process group), and those holding its fds", async () => {
    const ctx = await proc();
    const marker = `${2000 + Math.floor(Math.random() * 1000)}.25`;
    await ctx.exec(`import subprocess\nkids = [subprocess.Popen(['sleep', '${marker}'], pass_fds=(3,), stdout=subprocess.DEVNULL), subprocess.Popen(['sleep', '${marker}'], stdout=subprocess.DEVNULL)]`);
    expect(withArg(marker).length).toBe(2);
    await ctx.close({ timeout: 100 });
    expect(await gone(marker)).toBe(true);
  });

  // a new session (setsid) leaves the host's process group, and a daemon's double fork
  // or a shell's `&` orphans the process: all used to outlive the context
  const escapees = (marker: string) => `
import os, subprocess
subprocess.Popen(['sleep', '${marker}'], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
subprocess.run("sleep ${marker} </dev/null >/dev/null 2>&1 &", shell=True, start_new_session=True)
subprocess.run(['sh', '-c', '(setsid sleep ${marker} </dev/null >/dev/null 2>&1 &)'])
`;

  test("close() ends the processes the host started in new sessions, orphaned or daemonized", async () => {
    const ctx = await proc();
    const marker = `${3000 + Math.floor(Math.random() * 1000)}.25`;
    await ctx.exec(escapees(marker));
    for (let i = 0; i < 100 && sleeping(marker) < 3; i++) await Bun.sleep(20);
    expect(sleeping(marker)).toBe(3);
    await ctx.close();
    expect(await gone(marker)).toBe(true);
  });

  test("... and so does a close that has to kill a host that does not stop", async () => {
    const ctx = await proc();
    const marker = `${4000 + Math.floor(Math.random() * 1000)}.25`;
    await ctx.exec(escapees(marker) + "\nimport signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)");
    for (let i = 0; i < 100 && sleeping(marker) < 3; i++) await Bun.sleep(20);
    expect(sleeping(marker)).toBe(3);
    const busy = ctx.exec("while True:\n    try:\n        pass\n    except BaseException:\n        pass").catch((e: unknown) => e);
    await Bun.sleep(50);
    await ctx.close({ timeout: 100 });
    expect(await busy).toBeInstanceOf(Error);
    expect(await gone(marker)).toBe(true);
  });
});

describe.skipIf(!linux)("the bells of a process context", () => {
  test("a host that takes fd 5 away from its main thread and fills the bell blocking: Bun's next call does not block its JS thread", () => {
    const r = Bun.spawnSync([process.execPath, join(import.meta.dir, "fixtures", "hostile-process-bell.ts")], {
      stdout: "pipe",
      stderr: "pipe",
      timeout: 60_000,
      env: { ...process.env },
    });
    const out = r.stdout.toString().trim().split("\n").pop() ?? "";
    expect({ code: r.exitCode, err: r.stderr.toString().slice(-500) }).toEqual({ code: 0, err: "" });
    expect(JSON.parse(out)).toMatchObject({ sent: true, attackEnded: "returned", alive: true });
  }, 70_000);
});

describe.skipIf(!linux)("frames a host forges", () => {
  test("a MESSAGE whose value Bun cannot decode is dropped with a line on stderr; the other results of that drain still settle", async () => {
    const ctx = await proc();
    const other = await proc();
    await ctx.exec(`
import ctypes, os, struct, time
def rings():
    for line in open('/proc/self/maps'):
        if 'bunpy-rings' in line:
            return int(line.split('-')[0], 16)
base = rings()
RING = 1 << 20
def forge():
    # a MARK in the result ring, and the MESSAGE it announces on the socket: origin, the
    # channel "evil", then a value of an unknown tag
    tail = ctypes.c_uint64.from_address(base + 384).value
    at = base + 4096 + RING + tail % RING
    ctypes.memset(at, 0, 24)
    ctypes.c_uint32.from_address(at).value = 32
    payload = bytes([5]) + struct.pack('<d', 0.0) + bytes([7]) + struct.pack('<I', 4) + b'evil' + bytes([0xEE])
    frame = struct.pack('<IiIIQ', 18, 0, len(payload), 0, 0) + payload
    ctypes.c_uint64.from_address(base + 384).value = tail + 24
    os.write(6, (1).to_bytes(8, 'little'))
    os.write(3, frame)
    time.sleep(0.5)
`);
    let got = 0;
    const off = py.on("evil", () => got++);
    const errors: string[] = [];
    const write = console.error;
    console.error = (...a: unknown[]) => void errors.push(a.map(String).join(" "));
    try {
      const calls = Array.from({ length: 200 }, (_, i) => other.call("time", "sleep", [0.001 * (i % 5)]).then(() => i));
      await ctx.call("__main__", "forge").catch(() => {}); // its host is killed for what it did to the ring
      const settled = await Promise.race([Promise.all(calls).then((v) => v.length), Bun.sleep(10_000).then(() => "some calls hung")]);
      expect(settled).toBe(200);
      expect(errors.some((e) => /a bunpy.send message was dropped: it could not be decoded/.test(e))).toBe(true);
      expect(got).toBe(0);
      expect(await other.eval("1 + 1")).toBe(2);
    } finally {
      console.error = write;
      off();
    }
  }, 20_000);
});
