/**
 * The only file that touches bun:ffi: loads the shim and declares its ABI (shim/bunpy.h).
 */
import { cc, dlopen, FFIType, JSCallback, ptr as addressOfView, read, toArrayBuffer, type Pointer } from "bun:ffi";

const { i32, i64, ptr, u32 } = FFIType;

const symbols = {
  bp_init: { args: [ptr, ptr, ptr, i32], returns: i32 },
  bp_finalize: { args: [ptr], returns: i32 },
  bp_sigint_changed: { args: [], returns: FFIType.void },
  bp_sigint_refresh: { args: [], returns: FFIType.void },
  bp_io_new: { args: [ptr], returns: ptr },
  bp_io_free: { args: [ptr], returns: FFIType.void },
  bp_io_reserve: { args: [ptr, u32], returns: i32 },
  bp_take_released: { args: [ptr], returns: i32 },
  bp_port_watch_env: { args: [ptr, ptr], returns: i32 },
  bp_compile: { args: [ptr, i32], returns: i32 },
  bp_run: { args: [ptr, ptr], returns: i32 },
  bp_import: { args: [ptr], returns: i32 },
  bp_intern: { args: [ptr], returns: i32 },
  bp_getattr: { args: [ptr, ptr, ptr], returns: i32 },
  bp_setattr: { args: [ptr, ptr, ptr], returns: i32 },
  bp_delattr: { args: [ptr, ptr, ptr], returns: i32 },
  bp_call: { args: [ptr, ptr], returns: i32 },
  bp_call_attr: { args: [ptr, ptr, ptr], returns: i32 },
  bp_method_gen: { args: [], returns: ptr },
  bp_method_layout: { args: [], returns: i32 },
  bp_getitem: { args: [ptr, ptr], returns: i32 },
  bp_setitem: { args: [ptr, ptr], returns: i32 },
  bp_delitem: { args: [ptr, ptr], returns: i32 },
  bp_contains: { args: [ptr, ptr], returns: i32 },
  bp_object_op: { args: [ptr, ptr, i32], returns: i32 },
  bp_builtins: { args: [ptr], returns: i32 },
  bp_flush: { args: [ptr], returns: i32 },
  bp_format_exception: { args: [ptr, ptr], returns: i32 },
  bp_port_set_doorbell: { args: [ptr, ptr], returns: FFIType.void },
  bp_port_poll: { args: [ptr, i32], returns: i32 },
  bp_port_drain: { args: [ptr], returns: i32 },
  bp_ctx_new: { args: [ptr, i32, u32, u32], returns: ptr },
  bp_ctx_new_process: { args: [ptr, u32, u32, ptr], returns: ptr },
  bp_ctx_submit: { args: [ptr, ptr, u32, i32, u32], returns: ptr },
  bp_ctx_call_sync: { args: [ptr, ptr, i32, u32], returns: i32 },
  bp_ctx_sync_wait: { args: [ptr, ptr, ptr], returns: i32 },
  bp_port_take_calls: { args: [ptr], returns: i32 },
  bp_call_reply: { args: [ptr, ptr, i32, u32], returns: i32 },
  bp_ctx_cancel: { args: [ptr, ptr], returns: i32 },
  bp_ctx_close: { args: [ptr, ptr, u32, u32], returns: i32 },
  bp_ctx_free: { args: [ptr], returns: FFIType.void },
  bp_ctx_state: { args: [ptr], returns: i32 },
  bp_ctx_completed: { args: [ptr], returns: FFIType.f64 },
  bp_view_deallocator: { args: [], returns: ptr },
  bp_shared: { args: [ptr, i32, FFIType.f64], returns: i32 },
  bp_bench_prepare: { args: [ptr, ptr], returns: i32 },
  bp_bench_call: { args: [ptr, i64, i64], returns: i64 },
} as const;

/** Pointers travel as plain numbers (x86-64 user addresses fit in 53 bits). */
type P = number;

/** The shim's functions as JS sees them; see shim/bunpy.h for what each does. */
export interface Shim {
  bp_init(program: Buffer, pythonDir: Buffer, err: Buffer, errLen: number): number;
  bp_finalize(io: P): number;
  bp_sigint_changed(): void;
  bp_sigint_refresh(): void;
  bp_io_new(dispatch: P | null): P | null;
  bp_io_free(io: P): void;
  bp_port_watch_env(io: P, napiEnv: P): number;
  bp_io_reserve(io: P, need: number): number;
  bp_take_released(io: P): number;
  bp_compile(io: P, mode: number): number;
  bp_run(io: P, code: P): number;
  bp_import(io: P): number;
  bp_intern(io: P): number;
  bp_getattr(io: P, obj: P, name: P): number;
  bp_setattr(io: P, obj: P, name: P): number;
  bp_delattr(io: P, obj: P, name: P): number;
  bp_call(io: P, callable: P): number;
  bp_call_attr(io: P, obj: P, name: P): number;
  bp_method_gen(): P;
  bp_method_layout(): number;
  bp_getitem(io: P, obj: P): number;
  bp_setitem(io: P, obj: P): number;
  bp_delitem(io: P, obj: P): number;
  bp_contains(io: P, obj: P): number;
  bp_object_op(io: P, obj: P, op: number): number;
  bp_builtins(io: P): number;
  bp_flush(io: P): number;
  bp_format_exception(io: P, exc: P): number;
  bp_port_set_doorbell(io: P, doorbell: P): void;
  bp_port_poll(io: P, polling: number): number;
  bp_port_drain(io: P): number;
  bp_ctx_new(io: P, mode: number, id: number, policyLen: number): P | null;
  bp_ctx_new_process(io: P, id: number, policyLen: number, argv: Buffer): P | null;
  bp_ctx_submit(ctx: P, io: P, id: number, op: number, len: number): P | null;
  bp_ctx_call_sync(ctx: P, io: P, op: number, len: number): number;
  bp_ctx_sync_wait(ctx: P, io: P, req: P): number;
  bp_port_take_calls(io: P): number;
  bp_call_reply(call: P, io: P, status: number, len: number): number;
  bp_ctx_cancel(ctx: P, req: P): number;
  bp_ctx_close(ctx: P, io: P, id: number, graceMs: number): number;
  bp_ctx_free(ctx: P): void;
  bp_ctx_state(ctx: P): number;
  bp_ctx_completed(ctx: P): number;
  bp_view_deallocator(): P;
  bp_shared(io: P, op: number, delta: number): number;
  bp_bench_prepare(io: P, callable: P): number;
  bp_bench_call(io: P, a: number, b: number): number | bigint;
}

export function loadShim(path: string): Shim {
  return dlopen(path, symbols).symbols as unknown as Shim;
}

/**
 * The calling JS thread's napi_env (0 if bun:ffi cannot give one). bun:ffi passes a
 * thread's env only to functions compiled by cc(), so shim/napi-env.c (one line) is
 * compiled here with TinyCC, about 10 ms once per Worker that creates a context.
 */
export function napiEnv(source: string): number {
  try {
    const { symbols } = cc({ source, symbols: { bp_napi_env: { args: [FFIType.napi_env], returns: ptr } } });
    return Number(symbols.bp_napi_env(undefined) ?? 0);
  } catch {
    return 0;
  }
}

const RTLD_NOW = 2;
const RTLD_GLOBAL = 0x100; // glibc and musl, every Linux architecture

/** libc's own dlopen/dlerror: bun:ffi's dlopen opens libraries RTLD_LOCAL (fact 1). */
function libcDl() {
  const fns = { dlopen: { args: [ptr, i32], returns: ptr }, dlerror: { args: [], returns: FFIType.cstring } } as const;
  let last: unknown;
  // glibc >= 2.34 and musl have dlopen in libc; older glibc in libdl
  for (const name of ["libc.so.6", "libdl.so.2", "libc.so"]) {
    try {
      return dlopen(name, fns).symbols;
    } catch (e) {
      last = e;
    }
  }
  throw last;
}

/**
 * Loads a shared library RTLD_NOW|RTLD_GLOBAL through libc, so libraries loaded after it
 * (the shim, whose Python symbols are left undefined, and Python's C extension modules)
 * resolve their symbols against it. The handle stays open for the life of the process.
 * Returns undefined on success, else dlerror()'s message.
 */
export function loadGlobal(path: string): string | undefined {
  const dl = libcDl();
  const handle = dl.dlopen(cstring(path), RTLD_NOW | RTLD_GLOBAL);
  if (handle) return undefined;
  return String(dl.dlerror() ?? `dlopen(${path}) failed`);
}

/** Signature of the dispatch callback C calls for Python -> JS calls: (io, target) -> status. */
export function makeDispatch(fn: (target: number) => number): JSCallback {
  return new JSCallback((_io: Pointer, target: number) => fn(target), { args: [ptr, i32], returns: i32 });
}

/** The doorbell: a threadsafe callback the shim rings from context threads. */
export function makeDoorbell(fn: () => void): JSCallback {
  return new JSCallback(() => fn(), { args: [ptr], returns: FFIType.void, threadsafe: true });
}

/** A view of `length` bytes of C memory at `address`. */
export function viewOf(address: number, length: number): ArrayBuffer {
  return toArrayBuffer(address as Pointer, 0, length);
}

/** An ArrayBuffer over `length` bytes of C memory that belong to a C record: when Bun lets
    the memory go (garbage collection, or a detach), it calls `deallocator(bytes, context)`. */
export function externalBuffer(address: number, length: number, context: number, deallocator: number): ArrayBuffer {
  // bun:ffi takes (ptr, byteOffset, byteLength, deallocatorContext, deallocator); its
  // type declarations only list the first three
  const make = toArrayBuffer as unknown as (p: number, o: number, n: number, c: number, d: number) => ArrayBuffer;
  return make(address, 0, length, context, deallocator);
}

/** The address of a typed array's first byte (Bun keeps the memory in place while the
    array is alive: JavaScriptCore does not move array buffers). */
export function addressOf(view: ArrayBufferView | ArrayBuffer | SharedArrayBuffer): number {
  return addressOfView(view as DataView) as number;
}

export function readPointer(address: number, offset: number): number {
  return read.ptr(address as Pointer, offset) as number;
}

/** A u32 in the shim's or Python's memory (a type's version tag, see methods.c). */
export function readU32(address: number, offset: number): number {
  return read.u32(address as Pointer, offset);
}

/** NUL-terminated UTF-8 for `const char *` arguments. */
export function cstring(s: string): Buffer {
  return Buffer.from(`${s}\0`, "utf8");
}

export type { JSCallback };
