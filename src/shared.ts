/**
 * py.shared: the process-wide key-value store of the shim (shim/shared.c), the same one
 * Python sees as bunpy.shared in the main interpreter and in every context. JS reaches it
 * without taking the GIL: a value is encoded into the io buffer and copied into the store.
 */
import { BunpyError, ConversionError } from "./errors.ts";
import type { MainInterpreter } from "./main-interpreter.ts";

const enum Op {
  Get = 0,
  Set = 1,
  Incr = 2,
  Cas = 3,
  Delete = 4,
  Keys = 5,
  Clear = 6,
}

/** Atomic operations on string keys; values are stored by copy (see docs/data.md). */
export class SharedStore {
  constructor(private readonly rt: () => MainInterpreter) {}

  private run(op: Op, key: string | undefined, values: unknown[], delta = 0): { rc: number; value: unknown } {
    const m = this.rt();
    const w = m.wire;
    if (w.writing !== 0) return w.nested(() => this.run(op, key, values, delta));
    if (key !== undefined && typeof key !== "string") throw new TypeError("py.shared: keys are strings");
    w.begin();
    if (key !== undefined) w.writeString(key);
    for (const v of values) w.writeTop(v);
    const rc = m.lib.bp_shared(m.io, op, delta);
    if (rc < 0) {
      w.discard();
      if (rc === -2) throw new ConversionError(String(w.result()));
      throw new BunpyError("py.shared: out of memory");
    }
    return { rc, value: rc === 0 ? w.result() : undefined };
  }

  /** The value stored under `key` (a new copy), or undefined. */
  get(key: string): unknown {
    return this.run(Op.Get, key, []).value;
  }

  /** Whether `key` has a value. */
  has(key: string): boolean {
    return this.run(Op.Get, key, []).rc === 0;
  }

  /** Stores a copy of `value` (anything that crosses to Python by copy: no proxies, functions). */
  set(key: string, value: unknown): void {
    this.run(Op.Set, key, [value]);
  }

  /** Adds `delta` (default 1) atomically; a missing key counts as 0. Returns the new value. */
  incr(key: string, delta = 1): number {
    if (typeof delta !== "number" || !Number.isFinite(delta)) throw new TypeError("py.shared.incr(key, delta): delta must be a finite number");
    return this.run(Op.Incr, key, [], delta).value as number;
  }

  /** Stores `value` only if the current value equals `expected` (null: also a missing key).
      Returns whether it did. */
  compareAndSet(key: string, expected: unknown, value: unknown): boolean {
    return this.run(Op.Cas, key, [expected, value]).value as boolean;
  }

  /** Removes `key`; returns whether it was there. */
  delete(key: string): boolean {
    return this.run(Op.Delete, key, []).value as boolean;
  }

  keys(): string[] {
    return this.run(Op.Keys, undefined, []).value as string[];
  }

  /** Removes every key (for every JS thread and context). */
  clear(): void {
    this.run(Op.Clear, undefined, []);
  }
}
