/*
 * buffers.c — memory shared between JS and Python without a copy (py.view, py.buffer).
 *
 * Python -> JS (py.view, main interpreter only): _bunpy._view(obj) takes a Py_buffer with
 * PyObject_GetBuffer and keeps it in a malloc'd record; JS wraps the memory in an external
 * ArrayBuffer whose deallocator is view_freed below. Bun runs that deallocator when the
 * ArrayBuffer's memory is let go (garbage collection, or a detach by release()), possibly
 * in the middle of a GC and on any thread, so it must not take the GIL: it only pushes the
 * record on a lock-free list. The next call into the main interpreter (bp_enter in ops.c)
 * releases the pending records with the GIL held (PyBuffer_Release drops the object).
 * The list is process-wide on purpose: every record belongs to the main interpreter,
 * which every JS thread's port enters.
 *
 * JS -> Python (py.buffer): a bunpy.JSBuffer object exports JS memory (address, length,
 * element format) through the buffer protocol; JS receives it as a memoryview. JS keeps
 * the ArrayBuffer pinned (a strong reference in a table, by id) until the JSBuffer dies:
 * its dealloc hands the id back through the port's released list, as a JSFunction does.
 */
#include "internal.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h> /* getentropy */

/* ---- Python -> JS ----------------------------------------------------------------------- */

typedef struct bp_view_rec {
    Py_buffer view;
    uint64_t token; /* what JS and Python name it by (see "the records JS holds") */
    int readonly;   /* the view is read-only (asked for, or the exporter said so) */
    struct bp_view_rec *next;
} bp_view_rec;

static _Atomic(bp_view_rec *) freed_views;  /* records whose ArrayBuffer is gone */
static atomic_long live_views;              /* records not yet released (leak tests) */

/* Buffers taken by _view right now (the main GIL may be let go inside PyObject_GetBuffer):
   while one is open, bp_views_drain leaves the freed list alone, so the record _view
   compares with cannot be freed under it by a nested call. */
static atomic_int views_opening;


/* ---- the records JS holds ----
   _view's `prev` and _view_close take a record as a Python int, and any Python code can
   call them: a number is looked up here before it is used, so a made-up one is refused
   instead of being freed or read (a crash, or worse, from plain Python). The number is a
   random token, not the record's address: addresses of records made one after another are
   near each other, and `_view(obj, guess)` answers `guess` for a live record over obj's
   memory, so Python code could find the record of a view JS holds by trying the numbers
   around one of its own and _view_close it (freeing the buffer under JS, then again when
   the ArrayBuffer goes). A token is 53 random bits (a safe integer in JS): the ArrayBuffer's
   deallocator gets it as its context. A set of records by token, open addressing with
   linear probing; a record is in it from the moment JS gets it until its ArrayBuffer is let
   go (view_freed) or it is handed back (_view_close). */
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static bp_view_rec **held;
static size_t held_cap, held_n;

#define TOKEN_MASK ((UINT64_C(1) << 53) - 1)

static size_t held_slot(uint64_t token, size_t cap) {
    uint64_t h = token * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (cap - 1);
}

static void held_put(bp_view_rec **tab, size_t cap, bp_view_rec *r) {
    size_t i = held_slot(r->token, cap);
    while (tab[i]) i = (i + 1) & (cap - 1);
    tab[i] = r;
}

static int held_insert_locked(bp_view_rec *r) {
    if ((held_n + 1) * 2 > held_cap) {
        size_t cap = held_cap ? held_cap * 2 : 64;
        bp_view_rec **tab = calloc(cap, sizeof *tab);
        if (!tab) return -1;
        for (size_t i = 0; i < held_cap; i++)
            if (held[i]) held_put(tab, cap, held[i]);
        free(held);
        held = tab;
        held_cap = cap;
    }
    held_put(held, held_cap, r);
    held_n++;
    return 0;
}

static bp_view_rec *held_find_locked(uint64_t token, size_t *at) {
    for (size_t i = held_cap ? held_slot(token, held_cap) : 0; held_cap && held[i]; i = (i + 1) & (held_cap - 1))
        if (held[i]->token == token) {
            *at = i;
            return held[i];
        }
    return NULL;
}

/* Random bits for tokens, taken from the kernel 32 tokens at a time (one getentropy costs
   about a microsecond here); under held_lock. */
static uint64_t token_pool[32];
static size_t token_left;

/* Gives `r` a token no held record has, then adds it. */
static int held_add(bp_view_rec *r) {
    pthread_mutex_lock(&held_lock);
    size_t at;
    do {
        if (token_left == 0) {
            if (getentropy(token_pool, sizeof token_pool) != 0) {
                pthread_mutex_unlock(&held_lock);
                return -1;
            }
            token_left = sizeof token_pool / sizeof token_pool[0];
        }
        r->token = token_pool[--token_left] & TOKEN_MASK;
        token_pool[token_left] = 0;
    } while (r->token == 0 || held_find_locked(r->token, &at));
    int rc = held_insert_locked(r);
    pthread_mutex_unlock(&held_lock);
    return rc;
}

/* The record named `token`, taken out (NULL if there is none). `lookup_only`: left in. */
static bp_view_rec *held_take(uint64_t token, int lookup_only) {
    if (token == 0) return NULL;
    pthread_mutex_lock(&held_lock);
    size_t i = 0;
    bp_view_rec *found = held_find_locked(token, &i);
    if (found && !lookup_only) {
        /* backward-shift deletion: entries after the hole that hash at or before it move in */
        held[i] = NULL;
        held_n--;
        for (size_t j = (i + 1) & (held_cap - 1); held[j]; j = (j + 1) & (held_cap - 1)) {
            size_t home = held_slot(held[j]->token, held_cap);
            if (((j - home) & (held_cap - 1)) >= ((j - i) & (held_cap - 1))) {
                held[i] = held[j];
                held[j] = NULL;
                i = j;
            }
        }
    }
    pthread_mutex_unlock(&held_lock);
    return found;
}

/* py.view belongs to the main interpreter: a context (another interpreter, another GIL)
   must not release or compare its buffers. */
static int main_interpreter_only(const char *what) {
    if (PyInterpreterState_Get() == PyInterpreterState_Main()) return 0;
    PyErr_Format(PyExc_RuntimeError, "_bunpy.%s is internal to py.view, which belongs to the main interpreter", what);
    return -1;
}

/* JSTypedArrayBytesDeallocator: (bytes, context = the record's token). Any thread, no GIL:
   a lookup under a short lock of plain C, then a push. */
static void view_freed(void *bytes, void *ctx) {
    (void)bytes;
    bp_view_rec *rec = held_take((uint64_t)(uintptr_t)ctx, 0);
    if (!rec) return; /* cannot happen: only JS has the token of a record it wrapped */
    bp_view_rec *head = atomic_load_explicit(&freed_views, memory_order_relaxed);
    do rec->next = head;
    while (!atomic_compare_exchange_weak_explicit(&freed_views, &head, rec, memory_order_release,
                                                  memory_order_relaxed));
}

void *bp_view_deallocator(void) { return (void *)view_freed; }

int bp_views_waiting(void) { return atomic_load_explicit(&freed_views, memory_order_relaxed) != NULL; }

/* GIL of the main interpreter held. Releasing a buffer can run Python code (a __del__,
   an exporter's __release_buffer__); the caller refuses calls into JS meanwhile. */
void bp_views_drain(void) {
    if (atomic_load(&views_opening)) return; /* see views_opening */
    bp_view_rec *rec = atomic_exchange_explicit(&freed_views, NULL, memory_order_acquire);
    while (rec) {
        bp_view_rec *next = rec->next;
        PyBuffer_Release(&rec->view);
        free(rec);
        atomic_fetch_sub(&live_views, 1);
        rec = next;
    }
}

static PyObject *ssize_tuple(const Py_ssize_t *v, int n) {
    PyObject *t = PyTuple_New(n);
    if (!t) return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *x = PyLong_FromSsize_t(v[i]);
        if (!x) { Py_DECREF(t); return NULL; }
        PyTuple_SET_ITEM(t, i, x);
    }
    return t;
}

/* The exporter handed out the same memory with the same layout as the record's. */
static int same_buffer(const bp_view_rec *rec, const Py_buffer *b, int readonly) {
    const Py_buffer *a = &rec->view;
    if (a->obj != b->obj || a->buf != b->buf || a->len != b->len || rec->readonly != readonly ||
        a->itemsize != b->itemsize || a->ndim != b->ndim)
        return 0;
    if (strcmp(a->format ? a->format : "B", b->format ? b->format : "B") != 0) return 0;
    for (int i = 0; i < a->ndim; i++) {
        Py_ssize_t sa = a->strides ? a->strides[i] : 0, sb = b->strides ? b->strides[i] : 0;
        if (a->shape[i] != b->shape[i] || (a->strides == NULL) != (b->strides == NULL) || sa != sb) return 0;
    }
    return 1;
}

static bp_view_rec *take_buffer(PyObject *obj) {
    bp_view_rec *rec = calloc(1, sizeof *rec);
    if (!rec) {
        PyErr_NoMemory();
        return NULL;
    }
    if (PyObject_GetBuffer(obj, &rec->view, PyBUF_FULL) < 0) {
        /* not writable (bytes, a read-only mmap; numpy raises ValueError): view it read-only;
           an object that fails for another reason fails again with its own error */
        PyErr_Clear();
        if (PyObject_GetBuffer(obj, &rec->view, PyBUF_FULL_RO) < 0) {
            free(rec);
            return NULL;
        }
        rec->readonly = 1;
    }
    Py_buffer *v = &rec->view;
    rec->readonly = rec->readonly || v->readonly;
    if (v->suboffsets) {
        for (int i = 0; i < v->ndim; i++)
            if (v->suboffsets[i] >= 0) {
                PyBuffer_Release(v);
                free(rec);
                PyErr_SetString(PyExc_BufferError, "py.view: indirect buffers (suboffsets, PIL style) cannot be viewed");
                return NULL;
            }
    }
    return rec;
}

/* _view(obj[, prev]) -> (record, base, span, offset, format, itemsize, readonly, shape, strides).
   `base`/`span`: the bytes from the lowest to the highest element (negative strides reach
   below view.buf); `offset`: where element [0, 0, ...] starts within them. `record` is 0
   when the span is empty (nothing is kept then).
   `prev`: the record of a live (not released) ArrayBuffer JS holds over this object's
   memory. When the object exports the same memory with the same layout again, the new
   buffer is let go and `record` is `prev`: JS makes the view over the ArrayBuffer it has.
   (Bun counts every new external ArrayBuffer's length as memory JS allocated, so a new one
   per view of a big object would run a garbage collection every view or so.) */
PyObject *bp_view_open(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "_view(obj[, prev])");
        return NULL;
    }
    if (main_interpreter_only("_view") < 0) return NULL;
    PyObject *obj = args[0];
    bp_view_rec *prev = NULL;
    if (nargs == 2 && args[1] != Py_None) {
        if (!PyLong_Check(args[1])) {
            PyErr_SetString(PyExc_TypeError, "_view(obj[, prev]): prev must be an int");
            return NULL;
        }
        uint64_t token = PyLong_AsUnsignedLongLongMask(args[1]);
        if (token == (uint64_t)-1 && PyErr_Occurred()) return NULL;
        prev = held_take(token, 1); /* not a record JS holds: NULL, not compared */
    }
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError, "py.view: a '%.200s' object does not support the buffer protocol "
                     "(bytes, bytearray, memoryview, array.array, mmap, numpy arrays do)", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    atomic_fetch_add(&views_opening, 1);
    bp_view_rec *rec = take_buffer(obj);
    if (rec && prev && same_buffer(prev, &rec->view, rec->readonly)) {
        PyBuffer_Release(&rec->view);
        free(rec);
        rec = prev;
    } else {
        prev = NULL;
    }
    atomic_fetch_sub(&views_opening, 1);
    if (!rec) return NULL;
    int reused = rec == prev;
    Py_buffer *v = &rec->view;
    Py_ssize_t lo = 0, hi = v->itemsize;
    int empty = v->len == 0;
    for (int i = 0; i < v->ndim && !empty; i++) {
        if (v->shape[i] == 0) { empty = 1; break; }
        Py_ssize_t stride = v->strides ? v->strides[i] : v->itemsize;
        Py_ssize_t extent = (v->shape[i] - 1) * stride;
        if (extent < 0) lo += extent;
        else hi += extent;
    }
    if (v->ndim == 0) hi = v->itemsize;
    Py_ssize_t span = empty ? 0 : hi - lo;
    PyObject *shape = ssize_tuple(v->shape ? v->shape : &v->len, v->ndim);
    Py_ssize_t item = v->itemsize;
    PyObject *strides = ssize_tuple(v->strides ? v->strides : &item, v->ndim);
    PyObject *fmt = PyUnicode_FromString(v->format ? v->format : "B");
    PyObject *out = NULL;
    if (shape && strides && fmt) {
        if (span == 0) {
            out = Py_BuildValue("(innnOnNOO)", 0, (Py_ssize_t)0, (Py_ssize_t)0, (Py_ssize_t)0, fmt, v->itemsize,
                                PyBool_FromLong(rec->readonly), shape, strides);
        } else {
            out = Py_BuildValue("(KNnnOnNOO)", (unsigned long long)rec->token, PyLong_FromVoidPtr((char *)v->buf + lo),
                                span, -lo, fmt, v->itemsize, PyBool_FromLong(rec->readonly), shape, strides);
        }
    }
    Py_XDECREF(shape);
    Py_XDECREF(strides);
    Py_XDECREF(fmt);
    if (reused) return out; /* still JS's, whatever happened here */
    if (!out || span == 0) {
        PyBuffer_Release(v);
        free(rec);
        return out;
    }
    if (held_add(rec) < 0) {
        Py_DECREF(out);
        PyBuffer_Release(v);
        free(rec);
        return PyErr_NoMemory();
    }
    /* the token is known now: it replaces the placeholder */
    PyObject *token = PyLong_FromUnsignedLongLong((unsigned long long)rec->token);
    if (!token) {
        Py_DECREF(out);
        held_take(rec->token, 0);
        PyBuffer_Release(v);
        free(rec);
        return NULL;
    }
    PyObject *old = PyTuple_GET_ITEM(out, 0);
    PyTuple_SET_ITEM(out, 0, token);
    Py_DECREF(old);
    atomic_fetch_add(&live_views, 1);
    /* From here the record belongs to JS: it must wrap it in an ArrayBuffer whose
       deallocator is view_freed, or hand it back with _view_close. */
    return out;
}

/* A record JS could not wrap (toArrayBuffer failed): released now. */
PyObject *bp_view_close(PyObject *module, PyObject *addr) {
    (void)module;
    if (main_interpreter_only("_view_close") < 0) return NULL;
    if (!PyLong_Check(addr)) {
        PyErr_SetString(PyExc_TypeError, "_bunpy._view_close: a view record is an int");
        return NULL;
    }
    uint64_t token = PyLong_AsUnsignedLongLongMask(addr);
    if (token == (uint64_t)-1 && PyErr_Occurred()) return NULL;
    if (token == 0) Py_RETURN_NONE;
    bp_view_rec *rec = held_take(token, 0);
    if (!rec) {
        PyErr_SetString(PyExc_ValueError, "_bunpy._view_close: not a view record JS holds");
        return NULL;
    }
    PyBuffer_Release(&rec->view);
    free(rec);
    atomic_fetch_sub(&live_views, 1);
    Py_RETURN_NONE;
}

/* Views whose Python buffer is still held (JS alive or waiting for the next call). */
PyObject *bp_views_live(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    bp_views_drain();
    return PyLong_FromLong(atomic_load(&live_views));
}

/* ---- JS -> Python: bunpy.JSBuffer ------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    void *buf;
    Py_ssize_t len, itemsize, shape;
    char format[2];
    int readonly;
    bp_port *port;   /* the JS thread that pinned the memory; NULL for none */
    int32_t id;      /* its pin id */
} bp_jsbuf;

static int jsbuf_getbuffer(PyObject *self, Py_buffer *v, int flags) {
    bp_jsbuf *b = (bp_jsbuf *)self;
    if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE && b->readonly) {
        PyErr_SetString(PyExc_BufferError, "this JS buffer was passed read-only (py.buffer(x, { readonly: true }))");
        v->obj = NULL;
        return -1;
    }
    v->obj = Py_NewRef(self);
    v->buf = b->buf;
    v->len = b->len;
    v->readonly = b->readonly;
    v->itemsize = b->itemsize;
    v->format = (flags & PyBUF_FORMAT) == PyBUF_FORMAT ? b->format : NULL;
    v->ndim = 1;
    v->shape = (flags & PyBUF_ND) == PyBUF_ND ? &b->shape : NULL;
    v->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? &b->itemsize : NULL;
    v->suboffsets = NULL;
    v->internal = NULL;
    return 0;
}

static void jsbuf_dealloc(PyObject *self) {
    bp_jsbuf *b = (bp_jsbuf *)self;
    PyTypeObject *tp = Py_TYPE(self);
    if (b->port) {
        if (bp_port_alive(b->port)) bp_port_release_id(b->port, b->id);
        bp_port_unref(b->port);
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *jsbuf_repr(PyObject *self) {
    bp_jsbuf *b = (bp_jsbuf *)self;
    return PyUnicode_FromFormat("<JS buffer of %zd bytes, format '%s'%s>", b->len, b->format,
                                b->readonly ? ", read-only" : "");
}

static PyType_Slot jsbuf_slots[] = {
    {Py_tp_dealloc, jsbuf_dealloc},
    {Py_tp_repr, jsbuf_repr},
    {Py_tp_doc, "JS memory (a TypedArray or ArrayBuffer passed with py.buffer), exported to Python without a copy."},
    {Py_bf_getbuffer, jsbuf_getbuffer},
    {0, NULL},
};

static PyType_Spec jsbuf_spec = {
    .name = "bunpy.JSBuffer",
    .basicsize = sizeof(bp_jsbuf),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = jsbuf_slots,
};

int bp_buffers_init(PyObject *m, bp_interp *st) {
    st->jsbuf_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &jsbuf_spec, NULL);
    if (!st->jsbuf_type) return -1;
    return PyModule_AddObjectRef(m, "JSBuffer", (PyObject *)st->jsbuf_type);
}

static Py_ssize_t format_size(char f) {
    switch (f) {
    case 'b': case 'B': return 1;
    case 'h': case 'H': case 'e': return 2;
    case 'i': case 'I': case 'f': return 4;
    case 'q': case 'Q': case 'd': return 8;
    default: return 0;
    }
}

/* BP_T_BUFFER payload (after the tag): u64 address, u64 byte length, u64 port, u32 pin id,
   u8 format, u8 flags (1: read-only). Returns a memoryview over a new JSBuffer. */
#define BUFFER_PAYLOAD 30
PyObject *bp_read_buffer(bp_reader *r, bp_interp *st) {
    if (r->end - r->pos < BUFFER_PAYLOAD) {
        PyErr_SetString(PyExc_ValueError, "bunpy: truncated value buffer");
        return NULL;
    }
    uint64_t addr, len, port;
    uint32_t id;
    const uint8_t *p = r->buf + r->pos;
    memcpy(&addr, p, 8);
    memcpy(&len, p + 8, 8);
    memcpy(&port, p + 16, 8);
    memcpy(&id, p + 24, 4);
    char fmt = (char)p[28];
    uint8_t flags = p[29];
    r->pos += BUFFER_PAYLOAD;
    Py_ssize_t size = format_size(fmt);
    if (!size || len % (uint64_t)size || len > (uint64_t)PY_SSIZE_T_MAX || (!addr && len)) {
        PyErr_SetString(PyExc_ValueError, "bunpy: malformed buffer value");
        return NULL;
    }
    bp_jsbuf *b = PyObject_New(bp_jsbuf, st->jsbuf_type);
    if (!b) return NULL;
    /* an empty buffer still needs a non-NULL address for memoryview */
    b->buf = addr ? (void *)(uintptr_t)addr : (void *)&b->shape;
    b->len = (Py_ssize_t)len;
    b->itemsize = size;
    b->shape = (Py_ssize_t)len / size;
    b->format[0] = fmt;
    b->format[1] = 0;
    b->readonly = flags & 1;
    b->port = (bp_port *)(uintptr_t)port;
    b->id = (int32_t)id;
    if (b->port) atomic_fetch_add(&b->port->refs, 1);
    PyObject *mv = PyMemoryView_FromObject((PyObject *)b);
    Py_DECREF(b);
    return mv;
}
