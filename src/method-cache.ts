/**
 * Reading `proxy.method` without asking Python (shim/methods.c): the record the shim adds
 * to a "method" answer, and the memory reads that say it still holds.
 */
import { readPointer, readU32, viewOf, type Shim } from "./ffi.ts";
import type { MethodCache } from "./proxy.ts";

/** A record's fields (bp_method_answer's layout after the METHOD tag). */
export type MethodRecord = Omit<MethodCache, "names">;

export class MethodCacheCheck {
  /** The shim's dict-watcher generation, read without a call. */
  private readonly gen: Int32Array;
  /** offsetof(PyObject, ob_type), offsetof(PyTypeObject, tp_version_tag) */
  private readonly obTypeOffset: number;
  private readonly versionTagOffset: number;

  constructor(lib: Shim) {
    this.gen = new Int32Array(viewOf(lib.bp_method_gen(), 4));
    const layout = lib.bp_method_layout();
    this.obTypeOffset = layout & 0xffff;
    this.versionTagOffset = layout >>> 16;
  }

  /** What the shim checked when it answered "method" still holds for the object at
      `handle`. Reads memory of objects the record holds references to; no GIL needed
      (word reads). */
  valid(handle: number, mc: MethodCache): boolean {
    return (
      readPointer(handle, this.obTypeOffset) === mc.type &&
      readU32(mc.type, this.versionTagOffset) === mc.tag &&
      (mc.dictAddr === 0 || (readPointer(mc.dictAddr, 0) === mc.dict && this.gen[0] === mc.gen))
    );
  }
}

/** The record in an answer's buffer (the type and dict are references JS now holds). */
export function readMethodRecord(dv: DataView): MethodRecord {
  return {
    type: dv.getUint32(8, true) + dv.getUint32(12, true) * 2 ** 32,
    dictAddr: dv.getUint32(16, true) + dv.getUint32(20, true) * 2 ** 32,
    dict: dv.getUint32(24, true) + dv.getUint32(28, true) * 2 ** 32,
    tag: dv.getUint32(32, true),
    gen: dv.getInt32(36, true),
  };
}

/** The same record (so the references of the new one are surplus). */
export function sameRecord(a: MethodRecord, b: MethodRecord): boolean {
  return a.type === b.type && a.tag === b.tag && a.dictAddr === b.dictAddr && a.dict === b.dict && a.gen === b.gen;
}
