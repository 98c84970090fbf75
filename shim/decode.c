/*
 * decode.c — reading the binary value format between JS and Python (tags in bunpy.h;
 * writing is encode.c): Python objects built straight from the buffer JS wrote, call
 * arguments decoded into a vectorcall array, and the source and module-name checks.
 * Runs with the GIL held.
 */
#include "internal.h"
#include <string.h>
#include <math.h>

void bp_reader_init(bp_reader *r, bp_io *io, uint32_t pos) {
    r->buf = io->buf;
    r->pos = pos;
    r->end = io->cap;
    r->port = bp_port_of(io);
    r->st = NULL;
}

static int truncated(void) {
    PyErr_SetString(PyExc_ValueError, "bunpy: malformed value buffer (truncated)");
    return -1;
}

int bp_read_u32(bp_reader *r, uint32_t *out) {
    if (r->end - r->pos < 4) return truncated();
    memcpy(out, r->buf + r->pos, 4);
    r->pos += 4;
    return 0;
}

static int read_f64(bp_reader *r, double *out) {
    if (r->end - r->pos < 8) return truncated();
    memcpy(out, r->buf + r->pos, 8);
    r->pos += 8;
    return 0;
}

static int read_span(bp_reader *r, const char **p, uint32_t *n) {
    if (bp_read_u32(r, n) < 0) return -1;
    if (r->end - r->pos < *n) return truncated();
    *p = (const char *)(r->buf + r->pos);
    r->pos += *n;
    return 0;
}

static bp_interp *reader_state(bp_reader *r) {
    if (!r->st) r->st = bp_interp_get();
    if (!r->st) PyErr_SetString(PyExc_RuntimeError, "bunpy: module state unavailable");
    return r->st;
}

/* a == b for 1..BP_ASCII_MEMO_MAX bytes, in at most three word compares (libc's memcmp is a
   call and a dispatch, the most of a memo hit) */
static inline int same_short(const void *a, const void *b, uint32_t n) {
    const char *x = a, *y = b;
    uint64_t u, v;
    if (n < 8) {
        uint32_t i = 0;
        while (i < n && x[i] == y[i]) i++;
        return i == n;
    }
    for (uint32_t i = 0; i + 8 <= n; i += 8) {
        memcpy(&u, x + i, 8);
        memcpy(&v, y + i, 8);
        if (u != v) return 0;
    }
    memcpy(&u, x + n - 8, 8); /* the last word, overlapping the ones before */
    memcpy(&v, y + n - 8, 8);
    return u == v;
}

/* Short ASCII strings (dict keys, enum-like values) come again call after call: a small
   memo per interpreter (512 slots, two-way) hands back the str made last time, hash
   included, so such a key costs no allocation. A str is immutable, so sharing one is
   invisible. Worker contexts share the main interpreter's memo under its GIL. The slot
   comes from the sender's hint (BP_T_ASCII_MEMO) or the same hash computed here. */
static PyObject *memo_lookup(bp_reader *r, const char *p, uint32_t n, uint32_t hint) {
    bp_interp *st = r->st ? r->st : (r->st = bp_interp_get());
    if (!st) return PyUnicode_DecodeUTF8(p, n, "strict");
    /* two ways: the slot the hint picks and its neighbour, so two strings whose hints
       collide do not evict each other at every call */
    uint32_t at = hint & (BP_STR_MEMO - 1);
    PyObject **slot = &st->str_memo[at], **next = &st->str_memo[at ^ 1];
    if (*slot && (uint32_t)PyUnicode_GET_LENGTH(*slot) == n && same_short(PyUnicode_1BYTE_DATA(*slot), p, n))
        return Py_NewRef(*slot);
    if (*next && (uint32_t)PyUnicode_GET_LENGTH(*next) == n && same_short(PyUnicode_1BYTE_DATA(*next), p, n))
        return Py_NewRef(*next);
    for (uint32_t i = 0; i < n; i++) /* the tag is the sender's word: check it */
        if ((uint8_t)p[i] > 127) return PyUnicode_DecodeUTF8(p, n, "strict");
    PyObject *fresh = PyUnicode_New(n, 127);
    if (!fresh) return NULL;
    memcpy(PyUnicode_1BYTE_DATA(fresh), p, n);
    Py_XSETREF(*next, *slot); /* the newest in the slot, the one before next to it */
    *slot = Py_NewRef(fresh);
    return fresh;
}

static PyObject *read_ascii(bp_reader *r, const char *p, uint32_t n) {
    if (n == 0 || n > BP_ASCII_MEMO_MAX) return PyUnicode_DecodeUTF8(p, n, "strict");
    uint32_t h = n; /* the hash src/codec.ts computes for BP_T_ASCII_MEMO */
    for (uint32_t i = 0; i < n; i++) h = h * 31 + (uint8_t)p[i];
    return memo_lookup(r, p, n, h);
}

static PyObject *read_bigint(bp_reader *r) {
    const char *p;
    uint32_t n;
    if (read_span(r, &p, &n) < 0) return NULL;
    char small[64];
    char *s = n < sizeof small ? small : PyMem_Malloc(n + 1);
    if (!s) return PyErr_NoMemory();
    memcpy(s, p, n);
    s[n] = 0;
    PyObject *v = PyLong_FromString(s, NULL, 16);
    if (s != small) PyMem_Free(s);
    return v;
}

static PyObject *read_date(bp_reader *r) {
    double ms;
    if (read_f64(r, &ms) < 0) return NULL;
    bp_interp *st = reader_state(r);
    if (!st) return NULL;
    PyObject *fn = bp_interp_helper(st, "date_from_ms");
    if (!fn) return NULL;
    PyObject *arg = PyFloat_FromDouble(ms);
    if (!arg) return NULL;
    PyObject *v = PyObject_CallOneArg(fn, arg);
    Py_DECREF(arg);
    return v;
}

/* Adds to a dict (v != NULL) or a set. Hashing a key can run Python code (a proxied
   object's __hash__ or __eq__); that code must not call into JS, which would overwrite
   the buffer being read. */
static int add_item(bp_reader *r, PyObject *container, PyObject *k, PyObject *v) {
    if (r->port) r->port->no_dispatch++;
    int rc = v ? PyDict_SetItem(container, k, v) : PySet_Add(container, k);
    if (r->port) r->port->no_dispatch--;
    return rc;
}

static PyObject *read_pairs(bp_reader *r, int depth) {
    uint32_t n;
    if (bp_read_u32(r, &n) < 0) return NULL;
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (uint32_t i = 0; i < n; i++) {
        PyObject *k = bp_read_value(r, depth + 1);
        if (!k) goto fail;
        PyObject *v = bp_read_value(r, depth + 1);
        if (!v) { Py_DECREF(k); goto fail; }
        int rc = add_item(r, d, k, v);
        Py_DECREF(k);
        Py_DECREF(v);
        if (rc < 0) goto fail;
    }
    return d;
fail:
    Py_DECREF(d);
    return NULL;
}

/* A key list decoded before (BP_T_SHAPE): its keys as strs, and the bytes they were sent
   as, to compare with. `busy` counts the dicts being built from it right now: a nested dict
   whose shape takes the same slot must not free it under them. */
struct bp_shape {
    uint32_t n, k, busy;
    PyObject *keys[BP_SHAPE_MAX_KEYS];
    uint8_t bytes[];
};

static void shape_free(bp_shape *s) {
    for (uint32_t i = 0; i < s->n; i++) Py_XDECREF(s->keys[i]);
    PyMem_Free(s);
}

void bp_shape_memo_clear(bp_interp *st) {
    for (int i = 0; i < BP_SHAPE_MEMO; i++)
        if (st->shape_memo[i]) {
            shape_free(st->shape_memo[i]);
            st->shape_memo[i] = NULL;
        }
}

static PyObject *malformed_shape(void) {
    PyErr_SetString(PyExc_ValueError, "bunpy: malformed value buffer (object shape)");
    return NULL;
}

/* The shape of the k key bytes at p (n keys): a new one, checked and its keys made. */
static bp_shape *shape_new(bp_reader *r, const uint8_t *p, uint32_t k, uint32_t n) {
    bp_shape *s = PyMem_Malloc(sizeof *s + k);
    if (!s) { PyErr_NoMemory(); return NULL; }
    s->n = 0;
    s->k = k;
    s->busy = 0;
    memcpy(s->bytes, p, k);
    uint32_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = at < k ? s->bytes[at] : 0;
        if (len < 1 || len > BP_ASCII_MEMO_MAX || k - at - 1 < len) { shape_free(s); malformed_shape(); return NULL; }
        PyObject *key = read_ascii(r, (const char *)s->bytes + at + 1, len);
        if (!key) { shape_free(s); return NULL; }
        if (!PyUnicode_CheckExact(key)) { Py_DECREF(key); shape_free(s); malformed_shape(); return NULL; }
        s->keys[s->n++] = key;
        at += 1 + len;
    }
    if (at != k) { shape_free(s); malformed_shape(); return NULL; }
    return s;
}

/* BP_T_SHAPE: u32 n, u32 hint, u32 k, k bytes of keys, n values. The hint picks the memo
   slot; a hit (the same key bytes) gives the keys made before, hash included. */
static PyObject *read_shape(bp_reader *r, int depth) {
    uint32_t n, hint, k;
    if (bp_read_u32(r, &n) < 0 || bp_read_u32(r, &hint) < 0 || bp_read_u32(r, &k) < 0) return NULL;
    if (n < 1 || n > BP_SHAPE_MAX_KEYS || k > r->end - r->pos) return malformed_shape();
    const uint8_t *p = r->buf + r->pos;
    r->pos += k;
    bp_interp *st = reader_state(r);
    if (!st) return NULL;
    bp_shape **slot = &st->shape_memo[hint & (BP_SHAPE_MEMO - 1)];
    bp_shape *s = *slot;
    int kept = 1;
    if (!s || s->n != n || s->k != k || memcmp(s->bytes, p, k) != 0) {
        s = shape_new(r, p, k, n);
        if (!s) return NULL;
        if (*slot && (*slot)->busy) kept = 0; /* in use by a dict being built: this one is freed after */
        else {
            if (*slot) shape_free(*slot);
            *slot = s;
        }
    }
    PyObject *d = n > 5 ? _PyDict_NewPresized(n) : PyDict_New();
    if (!d) goto done;
    s->busy++;
    for (uint32_t i = 0; i < n; i++) {
        PyObject *v = bp_read_value(r, depth + 1);
        /* exact strs: setting them runs no Python code */
        if (!v || PyDict_SetItem(d, s->keys[i], v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(d);
            break;
        }
        Py_DECREF(v);
    }
    s->busy--;
done:
    if (!kept) shape_free(s);
    return d;
}

PyObject *bp_read_value(bp_reader *r, int depth) {
    if (depth > BP_MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "value nested too deeply");
        return NULL;
    }
    if (r->pos >= r->end) { truncated(); return NULL; }
    uint8_t tag = r->buf[r->pos++];
    switch (tag) {
    case BP_T_NONE: Py_RETURN_NONE;
    case BP_T_FALSE: Py_RETURN_FALSE;
    case BP_T_TRUE: Py_RETURN_TRUE;
    case BP_T_INT32: {
        if (r->end - r->pos < 4) { truncated(); return NULL; }
        int32_t v;
        memcpy(&v, r->buf + r->pos, 4);
        r->pos += 4;
        return PyLong_FromLong(v);
    }
    case BP_T_FLOAT: {
        double d;
        if (read_f64(r, &d) < 0) return NULL;
        return PyFloat_FromDouble(d);
    }
    case BP_T_INT53: {
        double d;
        if (read_f64(r, &d) < 0) return NULL;
        return PyLong_FromLongLong((long long)d);
    }
    case BP_T_BIGINT: return read_bigint(r);
    case BP_T_ASCII: {
        const char *p;
        uint32_t n;
        if (read_span(r, &p, &n) < 0) return NULL;
        return read_ascii(r, p, n);
    }
    case BP_T_ASCII_MEMO: {
        uint32_t v;
        if (bp_read_u32(r, &v) < 0) return NULL;
        uint32_t n = v & 0xff;
        if (n == 0 || n > BP_ASCII_MEMO_MAX || r->end - r->pos < n) {
            PyErr_SetString(PyExc_ValueError, "bunpy: malformed value buffer (short string)");
            return NULL;
        }
        const char *p = (const char *)(r->buf + r->pos);
        r->pos += n;
        return memo_lookup(r, p, n, v >> 8);
    }
    case BP_T_STR: {
        const char *p;
        uint32_t n;
        if (read_span(r, &p, &n) < 0) return NULL;
        return PyUnicode_DecodeUTF8(p, n, "strict");
    }
    case BP_T_BYTES: {
        const char *p;
        uint32_t n;
        if (read_span(r, &p, &n) < 0) return NULL;
        return PyBytes_FromStringAndSize(p, n);
    }
    case BP_T_TUPLE:
    case BP_T_LIST: {
        uint32_t n;
        if (bp_read_u32(r, &n) < 0) return NULL;
        if (n > r->end - r->pos) { truncated(); return NULL; }
        PyObject *list = PyList_New(n);
        if (!list) return NULL;
        for (uint32_t i = 0; i < n; i++) {
            PyObject *v = bp_read_value(r, depth + 1);
            if (!v) { Py_DECREF(list); return NULL; }
            PyList_SET_ITEM(list, i, v);
        }
        if (tag == BP_T_TUPLE) {
            PyObject *t = PyList_AsTuple(list);
            Py_DECREF(list);
            return t;
        }
        return list;
    }
    case BP_T_DICT:
    case BP_T_MAP: return read_pairs(r, depth);
    case BP_T_SHAPE: return read_shape(r, depth);
    case BP_T_SET: {
        uint32_t n;
        if (bp_read_u32(r, &n) < 0) return NULL;
        PyObject *s = PySet_New(NULL);
        if (!s) return NULL;
        for (uint32_t i = 0; i < n; i++) {
            PyObject *v = bp_read_value(r, depth + 1);
            if (!v || add_item(r, s, v, NULL) < 0) { Py_XDECREF(v); Py_DECREF(s); return NULL; }
            Py_DECREF(v);
        }
        return s;
    }
    case BP_T_DATE: return read_date(r);
    case BP_T_JSFUNC: {
        uint32_t id;
        if (bp_read_u32(r, &id) < 0) return NULL;
        if (!r->port) {
            PyErr_SetString(PyExc_TypeError, "JS functions cannot be passed to a context (only to the main interpreter)");
            return NULL;
        }
        bp_interp *st = reader_state(r);
        if (!st) return NULL;
        return bp_jsfunc_new(st, r->port, (int32_t)id);
    }
    case BP_T_JSITER: { /* u8 async, STR name: bunpy._stream.JS(Async)Iterator */
        if (r->pos >= r->end) { truncated(); return NULL; }
        int is_async = r->buf[r->pos++] != 0;
        PyObject *name = bp_read_str(r);
        if (!name) return NULL;
        bp_interp *st = reader_state(r);
        PyObject *fn = st ? bp_interp_helper(st, "js_iterator") : NULL;
        PyObject *v = fn ? PyObject_CallFunction(fn, "Oi", name, is_async) : NULL;
        Py_DECREF(name);
        return v;
    }
    case BP_T_BUFFER: {
        bp_interp *st = reader_state(r);
        return st ? bp_read_buffer(r, st) : NULL;
    }
    case BP_T_PYOBJ: {
        if (r->end - r->pos < 8) { truncated(); return NULL; }
        PyObject *o;
        memcpy(&o, r->buf + r->pos, 8);
        r->pos += 8;
        if (!o) { PyErr_SetString(PyExc_ValueError, "bunpy: null object handle"); return NULL; }
        return Py_NewRef(o);
    }
    default:
        PyErr_Format(PyExc_ValueError, "bunpy: malformed value buffer (tag %d)", tag);
        return NULL;
    }
}

/* A value that must be a str (names, sources). */
PyObject *bp_read_str(bp_reader *r) {
    PyObject *s = bp_read_value(r, 0);
    if (s && !PyUnicode_Check(s)) {
        Py_DECREF(s);
        PyErr_SetString(PyExc_TypeError, "expected a string");
        return NULL;
    }
    return s;
}

/* A module name: a NUL in it is an error (the import system would read the name only up
   to it, so "os\0junk" would import os). */
int bp_check_module_name(PyObject *name) {
    if (PyUnicode_FindChar(name, 0, 0, PyUnicode_GET_LENGTH(name), 1) == -1) return 0;
    if (!PyErr_Occurred())
        PyErr_Format(PyExc_ValueError, "module name %R contains a null character", name);
    return -1;
}

/* Compiles Python source as compile() does. Py_CompileString reads a C string and would
   stop at a NUL; source with one goes to compile() itself, which raises what this
   Python version raises (SyntaxError "source code string cannot contain null bytes"). */
PyObject *bp_compile_source(PyObject *src, const char *filename, int start) {
    Py_ssize_t n;
    const char *text = PyUnicode_AsUTF8AndSize(src, &n);
    if (!text) return NULL;
    if (strlen(text) == (size_t)n) return Py_CompileStringExFlags(text, filename, start, NULL, -1);
    PyObject *builtins = PyEval_GetBuiltins(); /* borrowed */
    PyObject *compile = builtins ? PyDict_GetItemString(builtins, "compile") : NULL;
    if (!compile) {
        PyErr_SetString(PyExc_SyntaxError, "source code string cannot contain null bytes");
        return NULL;
    }
    return PyObject_CallFunction(compile, "Oss", src, filename, start == Py_eval_input ? "eval" : "exec");
}

/* ---- calls: LIST args then NONE or DICT kwargs, decoded straight into a vectorcall array -- */

#define SMALL_ARGS 16

/* Reads LIST args then NONE | DICT kwargs and calls them (vectorcall): `callable`, or,
   when `self` is given, self.name(...) through PyObject_VectorcallMethod (self goes in
   slot 0 of the array, borrowed). *read_failed is set when the arguments could not be
   read (a Python error is set). */
static PyObject *read_call(bp_reader *rd, PyObject *callable, PyObject *self, PyObject *name, int32_t *read_failed) {
    bp_reader r = *rd;
    PyObject *small[SMALL_ARGS + 1];
    PyObject **base = small; /* base[0]: self (method calls), arguments from base[1] */
    PyObject **argv = small + 1;
    PyObject *kwnames = NULL, *result = NULL;
    uint32_t nargs = 0, nkw = 0, filled = 0;

    if (r.end - r.pos < 5 || r.buf[r.pos] != BP_T_LIST) {
        PyErr_SetString(PyExc_ValueError, "bunpy: malformed call arguments");
        goto read_fail;
    }
    r.pos++;
    if (bp_read_u32(&r, &nargs) < 0) goto read_fail;
    if (nargs > r.end - r.pos) { /* each argument takes at least one byte */
        PyErr_SetString(PyExc_ValueError, "bunpy: malformed call arguments");
        goto read_fail;
    }
    if (nargs > SMALL_ARGS) {
        base = PyMem_Malloc(sizeof(PyObject *) * (nargs + SMALL_ARGS + 1));
        if (!base) { PyErr_NoMemory(); goto read_fail; }
        argv = base + 1;
    }
    for (; filled < nargs; filled++) {
        argv[filled] = bp_read_value(&r, 1);
        if (!argv[filled]) goto read_fail;
    }
    /* kwargs */
    if (r.pos >= r.end) { PyErr_SetString(PyExc_ValueError, "bunpy: malformed call arguments"); goto read_fail; }
    uint8_t tag = r.buf[r.pos++];
    if (tag == BP_T_DICT) {
        if (bp_read_u32(&r, &nkw) < 0) goto read_fail;
        uint32_t total = nargs + nkw;
        if (total > SMALL_ARGS && base == small) {
            PyObject **big = PyMem_Malloc(sizeof(PyObject *) * (total + 1));
            if (!big) { PyErr_NoMemory(); goto read_fail; }
            memcpy(big + 1, argv, sizeof(PyObject *) * filled);
            base = big;
            argv = big + 1;
        } else if (total > nargs + SMALL_ARGS) {
            PyObject **big = PyMem_Realloc(base, sizeof(PyObject *) * (total + 1));
            if (!big) { PyErr_NoMemory(); goto read_fail; }
            base = big;
            argv = big + 1;
        }
        kwnames = PyTuple_New(nkw);
        if (!kwnames) goto read_fail;
        for (uint32_t i = 0; i < nkw; i++) {
            PyObject *k = bp_read_str(&r);
            if (!k) goto read_fail;
            PyUnicode_InternInPlace(&k);
            PyTuple_SET_ITEM(kwnames, i, k);
            argv[filled] = bp_read_value(&r, 1);
            if (!argv[filled]) goto read_fail;
            filled++;
        }
    } else if (tag != BP_T_NONE) {
        PyErr_SetString(PyExc_ValueError, "bunpy: malformed keyword arguments");
        goto read_fail;
    }
    rd->pos = r.pos;
    if (self) {
        base[0] = self;
        result = PyObject_VectorcallMethod(name, base, (nargs + 1) | PY_VECTORCALL_ARGUMENTS_OFFSET, kwnames);
    } else {
        /* argv[-1] is ours: the callee may use it (a bound method puts its self there) */
        result = PyObject_Vectorcall(callable, argv, nargs | PY_VECTORCALL_ARGUMENTS_OFFSET, kwnames);
    }
    goto done;
read_fail:
    *read_failed = 1;
done:
    for (uint32_t i = 0; i < filled; i++) Py_DECREF(argv[i]);
    if (base != small) PyMem_Free(base);
    Py_XDECREF(kwnames);
    return result;
}

PyObject *bp_read_call(bp_reader *rd, PyObject *callable, int32_t *read_failed) {
    return read_call(rd, callable, NULL, NULL, read_failed);
}

PyObject *bp_read_method_call(bp_reader *rd, PyObject *self, PyObject *name, int32_t *read_failed) {
    return read_call(rd, NULL, self, name, read_failed);
}
