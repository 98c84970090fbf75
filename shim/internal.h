/*
 * internal.h — declarations shared by the shim's C files. Nothing here is exported:
 * the shared library is built with -fvisibility=hidden and only BP_EXPORT symbols
 * (bunpy.h) are visible to bun:ffi.
 */
#ifndef BUNPY_INTERNAL_H
#define BUNPY_INTERNAL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdatomic.h>
#include <semaphore.h>
#include "bunpy.h"
#include "queue.h"

/* Python 3.11 lacks the single-object exception API of 3.12. */
static inline PyObject *bp_err_take(void) {
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (!t) return NULL;
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb && v) PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
#endif
}
static inline void bp_err_give(PyObject *exc) { /* steals exc */
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* The current thread state without the fatal error when there is none. */
static inline PyThreadState *bp_thread_state_unchecked(void) {
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked();
#else
    return _PyThreadState_UncheckedGet();
#endif
}

/* Deeper nesting than this is refused in both directions (and reported as a cycle when
   the too-deep path revisits a container). */
#define BP_MAX_DEPTH 1000

/* JS -> Python -> JS -> Python chains through a context deeper than this are refused. */
#define BP_MAX_NESTING 32

/* ---- per-interpreter state (module.c): what the codec needs from the interpreter ---- */
/* Attribute names the reactor and a context's loop look up per iteration or per call,
   interned once per interpreter (module state): a
   string object belongs to the interpreter that made it, so none is kept in a C static. */
enum {
    BP_NAME_WHEN, BP_NAME_CANCELLED, BP_NAME_SCHEDULED, BP_NAME_RUN, BP_NAME_POPLEFT, BP_NAME_APPEND,
    BP_NAME_CONTEXT, BP_NAME_CALLBACK, BP_NAME_ARGS, BP_NAME_LOOP, BP_NAME_REPR, BP_NAME_SOURCE_TRACEBACK,
    BP_NAME_REMOVE_READER, BP_NAME_REMOVE_WRITER, BP_NAME_BUNPY_STEP, BP_NAME_BUNPY_START, BP_NAME_DONE,
    BP_NAME_RESULT, BP_NAME_ASYNCIO, BP_NAME_CURRENT_TASK, BP_NAME_COUNT
};

/* The decoder's memo of short ASCII strings, per interpreter (decode.c read_ascii). */
#define BP_STR_MEMO 512
/* The decoder's memo of dict key lists (BP_T_SHAPE), per interpreter (decode.c read_shape). */
#define BP_SHAPE_MEMO 256
typedef struct bp_shape bp_shape;

typedef struct bp_interp {
    PyObject *names[BP_NAME_COUNT]; /* see BP_NAME_*                                         */
    PyTypeObject *jsfunc_type;   /* bunpy.JSFunction (heap type of this interpreter)       */
    PyTypeObject *jsbuf_type;    /* bunpy.JSBuffer: JS memory passed with py.buffer (buffers.c) */
    PyObject *jserror_type;      /* bunpy.JSError                                           */
    PyObject *helpers;           /* the bunpy._codec module (datetime and traceback helpers) */
    PyObject *datetime_type;     /* datetime.datetime once the helpers loaded it            */
    struct bp_context *ctx;      /* the owngil context running this interpreter, else NULL  */
    struct bp_policy *left_policy; /* its context's policy, kept for the threads still running
                                      in an interpreter left behind at close (never freed)  */
    PyObject *str_memo[BP_STR_MEMO]; /* short ASCII strs decoded lately (decode.c read_ascii) */
    bp_shape *shape_memo[BP_SHAPE_MEMO]; /* dict key lists decoded lately (decode.c read_shape) */
    PyObject *jserror_last[3];   /* jserror.c: the name and message of the last JS error raised
                                    here and its args tuple ("name: message",), reused when the
                                    next one has the same two (memo) strs                     */
} bp_interp;
void bp_shape_memo_clear(bp_interp *st); /* decode.c: frees the shape memo (GIL held)     */

PyObject *bp_reactor_type_new(PyObject *module); /* _bunpy.Reactor (reactor.c)            */
bp_interp *bp_interp_get(void);               /* state of the current interpreter, or NULL */
PyObject *bp_interp_helper(bp_interp *st, const char *name); /* borrowed, NULL + error  */

/* ---- a JS thread's port (io.c): bp_io followed by what JS does not see ---------------- */
typedef struct bp_id_list {
    int32_t *ids;
    uint32_t n, cap;
} bp_id_list;

typedef struct bp_port {
    bp_io io;                    /* must stay first: JS reads it                            */
    PyThreadState *ts;           /* this JS thread's thread state in the main interpreter    */
    pthread_t owner;             /* the JS thread                                            */
    bp_dispatch_fn dispatch;     /* JSCallback for calls into JS (runs on owner only)        */
    int held;                    /* 1 while this port holds the main GIL                     */
    int no_dispatch;             /* >0 while calls into JS are refused (dropping handles)     */
    int depth;                   /* bp_ calls of this port in progress (nested via callbacks) */
    int from_gilstate;           /* ts came from PyGILState_Ensure (non-main JS threads)     */
    atomic_int refs;             /* 1 for JS + 1 per live JSFunction pointing here           */
    atomic_int closed;           /* JS side is gone or going (bp_io_free, its VM's teardown,
                                    or its thread's exit): no doorbell is rung any more       */
    atomic_int ringing;          /* doorbells being rung now (bp_port_ring; io.c)             */
    int freed;                   /* bp_io_free ran (owner thread only)                        */
    pthread_mutex_t released_lock;
    bp_id_list released;         /* ids whose Python side died on another thread (the lock)  */
    bp_id_list own_released;     /* ... on this JS thread during its calls (no lock)         */
    PyObject *bench_fn;          /* bench.c: the callable of the FFI baseline              */
    bp_mpsc completions;         /* finished context requests and messages for this JS thread */
    bp_mpsc calls;               /* Python -> JS calls from contexts, waiting for an answer  */
    struct bp_jscall *taken_calls; /* calls JS took and has not answered (jscall.c; JS thread) */
    bp_node *drain_rest;         /* completions taken but not yet given to JS (JS thread only) */
    sem_t sync_wake;             /* posted for a callSync waiter: result or call arrived     */
    atomic_int sync_waiting;     /* a callSync is waiting on sync_wake                       */
    atomic_int unread;           /* bunpy.send messages from the main interpreter not drained */
    bp_doorbell_fn doorbell;     /* threadsafe JSCallback; NULL until a context is created   */
    atomic_int js_polling;       /* JS looks for completions itself now: no doorbell (request.c) */
    struct bp_context *contexts; /* owngil and worker contexts this JS thread has not freed
                                    (bp_ctx_free); closed if the thread ends first (context.c) */
    struct bp_relay *relays;     /* this thread's process contexts: bp_port_poll reads their
                                    result rings (ring.c; JS thread only)                    */
} bp_port;

static inline bp_port *bp_port_of(bp_io *io) { return (bp_port *)io; }

/* Ctrl-C (runtime.c): checked by every call into the main interpreter (ops.c) */
enum { BP_SIGINT_STALE = 1, BP_SIGINT_TRIPPED = 2 };
extern atomic_int bp_sigint_flags;
extern _Atomic(bp_port *) bp_main_port;
void bp_sigint_leave(bp_port *p);
/* loop.c: SIGINT/SIGTERM for contexts that asked for them (async-signal-safe; the number of
   contexts that took it), and putting bunpy's SIGTERM handler back in front. */
int bp_loop_signal_notify(int sig);
void bp_loop_signals_refresh(void);
int bp_io_grow(bp_io *io, uint32_t need);       /* 0, or -1 (MemoryError set)              */
void bp_method_answer(bp_io *io, PyObject *obj, PyObject *name); /* methods.c: BP_T_METHOD + cache record */
void bp_io_trim(bp_io *io, uint32_t keep);     /* shrink a buffer a huge value left big     */
void bp_port_release_id(bp_port *p, int32_t id); /* any thread; takes released_lock          */
void bp_port_unref(bp_port *p);
int bp_port_alive(bp_port *p);                 /* 0 once the JS thread is gone (port closed)  */
void bp_port_ring(bp_port *p);                 /* rings p's doorbell unless p is closed: the
                                                  only way any thread rings one (io.c)        */
int bp_port_enter(bp_port *p);                 /* 1: p is open and stays so until bp_port_leave
                                                  (messages and calls are pushed in between, and
                                                  nothing that can wait); 0: closed         */
void bp_port_leave(bp_port *p);

/* ---- runtime (runtime.c) ----------------------------------------------------------- */
int bp_running(void);
extern _Thread_local bp_port *bp_current_port;  /* port of the call running on this thread */
int bp_tracemalloc_tracing(void);              /* main GIL held: tracemalloc traces now     */

/* ---- memoryLimit of owngil contexts (memcap.c) --------------------------------------- */
void bp_memcap_install(void);                  /* once, after Python started               */
int bp_memcap_register(size_t limit);          /* the calling thread's interpreter; -1 + error */
void bp_memcap_forget(PyInterpreterState *interp); /* it ended (bp_create_lock held)      */
long long bp_memcap_used(void);                /* its bytes counted, or -1                  */
extern atomic_int bp_owngil_interps;           /* owngil interpreters that exist (context.c) */

/* ---- codec (decode.c, encode.c) ------------------------------------------------------- */
typedef struct bp_reader {
    const uint8_t *buf;
    uint32_t pos, end;
    bp_port *port;               /* owner for JS functions decoded from the buffer            */
    bp_interp *st;
} bp_reader;

typedef struct bp_writer {
    bp_io *io;
    uint32_t pos;
    int deep;                    /* 1: convert subclasses too (toJS); 0: exact types only    */
    bp_interp *st;
    PyObject **refs;             /* handles written so far, dropped again if writing fails   */
    uint32_t nrefs, refs_cap;
    char error[256];             /* conversion error message when a write returns BP_ERR_CONVERT */
    PyObject *path[BP_MAX_DEPTH + 2]; /* containers being written, for cycle reports      */
} bp_writer;

void bp_reader_init(bp_reader *r, bp_io *io, uint32_t pos);
PyObject *bp_read_value(bp_reader *r, int depth);          /* new ref, or NULL + error */
int bp_read_u32(bp_reader *r, uint32_t *out);
PyObject *bp_read_str(bp_reader *r);                       /* a str value, else TypeError */
PyObject *bp_read_call(bp_reader *r, PyObject *callable, int32_t *read_failed);
PyObject *bp_read_method_call(bp_reader *r, PyObject *self, PyObject *name, int32_t *read_failed); /* self.name(...) */
int bp_check_module_name(PyObject *name);                  /* 0, or -1 + ValueError (NUL) */
PyObject *bp_compile_source(PyObject *src, const char *filename, int start); /* compile() rules */

void bp_writer_init(bp_writer *w, bp_io *io, int deep);
int bp_write_value(bp_writer *w, PyObject *o, int depth);   /* BP_OK or BP_ERR_*        */
int bp_write_tag_u32(bp_writer *w, uint8_t tag, uint32_t n);
int bp_write_call(bp_writer *w, PyObject *name, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
void bp_writer_commit(bp_writer *w);                        /* result is complete        */
void bp_writer_abort(bp_writer *w);                         /* drop handles written      */
uint8_t bp_handle_tag(PyObject *o);                         /* BP_T_PYFUNC or BP_T_PYOBJ */

/* ---- errors (errors.c): turn the current state into an error record in the buffer ---- */
int32_t bp_fail_python(bp_io *io);                          /* from the raised exception */
int32_t bp_fail_message(bp_io *io, int32_t code, const char *fmt, ...);
int32_t bp_fail_writer(bp_writer *w, int status);           /* after a failed bp_write_value */
int32_t bp_fail_read(bp_io *io);                            /* an argument could not be read */

/* ---- module (module.c) -------------------------------------------------------------- */
PyObject *bp_jsfunc_new(bp_interp *st, bp_port *port, int32_t id);
PyObject *bp_module_init(void);                             /* PyInit__bunpy             */
/* a call into JS with no arguments on port p (the current JS thread's), target as for the
   dispatch callback; new ref, or NULL + RuntimeError off that JS thread */
PyObject *bp_call_js_target(bp_interp *st, bp_port *p, int32_t target);

/* ---- jserror.c: bunpy.JSError ------------------------------------------------------- */
int bp_jserror_init(PyObject *m, bp_interp *st);            /* the type, added to the module */
PyObject *bp_raise_js_error(bp_interp *st, bp_reader *r);   /* from a BP_ERR_JS record   */
/* echofloor.c: _bunpy.echo_floor(size, conns, round_trips) -> seconds (bench/loop.bench.ts) */
PyObject *bp_echo_floor(PyObject *m, PyObject *const *args, Py_ssize_t nargs);

/* ---- buffers.c: py.view and py.buffer ------------------------------------------------ */
int bp_buffers_init(PyObject *m, bp_interp *st);            /* bunpy.JSBuffer type        */
PyObject *bp_read_buffer(bp_reader *r, bp_interp *st);      /* BP_T_BUFFER -> memoryview  */
PyObject *bp_view_open(PyObject *module, PyObject *const *args, Py_ssize_t nargs); /* _bunpy._view */
PyObject *bp_view_close(PyObject *module, PyObject *addr);  /* _bunpy._view_close         */
PyObject *bp_views_live(PyObject *module, PyObject *unused); /* _bunpy._views_live        */
int bp_views_waiting(void);                                 /* views JS let go of wait    */
void bp_views_drain(void);                                  /* release them (main GIL)    */

/* ---- shared.c: bunpy.shared (the process-wide key-value store) ------------------------ */
PyObject *bp_shared_py_get(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *bp_shared_py_set(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *bp_shared_py_cas(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *bp_shared_py_incr(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *bp_shared_py_delete(PyObject *m, PyObject *key);
PyObject *bp_shared_py_keys(PyObject *m, PyObject *unused);

/* ---- jscall.c: Python -> JS from contexts, bunpy.send --------------------------------- */
PyObject *bp_context_call_js(bp_interp *st, PyObject *name, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames);
PyObject *bp_context_call_start(bp_interp *st, PyObject *name, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames);
PyObject *bp_context_call_start_batched(bp_interp *st, PyObject *name, PyObject *const *args, Py_ssize_t nargs,
                                        PyObject *kwnames);
PyObject *bp_context_take_answers(void);
PyObject *bp_context_call_finish(bp_interp *st, PyObject *handle);
PyObject *bp_send(bp_interp *st, PyObject *channel, PyObject *value);
PyObject *bp_port_capsule(void);                                          /* _bunpy.port()      */
PyObject *bp_port_send(PyObject *cap, PyObject *channel, PyObject *value); /* _bunpy.port_send() */

#endif
