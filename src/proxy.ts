/**
 * PyObject proxies: a JS Proxy around one strong reference to a Python object in the
 * main interpreter.
 *
 *   proxy.attr / proxy.attr = v / delete proxy.attr    getattr / setattr / delattr
 *   proxy(...args, py.kw({...})), new proxy(...)        call
 *   proxy.getItem(k) / setItem(k, v) / deleteItem(k)     obj[k]
 *   "x" in proxy                                         `x in obj`, or hasattr for non-containers
 *   for (const x of proxy)                               iter(obj)
 *   String(proxy), proxy.toString()                      str(obj); console.log shows repr(obj)
 *   proxy.toJS()                                         deep conversion
 *   using p = ...; p[Symbol.dispose]()                   release the reference now
 *
 * A missing attribute reads as undefined, like a missing JS property. A plain function
 * (def, lambda, builtin, bound method) is a real JS function with such a Proxy as its
 * prototype instead (functionProxy): faster to call, but `delete f.attr` stays in JS.
 */
import { BunpyError } from "./errors.ts";
import type { Kwargs } from "./wire-format.ts";

/** A Python object seen from JS. Attribute access and calls reach Python. */
export interface PyObject {
  (...args: unknown[]): unknown;
  new (...args: unknown[]): unknown;
  [attr: string]: any;
  /** Deep conversion to JS values (subclasses of list, dict, int… included). */
  toJS(): unknown;
  /** str(obj) */
  toString(): string;
  /** obj[key] */
  getItem(key: unknown): unknown;
  /** obj[key] = value */
  setItem(key: unknown, value: unknown): void;
  /** del obj[key] */
  deleteItem(key: unknown): void;
  [Symbol.iterator](): Iterator<unknown>;
  [Symbol.dispose](): void;
}

/** What a proxy needs from the interpreter that owns its object. */
export interface ProxyOwner {
  getattr(state: ProxyState, name: string): unknown;
  setattr(state: ProxyState, name: string, value: unknown): void;
  delattr(state: ProxyState, name: string): void;
  contains(state: ProxyState, key: unknown): boolean;
  call(state: ProxyState, args: unknown[]): unknown;
  callMethod(state: ProxyState, name: string, args: unknown[]): unknown;
  getitem(state: ProxyState, key: unknown): unknown;
  setitem(state: ProxyState, key: unknown, value: unknown): void;
  delitem(state: ProxyState, key: unknown): void;
  op(state: ProxyState, op: number): unknown;
  iterate(state: ProxyState): Iterator<unknown>;
  release(state: ProxyState): void;
}

export interface ProxyState {
  handle: number;
  disposed: boolean;
  owner: ProxyOwner;
  /** callers for methods bound to this object, by name */
  methods?: Map<string, (...args: unknown[]) => unknown>;
  /** names whose "a method bound to this object" answer JS may reuse while it holds */
  mc?: MethodCache | undefined;
}

/**
 * What a read of `proxy.name` checks before answering "the method" without asking Python
 * (shim/methods.c): the object's type is still `type` (a reference the record holds) with
 * version tag `tag`; when the object has an instance dict, the pointer at `dictAddr` still
 * holds `dict` (also a reference the record holds, when not 0) and the shim's dict-watcher
 * generation is still `gen`.
 */
export interface MethodCache {
  type: number;
  tag: number;
  dictAddr: number;
  dict: number;
  gen: number;
  names: Map<string, (...args: unknown[]) => unknown>;
}

export const enum Op {
  Repr = 0,
  Str = 1,
  Len = 2,
  ToJS = 3,
  Iter = 4,
  Next = 5,
  TypeName = 6,
  Callable = 7,
  Bool = 8,
}

const STATE = Symbol("bunpy.state");
const inspectCustom = Symbol.for("nodejs.util.inspect.custom");

type Target = { [STATE]: ProxyState };

export function stateOf(value: unknown): ProxyState | undefined {
  return typeof value === "function" ? (value as unknown as Target)[STATE] : undefined;
}

export function live(st: ProxyState): ProxyState {
  if (st.disposed) throw new BunpyError("this Python object was disposed; it cannot be used any more");
  return st;
}

/** Members every proxy has; everything else is a Python attribute. (A Map, so that
    names such as "constructor" are Python attributes, not Object.prototype members.) */
const members = new Map<string, (st: ProxyState) => unknown>([
  ["toJS", (st) => () => st.owner.op(live(st), Op.ToJS)],
  ["toJSON", (st) => () => st.owner.op(live(st), Op.ToJS)],
  ["toString", (st) => () => st.owner.op(live(st), Op.Str)],
  ["getItem", (st) => (key: unknown) => st.owner.getitem(live(st), key)],
  ["setItem", (st) => (key: unknown, value: unknown) => st.owner.setitem(live(st), key, value)],
  ["deleteItem", (st) => (key: unknown) => st.owner.delitem(live(st), key)],
  ["then", () => undefined], // a proxy is not a thenable: `await proxy` gives the proxy
]);

const functionMembers = new Map<string, unknown>([
  ["call", Function.prototype.call],
  ["apply", Function.prototype.apply],
  ["bind", Function.prototype.bind],
]);

function symbolMember(st: ProxyState, key: symbol): unknown {
  switch (key) {
    case STATE:
      return st;
    case Symbol.iterator:
      return () => st.owner.iterate(live(st));
    case Symbol.dispose:
      return () => st.owner.release(st);
    case Symbol.toPrimitive:
      return (hint: string) => {
        const s = st.owner.op(live(st), Op.Str) as string;
        return hint === "number" ? Number(s) : s;
      };
    case Symbol.toStringTag:
      return "PyObject";
    case inspectCustom:
      return () => (st.disposed ? "<disposed PyObject>" : st.owner.op(st, Op.Repr));
    default:
      return undefined;
  }
}

/** What `new proxy(...)` gives: the call's result, which JS requires to be an object. */
function constructed(v: unknown): object {
  if ((typeof v === "object" && v !== null) || typeof v === "function") return v as object;
  throw new BunpyError(`new: the Python call returned ${typeof v}, not an object; call it without new`);
}

const handler: ProxyHandler<Target> = {
  get(t, key) {
    const st = t[STATE];
    if (typeof key === "symbol") return symbolMember(st, key);
    const member = members.get(key);
    if (member !== undefined) return member(st);
    const v = st.owner.getattr(live(st), key);
    // JS code given a Python callable may use fn.call / fn.apply / fn.bind: when Python
    // has no attribute of that name, they are Function.prototype's (which call the proxy)
    return v !== undefined ? v : functionMembers.get(key);
  },
  set(t, key, value) {
    if (typeof key === "symbol") return false;
    t[STATE].owner.setattr(live(t[STATE]), key, value);
    return true;
  },
  deleteProperty(t, key) {
    if (typeof key === "symbol") return false;
    t[STATE].owner.delattr(live(t[STATE]), key);
    return true;
  },
  has(t, key) {
    if (typeof key === "symbol") return key === Symbol.iterator || key === Symbol.dispose;
    return t[STATE].owner.contains(live(t[STATE]), key);
  },
  // no `apply` trap: calling the proxy calls its target function (makeProxy), which
  // JavaScriptCore does faster than through a trap that builds the argument array
  construct(t, args) {
    return constructed(t[STATE].owner.call(live(t[STATE]), args));
  },
};

/** console.log / Bun.inspect show repr(obj). Bun inspects a Proxy's target without its
    traps, so this sits on the target itself (one shared function, `this` is the target). */
function inspectRepr(this: Target): string {
  const st = this[STATE];
  return st.disposed ? "<disposed PyObject>" : (st.owner.op(st, Op.Repr) as string);
}

export function makeProxy(owner: ProxyOwner, handle: number): PyObject {
  // A function target makes the proxy callable (a call reaches it directly, there is no
  // `apply` trap); STATE on it is found by every trap.
  const st: ProxyState = { handle, disposed: false, owner };
  const target = function PyObject(...args: unknown[]) {
    if (st.disposed) live(st); // throws the disposed-proxy error
    return owner.call(st, args);
  } as unknown as Target & { [inspectCustom]?: unknown };
  target[STATE] = st;
  target[inspectCustom] = inspectRepr;
  return new Proxy(target, handler) as unknown as PyObject;
}

/**
 * A plain Python function (def, lambda, builtin, bound method) as a real JS function whose
 * prototype is a Proxy with the usual traps: reads, writes and `in` that the function does
 * not answer itself go up the prototype chain to it. Calling it costs what calling
 * any JS function costs; calling a Proxy costs ~100 ns more in JavaScriptCore, as much as
 * the rest of a call. What a function cannot forward: `delete f.attr` (no trap sees it)
 * and an own property named `prototype`, both documented.
 */
export function functionProxy(owner: ProxyOwner, handle: number): PyObject {
  const st: ProxyState = { handle, disposed: false, owner };
  const f = function PyObject(this: unknown, ...args: unknown[]) {
    if (st.disposed) live(st);
    const v = owner.call(st, args);
    return new.target === undefined ? v : constructed(v);
  } as unknown as Target & { [inspectCustom]?: unknown };
  // `name` and `length` would hide Python attributes of the same names
  delete (f as { name?: string }).name;
  delete (f as { length?: number }).length;
  f[STATE] = st;
  f[inspectCustom] = inspectRepr;
  const traps: Target = { [STATE]: st };
  Object.setPrototypeOf(f, new Proxy(traps, handler));
  return f as unknown as PyObject;
}

/** A JS function standing for a method bound to a proxy's object (no handle of its own). */
export function methodCaller(st: ProxyState, name: string): (...args: unknown[]) => unknown {
  let m = st.methods?.get(name);
  if (m === undefined) {
    m = (...args: unknown[]) => st.owner.callMethod(live(st), name, args);
    (st.methods ??= new Map()).set(name, m);
  }
  return m;
}

export type { Kwargs };
