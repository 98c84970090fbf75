/**
 * Memory shared between JS and Python without a copy (see docs/data.md).
 *
 *  - py.view(obj): a typed array over the memory of a Python object with the buffer
 *    protocol (bytes, bytearray, memoryview, array.array, mmap, numpy arrays). The shim keeps
 *    the object's Py_buffer until the ArrayBuffer's memory is let go (garbage collection,
 *    or release(), which detaches it so no JS read can reach the memory afterwards).
 *  - py.buffer(x): marks a TypedArray / ArrayBuffer / SharedArrayBuffer argument to reach
 *    Python as a memoryview over the JS memory itself. JS keeps it pinned until Python's
 *    last reference to it is gone.
 */
import { types } from "node:util";
import { BunpyError, ConversionError } from "./errors.ts";
import { externalBuffer } from "./ffi.ts";
import type { MainInterpreter } from "./main-interpreter.ts";
import type { PyObject } from "./proxy.ts";

/** Element types a view can have, named as numpy names its dtypes. */
export type DType =
  | "int8" | "uint8" | "int16" | "uint16" | "int32" | "uint32" | "int64" | "uint64"
  | "float16" | "float32" | "float64" | "complex64" | "complex128" | "bool";

export type ViewData =
  | Int8Array | Uint8Array | Int16Array | Uint16Array | Int32Array | Uint32Array
  | BigInt64Array | BigUint64Array | Float16Array | Float32Array | Float64Array;

export interface ViewOptions {
  /** Always return a PyView ({ data, shape, strides, ... }), also for a flat contiguous buffer. */
  shaped?: boolean;
  /** View the bytes (a Uint8Array over the whole extent, strides and offset in bytes), whatever
      the element format: for big-endian data and struct formats a typed array cannot hold. */
  raw?: boolean;
}

/**
 * An N-dimensional or non-contiguous view, or any view asked for with `{ shaped: true }`.
 * Element [i, j, ...] is data[offset + i*strides[0] + j*strides[1] + ...]; complex dtypes
 * keep (real, imaginary) pairs, so its imaginary part is the next element.
 */
export class PyView {
  readonly #data: ViewData;
  constructor(
    data: ViewData,
    readonly shape: number[],
    /** Strides in elements of `data` (bytes with { raw: true }); negative for reversed axes. */
    readonly strides: number[],
    /** Index in `data` of element [0, 0, ...]. */
    readonly offset: number,
    /** numpy-style name of the element type ("float64", ...); "bytes" with { raw: true }. */
    readonly dtype: DType | "bytes",
    /** The buffer's struct format as Python reports it ("<d", "B", "Zf", ...). */
    readonly format: string,
    /** Bytes per element as Python reports it. */
    readonly itemsize: number,
    /** The Python object refuses writes (bytes, a read-only mmap, a non-writeable numpy
        array): JS must not write through `data` (nothing stops a typed array from it). */
    readonly readonly: boolean,
  ) {
    this.#data = data;
  }

  /** A typed array over the whole extent of the buffer (the Python object's own memory).
      Throws BunpyError once the view was released. */
  get data(): ViewData {
    const d = this.#data;
    if (d.buffer.byteLength === 0 && d.byteLength === 0 && (d.buffer as ArrayBuffer).detached)
      throw new BunpyError("this view was released (py.release): its memory belongs to Python again");
    return d;
  }

  /** Lets the Python object go now (see py.release). */
  release(): void {
    releaseView(this);
  }

  [Symbol.dispose](): void {
    releaseView(this);
  }
}

/** The ArrayBuffer each live view stands on (the typed array or the PyView). */
const owned = new WeakMap<object, ArrayBuffer>();

type Ctor = { new (buffer: ArrayBuffer, byteOffset?: number, length?: number): ViewData; BYTES_PER_ELEMENT: number };

const INTS: Record<number, [Ctor, DType]> = { 1: [Int8Array, "int8"], 2: [Int16Array, "int16"], 4: [Int32Array, "int32"], 8: [BigInt64Array, "int64"] };
const UINTS: Record<number, [Ctor, DType]> = { 1: [Uint8Array, "uint8"], 2: [Uint16Array, "uint16"], 4: [Uint32Array, "uint32"], 8: [BigUint64Array, "uint64"] };
const FLOATS: Record<number, [Ctor, DType]> = { 2: [Float16Array as unknown as Ctor, "float16"], 4: [Float32Array, "float32"], 8: [Float64Array, "float64"] };

/**
 * The typed array constructor, dtype and elements-per-item of a struct format with the
 * item size Python reports (numpy writes native formats like "l" without a prefix and
 * standard ones like "<q"; the item size settles the width either way).
 */
function elementType(format: string, itemsize: number): [Ctor, DType, number] | string {
  let f = format;
  const order = f[0];
  if (order === "@" || order === "=" || order === "<" || order === ">" || order === "!") f = f.slice(1);
  if ((order === ">" || order === "!") && itemsize > 1)
    return `big-endian data ("${format}") cannot be viewed as a typed array; convert it (numpy: .astype("<${f}")) or use { raw: true }`;
  let t: [Ctor, DType] | undefined;
  let per = 1;
  switch (f) {
    case "b": case "h": case "i": case "l": case "q": case "n":
      t = INTS[itemsize];
      break;
    case "B": case "H": case "I": case "L": case "Q": case "N": case "c":
      t = UINTS[itemsize];
      break;
    case "?":
      if (itemsize === 1) t = [Uint8Array, "bool"];
      break;
    case "e": case "f": case "d":
      t = FLOATS[itemsize];
      break;
    case "Zf": case "Zd":
      t = FLOATS[itemsize / 2];
      if (t) t = [t[0], itemsize === 8 ? "complex64" : "complex128"];
      per = 2;
      break;
  }
  if (t === undefined) return `the element format "${format}" (${itemsize} bytes) has no typed array; use { raw: true } to view its bytes`;
  return [t[0], t[1], per];
}

/**
 * The ArrayBuffer last made over each object's memory, while it is alive and not released.
 * Bun counts a new external ArrayBuffer's whole length as memory JS allocated (JavaScriptCore
 * adds it to the bytes that trigger the next garbage collection), so one new ArrayBuffer per
 * view of a 100 MB object would run a collection every view or so. Views made while one is
 * alive share it instead: their cost does not depend on the size. The ArrayBuffer keeps the
 * proxy alive (`proxyOf`), the proxy keeps its entry; nothing here keeps the ArrayBuffer.
 */
const current = new WeakMap<PyObject, { buffer: WeakRef<ArrayBuffer>; record: number }>();
const proxyOf = new WeakMap<ArrayBuffer, PyObject>();

type ViewInfo = [number, number, number, number, string, number, boolean, number[], number[]];

/** py.view(obj, options) on the main interpreter of this JS thread. */
export function openView(rt: MainInterpreter, obj: PyObject, options: ViewOptions = {}): ViewData | PyView {
  if (options === null || typeof options !== "object") throw new TypeError("py.view(obj, options): options must be an object");
  const entry = current.get(obj);
  let live = entry?.buffer.deref();
  if (live !== undefined && live.detached) live = undefined;
  let info = rt.callFunction("_bunpy", "_view", live === undefined ? [obj] : [obj, entry!.record]) as ViewInfo;
  if (live !== undefined && info[0] === entry!.record && live.detached) {
    // released by Python code run while the buffer was taken (a JS callback): start over
    info = rt.callFunction("_bunpy", "_view", [obj]) as ViewInfo;
    live = undefined;
  }
  const [record, base, span, first, format, itemsize, readonly, shape, byteStrides] = info;
  const reused = live !== undefined && record === entry!.record;
  // the element type is checked before an ArrayBuffer exists: nothing to detach on failure
  let type: [Ctor, DType, number] | undefined;
  if (options.raw !== true) {
    const t = elementType(format, itemsize);
    let error = typeof t === "string" ? t : undefined;
    if (typeof t !== "string") {
      const size = itemsize / t[2];
      if (first % size !== 0 || byteStrides.some((s) => s % size !== 0) || span % size !== 0)
        error = `the strides or offset of this buffer are not a multiple of its ${size}-byte element; use { raw: true }`;
      else type = t;
    }
    if (error !== undefined) {
      if (record !== 0 && !reused) rt.callFunction("_bunpy", "_view_close", [record]);
      throw new ConversionError(`py.view: ${error}`);
    }
  }
  let buffer: ArrayBuffer;
  if (record === 0) {
    buffer = new ArrayBuffer(0);
  } else if (reused) {
    buffer = live!;
  } else {
    try {
      buffer = externalBuffer(base, span, record, rt.viewDeallocator);
    } catch (e) {
      rt.callFunction("_bunpy", "_view_close", [record]);
      throw e;
    }
    // From here the ArrayBuffer owns the record: dropping it releases the Python buffer.
    current.set(obj, { buffer: new WeakRef(buffer), record });
    proxyOf.set(buffer, obj);
  }
  if (type === undefined) {
    const view = new PyView(new Uint8Array(buffer), shape, byteStrides, first, "bytes", format, itemsize, readonly);
    owned.set(view, buffer);
    return view;
  }
  const [Ctor, dtype, per] = type;
  const size = itemsize / per;
  const data = new Ctor(buffer, 0, span / size);
  const flat = per === 1 && shape.length === 1 && first === 0 && byteStrides[0] === itemsize;
  if (flat && options.shaped !== true) {
    owned.set(data, buffer);
    return data;
  }
  const strides = byteStrides.map((s) => s / size);
  const view = new PyView(data, shape, strides, first / size, dtype, format, itemsize, readonly);
  owned.set(view, buffer);
  return view;
}

function detach(buffer: ArrayBuffer): void {
  if (!buffer.detached) buffer.transfer(0);
}

let releaseHook: (() => void) | undefined;

/** Set by index.ts: runs the shim's queue of freed views now (a bp_flush). */
export function onRelease(hook: () => void): void {
  releaseHook = hook;
}

/** Detaches the view's memory: every typed array over it reads as empty from now on, and
    the Python object is let go at once. Returns false for something that is not a live view. */
export function releaseView(view: unknown): boolean {
  if (view === null || typeof view !== "object") return false;
  const buffer = owned.get(view);
  if (buffer === undefined || buffer.detached) return false;
  detach(buffer);
  releaseHook?.();
  return true;
}

/** Whether py.release() was called on this view (or its memory was detached otherwise). */
export function isReleased(view: unknown): boolean {
  if (view === null || typeof view !== "object") return false;
  const buffer = owned.get(view);
  if (buffer !== undefined) return buffer.detached;
  return ArrayBuffer.isView(view) && (view.buffer as ArrayBuffer).detached === true;
}

// ------------------------------------------------------------------ JS -> Python --

export interface BufferOptions {
  /** Python gets a read-only memoryview (writes raise TypeError / BufferError). */
  readonly?: boolean;
}

/** The struct format of each typed array kind (what Python's memoryview.format shows), by
    the kind its internal slots say (%TypedArray%.prototype[Symbol.toStringTag]). */
const FORMATS = new Map<string, string>([
  ["Int8Array", "b"], ["Uint8Array", "B"], ["Uint8ClampedArray", "B"], ["Int16Array", "h"], ["Uint16Array", "H"],
  ["Int32Array", "i"], ["Uint32Array", "I"], ["Float16Array", "e"], ["Float32Array", "f"], ["Float64Array", "d"],
  ["BigInt64Array", "q"], ["BigUint64Array", "Q"],
]);

// What a typed array, DataView or buffer stands on is read through the built-in getters,
// taken once here: a property of its own (Object.defineProperty(u, "byteLength", ...)), a
// subclass getter or a patched prototype cannot make Python see more memory than there is
// (a memoryview past the end), pin another buffer than the one lent, or hide a resizable one.
type Getter = (this: unknown) => unknown;
const getter = (o: object, key: PropertyKey): Getter => Object.getOwnPropertyDescriptor(o, key)!.get! as Getter;
const TYPED = Object.getPrototypeOf(Uint8Array.prototype) as object;
const taBuffer = getter(TYPED, "buffer"), taOffset = getter(TYPED, "byteOffset"), taLength = getter(TYPED, "byteLength");
const taKind = getter(TYPED, Symbol.toStringTag);
const taAt = (TYPED as { at: (this: unknown, i: number) => unknown }).at;
const dvBuffer = getter(DataView.prototype, "buffer"), dvOffset = getter(DataView.prototype, "byteOffset"), dvLength = getter(DataView.prototype, "byteLength");
const abResizable = getter(ArrayBuffer.prototype, "resizable"), abDetached = getter(ArrayBuffer.prototype, "detached");
const sabGrowable = typeof SharedArrayBuffer === "function" ? getter(SharedArrayBuffer.prototype, "growable") : undefined;

/** The memory of a typed array, DataView, ArrayBuffer or SharedArrayBuffer as a plain
    Uint8Array made from its internal slots (a snapshot of a length-tracking view), with the
    buffer it stands on and its typed array kind ("DataView", "ArrayBuffer" otherwise).
    Throws TypeError for a detached buffer or a view out of bounds of a shrunk one, and for
    anything else. */
export function memoryOf(x: unknown): { bytes: Uint8Array; buffer: ArrayBuffer | SharedArrayBuffer; kind: string } {
  if (types.isTypedArray(x)) {
    const buffer = taBuffer.call(x) as ArrayBuffer | SharedArrayBuffer;
    const n = taLength.call(x) as number;
    // detached or out of bounds: the getters say 0; at() checks the view itself and throws
    if (n === 0) taAt.call(x, 0);
    return { bytes: new Uint8Array(buffer, taOffset.call(x) as number, n), buffer, kind: taKind.call(x) as string };
  }
  if (types.isDataView(x)) {
    const buffer = dvBuffer.call(x) as ArrayBuffer | SharedArrayBuffer; // these throw when detached or out of bounds
    return { bytes: new Uint8Array(buffer, dvOffset.call(x) as number, dvLength.call(x) as number), buffer, kind: "DataView" };
  }
  if (types.isAnyArrayBuffer(x)) return { bytes: new Uint8Array(x), buffer: x, kind: "ArrayBuffer" };
  throw new TypeError("not a TypedArray, DataView, ArrayBuffer or SharedArrayBuffer");
}

/** The byte length of a Uint8Array from its internal slots (memoryOf's reading, without a
    new view: the codec's path for Uint8Array and Buffer values). */
export function byteLengthOf(u8: Uint8Array): number {
  const n = taLength.call(u8) as number;
  if (n === 0) taAt.call(u8, 0); // detached or out of bounds: TypeError
  return n;
}

/** A resizable ArrayBuffer or a growable SharedArrayBuffer (its memory may move or shrink). */
export function isResizable(buffer: ArrayBuffer | SharedArrayBuffer): boolean {
  return types.isSharedArrayBuffer(buffer) ? sabGrowable?.call(buffer) === true : abResizable.call(buffer) === true;
}

/** A detached ArrayBuffer (a SharedArrayBuffer never is). */
export function isDetached(buffer: ArrayBuffer | SharedArrayBuffer): boolean {
  return !types.isSharedArrayBuffer(buffer) && abDetached.call(buffer) === true;
}

/** An argument marked with py.buffer(x): reaches Python as a memoryview over x's memory.
    The memory itself is read when the argument is sent (memoryOf): it may change meanwhile. */
export class BufferArg {
  /** x, or a Uint8Array over it when x is a buffer. */
  readonly view: ArrayBufferView;
  readonly format: string;
  constructor(
    readonly target: ArrayBufferView | ArrayBuffer | SharedArrayBuffer,
    readonly readonly: boolean,
  ) {
    if (!types.isArrayBufferView(target) && !types.isAnyArrayBuffer(target))
      throw new TypeError("py.buffer(x): x must be a TypedArray, DataView, ArrayBuffer or SharedArrayBuffer");
    let memory: ReturnType<typeof memoryOf>;
    try {
      memory = memoryOf(target);
    } catch {
      throw new TypeError("py.buffer(x): the ArrayBuffer is detached (or x is out of its bounds)");
    }
    this.view = types.isArrayBufferView(target) ? target : memory.bytes;
    this.format = FORMATS.get(memory.kind) ?? "B"; // DataView, ArrayBuffer, SharedArrayBuffer
    if (isResizable(memory.buffer))
      throw new TypeError("py.buffer(x): a resizable or growable ArrayBuffer cannot be lent to Python (its memory may move or shrink)");
  }
}
