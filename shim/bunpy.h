/*
 * bunpy.h — the whole ABI exported by the shim to bun:ffi (src/ffi.ts).
 *
 * Conventions
 *  - Every exported function starts with bp_ and is declared here, nowhere else.
 *  - Data crosses through a per-JS-thread bp_io: JS writes arguments into io->buf in the
 *    tagged format below, calls one bp_ function, and reads the result back from io->buf.
 *  - Functions returning int return BP_OK (0) or a negative BP_ERR_* code; on error the
 *    buffer holds an error record (see BP_ERR_PYTHON / BP_ERR_CONVERT).
 *  - PyObject pointers given to JS ("handles") are strong references owned by JS;
 *    JS drops them through the io drop queue (io->drop, emptied by the next call).
 */
#ifndef BUNPY_H
#define BUNPY_H

#include <stdint.h>

#define BP_EXPORT __attribute__((visibility("default")))

/* ---- value tags of the binary codec (little endian, no alignment) -------------------- */
enum {
    BP_T_NONE = 0,       /* null / undefined / None                                     */
    BP_T_FALSE = 1,
    BP_T_TRUE = 2,
    BP_T_INT32 = 3,      /* i32                                                         */
    BP_T_FLOAT = 4,      /* f64: a JS number that is not a safe integer / a Python float */
    BP_T_INT53 = 5,      /* f64 holding a safe integer (Python int <-> JS number)        */
    BP_T_BIGINT = 6,     /* u32 n + n ASCII bytes of hex digits, optional leading '-'    */
    BP_T_STR = 7,        /* u32 n + n bytes UTF-8                                       */
    BP_T_BYTES = 8,      /* u32 n + n bytes                                             */
    BP_T_LIST = 9,       /* u32 count + values                                          */
    BP_T_TUPLE = 10,     /* u32 count + values (Python -> JS only)                       */
    BP_T_DICT = 11,      /* u32 count + (str key, value) pairs: plain JS object          */
    BP_T_MAP = 12,       /* u32 count + (key, value) pairs: JS Map                       */
    BP_T_SET = 13,       /* u32 count + values                                          */
    BP_T_DATE = 14,      /* f64 milliseconds since the epoch (UTC)                       */
    BP_T_JSFUNC = 15,    /* u32 id of a JS function (JS -> Python only)                  */
    BP_T_PYOBJ = 16,     /* u64 PyObject* (a strong reference travels with it)           */
    BP_T_ASCII = 17,     /* u32 n + n ASCII bytes (Python -> JS only, decoder fast path) */
    BP_T_METHOD = 18,    /* bp_getattr only: a method bound to the object; JS calls it with
                            bp_call_attr instead of holding a handle to a new bound method.
                            Then u8 1 when JS may reuse the answer (methods.c), and at offset
                            8: u64 type (a new reference JS drops), 16: u64 address of the
                            object's dict pointer (0: no dict), 24: u64 its value (a new
                            reference JS drops, when not 0), 32: u32
                            the type's tp_version_tag, 36: i32 the bp_method_gen value */
    BP_T_BUFFER = 19,    /* JS memory without a copy (py.buffer), JS -> Python only: u64 address,
                            u64 byte length, u64 port (bp_io*), u32 pin id, u8 struct format
                            char, u8 flags (1: read-only); Python gets a memoryview */
    BP_T_JSITER = 20,    /* a JS (async) iterable (py.iter), JS -> Python only: u8 async, STR name
                            of the registered function Python pulls batches from */
    BP_T_PYFUNC = 21,    /* Python -> JS only: like BP_T_PYOBJ, for a plain function (def, lambda,
                            builtin, bound method): JS makes it a real function, not a Proxy */
    BP_T_ASCII_MEMO = 22, /* a short ASCII string (1..BP_ASCII_MEMO_MAX bytes), both ways:
                            u32 n | hint << 8, then n bytes. The hint is a hash of the string
                            the sender had at hand (Python's cached str hash; JS hashes while it
                            copies the chars): it picks the receiver's memo slot, so the
                            receiver compares bytes but does not hash them */
    BP_T_SHAPE = 23,     /* a dict / plain object whose keys are 1..BP_SHAPE_MAX_KEYS short ASCII
                            strings, both ways: u32 n, u32 hint, u32 k, then k bytes of keys
                            (each: u8 length 1..BP_ASCII_MEMO_MAX, then its bytes), then the n
                            values in key order. The hint is a hash of the key list the sender
                            had at hand: it picks the receiver's shape memo slot, whose key
                            bytes the receiver compares, so a hit costs no key decoding */
};

/* The most keys a dict sent as BP_T_SHAPE may have. */
#define BP_SHAPE_MAX_KEYS 32

/* The longest string sent as BP_T_ASCII_MEMO (src/codec.ts MEMO_MAX_LENGTH is the same). */
#define BP_ASCII_MEMO_MAX 24

/* ---- status codes ---------------------------------------------------------------------- */
enum {
    BP_OK = 0,
    BP_ERR_PYTHON = -1,   /* buf: STR type, STR module, STR message, STR traceback,
                                  INT32 lineno, INT32 offset (-1 when not a SyntaxError);
                             from a main-interpreter call, the traceback slot is INT53: a
                             handle to the exception, formatted by bp_format_exception */
    BP_ERR_CONVERT = -2,  /* buf: STR message (a value could not cross the boundary)      */
    BP_ERR_STATE = -3,    /* buf: STR message (Python is not running / was closed)        */
    BP_ERR_THREAD = -4,   /* wrong thread for this operation, or inside a callback; buf untouched */
    BP_ERR_MEMORY = -5,   /* no buffer could be allocated; buf untouched                  */
    BP_ERR_JS = -6,       /* from the dispatch callback: buf: STR name, STR message, STR stack */
    BP_ERR_ARGUMENT = -7, /* buf: STR message (an argument could not become a Python object) */
    BP_ERR_BUSY = -8,     /* bp_finalize: contexts are still running (close them first)   */
    BP_ERR_DIED = -9,     /* buf: STR message (the context's thread ended under the call, or a
                             process context's host process died)                          */
    BP_CALLS_PENDING = 1, /* bp_ctx_call_sync: calls, completions or messages wait for JS; take
                             them (bp_port_take_calls, bp_port_drain), then bp_ctx_sync_wait */
};

/* ---- runtime states (runtime.c) ----------------------------------------------------------- */
enum { BP_UNINITIALISED = 0, BP_STARTING = 1, BP_RUNNING = 2, BP_STOPPING = 3, BP_STOPPED = 4 };

/* modes for bp_compile */
enum { BP_MODE_EVAL = 0, BP_MODE_EXEC = 1 };

/* kinds for bp_builtin_op: operations on one object that return a value */
enum {
    BP_OP_REPR = 0, BP_OP_STR = 1, BP_OP_LEN = 2, BP_OP_TOJS = 3, BP_OP_ITER = 4,
    BP_OP_NEXT = 5, BP_OP_TYPENAME = 6, BP_OP_CALLABLE = 7, BP_OP_BOOL = 8,
};

/*
 * One JS thread's channel into the main interpreter. The first five fields are read by
 * JS through a typed-array view, so their layout is ABI.
 */
typedef struct bp_io {
    uint8_t *buf;            /* +0  reused data buffer, owned by C                      */
    uint32_t cap;            /* +8  its capacity                                        */
    uint32_t len;            /* +12 bytes of result written by the last call            */
    uint32_t gen;            /* +16 bumped whenever buf moves (JS re-creates its views)  */
    uint32_t released;       /* +20 ids waiting in bp_take_released: JS function and pin ids,
                                and -1 - slot of a thrown Error kept for JSError.js_stack */
    double *drop;            /* +24 handles JS no longer needs, as doubles (pointers < 2^53) */
    uint32_t ndrop;          /* +32 how many; dropped by the next call that takes the GIL   */
    uint32_t drop_cap;       /* +36                                                     */
    /* private fields follow in the C definition (internal.h) */
} bp_io;

/* callback into JS for bunpy.call / calling a JS function: (io, target) -> status.
   target >= 0: a JS function id; target == -1: registered name (first STR in buf);
   target <= -2: the stack of the thrown Error kept in slot -2 - target (no arguments). */
typedef int32_t (*bp_dispatch_fn)(bp_io *io, int32_t target);

/* ---- contexts (context.c) ------------------------------------------------------------- */
typedef struct bp_context bp_context;
typedef struct bp_request bp_request;
/* threadsafe JSCallback rung (from any thread) when a port's completion queue becomes
   non-empty; JS then calls bp_port_drain. */
typedef void (*bp_doorbell_fn)(bp_io *io);

enum { BP_CTX_OWNGIL = 0, BP_CTX_WORKER = 1, BP_CTX_PROCESS = 2 /* relay.c: Python in a bunpy-host process */ };
/* or'ed into bp_ctx_new's mode for a sandboxed owngil context: its threads get an fd table
   of their own (fdtable.c) */
#define BP_CTX_OWN_FDS 0x100

/* request payloads (in io->buf when submitted) */
enum {
    BP_REQ_CALL = 1,        /* STR module, STR fn, LIST args, NONE|DICT kwargs */
    BP_REQ_EVAL = 2,        /* STR source (in the context's __main__) */
    BP_REQ_EXEC = 3,        /* STR source */
    BP_REQ_REF_CALL = 4,    /* PYOBJ callable, LIST args, NONE|DICT kwargs */
    BP_REQ_REF_GETATTR = 5, /* PYOBJ obj, STR name */
    BP_REQ_REF_TOJS = 6,    /* PYOBJ obj: deep conversion */
    BP_REQ_REF_DROP = 7,    /* LIST of PYOBJ handles to release; no completion */
    BP_REQ_START = 8,       /* internal: completed when the context is up */
    BP_REQ_CLOSE = 9,       /* internal: completed when the context has ended */
    BP_REQ_MESSAGE = 10,    /* internal: bunpy.send; drained with id 0: INT53 context, STR channel, value */
};

/* runtime (runtime.c) */
BP_EXPORT int32_t bp_init(const char *program, const char *python_dir, char *err, int32_t errlen);
BP_EXPORT int32_t bp_finalize(bp_io *io);
BP_EXPORT void bp_sigint_changed(void);   /* JS SIGINT listeners were added or removed */
BP_EXPORT void bp_sigint_refresh(void);   /* put bunpy's SIGINT handler back in front (after a change) */

/* io (io.c) */
BP_EXPORT bp_io *bp_io_new(bp_dispatch_fn dispatch);
BP_EXPORT void bp_io_free(bp_io *io);
BP_EXPORT int32_t bp_io_reserve(bp_io *io, uint32_t need);
BP_EXPORT int32_t bp_take_released(bp_io *io);
/* a Bun Worker's port is closed from its VM's cleanup hooks, before Bun frees the doorbell:
   `napi_env` is that thread's (bun:ffi passes it); BP_ERR_STATE when N-API is missing */
BP_EXPORT int32_t bp_port_watch_env(bp_io *io, void *napi_env);

/* operations on the main interpreter (ops.c); inputs and outputs in io->buf */
BP_EXPORT int32_t bp_compile(bp_io *io, int32_t mode);                 /* STR src, STR filename -> PYOBJ code */
BP_EXPORT int32_t bp_run(bp_io *io, void *code);                        /* -> value (None for exec) */
BP_EXPORT int32_t bp_import(bp_io *io);                                 /* STR name -> PYOBJ module */
BP_EXPORT int32_t bp_intern(bp_io *io);                                 /* STR -> PYOBJ interned str */
BP_EXPORT int32_t bp_getattr(bp_io *io, void *obj, void *name);         /* -> value, METHOD; 1: no such attribute */
BP_EXPORT int32_t bp_setattr(bp_io *io, void *obj, void *name);         /* value -> None */
BP_EXPORT int32_t bp_delattr(bp_io *io, void *obj, void *name);
BP_EXPORT int32_t bp_call(bp_io *io, void *callable);                   /* LIST args, DICT|NONE kwargs -> value */
BP_EXPORT int32_t bp_call_attr(bp_io *io, void *obj, void *name);       /* obj.name(*args, **kwargs) */
/* the method-answer cache (methods.c): the address of the int32 generation a dict watcher
   bumps (read by JS without the GIL), and offsetof(PyObject, ob_type) |
   offsetof(PyTypeObject, tp_version_tag) << 16 */
BP_EXPORT void *bp_method_gen(void);
BP_EXPORT int32_t bp_method_layout(void);
BP_EXPORT int32_t bp_getitem(bp_io *io, void *obj);                     /* key -> value */
BP_EXPORT int32_t bp_setitem(bp_io *io, void *obj);                     /* key, value -> None */
BP_EXPORT int32_t bp_delitem(bp_io *io, void *obj);                     /* key -> None */
BP_EXPORT int32_t bp_contains(bp_io *io, void *obj);                    /* value -> bool */
BP_EXPORT int32_t bp_object_op(bp_io *io, void *obj, int32_t op);       /* BP_OP_* -> value */
BP_EXPORT int32_t bp_builtins(bp_io *io);                               /* -> PYOBJ builtins module */
BP_EXPORT int32_t bp_flush(bp_io *io);                                  /* drop io->drop now */
BP_EXPORT int32_t bp_format_exception(bp_io *io, void *exc);            /* -> STR traceback of a kept exception */

/* contexts (context.c) */
BP_EXPORT void bp_port_set_doorbell(bp_io *io, bp_doorbell_fn fn);
BP_EXPORT int32_t bp_port_poll(bp_io *io, int32_t polling);           /* -> 1: completions or calls wait */
BP_EXPORT int32_t bp_port_drain(bp_io *io);                             /* -> count; buf: (u32 id, i32 status, u32 len, bytes)* */
BP_EXPORT bp_context *bp_ctx_new(bp_io *io, int32_t mode, uint32_t id, uint32_t len); /* buf: policy (DICT|NONE);
                                                                      completion `id` once started */
/* a process context (relay.c): buf as bp_ctx_new; argv: the bunpy-host command line, NUL-separated,
   ending with an empty string */
BP_EXPORT bp_context *bp_ctx_new_process(bp_io *io, uint32_t id, uint32_t len, const char *argv);
BP_EXPORT bp_request *bp_ctx_submit(bp_context *ctx, bp_io *io, uint32_t id, int32_t op, uint32_t len);
BP_EXPORT int32_t bp_ctx_call_sync(bp_context *ctx, bp_io *io, int32_t op, uint32_t len); /* result in buf */
BP_EXPORT int32_t bp_ctx_sync_wait(bp_context *ctx, bp_io *io, bp_request *req);  /* after BP_CALLS_PENDING */
/* Python -> JS calls from contexts (jscall.c) */
BP_EXPORT int32_t bp_port_take_calls(bp_io *io);   /* -> count; buf: (u64 call, u64 context, u32 len, bytes)* */
BP_EXPORT int32_t bp_call_reply(void *call, bp_io *io, int32_t status, uint32_t len); /* answer in buf */
BP_EXPORT int32_t bp_ctx_cancel(bp_context *ctx, bp_request *req);
/* completion `id` once ended (TRUE: abandoned after grace_ms + 2 s, see context.c) */
BP_EXPORT int32_t bp_ctx_close(bp_context *ctx, bp_io *io, uint32_t id, uint32_t grace_ms);
BP_EXPORT void bp_ctx_free(bp_context *ctx);                              /* after the close completion */
/* bunpy-host (host.c): a source of requests the context's thread polls itself wherever it
   looks for work (wait.c): fn moves what it has onto the context's queue (bp_ctx_submit)
   and returns how many; `sleeping` is 1 when the thread is about to sleep (fn announces it
   to its producer, then looks once more), 0 when awake. A sleeping thread also wakes when
   `fd` (an fd the producer rings, or -1) becomes readable. */
typedef int32_t (*bp_feed_fn)(void *arg, int32_t sleeping);
BP_EXPORT void bp_ctx_set_feed(bp_context *ctx, bp_feed_fn fn, void *arg, int32_t fd);
BP_EXPORT int32_t bp_ctx_state(bp_context *ctx);
BP_EXPORT double bp_ctx_completed(bp_context *ctx);

/* views of Python memory (buffers.c): the JSTypedArrayBytesDeallocator JS gives
   toArrayBuffer for a py.view; it only queues the view, released at the next call */
BP_EXPORT void *bp_view_deallocator(void);

/* the shared key-value store (shared.c), no GIL needed. op: 0 get, 1 set, 2 incr (by
   delta), 3 compare-and-set, 4 delete, 5 keys, 6 clear. buf: STR key, then the value(s)
   (CAS: expected, value); len = bytes written. -> BP_OK and the result in buf; 1: no such
   key (get); BP_ERR_CONVERT: STR message */
BP_EXPORT int32_t bp_shared(bp_io *io, int32_t op, double delta);

/* benchmark baseline (bench.c): the cheapest useful call into Python */
BP_EXPORT int32_t bp_bench_prepare(bp_io *io, void *callable);
BP_EXPORT int64_t bp_bench_call(bp_io *io, int64_t a, int64_t b);
/* the floor of an awaited call into another thread: a C thread calls `cb` (a threadsafe
   JSCallback) once per ping */
BP_EXPORT void *bp_bench_echo_start(void *cb);
BP_EXPORT void bp_bench_echo_ping(void *echo);
BP_EXPORT void bp_bench_echo_stop(void *echo);

#endif
