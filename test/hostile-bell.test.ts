/**
 * A sandboxed owngil context rings JS threads' doorbells through a ringer thread of its own
 * (shim/bell.c). Code in the context can read every fd of its own table: if the ringer were
 * woken through one, code that swallowed that wake-up left the JS thread's queue non-empty
 * and unrung, and then no other context's result for that JS thread rang it either (they
 * were not the empty -> non-empty edge): their calls never finished. Here the context
 * blocks on each of its fds from threads of its own while it floods JS with bunpy.send;
 * another context's calls, made while JS idles between them, must all come back. The
 * context may stall itself, not others.
 */
import { afterAll, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { py } from "../src/index.ts";
import { closedAfterAll, hasOwnGil } from "./helpers.ts";

const linux = process.platform === "linux";
const { keep } = closedAfterAll();
let got = 0;
const stop = py.on("hostile_flood", () => void got++);
afterAll(() => stop());

const EATER = `
import os, select, threading, time, bunpy

def own_fds():
    out = []
    for fd in range(3, 1024):
        try:
            os.fstat(fd)
        except OSError:
            continue
        out.append(fd)
    return out

def eat(fd, until):
    # every wake-up the context gets is read here first (its fds are the read ends of its
    # wake-up pipes: it cannot write them, or make Bun's writes to them block)
    while time.monotonic() < until:
        try:
            if select.select([fd], [], [], 0.01)[0]:
                os.read(fd, 64)
        except BlockingIOError:
            pass
        except OSError:
            return

def flood(secs, fds):
    until = time.monotonic() + secs
    eaters = [threading.Thread(target=eat, args=(fd, until)) for fd in fds]
    for t in eaters:
        t.start()
    n = 0
    while time.monotonic() < until:
        bunpy.send("hostile_flood", n)
        n += 1
        time.sleep(0.0002)
    for t in eaters:
        t.join()
    return n
`;

test.skipIf(!linux || !hasOwnGil)(
  "a sandboxed context that swallows its own wake-ups while it sends does not stall other contexts' results",
  async () => {
    const other = keep(await py.context({ mode: "owngil" }));
    const eater = keep(await py.context({ mode: "owngil", sandbox: {} }));
    await eater.exec(EATER);
    const fds = (await eater.call("__main__", "own_fds")) as number[];
    expect(fds.length).toBeGreaterThan(0);
    const sent = eater.call("__main__", "flood", [2, fds]);
    let sum = 0;
    for (let k = 0; k < 15; k++) {
      await Bun.sleep(100); // JS idle: only a doorbell brings the next result
      sum += (await other.call("operator", "add", [k, 1], {}, { timeout: 15_000 })) as number;
    }
    expect(sum).toBe((14 * 15) / 2 + 15);
    expect(await sent).toBeGreaterThan(0);
    expect(got).toBeGreaterThan(0);
    expect(await eater.eval("1 + 1")).toBe(2);
  },
  60_000,
);

test.skipIf(!linux || !hasOwnGil)("hundreds of sandboxed contexts started and closed, some busy: fds and threads flat", async () => {
  const fds = () => readdirSync("/proc/self/fd").length;
  const tasks = () => readdirSync("/proc/self/task").length;
  const round = async () => {
    const ctxs = await Promise.all(Array.from({ length: 20 }, () => py.context({ mode: "owngil", sandbox: {} })));
    expect(await Promise.all(ctxs.map((c) => c.call("operator", "add", [1, 2])))).toEqual(Array(20).fill(3));
    const busy = ctxs.map((c) => c.call("time", "sleep", [0.05]).catch(() => "closed"));
    await Promise.all(ctxs.map((c) => c.close()));
    await Promise.all(busy);
  };
  await round(); // warm: Bun's and Python's lazily started threads
  const f0 = fds();
  const t0 = tasks();
  for (let i = 0; i < 10; i++) await round();
  let f = fds();
  let t = tasks();
  for (let i = 0; i < 100 && (f > f0 || t > t0 + 4); i++) {
    await Bun.sleep(20);
    f = fds();
    t = tasks();
  }
  expect(f).toBeLessThanOrEqual(f0);
  expect(t).toBeLessThanOrEqual(t0 + 4); // Bun's own pool threads come and go; 200 contexts' ringers would show
}, 120_000);
