// Buffers that lie about themselves, shrink or grow: what reaches Python is what the memory
// holds, read from the internal slots, never a property a view claims (an own
// `byteLength`, a subclass getter): a memoryview past the end of an allocation would read
// and write memory that is not there.
import { describe, expect, test } from "bun:test";
import { py } from "../src/index.ts";
import { closedAfterAll, defineModule } from "./helpers.ts";

defineModule(
  "t_hostile_buffers",
  `
def info(x):
    return [type(x).__name__, len(x), bytes(x).hex()]

def scribble(m):
    b = m.cast("B")
    b[:] = b"\\xff" * len(b)   # writes every byte Python was told the view has
    return len(b)
`,
);
const info = (x: unknown) => py.call("t_hostile_buffers", "info", [x]) as [string, number, string];

/** Views of bytes 8..16 of `backing` (64 bytes, the rest zero), each claiming `claim` bytes
    in one of the ways a JS value can lie. */
function liars(claim: number) {
  const fresh = () => {
    const backing = new Uint8Array(64);
    backing.fill(1, 8, 16);
    return backing;
  };
  const b1 = fresh(), b2 = fresh(), b3 = fresh(), b4 = fresh();
  const own = new Uint8Array(b1.buffer, 8, 8);
  Object.defineProperty(own, "byteLength", { value: claim });
  Object.defineProperty(own, "length", { value: claim });
  Object.defineProperty(own, "byteOffset", { value: 0 });
  class Longer extends Uint8Array {
    override get byteLength() {
      return claim;
    }
    override get length() {
      return claim;
    }
  }
  const sub = new Longer(b2.buffer, 8, 8);
  const i32 = new Int32Array(b3.buffer, 8, 2);
  Object.defineProperty(i32, "byteLength", { value: claim });
  Object.defineProperty(i32, "byteOffset", { value: 0 });
  const dv = new DataView(b4.buffer, 8, 8);
  Object.defineProperty(dv, "byteLength", { value: claim });
  return [["own", own, b1], ["sub", sub, b2], ["i32", i32, b3], ["dv", dv, b4]] as const;
}

describe("views that claim more bytes than they have", () => {
  test("py.buffer lends exactly the view's own memory: its length, and writes stay inside it", () => {
    for (const [name, v, backing] of liars(1 << 16)) {
      expect([name, py.call("t_hostile_buffers", "scribble", [py.buffer(v)])]).toEqual([name, 8]);
      const expected = new Uint8Array(64);
      expected.fill(0xff, 8, 16);
      expect([name, [...backing]]).toEqual([name, [...expected]]);
    }
  });

  test("passed as bytes, the copy has the view's real length and contents", () => {
    for (const [name, v] of liars(1 << 16)) expect([name, ...info(v)]).toEqual([name, "bytes", 8, "0101010101010101"]);
  });

  test("a view whose buffer property is faked: the real buffer is checked (resizable, detached) and pinned", () => {
    const hidden = new Uint8Array(new ArrayBuffer(8, { maxByteLength: 64 }));
    Object.defineProperty(hidden, "buffer", { value: new ArrayBuffer(8) });
    expect(() => py.buffer(hidden)).toThrow(/resizable/);
    const gone = new ArrayBuffer(8);
    const view = new Uint8Array(gone);
    gone.transfer();
    Object.defineProperty(view, "buffer", { value: new ArrayBuffer(8) });
    expect(() => py.buffer(view)).toThrow(TypeError);
  });
});

describe("resizable buffers", () => {
  const { context } = closedAfterAll();

  test("a length-tracking view is copied at its length when the call is made; out of bounds after a shrink is a TypeError", async () => {
    const rab = new ArrayBuffer(8, { maxByteLength: 64 });
    const all = new Uint8Array(rab);
    all.set([1, 2, 3, 4, 5, 6, 7, 8]);
    const tail = new Uint8Array(rab, 4, 4);
    const dv = new DataView(rab, 2, 4);
    rab.resize(4);
    expect(info(all)).toEqual(["bytes", 4, "01020304"]);
    expect(() => info(tail)).toThrow(TypeError);
    expect(() => info(dv)).toThrow(TypeError);
    rab.resize(16);
    expect(info(all)[1]).toBe(16);
    expect(info(tail)).toEqual(["bytes", 4, "00000000"]); // in bounds again, zeroed by the growth
    const ctx = await context();
    await ctx.exec("def n(x):\n    return len(x)");
    const call = ctx.call("__main__", "n", [all]); // copied now: a later resize changes nothing
    rab.resize(0);
    expect(await call).toBe(16);
  });

  test("py.buffer refuses resizable and growable buffers, a DataView over one too", () => {
    const rab = new ArrayBuffer(8, { maxByteLength: 64 });
    expect(() => py.buffer(rab)).toThrow(/resizable/);
    expect(() => py.buffer(new Uint8Array(rab))).toThrow(/resizable/);
    expect(() => py.buffer(new DataView(rab))).toThrow(/resizable/);
    const gsab = new (SharedArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => SharedArrayBuffer)(8, { maxByteLength: 64 });
    expect(() => py.buffer(gsab)).toThrow(/resizable/);
  });

  test("a buffer detached between py.buffer() and the call is a ConversionError, nothing reaches Python", () => {
    const u = new Uint8Array(16).fill(7);
    const marked = py.buffer(u);
    u.buffer.transfer();
    expect(() => info(marked)).toThrow(/detached/);
  });
});

