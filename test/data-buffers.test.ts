// Buffers without copies both ways (issue 14, part 1): py.view over Python memory, py.buffer
// over JS memory; lifetimes, release, every element type, non-contiguous layouts, contexts.
import { describe, expect, test } from "bun:test";
import { BunpyError, ConversionError, internals, py, PythonError, PyView } from "../src/index.ts";
import { closedAfterAll, contextModes, defineModule } from "./helpers.ts";
import { packageVenv } from "./fixtures/venv.ts";

defineModule(
  "t_buffers",
  `
import array, gc, mmap, weakref

ref = None
def track(obj):
    global ref
    ref = weakref.ref(obj)
def alive():
    gc.collect()
    return ref() is not None

held = []
def hold(m):
    held.append(m)
    return (m.format, m.itemsize, len(m), m.nbytes, m.readonly)
def held_sum():
    return sum(held[-1])
def write_held(i, v):
    held[-1][i] = v
def clear():
    held.clear()
    gc.collect()

def fill(m, start, stop, value):
    for i in range(start, stop):
        m[i] = value
    return len(m)

def try_write(m):
    try:
        m[0] = 1
    except TypeError as e:
        return "TypeError"
    return "written"
`,
);
const t = py.import("t_buffers") as any;
const rt = internals.runtime();
const live = (): number => py.call("_bunpy", "_views_live", []) as number;

async function collect(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    Bun.gc(true);
    await Bun.sleep(1);
  }
}

describe("py.view: Python memory seen from JS", () => {
  test("a bytearray: writes go both ways (no copy)", () => {
    py.exec("import t_buffers\nt_buffers.ba = bytearray(b'hello')");
    const v = py.view(t.ba) as Uint8Array;
    expect(v).toBeInstanceOf(Uint8Array);
    expect(Buffer.from(v).toString()).toBe("hello");
    v[0] = "J".charCodeAt(0);
    expect(py.eval("bytes(__import__('t_buffers').ba)")).toEqual(new TextEncoder().encode("Jello"));
    py.exec("__import__('t_buffers').ba[4] = ord('y')");
    expect(Buffer.from(v).toString()).toBe("Jelly");
    py.release(v);
  });

  test("array.array of every type code: the matching typed array and values", () => {
    const cases: [string, Function, unknown[]][] = [
      ["b", Int8Array, [-1, 2]],
      ["B", Uint8Array, [255, 2]],
      ["h", Int16Array, [-300, 2]],
      ["H", Uint16Array, [65535, 2]],
      ["i", Int32Array, [-70000, 2]],
      ["I", Uint32Array, [4000000000, 2]],
      ["l", BigInt64Array, [-(2n ** 40n), 2n]],
      ["L", BigUint64Array, [2n ** 63n, 2n]],
      ["q", BigInt64Array, [-(2n ** 62n), 2n]],
      ["Q", BigUint64Array, [2n ** 64n - 1n, 2n]],
      ["f", Float32Array, [1.5, -2.25]],
      ["d", Float64Array, [1e300, -2.5]],
    ];
    for (const [code, Ctor, values] of cases) {
      const literal = values.map(String).join(", ");
      const arr = py.eval(`__import__('array').array('${code}', [${literal}])`);
      const v = py.view(arr) as any;
      expect(v.constructor).toBe(Ctor);
      expect([...v]).toEqual(values);
      py.release(v);
    }
  });

  test("N-d and non-contiguous buffers come as { data, shape, strides, offset, dtype }", () => {
    const m = py.eval("memoryview(__import__('array').array('h', range(24))).cast('B').cast('h', (2, 3, 4))");
    const v = py.view(m) as PyView;
    expect(v).toBeInstanceOf(PyView);
    expect(v.shape).toEqual([2, 3, 4]);
    expect(v.strides).toEqual([12, 4, 1]);
    expect(v.dtype).toBe("int16");
    expect(v.data).toBeInstanceOf(Int16Array);
    const at = (i: number, j: number, k: number) => v.data[v.offset + i * v.strides[0]! + j * v.strides[1]! + k * v.strides[2]!];
    expect(at(1, 2, 3)).toBe(23);
    expect(at(0, 1, 2)).toBe(6);
    v.release();

    // a reversed, strided slice: negative stride, element [0] at the end of the extent
    const r = py.view(py.eval("memoryview(__import__('array').array('i', range(24)))[::-3]")) as PyView;
    expect(r.shape).toEqual([8]);
    expect(r.strides).toEqual([-3]);
    const items = Array.from({ length: 8 }, (_, i) => r.data[r.offset + i * r.strides[0]!]);
    expect(items).toEqual([23, 20, 17, 14, 11, 8, 5, 2]);
    r.release();
  });

  test("{ shaped: true } gives a PyView for a flat buffer; bytes are read-only", () => {
    const v = py.view(py.eval("memoryview(b'abc')"), { shaped: true }) as PyView;
    expect(v.readonly).toBe(true);
    expect(v.shape).toEqual([3]);
    expect(v.dtype).toBe("uint8");
    expect([...v.data]).toEqual([97, 98, 99]);
    v.release();
    const w = py.view(py.eval("bytearray(2)"), { shaped: true }) as PyView;
    expect(w.readonly).toBe(false);
    w.release();
  });

  test("{ raw: true } views the bytes whatever the format; an empty buffer is an empty array", () => {
    const v = py.view(py.eval("__import__('array').array('d', [1.0])"), { raw: true }) as PyView;
    expect(v.data).toBeInstanceOf(Uint8Array);
    expect(v.data.length).toBe(8);
    expect(v.itemsize).toBe(8);
    expect(v.strides).toEqual([8]);
    expect(new Float64Array(v.data.slice().buffer)[0]).toBe(1);
    v.release();
    const e = py.view(py.eval("bytearray()")) as Uint8Array;
    expect(e.length).toBe(0);
  });

  test("an mmap is viewed in place", () => {
    py.exec("import mmap, t_buffers\nt_buffers.mm = mmap.mmap(-1, 4096)\nt_buffers.mm[0:3] = b'abc'");
    const v = py.view(t.mm) as Uint8Array;
    expect(v.length).toBe(4096);
    expect(v[1]).toBe(98);
    v[3] = 100;
    expect(py.eval("__import__('t_buffers').mm[0:4]")).toEqual(new TextEncoder().encode("abcd"));
    py.release(v);
    // mmap.close() refuses while a view exports its memory: nothing is unmapped under JS
    py.exec("__import__('t_buffers').mm.close()");
  });

  test("an mmap with a live view cannot be closed (BufferError), so JS never reads unmapped memory", () => {
    py.exec("import mmap, t_buffers\nt_buffers.mm2 = mmap.mmap(-1, 4096)");
    const v = py.view(t.mm2) as Uint8Array;
    expect(() => py.exec("__import__('t_buffers').mm2.close()")).toThrow(/BufferError|exported/);
    py.release(v);
    py.exec("__import__('t_buffers').mm2.close()");
  });

  test("objects without the buffer protocol, and non-proxies, give typed errors", () => {
    expect(() => py.view(py.eval("object()"))).toThrow(PythonError);
    expect(() => py.view(py.eval("object()"))).toThrow(/buffer protocol/);
    expect(() => py.view(new Uint8Array(2) as any)).toThrow(TypeError);
    expect(() => py.view(py.eval("bytearray(1)"), 3 as any)).toThrow(TypeError);
  });

  test("the Python object stays alive while the view does, and goes with it", async () => {
    const holder: { v?: Float64Array } = {};
    (() => {
      const arr = py.eval("__import__('array').array('d', [1.0, 2.0, 3.0])");
      t.track(arr);
      holder.v = py.view(arr) as Float64Array;
    })();
    await collect();
    py.eval("1");
    expect(t.alive()).toBe(true); // only the view holds it
    expect(Array.from(holder.v!)).toEqual([1, 2, 3]);
    delete holder.v;
    // the view is garbage now: its ArrayBuffer's deallocator queues the buffer, the next
    // call into Python releases it (JSC scans stacks conservatively: give it a few rounds)
    let gone = false;
    for (let i = 0; i < 50 && !gone; i++) {
      await collect();
      gone = !t.alive();
    }
    expect(gone).toBe(true);
  });

  test("a released view is detached: it reads as empty, never freed memory", () => {
    const arr = py.eval("__import__('array').array('d', [1.0, 2.0])");
    t.track(arr);
    const v = py.view(arr) as Float64Array;
    const before = live();
    expect(py.release(v)).toBe(true);
    expect(live()).toBe(before - 1); // the Python buffer is let go at once
    expect(v.length).toBe(0);
    expect(v[0]).toBeUndefined();
    expect((v.buffer as ArrayBuffer).detached).toBe(true);
    expect(py.isReleased(v)).toBe(true);
    expect(py.release(v)).toBe(false); // twice: nothing to do
    const s = py.view(arr, { shaped: true }) as PyView;
    const data = s.data;
    s.release();
    expect(() => s.data).toThrow(BunpyError); // a PyView says so
    expect(data.length).toBe(0); // a typed array taken from it before reads as empty
    expect(py.isReleased(s)).toBe(true);
  });

  test("a view made while another view of the object is alive shares its memory; releasing one releases both", () => {
    py.exec("import t_buffers\nt_buffers.shared_ba = bytearray(range(16))");
    const v1 = py.view(t.shared_ba) as Uint8Array;
    const n = live();
    const v2 = py.view(t.shared_ba) as Uint8Array;
    const s = py.view(t.shared_ba, { shaped: true }) as PyView;
    const raw = py.view(t.shared_ba, { raw: true }) as PyView;
    expect(live()).toBe(n); // no second Python buffer
    expect(v2.buffer).toBe(v1.buffer); // one ArrayBuffer: its cost does not grow with the size
    expect(s.data.buffer).toBe(v1.buffer);
    v2[3] = 99;
    expect([v1[3], s.data[3], raw.data[3]]).toEqual([99, 99, 99]);
    expect(py.eval("__import__('t_buffers').shared_ba[3]")).toBe(99);
    expect(py.release(v2)).toBe(true);
    expect(live()).toBe(n - 1); // the object is let go at once
    expect(v1.length).toBe(0);
    expect(py.isReleased(v1)).toBe(true);
    expect(py.isReleased(raw)).toBe(true);
    expect(() => s.data).toThrow(BunpyError);
    expect(py.release(v1)).toBe(false);
    py.exec("t_buffers.shared_ba.extend(b'xy')"); // resizable again: no buffer is exported
    const v3 = py.view(t.shared_ba) as Uint8Array; // a new view after the release
    expect(v3.buffer).not.toBe(v1.buffer);
    expect([v3.length, v3[3], v3[17]]).toEqual([18, 99, 121]);
    py.release(v3);
  });

  test("two views of one object: dropping one keeps the other (and the object); dropping both lets it go", async () => {
    const holder: { a?: Float64Array; b?: PyView } = {};
    (() => {
      const arr = py.eval("__import__('array').array('d', [4.0, 5.0, 6.0])");
      t.track(arr);
      holder.a = py.view(arr) as Float64Array;
      holder.b = py.view(arr, { shaped: true }) as PyView;
    })();
    delete holder.a;
    await collect();
    py.eval("1");
    expect(t.alive()).toBe(true);
    expect(Array.from(holder.b!.data as Float64Array)).toEqual([4, 5, 6]);
    delete holder.b;
    let gone = false;
    for (let i = 0; i < 50 && !gone; i++) {
      await collect();
      gone = !t.alive();
    }
    expect(gone).toBe(true);
  });

  test.skipIf(Number(py.version.split(".")[1]) < 12)("an object that exports other memory the next time gets a new view (Python 3.12+ __buffer__)", () => {
    py.exec(`
import t_buffers
class Flip:
    def __init__(self):
        self.bufs = [bytearray(b"ab"), bytearray(b"xyz")]
        self.i = 0
    def __buffer__(self, flags):
        b = self.bufs[self.i]
        self.i ^= 1
        return memoryview(b)
    def __release_buffer__(self, view):
        view.release()
t_buffers.flip = Flip()
`);
    const a = py.view(t.flip) as Uint8Array;
    const b = py.view(t.flip) as Uint8Array;
    expect(b.buffer).not.toBe(a.buffer);
    expect(new TextDecoder().decode(a)).toBe("ab");
    expect(new TextDecoder().decode(b)).toBe("xyz");
    const c = py.view(t.flip) as Uint8Array; // "ab" again, while a's ArrayBuffer is not the last one
    expect(new TextDecoder().decode(c)).toBe("ab");
    for (const v of [a, b, c]) py.release(v);
  });

  test("10k view/release cycles and 10k dropped views leak nothing", async () => {
    py.exec("import t_buffers\nt_buffers.big = bytearray(1 << 20)");
    await collect();
    const base = live();
    for (let i = 0; i < 10_000; i++) py.release(py.view(t.big));
    expect(live()).toBe(base);
    const rss0 = process.memoryUsage().rss;
    for (let i = 0; i < 10_000; i++) py.view(t.big);
    for (let i = 0; i < 20 && live() !== base; i++) await collect();
    expect(live()).toBe(base);
    for (let i = 0; i < 10_000; i++) py.release(py.view(t.big));
    expect(process.memoryUsage().rss - rss0).toBeLessThan(64 * 1024 * 1024);
    expect(py.eval("__import__('sys').getrefcount(__import__('t_buffers').big)")).toBeLessThan(5);
  });

  test("its internal functions take only records JS holds: a made-up address is refused, not freed", () => {
    // _bunpy._view_close(address) used to release and free whatever the number pointed at
    py.exec(`
import _bunpy
def close_fake(addr):
    try:
        _bunpy._view_close(addr)
        return "closed"
    except ValueError as e:
        return str(e)
fake = bytearray(256)
`);
    expect(py.eval("close_fake(id(fake))")).toContain("not a view record JS holds");
    expect(py.eval("close_fake(0x41414141)")).toContain("not a view record JS holds");
    // a `prev` that is not a live record is not compared with (it would be read)
    expect(py.eval("_bunpy._view(b'abc', 0x41414141)[0] != 0x41414141")).toBe(true);
    expect(py.eval("_bunpy._view_close(_bunpy._view(b'abc')[0])")).toBe(null);
    // and py.view still works
    py.exec("import t_buffers\nt_buffers.small = bytearray(b'view')");
    const v = py.view(t.small) as Uint8Array;
    expect([...v]).toEqual([...new TextEncoder().encode("view")]);
    py.release(v);
  });

  test.skipIf(!contextModes.includes("owngil" as never))("another interpreter cannot use them (its GIL is not the main one)", async () => {
    const ctx = await py.context({ mode: "owngil" });
    try {
      const e = await ctx.eval("__import__('_bunpy')._view(b'abc')").catch((x: unknown) => x);
      expect(e).toBeInstanceOf(PythonError);
      expect(String((e as Error).message)).toContain("belongs to the main interpreter");
    } finally {
      await ctx.close();
    }
  });
});

describe("py.buffer: JS memory lent to Python", () => {
  test("a Float64Array reaches Python as a writable memoryview over the same memory", () => {
    const a = new Float64Array([1, 2, 3]);
    expect(t.hold(py.buffer(a))).toEqual(["d", 8, 3, 24, false]);
    t.write_held(0, 42.5);
    expect(a[0]).toBe(42.5);
    a[2] = 100;
    expect(t.held_sum()).toBe(144.5);
    t.clear();
  });

  test("each typed array kind has its struct format; byteOffset is respected", () => {
    const kinds: [ArrayBufferView | ArrayBuffer, string, number][] = [
      [new Int8Array(2), "b", 1], [new Uint8Array(2), "B", 1], [new Uint8ClampedArray(2), "B", 1],
      [new Int16Array(2), "h", 2], [new Uint16Array(2), "H", 2], [new Int32Array(2), "i", 4],
      [new Uint32Array(2), "I", 4], [new Float32Array(2), "f", 4], [new Float64Array(2), "d", 8],
      [new BigInt64Array(2), "q", 8], [new BigUint64Array(2), "Q", 8], [new Float16Array(2), "e", 2],
      [new ArrayBuffer(8), "B", 1], [new DataView(new ArrayBuffer(8)), "B", 1], [Buffer.alloc(3), "B", 1],
    ];
    for (const [x, format, size] of kinds) {
      const [f, itemsize] = t.hold(py.buffer(x)) as [string, number];
      expect([f, itemsize]).toEqual([format, size]);
    }
    const whole = new Int16Array([0, 1, 2, 3, 4]);
    const part = whole.subarray(2, 4);
    expect(t.hold(py.buffer(part))).toEqual(["h", 2, 2, 4, false]);
    t.write_held(1, -7);
    expect([...whole]).toEqual([0, 1, 2, -7, 4]);
    expect(t.hold(py.buffer(new Uint8Array(0)))).toEqual(["B", 1, 0, 0, false]);
    t.clear();
  });

  test("read-only: Python cannot write", () => {
    const a = new Uint8Array(4);
    expect(t.hold(py.buffer(a, { readonly: true }))[4]).toBe(true);
    expect(t.try_write(py.buffer(a, { readonly: true }))).toBe("TypeError");
    expect(a[0]).toBe(0);
    t.clear();
  });

  test("JS memory stays alive while Python holds it, and is unpinned when Python lets go", async () => {
    const before = rt.callbacks.pinnedBuffers;
    (() => {
      const a = new Float64Array(1000).fill(2);
      t.hold(py.buffer(a));
    })();
    for (let i = 0; i < 5; i++) {
      await collect();
      new Float64Array(100_000).fill(9); // reuse freed memory if the array was freed
    }
    expect(t.held_sum()).toBe(2000);
    expect(rt.callbacks.pinnedBuffers).toBe(before + 1);
    t.clear();
    expect(rt.callbacks.pinnedBuffers).toBe(before);
  });

  test("bad inputs give TypeErrors", () => {
    expect(() => py.buffer([1, 2] as any)).toThrow(TypeError);
    expect(() => py.buffer(new ArrayBuffer(8, { maxByteLength: 16 }))).toThrow(/resizable/);
    const ab = new ArrayBuffer(8);
    ab.transfer();
    expect(() => py.buffer(ab)).toThrow(/detached/);
  });

  test("10k lent buffers are all unpinned", () => {
    const before = rt.callbacks.pinnedBuffers;
    const a = new Uint8Array(16);
    for (let i = 0; i < 10_000; i++) t.fill(py.buffer(a), 0, 1, i & 255);
    expect(a[0]).toBe(9999 & 255);
    py.eval("__import__('gc').collect()");
    expect(rt.callbacks.pinnedBuffers).toBe(before);
  });

  const { context } = closedAfterAll();
  for (const mode of contextModes) {
    test(`a SharedArrayBuffer is shared with ${mode} contexts working in parallel`, async () => {
      const a = await context(mode);
      const b = await context(mode);
      const src = `
def fill(m, start, stop, value):
    for i in range(start, stop):
        m[i] = value
    return stop - start
`;
      await Promise.all([a.exec(src), b.exec(src)]);
      const sab = new SharedArrayBuffer(4 * 1000);
      const view = new Int32Array(sab);
      const done = await Promise.all([
        a.call("__main__", "fill", [py.buffer(view), 0, 500, 7]),
        b.call("__main__", "fill", [py.buffer(view), 500, 1000, 9]),
      ]);
      expect(done).toEqual([500, 500]);
      expect(view[0]).toBe(7);
      expect(view[499]).toBe(7);
      expect(view[500]).toBe(9);
      expect(view[999]).toBe(9);
      expect(view.reduce((s, x) => s + x, 0)).toBe(500 * 7 + 500 * 9);
      // the contexts let go of their memoryviews: the pins go at the next py.buffer / call
      py.eval("1");
      for (let i = 0; i < 50 && rt.callbacks.pinnedBuffers !== 0; i++) await Bun.sleep(5);
      expect(rt.callbacks.pinnedBuffers).toBe(0);
    });
  }
});

// numpy: wheels exist for Python 3.11 on this machine's index; elsewhere the tests skip
const np = packageVenv("data", ["numpy"]);
const npSkip = "skip" in np ? np.skip : undefined;
describe("numpy", () => {
  if (!("skip" in np)) py.exec(`import sys\nif ${JSON.stringify(np.site)} not in sys.path: sys.path.append(${JSON.stringify(np.site)})`);

  test.skipIf(npSkip !== undefined)(`every dtype views with the right typed array${npSkip ? ` (${npSkip})` : ""}`, () => {
    const cases: [string, string, Function][] = [
      ["int8", "int8", Int8Array], ["uint8", "uint8", Uint8Array], ["int16", "int16", Int16Array],
      ["uint16", "uint16", Uint16Array], ["int32", "int32", Int32Array], ["uint32", "uint32", Uint32Array],
      ["int64", "int64", BigInt64Array], ["uint64", "uint64", BigUint64Array], ["float16", "float16", Float16Array],
      ["float32", "float32", Float32Array], ["float64", "float64", Float64Array], ["bool", "bool", Uint8Array],
      ["complex64", "complex64", Float32Array], ["complex128", "complex128", Float64Array],
      ["intc", "int32", Int32Array], ["longlong", "int64", BigInt64Array], ["intp", "int64", BigInt64Array],
    ];
    for (const [np_dtype, dtype, Ctor] of cases) {
      const arr = py.eval(`__import__('numpy').arange(6).astype('${np_dtype}')`);
      const v = py.view(arr, { shaped: true }) as PyView;
      expect([np_dtype, v.dtype]).toEqual([np_dtype, dtype]);
      expect(v.data.constructor).toBe(Ctor);
      const per = dtype.startsWith("complex") ? 2 : 1;
      expect(v.data.length).toBe(6 * per);
      const second = v.data[v.offset + v.strides[0]!];
      expect(Number(second)).toBe(1);
      if (per === 2) expect(Number(v.data[v.offset + v.strides[0]! + 1])).toBe(0); // imaginary part
      v.release();
    }
  });

  test.skipIf(npSkip !== undefined)("2-D C and Fortran order, a non-contiguous slice, writes both ways", () => {
    py.exec("import numpy as np, t_buffers\nt_buffers.a = np.arange(12, dtype=np.float64).reshape(3, 4)");
    const a = py.view(t.a) as PyView;
    expect(a.shape).toEqual([3, 4]);
    expect(a.strides).toEqual([4, 1]);
    a.data[a.offset + 2 * 4 + 1] = -1;
    expect(py.eval("float(__import__('t_buffers').a[2, 1])")).toBe(-1);
    const f = py.view(py.eval("__import__('numpy').asfortranarray(__import__('t_buffers').a)")) as PyView;
    expect(f.strides).toEqual([1, 3]);
    expect(f.data[f.offset + 2 * f.strides[0]! + 1 * f.strides[1]!]).toBe(-1);
    const s = py.view(py.eval("__import__('t_buffers').a[::2, ::-1]")) as PyView;
    expect(s.shape).toEqual([2, 4]);
    expect(s.strides).toEqual([8, -1]);
    const row = (i: number) => Array.from({ length: 4 }, (_, j) => s.data[s.offset + i * s.strides[0]! + j * s.strides[1]!]);
    expect(row(0)).toEqual([3, 2, 1, 0]);
    expect(row(1)).toEqual([11, 10, -1, 8]);
    py.exec("t_buffers.a[0, 3] = 33");
    expect(row(0)[0]).toBe(33);
    for (const v of [a, f, s]) v.release();
  });

  test.skipIf(npSkip !== undefined)("a view after an in-place reshape has the new shape; the one before keeps its own", () => {
    py.exec("import numpy as np, t_buffers\nt_buffers.r = np.arange(6, dtype=np.float64)");
    const flat = py.view(t.r) as Float64Array;
    py.exec("t_buffers.r.shape = (2, 3)");
    const m = py.view(t.r) as PyView;
    expect(m.shape).toEqual([2, 3]);
    expect(m.data[m.offset + 1 * m.strides[0]! + 2]).toBe(5);
    expect(flat.length).toBe(6);
    expect(flat[5]).toBe(5);
    m.data[0] = -3;
    expect(flat[0]).toBe(-3); // the same memory
    py.release(flat);
    m.release();
  });

  test.skipIf(npSkip !== undefined)("big-endian data is refused (or viewed raw); read-only arrays say so", () => {
    const be = py.eval("__import__('numpy').arange(3, dtype='>f8')");
    expect(() => py.view(be)).toThrow(ConversionError);
    expect(() => py.view(be)).toThrow(/big-endian/);
    const raw = py.view(be, { raw: true }) as PyView;
    expect(raw.data.length).toBe(24);
    expect(new DataView(raw.data.buffer).getFloat64(8, false)).toBe(1);
    raw.release();
    const ro = py.eval("(lambda a: (a.setflags(write=False), a)[1])(__import__('numpy').zeros(2))");
    const v = py.view(ro, { shaped: true }) as PyView;
    expect(v.readonly).toBe(true);
    v.release();
  });

  test.skipIf(npSkip !== undefined)("np.frombuffer over py.buffer: numpy works on JS memory", () => {
    defineModule("t_np_buf", "import numpy as np\ndef double(m):\n    a = np.frombuffer(m, dtype=np.float64)\n    a *= 2\n    return float(a.sum())\n");
    const js = new Float64Array([1, 2, 3, 4]);
    expect(py.call("t_np_buf", "double", [py.buffer(js)])).toBe(20);
    expect([...js]).toEqual([2, 4, 6, 8]);
  });

  test.skipIf(npSkip !== undefined)("numpy in a worker context on a SharedArrayBuffer", async () => {
    const ctx = await py.context({ mode: "worker" });
    try {
      await ctx.exec("import numpy as np\ndef scale(m, k):\n    a = np.frombuffer(m, dtype=np.float32)\n    a *= k\n    return float(a.sum())\n");
      const sab = new SharedArrayBuffer(4 * 8);
      const v = new Float32Array(sab).fill(1);
      expect(await ctx.call("__main__", "scale", [py.buffer(v), 3])).toBe(24);
      expect(v[7]).toBe(3);
    } finally {
      await ctx.close();
    }
  });
});
