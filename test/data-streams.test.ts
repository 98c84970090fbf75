// Iterators and streams both ways (issue 14, part 2): Python generators pulled lazily by
// JS from contexts in batches, JS iterables / async iterables / ReadableStreams pulled by
// Python, early close, errors mid-stream, a 1 GB stream in bounded memory.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { ConversionError, py, PythonError, type Context } from "../src/index.ts";
import { contextModes } from "./helpers.ts";

const SOURCE = `
import asyncio
closed = []
pulled = 0

def gen(n):
    global pulled
    try:
        for i in range(n):
            pulled += 1
            yield i
    finally:
        closed.append(n)

def boom(k):
    for i in range(k):
        yield i
    raise ValueError("broke after %d" % k)

def fails_at_once():
    raise KeyError("no such stream")

async def agen(n):
    try:
        for i in range(n):
            await asyncio.sleep(0)
            yield i * 10
    finally:
        closed.append(-n)

def chunks(count, size):
    chunk = bytes(size)
    for _ in range(count):
        yield chunk

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024

def consume(it):
    return [x * 2 for x in it]

def first_two(it):
    out = [next(it), next(it)]
    it.close()
    return out

async def aconsume(it):
    out = []
    async for x in it:
        out.append(x)
    return out

async def count_bytes(it):
    n = 0
    chunks = 0
    async for chunk in it:
        n += len(chunk)
        chunks += 1
    return [n, chunks]

def kind(it):
    return type(it).__name__
`;

const rss = () => process.memoryUsage().rss;

for (const mode of contextModes) {
  describe(`${mode} context: Python generators to JS`, () => {
    let ctx: Context;
    beforeAll(async () => {
      ctx = await py.context({ mode });
      await ctx.exec(SOURCE);
    });
    afterAll(() => ctx.close());

    test("a generator arrives item by item, in order, lazily", async () => {
      const it = ctx.iterate("__main__", "gen", [10_000]);
      expect(await ctx.eval("pulled")).toBe(0); // nothing runs before the first pull
      let sum = 0, n = 0;
      for await (const x of it) {
        sum += x as number;
        n++;
      }
      expect([n, sum]).toEqual([10_000, (10_000 * 9_999) / 2]);
      expect(await ctx.call("bunpy._stream", "open_streams", [])).toBe(0);
    });

    test("back-pressure: Python runs at most one batch ahead of JS (the next batch is fetched while JS consumes one)", async () => {
      await ctx.exec("pulled = 0");
      const it = ctx.iterate("__main__", "gen", [1000], undefined, { batch: 10 });
      expect((await it.next()).value).toBe(0);
      // the batch in hand (0-9) and the one asked for ahead (10-19); the eval runs after it
      expect(await ctx.eval("pulled")).toBe(20);
      for (let i = 1; i < 10; i++) await it.next();
      expect(await ctx.eval("pulled")).toBe(20);
      expect((await it.next()).value).toBe(10); // the batch fetched ahead: 20-29 is asked for now
      expect(await ctx.eval("pulled")).toBe(30);
      for (let i = 11; i < 20; i++) expect((await it.next()).value).toBe(i);
      expect(await ctx.eval("pulled")).toBe(30);
      await it.return!();
      expect(await ctx.call("bunpy._stream", "open_streams", [])).toBe(0);
    });

    test("{ prefetch: false }: Python advances only when JS pulls past the batch in hand", async () => {
      await ctx.exec("pulled = 0");
      const it = ctx.iterate("__main__", "gen", [1000], undefined, { batch: 10, prefetch: false });
      expect((await it.next()).value).toBe(0);
      expect(await ctx.eval("pulled")).toBe(10);
      for (let i = 1; i < 10; i++) await it.next();
      expect(await ctx.eval("pulled")).toBe(10);
      await it.next();
      expect(await ctx.eval("pulled")).toBe(20);
      await it.return!();
      const one = ctx.iterate("__main__", "gen", [5], undefined, { batch: 1, prefetch: false });
      await ctx.exec("pulled = 0");
      await one.next();
      await one.next();
      expect(await ctx.eval("pulled")).toBe(2); // exactly one item per pull
      await one.return!();
    });

    test("without a batch size, batches grow (doubling, at most 16384) only from 1024; a given size stays", async () => {
      await ctx.exec(`
import bunpy._stream as _s
sizes = []
if not hasattr(_s, "_orig_take"):
    _s._orig_take = _s.take
    def _take(sid, n):
        sizes.append(n)
        return _s._orig_take(sid, n)
    _s.take = _take
`);
      let n = 0;
      for await (const x of ctx.iterate("__main__", "gen", [300_000])) n += x === n ? 1 : 0;
      expect(n).toBe(300_000);
      const sizes = (await ctx.eval("sizes")) as number[];
      expect(sizes.length).toBeGreaterThan(0);
      let last = 1024;
      for (const k of sizes) {
        expect(k === last || k === 2 * last).toBe(true);
        expect(k).toBeLessThanOrEqual(16384);
        last = k;
      }
      await ctx.exec("sizes.clear()");
      for await (const x of ctx.iterate("__main__", "gen", [5000], undefined, { batch: 100 })) n += (x as number) >= 0 ? 1 : 0;
      expect(new Set(await ctx.eval("sizes"))).toEqual(new Set([100]));
      await ctx.exec("_s.take = _s._orig_take\ndel _s._orig_take");
    });

    test("an exception in a batch fetched ahead is thrown after the items before it; break before it leaves nothing open", async () => {
      const got: unknown[] = [];
      let error: unknown;
      try {
        for await (const x of ctx.iterate("__main__", "boom", [7], undefined, { batch: 3 })) got.push(x);
      } catch (e) {
        error = e;
      }
      expect(got).toEqual([0, 1, 2, 3, 4, 5, 6]);
      expect((error as PythonError).type).toBe("ValueError");
      // boom(3): the first batch is 0-2, the one asked for ahead raises at once; JS stops
      // before reaching it, so the error is dropped with the stream
      for await (const x of ctx.iterate("__main__", "boom", [3], undefined, { batch: 3 })) if (x === 0) break;
      expect(await ctx.call("bunpy._stream", "open_streams", [])).toBe(0);
    });

    test("break closes the generator: its finally runs in Python", async () => {
      await ctx.exec("closed.clear()");
      for await (const x of ctx.iterate("__main__", "gen", [100], undefined, { batch: 3 })) if (x === 4) break;
      expect(await ctx.eval("closed")).toEqual([100]);
      expect(await ctx.call("bunpy._stream", "open_streams", [])).toBe(0);
    });

    test("an exception mid-stream is thrown at that point, after the items before it", async () => {
      const got: unknown[] = [];
      let error: unknown;
      try {
        for await (const x of ctx.iterate("__main__", "boom", [5])) got.push(x);
      } catch (e) {
        error = e;
      }
      expect(got).toEqual([0, 1, 2, 3, 4]);
      expect(error).toBeInstanceOf(PythonError);
      expect((error as PythonError).type).toBe("ValueError");
      expect((error as PythonError).message).toContain("broke after 5");
      await expect(ctx.iterate("__main__", "fails_at_once", []).next()).rejects.toThrow(/no such stream/);
      expect(await ctx.call("bunpy._stream", "open_streams", [])).toBe(0);
    });

    test("async generators stream too, and close early", async () => {
      const all: unknown[] = [];
      for await (const x of ctx.iterate("__main__", "agen", [5])) all.push(x);
      expect(all).toEqual([0, 10, 20, 30, 40]);
      await ctx.exec("closed.clear()");
      for await (const x of ctx.iterate("__main__", "agen", [50], undefined, { batch: 2 })) if (x === 10) break;
      expect(await ctx.eval("closed")).toEqual([-50]);
    });

    test("concurrent next() calls get consecutive items", async () => {
      const it = ctx.iterate("__main__", "gen", [6], undefined, { batch: 2 });
      const rs = await Promise.all([it.next(), it.next(), it.next(), it.next(), it.next(), it.next(), it.next()]);
      expect(rs.map((r) => r.value)).toEqual([0, 1, 2, 3, 4, 5, undefined]);
      expect(rs[6]!.done).toBe(true);
    });

    test("1000 streams ended early and 200 dropped half-way leave nothing open", async () => {
      for (let i = 0; i < 1000; i++) {
        const it = ctx.iterate("__main__", "gen", [100], undefined, { batch: 2 });
        await it.next();
        await it.return!();
      }
      expect(await ctx.call("bunpy._stream", "open_streams", [])).toBe(0);
      await (async () => {
        for (let i = 0; i < 200; i++) await ctx.iterate("__main__", "gen", [100], undefined, { batch: 2 }).next();
      })();
      expect(await ctx.call("bunpy._stream", "open_streams", [])).toBeGreaterThan(0);
      let open = -1;
      for (let i = 0; i < 50 && open !== 0; i++) {
        Bun.gc(true);
        await Bun.sleep(5);
        open = await ctx.call("bunpy._stream", "open_streams", []);
      }
      expect(open).toBe(0); // garbage-collected PythonStreams closed their generators
    }, 30_000);

    test("bad arguments are TypeErrors", () => {
      expect(() => ctx.iterate("__main__", "gen", [1], undefined, { batch: 0 })).toThrow(TypeError);
      expect(() => ctx.iterate("__main__", "gen", 3 as any)).toThrow(TypeError);
    });
  });
}

describe("main interpreter", () => {
  test("a generator proxy iterates lazily and break closes it (its finally runs now)", () => {
    py.exec("def _g():\n  global _fin\n  _fin = False\n  try:\n    yield 1\n    yield 2\n  finally:\n    _fin = True");
    for (const x of py.call("__main__", "_g", [])) {
      expect(x).toBe(1);
      break;
    }
    expect(py.eval("_fin")).toBe(true);
  });
});

describe("JS iterables to Python", () => {
  let ctx: Context;
  beforeAll(async () => {
    ctx = await py.context();
    await ctx.exec(SOURCE);
    py.exec(SOURCE);
  });
  afterAll(() => ctx.close());

  test("an iterable reaches the main interpreter as an iterator pulled on demand", () => {
    expect(py.call("__main__", "kind", [py.iter([1])])).toBe("JSIterator");
    expect(py.call("__main__", "consume", [py.iter(new Set([1, 2, 3]))])).toEqual([2, 4, 6]);
    let pulled = 0;
    function* numbers() {
      try {
        for (let i = 0; ; i++) {
          pulled++;
          yield i;
        }
      } finally {
        pulled = -pulled;
      }
    }
    // an endless JS generator: Python takes two items and closes it (its finally runs)
    expect(py.call("__main__", "first_two", [py.iter(numbers(), { batch: 2 })])).toEqual([0, 1]);
    expect(pulled).toBe(-2);
  });

  test("async iterables and ReadableStreams reach contexts as async iterators", async () => {
    async function* letters() {
      yield "a";
      await Bun.sleep(1);
      yield "b";
    }
    expect(await ctx.call("__main__", "aconsume", [py.iter(letters())])).toEqual(["a", "b"]);
    const stream = new ReadableStream({
      start(c) {
        c.enqueue(new Uint8Array([1, 2]));
        c.enqueue(new Uint8Array([3]));
        c.close();
      },
    });
    expect(await ctx.call("__main__", "count_bytes", [py.iter(stream)])).toEqual([3, 2]);
    expect(await ctx.call("__main__", "consume", [py.iter([5, 6])])).toEqual([10, 12]);
  });

  test("a JS error mid-stream is raised in Python at that point", async () => {
    function* bad() {
      yield 1;
      throw new RangeError("source broke");
    }
    expect(() => py.call("__main__", "consume", [py.iter(bad(), { batch: 1 })])).toThrow(/source broke/);
    async function* abad() {
      yield 1;
      throw new RangeError("async source broke");
    }
    await expect(ctx.call("__main__", "aconsume", [py.iter(abad())])).rejects.toThrow(/async source broke/);
  });

  test("async sources cannot go to the main interpreter; bad sources are TypeErrors", () => {
    async function* a() {}
    expect(() => py.call("__main__", "consume", [py.iter(a())])).toThrow(ConversionError);
    expect(() => py.iter(3 as any)).toThrow(TypeError);
    expect(() => py.iter({} as any)).toThrow(TypeError);
  });

  test("a source Python drops half-way is let go (its return() runs)", async () => {
    const rt = (await import("../src/index.ts")).internals.runtime();
    const before = rt.callbacks.registered.size;
    let finished = 0;
    function* endless() {
      try {
        for (let i = 0; ; i++) yield i;
      } finally {
        finished++;
      }
    }
    py.exec("def first(it):\n    return next(it)");
    expect(py.call("__main__", "first", [py.iter(endless(), { batch: 4 })])).toBe(0);
    await ctx.exec("def first(it):\n    return next(it)");
    expect(await ctx.call("__main__", "first", [py.iter(endless(), { batch: 4 })])).toBe(0);
    for (let i = 0; i < 100 && (finished < 2 || rt.callbacks.registered.size !== before); i++) {
      py.eval("1");
      await Bun.sleep(5);
    }
    expect(finished).toBe(2);
    expect(rt.callbacks.registered.size).toBe(before);
  });

  test("finished sources are unregistered", async () => {
    const rt = (await import("../src/index.ts")).internals.runtime();
    const before = rt.callbacks.registered.size;
    for (let i = 0; i < 100; i++) py.call("__main__", "consume", [py.iter([i])]);
    expect(rt.callbacks.registered.size).toBe(before);
  });
});

describe("1 GB streams in bounded memory", () => {
  let ctx: Context;
  beforeAll(async () => {
    ctx = await py.context({ mode: "worker" });
    await ctx.exec(SOURCE);
  });
  afterAll(() => ctx.close());

  test("Python -> JS: 1024 chunks of 1 MiB", async () => {
    const start = rss();
    let peak = start, total = 0, n = 0;
    for await (const chunk of ctx.iterate("__main__", "chunks", [1024, 1 << 20])) {
      total += (chunk as Uint8Array).length;
      if (++n % 64 === 0) {
        Bun.gc(false);
        peak = Math.max(peak, rss());
      }
    }
    expect(total).toBe(1024 * (1 << 20));
    expect(peak - start).toBeLessThan(400 * 1024 * 1024);
  }, 120_000);

  test("JS -> Python: a 1 GB ReadableStream read by a context", async () => {
    const start = rss();
    let peak = start, sent = 0;
    const chunk = new Uint8Array(1 << 20);
    const stream = new ReadableStream({
      pull(c) {
        if (sent === 1024) return c.close();
        sent++;
        if (sent % 64 === 0) {
          Bun.gc(false);
          peak = Math.max(peak, rss());
        }
        c.enqueue(chunk);
      },
    }, { highWaterMark: 1 });
    expect(await ctx.call("__main__", "count_bytes", [py.iter(stream)])).toEqual([1024 * (1 << 20), 1024]);
    expect(peak - start).toBeLessThan(400 * 1024 * 1024);
  }, 120_000);
});

describe("pools", () => {
  test("pool.iterate keeps every pull on one context", async () => {
    const pool = await py.pool({ size: 2 });
    try {
      await pool.execAll(SOURCE);
      const streams = [pool.iterate("__main__", "gen", [300], undefined, { batch: 7 }), pool.iterate("__main__", "gen", [200], undefined, { batch: 5 })];
      const sums = await Promise.all(
        streams.map(async (s) => {
          let sum = 0;
          for await (const x of s) sum += x as number;
          return sum;
        }),
      );
      expect(sums).toEqual([(300 * 299) / 2, (200 * 199) / 2]);
    } finally {
      await pool.close();
    }
  }, 30_000);
});
