/**
 * The decoding half of the JS value format (tags in shim/bunpy.h): the views over one io
 * buffer (C memory, reused for every call) and the reads out of it. Wire (codec.ts) adds
 * the encoding; a port has one Wire, so every call site sees one class.
 */
import { ConversionError } from "./errors.ts";
import { viewOf, readPointer } from "./ffi.ts";
import { METHOD, Tag, type WireHooks } from "./wire-format.ts";
import { memoText } from "./string-memo.ts";
import { ownProperty } from "./plain-objects.ts";
import { shapeAt } from "./shape-memo.ts";

const OBJECT_PROTOTYPE = Object.prototype;

export const TWO_32 = 2 ** 32;

export class WireReader {
  protected u8!: Uint8Array;
  protected dv!: DataView;
  protected text!: Buffer;
  protected cap = 0;
  protected gen = -1;
  /** io header fields: [2]=cap [3]=len [4]=gen [5]=released [8]=ndrop [9]=drop_cap */
  readonly header: Uint32Array;
  /** Handles JS no longer needs, dropped by the shim at its next call. */
  readonly drops: Float64Array;
  pos = 0;

  constructor(
    readonly io: number,
    /** Set only while a message for a context is encoded or decoded (see context.ts). */
    public hooks: WireHooks,
  ) {
    this.header = new Uint32Array(viewOf(io, 40));
    this.drops = new Float64Array(viewOf(readPointer(io, 24), this.header[9]! * 8));
    this.refresh();
  }

  /** Re-creates the views when C moved the buffer (the io gen changed). */
  refresh(): void {
    if (this.header[4] === this.gen) return;
    this.gen = this.header[4]!;
    this.cap = this.header[2]!;
    const ab = viewOf(readPointer(this.io, 0), this.cap);
    this.u8 = new Uint8Array(ab);
    this.dv = new DataView(ab);
    this.text = Buffer.from(ab);
  }

  /** Decodes the value at `this.pos` (set pos = 0 first for a fresh result). */
  readValue(): unknown {
    const u8 = this.u8;
    const tag = u8[this.pos++];
    switch (tag) {
      case Tag.None:
        return null;
      case Tag.False:
        return false;
      case Tag.True:
        return true;
      case Tag.Int32: {
        const v = this.dv.getInt32(this.pos, true);
        this.pos += 4;
        return v;
      }
      case Tag.Float:
      case Tag.Int53:
      case Tag.Date: {
        const v = this.dv.getFloat64(this.pos, true);
        this.pos += 8;
        return tag === Tag.Date ? new Date(v) : v;
      }
      case Tag.BigInt: {
        const s = this.readText(true);
        return s.charCodeAt(0) === 45 /* - */ ? -BigInt(`0x${s.slice(1)}`) : BigInt(`0x${s}`);
      }
      case Tag.AsciiMemo:
        return this.readMemoText();
      case Tag.Ascii:
        return this.readText(true);
      case Tag.Str:
        return this.readText(false);
      case Tag.Bytes: {
        const n = this.readU32();
        const v = u8.slice(this.pos, this.pos + n);
        this.pos += n;
        return v;
      }
      case Tag.List:
      case Tag.Tuple: {
        const n = this.readU32();
        const out = new Array(n);
        for (let i = 0; i < n; i++) out[i] = this.readValue();
        return out;
      }
      case Tag.Dict: {
        const n = this.readU32();
        const out: Record<string, unknown> = {};
        for (let i = 0; i < n; i++) {
          const k = this.readValue() as string;
          const v = this.readValue();
          // a key Object.prototype has goes in as an own data property: `out[k] = v` would
          // call an inherited setter (the key silently missing), throw on a frozen
          // Object.prototype (a hardening step), or set the prototype (__proto__)
          // (hasOwn: a {}'s chain is Object.prototype alone, and Object.hasOwn is ~25x
          // cheaper than `in` here; Object.prototype's own prototype cannot be changed)
          if (Object.hasOwn(OBJECT_PROTOTYPE, k)) ownProperty(out, k, v);
          else out[k] = v;
        }
        return out;
      }
      case Tag.Shape:
        return this.readShape();
      case Tag.Map: {
        const n = this.readU32();
        const out = new Map<unknown, unknown>();
        for (let i = 0; i < n; i++) {
          const k = this.readValue();
          out.set(k, this.readValue());
        }
        return out;
      }
      case Tag.Set: {
        const n = this.readU32();
        const out = new Set<unknown>();
        for (let i = 0; i < n; i++) out.add(this.readValue());
        return out;
      }
      case Tag.PyObj:
      case Tag.PyFunc: {
        const handle = this.dv.getUint32(this.pos, true) + this.dv.getUint32(this.pos + 4, true) * TWO_32;
        this.pos += 8;
        return this.hooks.proxyFor(handle, tag === Tag.PyFunc);
      }
      case Tag.Method:
        return METHOD;
      default:
        throw new ConversionError(`bunpy: malformed result buffer (tag ${tag} at ${this.pos - 1})`);
    }
  }

  /** A pointer written by C as a u64 (user-space addresses fit in 53 bits). */
  readPointer(): number {
    const v = this.dv.getUint32(this.pos, true) + this.dv.getUint32(this.pos + 4, true) * TWO_32;
    this.pos += 8;
    return v;
  }

  readI32(): number {
    const v = this.dv.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }

  readU32(): number {
    const v = this.dv.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  private readText(ascii: boolean): string {
    const n = this.readU32();
    const start = this.pos;
    this.pos += n;
    return ascii ? this.text.latin1Slice(start, start + n) : this.text.utf8Slice(start, start + n);
  }

  /** A short ASCII string whose memo slot the sender picked (see string-memo.ts). */
  private readMemoText(): string {
    const v = this.readU32();
    const n = v & 0xff, start = this.pos;
    this.pos += n;
    return memoText(this.u8, this.text, start, n, v >>> 8);
  }

  /** A dict sent with its key list first (BP_T_SHAPE): the keys from the shape memo. */
  private readShape(): Record<string, unknown> {
    const dv = this.dv, at = this.pos;
    // signed reads: a u32 above 2^31 would leave int32 code JavaScriptCore compiled (the hint
    // picks a slot with its low bits only; n and k are small)
    const n = dv.getInt32(at, true), hint = dv.getInt32(at + 4, true), k = dv.getInt32(at + 8, true);
    const start = at + 12;
    if (n < 0 || k < 0 || start + k > this.u8.length) throw new ConversionError("bunpy: malformed result buffer (truncated)");
    const shape = shapeAt(this.u8, this.text, start, k, n, hint);
    this.pos = start + k;
    return shape.make !== undefined ? shape.make(this) : shape.build(this);
  }

  /** Decodes the value at offset 0: the result of the last call. */
  result(): unknown {
    if (this.header[4] !== this.gen) this.refresh();
    this.pos = 0;
    return this.readValue();
  }

  /** The result bytes as they are (for records that are not values: bp_getattr's method
      answer, see shim/methods.c). */
  raw(): DataView {
    if (this.header[4] !== this.gen) this.refresh();
    return this.dv;
  }

  /** Reads a handle written by ops that always return one (import, iter, intern). */
  handleResult(): number {
    if (this.header[4] !== this.gen) this.refresh();
    return this.dv.getUint32(1, true) + this.dv.getUint32(5, true) * TWO_32;
  }
}

declare global {
  interface Buffer {
    utf8Write(s: string, offset: number, length: number): number;
    latin1Write(s: string, offset: number, length: number): number;
    utf8Slice(start: number, end: number): string;
    latin1Slice(start: number, end: number): string;
  }
}
