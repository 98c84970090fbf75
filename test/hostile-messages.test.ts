// A hostile pass over bunpy.send and py.on (src/hub.ts deliver): listeners that subscribe,
// unsubscribe and re-subscribe while a message is being delivered.
import { describe, expect, test } from "bun:test";
import { py } from "../src/index.ts";
import { closedAfterAll } from "./helpers.ts";

const { context } = closedAfterAll();
const CAP = 1000; // the old behaviour had no end: the test stops it here

async function send(channel: string): Promise<void> {
  const ctx = await context("worker");
  await ctx.exec(`import bunpy\nbunpy.send('${channel}', 1)`);
  for (let i = 0; i < 5; i++) await Bun.sleep(10);
}

describe("listeners changed while a message is delivered", () => {
  test("a listener that re-subscribes itself (off, then on) is not called again for the same message", async () => {
    let calls = 0;
    let off = () => {};
    const arm = () => {
      off = py.on("t_hmsg_rearm", () => {
        calls++;
        off();
        if (calls < CAP) arm();
      });
    };
    const other = py.on("t_hmsg_rearm", () => {}); // keeps the channel's set alive
    arm();
    try {
      await send("t_hmsg_rearm");
      expect(calls).toBe(1);
    } finally {
      off();
      other();
    }
  });

  test("a listener added during delivery gets the next message, not this one; one removed during it is not called", async () => {
    const seen: string[] = [];
    const offs: (() => void)[] = [];
    let offLate = () => {};
    offs.push(
      py.on("t_hmsg_add", () => {
        seen.push("first");
        if (offs.length < CAP) offs.push(py.on("t_hmsg_add", () => seen.push("added")));
        offLate(); // removes the third before its turn
      }),
    );
    offs.push(py.on("t_hmsg_add", () => seen.push("second")));
    offLate = py.on("t_hmsg_add", () => seen.push("late"));
    try {
      await send("t_hmsg_add");
      expect(seen).toEqual(["first", "second"]);
      seen.length = 0;
      await send("t_hmsg_add");
      expect(seen.slice(0, 3)).toEqual(["first", "second", "added"]);
    } finally {
      for (const off of offs) off();
    }
  });

  test("a single listener that adds another: this message reaches the first only", async () => {
    const seen: string[] = [];
    const offs: (() => void)[] = [];
    offs.push(
      py.on("t_hmsg_one", () => {
        seen.push("only");
        if (offs.length < CAP) offs.push(py.on("t_hmsg_one", () => seen.push("added")));
      }),
    );
    try {
      await send("t_hmsg_one");
      expect(seen).toEqual(["only"]);
    } finally {
      for (const off of offs) off();
    }
  });
});
