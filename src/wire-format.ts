/**
 * The binary value format shared by JS and the shim (tags in shim/bunpy.h), and what a
 * Wire (codec.ts) needs from the interpreter that owns it.
 */
import type { IterArg } from "./stream.ts";

export const enum Tag {
  None = 0,
  False = 1,
  True = 2,
  Int32 = 3,
  Float = 4,
  Int53 = 5,
  BigInt = 6,
  Str = 7,
  Bytes = 8,
  List = 9,
  Tuple = 10,
  Dict = 11,
  Map = 12,
  Set = 13,
  Date = 14,
  JSFunc = 15,
  PyObj = 16,
  Ascii = 17,
  Method = 18,
  Buffer = 19,
  JSIter = 20,
  /** Python -> JS: a handle to a plain function (def, lambda, builtin, bound method) */
  PyFunc = 21,
  /** Python -> JS: a short ASCII string, u32 = length | memo slot hint << 8 (shim/bunpy.h) */
  AsciiMemo = 22,
  /** Both ways: a dict whose keys are short ASCII strings: u32 n, u32 hint, u32 k, k bytes of
      keys (u8 length + bytes each), then n values (shim/bunpy.h BP_T_SHAPE; shape-memo.ts) */
  Shape = 23,
}

/** Deeper nesting than this is refused (shim/internal.h has the same limit). */
export const MAX_DEPTH = 1000;

declare const kwargsBrand: unique symbol;

/** Marks keyword arguments: `fn(a, py.kw({ key: 1 }))`. */
export class Kwargs {
  declare private readonly [kwargsBrand]: true;
  constructor(readonly values: Record<string, unknown>) {}
}

/** Keyword arguments given as a plain object (`py.call`, `ctx.call`): a py.kw() marker is
    refused here, by the type checker and at run time. */
export type KwargsObject = Record<string, unknown> & { readonly [kwargsBrand]?: never };

/** The largest message the io buffer can hold (its size is a u32 in C). */
export const MAX_MESSAGE = 0xffff_fff0;

/** What the wire needs from the interpreter that owns it. */
export interface WireHooks {
  /** The PyObject handle behind a proxy, or undefined for any other value. */
  handleOf(value: object): number | undefined;
  /** An id for a JS function passed to Python. */
  functionId(fn: Function): number;
  /** Forgets ids handed out for a message that failed to encode (Python never saw them). */
  forgetFunctions(ids: readonly number[]): void;
  /** A proxy for a handle that now belongs to JS (`isFunction`: a plain Python function,
      which may become a real JS function instead of a Proxy). */
  proxyFor(handle: number, isFunction: boolean): unknown;
  /** Keeps memory lent to Python (py.buffer) alive until Python lets it go: its pin id
      (released like a JS function id). Only the JS thread's own interpreter pins. */
  pin?(target: object): number;
  /** Registers the function Python pulls a py.iter source from; returns its name. */
  registerSource?(arg: IterArg, toMain: boolean): string;
  /** Set for a process context: its Python cannot reach this process's memory. */
  otherProcess?: boolean;
}

/** Returned by decode for BP_T_METHOD (only bp_getattr writes it). */
export const METHOD: unique symbol = Symbol("bunpy.method");
