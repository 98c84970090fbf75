/**
 * The JS half of the binary value format (tags in shim/bunpy.h). A Wire owns the views
 * over one io buffer (C memory, reused for every call): encode arguments into it, call
 * the shim, decode the result out of it (the decoding half: wire-reader.ts). Nothing here
 * allocates on the fast paths beyond the values it returns.
 */
import { types } from "node:util";
import { ConversionError } from "./errors.ts";
import { behindProxy, changed, describe, finish, keySegment, loneSurrogate, within } from "./conversion-failures.ts";
import { addressOf, type Shim } from "./ffi.ts";
import { BufferArg, byteLengthOf, isDetached, isResizable, memoryOf } from "./data.ts";
import { IterArg } from "./stream.ts";
import { Kwargs, MAX_DEPTH, MAX_MESSAGE, Tag, type WireHooks } from "./wire-format.ts";
import { MEMO_MAX_LENGTH } from "./string-memo.ts";
import { prototypeIsClean } from "./plain-objects.ts";
import { missedShape, putShape, sentShape, type SentShape } from "./shape-memo.ts";
import { TWO_32, WireReader } from "./wire-reader.ts";

export class Wire extends WireReader {
  private stack: object[] = [];
  /** Ids of the JS functions written since begin(), forgotten again if encoding fails. */
  private functionIds: number[] = [];
  /**
   * Writes of JS values in progress (writeTop, writeCall, writeArgs): user code — getters,
   * Proxy traps — runs only inside them. Any bunpy call made while this is non-zero is
   * re-entrant and must go through nested(), which keeps the message being written.
   */
  writing = 0;
  /** Messages set aside by nested() (their bytes saved in JS) until it returns. */
  suspended = 0;
  /** The hooks of the interpreter that owns the wire; `hooks` differs only while a
      message for a context is written or read. */
  readonly home: WireHooks;
  /** Largest message accepted (MAX_MESSAGE; tests lower it). */
  maxMessage = MAX_MESSAGE;

  constructor(
    private readonly lib: Shim,
    io: number,
    /** Set only while a message for a context is encoded or decoded (see context.ts);
        nested() puts `home` back for the calls made meanwhile. */
    hooks: WireHooks,
  ) {
    super(io, hooks);
    this.home = hooks;
  }

  // ------------------------------------------------------------------ encoding --

  /** Starts a new message at offset 0. */
  begin(): void {
    if (this.header[4] !== this.gen) this.refresh();
    this.pos = 0;
    // setting an array's length costs JavaScriptCore a call into C++ (~50 ns) even when
    // it is already 0: only a write that failed leaves these non-empty
    if (this.stack.length !== 0) this.stack.length = 0;
    if (this.functionIds.length !== 0) this.functionIds.length = 0;
  }

  /**
   * Runs a bunpy call made while a message is being written (from a getter or a Proxy
   * trap): the message so far is copied aside, the call uses the buffer like any other,
   * and the message is put back before the outer write goes on. Costs a copy only when
   * it happens; the outer message cannot be seen or changed by the nested call.
   */
  nested<T>(run: () => T): T {
    const saved = this.u8.slice(0, this.pos);
    const pos = this.pos, writing = this.writing, hooks = this.hooks;
    // the outer write's arrays are set aside whole (swapped, not copied)
    const stack = this.stack, functionIds = this.functionIds;
    this.writing = 0;
    this.hooks = this.home;
    this.stack = [];
    this.functionIds = [];
    this.suspended++;
    try {
      return run();
    } finally {
      this.suspended--;
      this.refresh();
      if (pos > this.cap) {
        if (this.lib.bp_io_reserve(this.io, pos) !== 0) throw new ConversionError("out of memory while restoring a message");
        this.refresh();
      }
      this.u8.set(saved, 0);
      this.pos = pos;
      this.writing = writing;
      this.hooks = hooks;
      this.stack = stack;
      this.functionIds = functionIds;
    }
  }

  /** A message written but refused before Python read it: forgets its JS functions. */
  discard(): void {
    this.abandon(undefined);
  }

  /** The message being written will not be sent: its JS functions will never reach Python. */
  private abandon(e: unknown): unknown {
    if (this.functionIds.length !== 0) {
      this.hooks.forgetFunctions(this.functionIds);
      this.functionIds.length = 0;
    }
    return e;
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.cap) return;
    this.grow(this.pos + n);
  }

  private grow(need: number): void {
    if (need > this.maxMessage)
      throw new ConversionError(
        `value too large: the message would take ${need} bytes, more than the ${this.maxMessage} bytes bunpy passes in one call`,
      );
    const rc = this.lib.bp_io_reserve(this.io, need);
    if (rc !== 0) throw new ConversionError(`value too large for the bunpy buffer (${need} bytes: out of memory)`);
    this.refresh();
  }

  private putTag(tag: Tag): void {
    this.ensure(1);
    this.u8[this.pos++] = tag;
  }

  private putHeader(tag: Tag, n: number): void {
    this.ensure(5);
    this.u8[this.pos] = tag;
    this.dv.setUint32(this.pos + 1, n, true);
    this.pos += 5;
  }

  writeNumber(v: number): void {
    this.ensure(9);
    if ((v | 0) === v && (v !== 0 || 1 / v > 0)) {
      this.u8[this.pos] = Tag.Int32;
      this.dv.setInt32(this.pos + 1, v, true);
      this.pos += 5;
      return;
    }
    // -0 is not an integer for Python: it stays a float (0 itself took the Int32 path)
    this.u8[this.pos] = v !== 0 && Number.isSafeInteger(v) ? Tag.Int53 : Tag.Float;
    this.dv.setFloat64(this.pos + 1, v, true);
    this.pos += 9;
  }

  writeString(s: string): void {
    const n = s.length;
    // room for the worst case (3 bytes per UTF-16 unit), or the exact size when the worst
    // case would pass the message limit
    const worst = n * 3;
    if (this.pos + 5 + worst > this.cap)
      this.ensure(5 + (this.pos + 5 + worst > this.maxMessage ? Buffer.byteLength(s) : worst));
    if (n < 64) {
      const u8 = this.u8, start = this.pos + 5;
      // copy ASCII chars straight in, hashing them on the way (the hash picks the C
      // decoder's memo slot for a short one: shim/decode.c memo_lookup)
      let i = 0, h = n;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c > 127) break;
        u8[start + i] = c;
        h = (h * 31 + c) | 0;
      }
      if (i === n) {
        if (n !== 0 && n <= MEMO_MAX_LENGTH) {
          u8[this.pos] = Tag.AsciiMemo;
          this.dv.setUint32(this.pos + 1, (n | (h << 8)) >>> 0, true);
        } else {
          u8[this.pos] = Tag.Ascii;
          this.dv.setUint32(this.pos + 1, n, true);
        }
        this.pos = start + n;
        return;
      }
    }
    if (!s.isWellFormed()) throw loneSurrogate(s);
    const written = this.text.utf8Write(s, this.pos + 5, this.cap - this.pos - 5);
    this.u8[this.pos] = Tag.Str;
    this.dv.setUint32(this.pos + 1, written, true);
    this.pos += 5 + written;
  }

  /** `bytes` is a Uint8Array by its internal slots (a Buffer too): its length is read from
      them as well, so that it is the number of bytes set() copies. */
  private writeBytes(bytes: Uint8Array): void {
    const n = byteLengthOf(bytes);
    this.putHeader(Tag.Bytes, n);
    this.ensure(n);
    this.u8.set(bytes, this.pos);
    this.pos += n;
  }

  private writeBigInt(v: bigint): void {
    const hex = v.toString(16);
    this.putHeader(Tag.BigInt, hex.length);
    this.ensure(hex.length);
    this.pos += this.text.latin1Write(hex, this.pos, hex.length);
  }

  /** py.buffer / py.iter arguments; false for anything else. Kept out of writeObject so
      that function stays small (the 1 KB document round trip lost 50% when it grew). */
  private writeMarker(v: object): boolean {
    if (v instanceof BufferArg) {
      this.writeBuffer(v);
      return true;
    }
    if (v instanceof IterArg) {
      const name = this.home.registerSource!(v, this.hooks === this.home);
      this.ensure(2);
      this.u8[this.pos++] = Tag.JSIter;
      this.u8[this.pos++] = v.isAsync ? 1 : 0;
      this.writeString(name);
      return true;
    }
    return false;
  }

  /** py.buffer(x): the address of x's memory; JS pins x until Python's JSBuffer dies. */
  private writeBuffer(arg: BufferArg): void {
    if (this.hooks.otherProcess)
      throw new ConversionError("py.buffer(x) cannot go to a process context: its Python runs in another process and cannot see this memory (pass the bytes: a copy)");
    // read now from x's internal slots (data.ts memoryOf), not its properties: own ones or a
    // subclass's could claim more bytes than there are, or another buffer to pin
    let memory: ReturnType<typeof memoryOf>;
    try {
      memory = memoryOf(arg.target);
    } catch {
      throw new ConversionError("py.buffer(x): the ArrayBuffer was detached (or x is out of its bounds)");
    }
    if (isDetached(memory.buffer)) throw new ConversionError("py.buffer(x): the ArrayBuffer was detached");
    if (isResizable(memory.buffer)) throw new ConversionError("py.buffer(x): a resizable or growable ArrayBuffer cannot be lent to Python");
    const n = byteLengthOf(memory.bytes);
    const address = n === 0 ? 0 : addressOf(memory.bytes);
    const id = this.home.pin!(memory.buffer);
    this.functionIds.push(id); // forgotten again if the message is not sent
    this.ensure(31);
    const dv = this.dv, p = this.pos;
    this.u8[p] = Tag.Buffer;
    dv.setUint32(p + 1, address % TWO_32, true);
    dv.setUint32(p + 5, Math.floor(address / TWO_32), true);
    dv.setUint32(p + 9, n % TWO_32, true);
    dv.setUint32(p + 13, Math.floor(n / TWO_32), true);
    dv.setUint32(p + 17, this.io % TWO_32, true);
    dv.setUint32(p + 21, Math.floor(this.io / TWO_32), true);
    dv.setUint32(p + 25, id, true);
    this.u8[p + 29] = arg.format.charCodeAt(0);
    this.u8[p + 30] = arg.readonly ? 1 : 0;
    this.pos = p + 31;
  }

  writeHandle(handle: number): void {
    this.ensure(9);
    this.u8[this.pos] = Tag.PyObj;
    this.dv.setUint32(this.pos + 1, handle % TWO_32, true);
    this.dv.setUint32(this.pos + 5, Math.floor(handle / TWO_32), true);
    this.pos += 9;
  }

  writeValue(v: unknown, depth: number): void {
    switch (typeof v) {
      case "number":
        return this.writeNumber(v);
      case "string":
        return this.writeString(v);
      case "boolean":
        return this.putTag(v ? Tag.True : Tag.False);
      case "undefined":
        return this.putTag(Tag.None);
      case "bigint":
        return this.writeBigInt(v);
      case "function": {
        const h = this.hooks.handleOf(v);
        if (h !== undefined) return this.writeHandle(h);
        return this.writeFunction(v);
      }
      case "symbol":
        throw new ConversionError("cannot convert a Symbol to Python");
      default:
        if (v === null) return this.putTag(Tag.None);
        return this.writeObject(v as object, depth);
    }
  }

  /** A JS function Python may call (a JSFunction there), by id. */
  writeFunction(fn: Function): void {
    const id = this.hooks.functionId(fn);
    this.functionIds.push(id);
    this.putHeader(Tag.JSFunc, id);
  }

  private push(v: object, depth: number): void {
    if (depth >= MAX_DEPTH) {
      const cyclic = this.stack.includes(v) || new Set(this.stack).size !== this.stack.length;
      throw new ConversionError(
        cyclic ? "cannot convert a cyclic value (it contains itself)" : `value nested deeper than ${MAX_DEPTH} levels`,
      );
    }
    this.stack.push(v);
  }

  private writeObject(v: object, depth: number): void {
    if (Array.isArray(v)) return this.writeArray(v, depth);
    const proto = Object.getPrototypeOf(v);
    if (proto === Object.prototype || proto === null) return this.writeDict(v as Record<string, unknown>, depth);
    const h = this.hooks.handleOf(v); // a PyRef (contexts); proxies are functions
    if (h !== undefined) return this.writeHandle(h);
    // Typed arrays, buffers, Dates, Maps and Sets are recognised by their internal slots, not
    // by instanceof: behind a Proxy they cannot be read (their methods refuse the receiver,
    // and `new Uint8Array(proxy)` would read an empty array-like)
    // a plain Uint8Array made from the internal slots (data.ts memoryOf): a length the view
    // claims itself (an own property, a subclass getter) would not match what is copied
    if (ArrayBuffer.isView(v)) return this.writeBytes(types.isUint8Array(v) ? v : memoryOf(v).bytes);
    if (v instanceof Date) {
      if (!types.isDate(v)) throw behindProxy(v);
      const t = v.getTime();
      if (Number.isNaN(t)) throw new ConversionError("cannot convert an Invalid Date to Python");
      this.ensure(9);
      this.u8[this.pos] = Tag.Date;
      this.dv.setFloat64(this.pos + 1, t, true);
      this.pos += 9;
      return;
    }
    if (v instanceof Map) {
      if (!types.isMap(v)) throw behindProxy(v);
      return this.writeMap(v, depth);
    }
    if (v instanceof Set) {
      if (!types.isSet(v)) throw behindProxy(v);
      return this.writeSet(v, depth);
    }
    // after Date/Map/Set: those pay no native check beyond their own
    if (types.isAnyArrayBuffer(v)) return this.writeBytes(memoryOf(v).bytes);
    if (this.writeMarker(v)) return;
    if (v instanceof Kwargs)
      throw new ConversionError(
        "py.kw() must be the last argument of a proxy call (it marks keyword arguments): fn(a, py.kw({ k: 1 }))",
      );
    if (types.isProxy(v)) throw behindProxy(v);
    throw new ConversionError(`cannot convert ${describe(v)} to Python (pass a plain object, array, Map or Set)`);
  }

  // Containers: the length is read once, before the header is written; a container that
  // is longer or shorter after its entries were read is a ConversionError (a getter or a
  // Proxy trap changed it), so Python never gets a header that does not match the entries.

  private writeArray(v: readonly unknown[], depth: number): void {
    this.push(v, depth);
    const n = v.length;
    this.putHeader(Tag.List, n);
    for (let i = 0; i < n; i++) {
      try {
        this.writeValue(v[i], depth + 1);
      } catch (e) {
        throw within(e, `[${i}]`);
      }
    }
    if (v.length !== n) throw changed("array", n, v.length);
    this.stack.pop();
  }

  private writeMap(v: Map<unknown, unknown>, depth: number): void {
    this.push(v, depth);
    const n = v.size;
    this.putHeader(Tag.Map, n);
    let i = 0;
    for (const [k, item] of v) {
      if (i === n) break;
      try {
        this.writeValue(k, depth + 1);
      } catch (e) {
        throw within(e, `[key ${i}]`);
      }
      try {
        this.writeValue(item, depth + 1);
      } catch (e) {
        throw within(e, keySegment(k, i));
      }
      i++;
    }
    if (i !== n || v.size !== n) throw changed("Map", n, i !== n ? i : v.size);
    this.stack.pop();
  }

  private writeSet(v: Set<unknown>, depth: number): void {
    this.push(v, depth);
    const n = v.size;
    this.putHeader(Tag.Set, n);
    let i = 0;
    for (const item of v) {
      if (i === n) break;
      try {
        this.writeValue(item, depth + 1);
      } catch (e) {
        throw within(e, `[item ${i}]`);
      }
      i++;
    }
    if (i !== n || v.size !== n) throw changed("Set", n, i !== n ? i : v.size);
    this.stack.pop();
  }

  private writeDict(v: Record<string, unknown>, depth: number): void {
    this.push(v, depth);
    if (prototypeIsClean()) this.writeOwnEntries(v, depth);
    else this.writeEntries(v, depth);
    this.stack.pop();
  }

  /** A plain object's entries with for-in: JavaScriptCore enumerates a known shape from a
      cache and reads `v[k]` by offset, with no key array (the 1 KB document encodes ~40%
      faster than with Object.keys). Only for objects whose prototype is Object.prototype
      with nothing enumerable on it, or null: then for-in visits exactly the own enumerable
      string keys, in Object.keys order. The counts before and after catch a getter that
      adds or deletes keys (for-in would skip a deleted key silently). The counting loop
      also compares the keys with the key list sent before for objects that start with the
      same two keys (shape-memo.ts): the same list goes as BP_T_SHAPE, which costs no key
      encoding here and no key decoding in Python. */
  private writeOwnEntries(v: Record<string, unknown>, depth: number): void {
    let before = 0, first = "", second: string | undefined;
    let shape: SentShape | undefined;
    for (const k in v) {
      if (before === 0) first = k;
      else {
        if (before === 1) {
          second = k;
          shape = sentShape(first, k);
          if (shape !== undefined && shape.keys[0] !== first) shape = undefined;
        }
        if (shape !== undefined && shape.keys[before] !== k) shape = undefined;
      }
      before++;
    }
    if (before === 1) {
      shape = sentShape(first, undefined);
      if (shape !== undefined && shape.keys[0] !== first) shape = undefined;
    }
    if (shape !== undefined && shape.keys.length !== before) shape = undefined;
    if (shape === undefined && before !== 0) shape = missedShape(first, second, before, v);
    // the header announces shape.keys.length values: exactly `before` are written or it throws
    if (shape !== undefined && shape.keys.length !== before) shape = undefined;
    let n = 0;
    if (shape !== undefined) {
      this.writeShapeHeader(shape);
      const keys = shape.keys;
      for (const k in v) {
        if (n === before) break; // more keys than counted: reported below
        if (k !== keys[n]) throw new ConversionError("the object's keys changed while it was converted (a getter or a Proxy trap)");
        try {
          this.writeValue(v[k], depth + 1);
        } catch (e) {
          throw within(e, k);
        }
        n++;
      }
    } else {
      this.putHeader(Tag.Dict, before);
      for (const k in v) {
        if (n === before) break; // more keys than counted: reported below
        this.writeString(k);
        try {
          this.writeValue(v[k], depth + 1);
        } catch (e) {
          throw within(e, k);
        }
        n++;
      }
    }
    let after = 0;
    if (prototypeIsClean()) for (const _ in v) after++;
    else after = Object.keys(v).length; // a getter made Object.prototype enumerable meanwhile
    if (n !== before || after !== before) throw changed("object", before, n !== before ? n : after);
  }

  /** BP_T_SHAPE's header and key list (shape-memo.ts putShape). */
  private writeShapeHeader(shape: SentShape): void {
    this.ensure(13 + shape.bytes.length);
    this.pos = putShape(this.u8, this.dv, this.pos, shape);
  }

  /** A DICT of an object's own enumerable string keys (taken once, with Object.keys). */
  private writeEntries(v: Record<string, unknown>, depth: number): void {
    const keys = Object.keys(v);
    const n = keys.length;
    this.putHeader(Tag.Dict, n);
    for (let i = 0; i < n; i++) {
      const k = keys[i]!;
      this.writeString(k);
      let gone = false;
      try {
        const item = v[k];
        // a key deleted (by a getter) before it was reached
        if (item === undefined && !Object.hasOwn(v, k)) gone = true;
        else this.writeValue(item, depth + 1);
      } catch (e) {
        throw within(e, k);
      }
      if (gone) throw changed("object", n, Object.keys(v).length);
    }
    if (Object.keys(v).length !== n) throw changed("object", n, Object.keys(v).length);
  }

  /** One whole value of a message (after begin()); JS functions in it are forgotten if it fails. */
  writeTop(v: unknown): void {
    this.writing++;
    try {
      this.writeValue(v, 0);
    } catch (e) {
      throw finish(this.abandon(e));
    } finally {
      this.writing--;
    }
  }

  /** Positional arguments then keyword arguments, as bp_call expects them. */
  writeCall(args: readonly unknown[], kwargs: Record<string, unknown> | undefined): void {
    this.begin();
    this.writing++;
    try {
      this.writeArguments(args, kwargs);
    } catch (e) {
      throw finish(this.abandon(e));
    } finally {
      this.writing--;
    }
  }

  /** Arguments of a context request (after begin() and the request's header fields). */
  writeArgs(args: readonly unknown[], kwargs: Record<string, unknown> | undefined): void {
    this.writing++;
    try {
      this.writeArguments(args, kwargs);
    } catch (e) {
      throw finish(e);
    } finally {
      this.writing--;
    }
  }

  /** A LIST of handles (a context's REF_DROP request). */
  writeHandleList(handles: readonly number[]): void {
    this.putHeader(Tag.List, handles.length);
    for (const h of handles) this.writeHandle(h);
  }

  private writeArguments(args: readonly unknown[], kwargs: Record<string, unknown> | undefined): void {
    const n = args.length;
    this.putHeader(Tag.List, n);
    for (let i = 0; i < n; i++) {
      try {
        this.writeValue(args[i], 1);
      } catch (e) {
        throw within(e, `args[${i}]`);
      }
    }
    if (args.length !== n) throw changed("array", n, args.length).within("args");
    if (kwargs === undefined) {
      this.putTag(Tag.None);
      return;
    }
    if (kwargs instanceof Kwargs)
      throw new TypeError(
        "py.kw() marks keyword arguments of a proxy call; here pass keyword arguments as a plain object, " +
          'e.g. py.call("json", "dumps", [[1]], { indent: 1 })',
      );
    if (typeof kwargs !== "object" || kwargs === null)
      throw new ConversionError("keyword arguments must be a plain object", "kwargs");
    try {
      this.writeEntries(kwargs, 0);
    } catch (e) {
      throw within(e, "kwargs");
    }
  }
}
