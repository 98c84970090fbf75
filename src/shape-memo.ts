/**
 * The JS decoder's memo of object shapes (BP_T_SHAPE: a dict's key list, then its values),
 * per JS thread. Like the string memo it needs no protocol state: the sender sends the key
 * list every time, with a hint (a hash it had at hand) that picks the slot here; a hit costs
 * one compare of the key bytes, and the keys come back as the strings made before. After a
 * second hit the shape also gets a maker: a function whose object literal has the keys
 * (`{"id": w.readValue(), ...}`), so the object is made with its final layout, as
 * JSON.parse makes it. Bounded: SLOTS shapes, one per slot, the newest kept.
 */
import { ConversionError } from "./errors.ts";
import { MEMO_MAX_LENGTH } from "./string-memo.ts";
import { ownProperty } from "./plain-objects.ts";
import { Tag } from "./wire-format.ts";

const SLOTS = 256;
/** The most keys an object sent as BP_T_SHAPE may have: BP_SHAPE_MAX_KEYS in shim/bunpy.h. */
const MAX_KEYS = 32;

/** Reads the next value of the message (the Wire's readValue). */
export interface ValueReader {
  readValue(): unknown;
}

export class Shape {
  /** Decodes calls before a maker is made: a shape seen once may not come again. */
  uses = 0;
  /** Makes the object from the next n values; undefined until the shape came again, or
      for key lists that a literal cannot make (below). */
  make: ((r: ValueReader) => Record<string, unknown>) | undefined = undefined;
  constructor(
    /** The key list's bytes as sent (u8 length, then the bytes, per key). */
    readonly bytes: Uint8Array,
    readonly keys: readonly string[],
    /** Keys Object.prototype had when the shape was made (`o[k] = v` would reach them). */
    readonly literal: boolean,
  ) {}

  /** The object from the next values, key by key (before the shape has a maker, or for
      keys a literal cannot make): as for a DICT, a key Object.prototype has goes in as an
      own data property. */
  build(r: ValueReader): Record<string, unknown> {
    const keys = this.keys, n = keys.length;
    const out: Record<string, unknown> = {};
    for (let i = 0; i < n; i++) {
      const key = keys[i]!;
      const v = r.readValue();
      if (Object.hasOwn(Object.prototype, key)) ownProperty(out, key, v);
      else out[key] = v;
    }
    return out;
  }
}

/** Function as it was when bunpy loaded (user code replacing globalThis.Function later does
    not reach the makers). */
const FunctionAtLoad = Function;

const memo: (Shape | undefined)[] = new Array<Shape | undefined>(SLOTS).fill(undefined);

function malformed(): ConversionError {
  return new ConversionError("bunpy: malformed result buffer (object shape)");
}

function same(bytes: Uint8Array, u8: Uint8Array, start: number): boolean {
  const k = bytes.length;
  let i = 0;
  while (i < k && bytes[i] === u8[start + i]) i++;
  return i === k;
}

/** The shape whose key list is the k bytes at u8[start] (n keys), from the memo when the
    hint's slot holds it. */
export function shapeAt(u8: Uint8Array, text: Buffer, start: number, k: number, n: number, hint: number): Shape {
  const slot = hint & (SLOTS - 1);
  const known = memo[slot];
  if (known !== undefined && known.bytes.length === k && known.keys.length === n && same(known.bytes, u8, start)) {
    if (known.uses++ === 1 && known.literal) known.make = maker(known.keys);
    return known;
  }
  if (n < 1 || n > MAX_KEYS) throw malformed();
  const keys = new Array<string>(n);
  let p = start, literal = true;
  const end = start + k;
  for (let i = 0; i < n; i++) {
    if (p >= end) throw malformed();
    const len = u8[p++]!;
    if (len < 1 || len > MEMO_MAX_LENGTH || p + len > end) throw malformed();
    for (let j = p; j < p + len; j++) if (u8[j]! > 127) throw malformed();
    const key = text.latin1Slice(p, p + len);
    // a literal `{"__proto__": v}` sets the prototype; keys Object.prototype has take the
    // decoder's careful path (an own data property), as in a plain DICT
    if (key === "__proto__" || Object.hasOwn(Object.prototype, key)) literal = false;
    keys[i] = key;
    p += len;
  }
  if (p !== end) throw malformed();
  const shape = new Shape(u8.slice(start, end), keys, literal);
  memo[slot] = shape;
  return shape;
}

/** `(r) => ({"k0": r.readValue(), "k1": r.readValue(), ...})`: an object literal evaluates
    its values left to right, the order they were sent in. The keys are ASCII, quoted by
    JSON.stringify (a JS string literal): nothing in them is read as code. */
function maker(keys: readonly string[]): (r: ValueReader) => Record<string, unknown> {
  const body = keys.map((k) => `${JSON.stringify(k)}: r.readValue()`).join(", ");
  return new FunctionAtLoad("r", `return { ${body} };`) as (r: ValueReader) => Record<string, unknown>;
}

// ---------------------------------------------------------------------------- sending --

/** A key list the JS encoder sends as BP_T_SHAPE: the receiver (shim/decode.c read_shape)
    keeps the Python keys it made for it, so they are not decoded again. */
export class SentShape {
  constructor(
    readonly keys: readonly string[],
    /** The key list as sent: u8 length, then the bytes, per key. */
    readonly bytes: Uint8Array,
    /** A hash of the bytes: picks the receiver's slot (it compares the bytes itself). */
    readonly hint: number,
  ) {}
  /** Misses of other key lists in this one's slot since it came (see missedShape). */
  misses = 0;
}

const sent: (SentShape | undefined)[] = new Array<SentShape | undefined>(SLOTS).fill(undefined);

/** The slot of a key list, from its first two keys (its length is not known until all of
    them were seen; the first key alone would put `{id, name}` and `{id, login}` together). */
function sentSlot(first: string, second: string | undefined): number {
  let h = first.length * 31 + first.charCodeAt(0) * 7 + first.charCodeAt(first.length - 1);
  if (second !== undefined) h = h * 131 + second.length * 17 + second.charCodeAt(0) * 5 + second.charCodeAt(second.length - 1);
  return h & (SLOTS - 1);
}

/** The key list sent before whose first keys are these, if any: the caller compares the rest. */
export function sentShape(first: string, second: string | undefined): SentShape | undefined {
  return sent[sentSlot(first, second)];
}

/** After a miss for an object of `count` keys starting with `first`, `second`: a new
    SentShape for its keys, made and kept in the slot, or undefined (the object goes as a
    plain DICT). A slot taken by another key list is given up only after 16 misses, so two
    lists that share a slot do not replace each other at every object, and objects that all
    differ do not each pay for making one. */
export function missedShape(first: string, second: string | undefined, count: number, v: object): SentShape | undefined {
  if (count > MAX_KEYS) return undefined;
  const slot = sentSlot(first, second);
  const occupant = sent[slot];
  if (occupant !== undefined && (++occupant.misses & 15) !== 0) return undefined;
  const keys = Object.keys(v);
  const n = keys.length;
  // the caller writes `count` values after this shape's header: a Proxy's ownKeys may answer
  // this Object.keys with another list than the for-in that counted them
  if (n !== count || n < 1 || n > MAX_KEYS || keys[0] !== first || keys[1] !== second) return undefined;
  let size = 0;
  for (const k of keys) {
    if (k.length < 1 || k.length > MEMO_MAX_LENGTH) return undefined;
    size += 1 + k.length;
  }
  const bytes = new Uint8Array(size);
  let p = 0, h = 0x811c9dc5;
  for (const k of keys) {
    bytes[p++] = k.length;
    for (let i = 0; i < k.length; i++) {
      const c = k.charCodeAt(i);
      if (c > 127) return undefined;
      bytes[p++] = c;
    }
  }
  for (let i = 0; i < size; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193);
  const shape = new SentShape(keys, bytes, h >>> 0);
  sent[slot] = shape;
  return shape;
}

/** Writes BP_T_SHAPE's header and key list at u8[p] (room for 13 + the key bytes was made):
    tag, u32 n, u32 hint, u32 k, then the k bytes. Returns the position after them. */
export function putShape(u8: Uint8Array, dv: DataView, p: number, shape: SentShape): number {
  const bytes = shape.bytes, k = bytes.length;
  u8[p] = Tag.Shape;
  dv.setUint32(p + 1, shape.keys.length, true);
  dv.setUint32(p + 5, shape.hint, true);
  dv.setUint32(p + 9, k, true);
  const start = p + 13;
  for (let i = 0; i < k; i++) u8[start + i] = bytes[i]!;
  return start + k;
}
