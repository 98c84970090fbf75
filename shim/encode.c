/*
 * encode.c — writing the binary value format between JS and Python (tags in bunpy.h;
 * reading is decode.c): a Python object encoded into the io buffer for src/codec.ts to
 * decode. Runs with the GIL held.
 */
#include "internal.h"
#include <string.h>
#include <math.h>

#define MAX_SAFE_INTEGER 9007199254740991LL

void bp_writer_init(bp_writer *w, bp_io *io, int deep) {
    w->io = io;
    w->pos = 0;
    w->deep = deep;
    w->st = NULL;
    w->refs = NULL;
    w->nrefs = w->refs_cap = 0;
    w->error[0] = 0;
}

void bp_writer_commit(bp_writer *w) {
    w->io->len = w->pos;
    PyMem_Free(w->refs);
    w->refs = NULL;
    w->nrefs = 0;
}

void bp_writer_abort(bp_writer *w) {
    for (uint32_t i = 0; i < w->nrefs; i++) Py_DECREF(w->refs[i]);
    PyMem_Free(w->refs);
    w->refs = NULL;
    w->nrefs = 0;
}

static int convert_error(bp_writer *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->error, sizeof w->error, fmt, ap);
    va_end(ap);
    return BP_ERR_CONVERT;
}

static inline int reserve(bp_writer *w, uint32_t n) {
    if (w->io->cap - w->pos >= n) return BP_OK;
    if ((uint64_t)w->pos + n > UINT32_MAX - 16) /* the buffer's sizes are 32-bit */
        return convert_error(w, "value too large to convert (more than 4 GiB in all)");
    return bp_io_grow(w->io, w->pos + n) < 0 ? BP_ERR_PYTHON : BP_OK;
}

static inline void put_u8(bp_writer *w, uint8_t v) { w->io->buf[w->pos++] = v; }
static inline void put_u32(bp_writer *w, uint32_t v) { memcpy(w->io->buf + w->pos, &v, 4); w->pos += 4; }
static inline void put_f64(bp_writer *w, double v) { memcpy(w->io->buf + w->pos, &v, 8); w->pos += 8; }

int bp_write_tag_u32(bp_writer *w, uint8_t tag, uint32_t n) {
    int rc = reserve(w, 5);
    if (rc) return rc;
    put_u8(w, tag);
    put_u32(w, n);
    return BP_OK;
}

static int write_span(bp_writer *w, uint8_t tag, const char *p, size_t n) {
    if (n > UINT32_MAX - 16) return convert_error(w, "value too large to convert (%zu bytes)", n);
    int rc = reserve(w, 5 + (uint32_t)n);
    if (rc) return rc;
    put_u8(w, tag);
    put_u32(w, (uint32_t)n);
    memcpy(w->io->buf + w->pos, p, n);
    w->pos += (uint32_t)n;
    return BP_OK;
}

static int write_str(bp_writer *w, PyObject *o) {
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(o, &n);
    if (!p) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return BP_ERR_PYTHON;
        PyObject *exc = bp_err_take();
        Py_ssize_t at = -1;
        PyUnicodeEncodeError_GetStart(exc, &at);
        Py_DECREF(exc);
        return convert_error(w, "a Python str with a lone surrogate (at index %zd) has no JavaScript string form",
                             at);
    }
    if (!PyUnicode_IS_ASCII(o)) return write_span(w, BP_T_STR, p, (size_t)n);
    if (n == 0 || n > BP_ASCII_MEMO_MAX) return write_span(w, BP_T_ASCII, p, (size_t)n);
    /* a short one (a dict key, an enum-like value): its hash is cached in the str after the
       first use (dict keys always have it), so the hint costs nothing */
    Py_hash_t h = PyObject_Hash(o);
    if (h == -1) return BP_ERR_PYTHON;
    int rc = reserve(w, 5 + (uint32_t)n);
    if (rc) return rc;
    put_u8(w, BP_T_ASCII_MEMO);
    put_u32(w, (uint32_t)n | ((uint32_t)h << 8));
    memcpy(w->io->buf + w->pos, p, (size_t)n);
    w->pos += (uint32_t)n;
    return BP_OK;
}

static int write_int(bp_writer *w, PyObject *o) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred()) return BP_ERR_PYTHON;
    if (!overflow) {
        if (v >= INT32_MIN && v <= INT32_MAX) {
            int rc = reserve(w, 5);
            if (rc) return rc;
            put_u8(w, BP_T_INT32);
            put_u32(w, (uint32_t)(int32_t)v);
            return BP_OK;
        }
        if (v >= -MAX_SAFE_INTEGER && v <= MAX_SAFE_INTEGER) {
            int rc = reserve(w, 9);
            if (rc) return rc;
            put_u8(w, BP_T_INT53);
            put_f64(w, (double)v);
            return BP_OK;
        }
    }
    /* Too big for a JS number: hex digits, decoded by JS into a bigint. */
    PyObject *hex = PyNumber_ToBase(o, 16);
    if (!hex) return BP_ERR_PYTHON;
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(hex, &n);
    if (!p) { Py_DECREF(hex); return BP_ERR_PYTHON; }
    /* "0x1f" or "-0x1f" -> "1f" or "-1f" */
    char sign = p[0] == '-';
    int rc = reserve(w, 5 + (uint32_t)n);
    if (!rc) {
        put_u8(w, BP_T_BIGINT);
        put_u32(w, (uint32_t)(n - 2));
        if (sign) w->io->buf[w->pos++] = '-';
        memcpy(w->io->buf + w->pos, p + 2 + sign, (size_t)(n - 2 - sign));
        w->pos += (uint32_t)(n - 2 - sign);
    }
    Py_DECREF(hex);
    return rc;
}

/* The tag a handle travels with: JS calls a plain function faster when it is a real JS
   function than through a Proxy, so those are marked (their attributes are rarely
   deleted, the one thing a real function cannot forward to Python). */
uint8_t bp_handle_tag(PyObject *o) {
    return PyFunction_Check(o) || PyCFunction_Check(o) || PyMethod_Check(o) ? BP_T_PYFUNC : BP_T_PYOBJ;
}

static int write_handle(bp_writer *w, PyObject *o) {
    if (w->nrefs == w->refs_cap) {
        uint32_t cap = w->refs_cap ? w->refs_cap * 2 : 8;
        PyObject **refs = PyMem_Realloc(w->refs, cap * sizeof *refs);
        if (!refs) { PyErr_NoMemory(); return BP_ERR_PYTHON; }
        w->refs = refs;
        w->refs_cap = cap;
    }
    int rc = reserve(w, 9);
    if (rc) return rc;
    put_u8(w, bp_handle_tag(o));
    PyObject *ref = Py_NewRef(o);
    memcpy(w->io->buf + w->pos, &ref, 8);
    w->pos += 8;
    w->refs[w->nrefs++] = ref;
    return BP_OK;
}

static int too_deep(bp_writer *w, PyObject *o, int depth) {
    for (int i = 0; i < depth && i <= BP_MAX_DEPTH; i++) {
        if (w->path[i] == o)
            return convert_error(w, "cannot convert a cyclic %s: it contains itself", Py_TYPE(o)->tp_name);
    }
    return convert_error(w, "value nested deeper than %d levels", BP_MAX_DEPTH);
}

static int write_items(bp_writer *w, PyObject *seq, uint8_t tag, int depth) {
    /* PySequence_Fast_ITEMS is valid for lists and tuples; a list that the item
       conversion mutates is re-read through its size each time. */
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int rc = bp_write_tag_u32(w, tag, (uint32_t)n);
    if (rc) return rc;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i >= PySequence_Fast_GET_SIZE(seq))
            return convert_error(w, "list changed size during conversion");
        rc = bp_write_value(w, PySequence_Fast_GET_ITEM(seq, i), depth + 1);
        if (rc) return rc;
    }
    return BP_OK;
}

/* A dict subclass (toJS only) is written in its own iteration order: an OrderedDict keeps
   its order apart from the underlying dict's (move_to_end does not change the latter). */
static int write_dict_items(bp_writer *w, PyObject *d, int depth) {
    PyObject *items = PyMapping_Items(d);
    if (!items) return BP_ERR_PYTHON;
    Py_ssize_t n = PyList_GET_SIZE(items);
    int all_str = 1, rc = BP_OK;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *kv = PyList_GET_ITEM(items, i);
        if (!PyTuple_Check(kv) || PyTuple_GET_SIZE(kv) != 2) {
            Py_DECREF(items);
            return convert_error(w, "%s.items() did not give (key, value) pairs", Py_TYPE(d)->tp_name);
        }
        if (!PyUnicode_Check(PyTuple_GET_ITEM(kv, 0))) all_str = 0;
    }
    rc = bp_write_tag_u32(w, all_str ? BP_T_DICT : BP_T_MAP, (uint32_t)n);
    for (Py_ssize_t i = 0; !rc && i < n; i++) {
        PyObject *kv = PyList_GET_ITEM(items, i);
        PyObject *k = PyTuple_GET_ITEM(kv, 0);
        rc = all_str ? write_str(w, k) : bp_write_value(w, k, depth + 1);
        if (!rc) rc = bp_write_value(w, PyTuple_GET_ITEM(kv, 1), depth + 1);
    }
    Py_DECREF(items);
    return rc;
}

/* What write_shape returns for a dict that does not qualify (nothing written). */
#define NOT_SHAPED 1

/* A dict whose keys are all exact short ASCII strs, as BP_T_SHAPE: its key list first (the
   receiver's shape memo turns it into keys it made before), then the values; NOT_SHAPED for
   any other dict (the caller writes a plain DICT). The keys are held while the values are
   written, and each is checked again as its value is taken: a value's conversion that
   changed the dict is an error, not a value under another key. */
static int write_shape(bp_writer *w, PyObject *d, int depth) {
    Py_ssize_t n = PyDict_GET_SIZE(d);
    if (n < 1 || n > BP_SHAPE_MAX_KEYS) return NOT_SHAPED;
    int rc = reserve(w, 13 + (uint32_t)n * (1 + BP_ASCII_MEMO_MAX));
    if (rc) return rc;
    PyObject *keys[BP_SHAPE_MAX_KEYS];
    uint8_t *at = w->io->buf + w->pos + 13, *start = at;
    uint32_t hint = (uint32_t)n;
    Py_ssize_t i = 0, got = 0;
    PyObject *k, *v;
    while (PyDict_Next(d, &i, &k, &v)) {
        if (got == n || !PyUnicode_CheckExact(k) || !PyUnicode_IS_ASCII(k)) return NOT_SHAPED;
        Py_ssize_t len = PyUnicode_GET_LENGTH(k);
        if (len < 1 || len > BP_ASCII_MEMO_MAX) return NOT_SHAPED;
        /* an exact str's hash is cached after its first use (a dict key always has it) */
        Py_hash_t h = ((PyASCIIObject *)k)->hash;
        if (h == -1) h = PyObject_Hash(k);
        hint = (hint ^ (uint32_t)h) * 0x01000193u;
        *at++ = (uint8_t)len;
        memcpy(at, PyUnicode_1BYTE_DATA(k), (size_t)len);
        at += len;
        keys[got++] = k;
    }
    if (got != n) return NOT_SHAPED;
    for (Py_ssize_t j = 0; j < n; j++) Py_INCREF(keys[j]);
    put_u8(w, BP_T_SHAPE);
    put_u32(w, (uint32_t)n);
    put_u32(w, hint);
    put_u32(w, (uint32_t)(at - start));
    w->pos = (uint32_t)(at - w->io->buf);
    Py_ssize_t seen = 0;
    i = 0;
    while (!rc && PyDict_Next(d, &i, &k, &v)) {
        if (seen == n || k != keys[seen]) {
            rc = convert_error(w, "dict changed during conversion");
            break;
        }
        seen++;
        Py_INCREF(v);
        rc = bp_write_value(w, v, depth + 1);
        Py_DECREF(v);
    }
    if (!rc && seen != n) rc = convert_error(w, "dict changed size during conversion");
    for (Py_ssize_t j = 0; j < n; j++) Py_DECREF(keys[j]);
    return rc;
}

static int write_dict(bp_writer *w, PyObject *d, int depth) {
    if (!PyDict_CheckExact(d)) return write_dict_items(w, d, depth);
    int shaped = write_shape(w, d, depth);
    if (shaped != NOT_SHAPED) return shaped;
    Py_ssize_t i = 0;
    PyObject *k, *v;
    int all_str = 1;
    while (PyDict_Next(d, &i, &k, &v)) {
        if (!(w->deep ? PyUnicode_Check(k) : PyUnicode_CheckExact(k))) { all_str = 0; break; }
    }
    int rc = bp_write_tag_u32(w, all_str ? BP_T_DICT : BP_T_MAP, (uint32_t)PyDict_GET_SIZE(d));
    if (rc) return rc;
    Py_ssize_t n = PyDict_GET_SIZE(d), seen = 0;
    i = 0;
    while (PyDict_Next(d, &i, &k, &v)) {
        if (++seen > n) return convert_error(w, "dict changed size during conversion");
        /* a str subclass key's __hash__ (write_str asks it for the memo hint) may have
           changed the dict: a key that is no str now must not reach write_str */
        if (all_str && !PyUnicode_Check(k)) return convert_error(w, "dict changed during conversion");
        Py_INCREF(k);
        Py_INCREF(v);
        rc = all_str ? write_str(w, k) : bp_write_value(w, k, depth + 1);
        if (!rc) rc = bp_write_value(w, v, depth + 1);
        Py_DECREF(k);
        Py_DECREF(v);
        if (rc) return rc;
    }
    if (seen != n) return convert_error(w, "dict changed size during conversion");
    return BP_OK;
}

static int write_set(bp_writer *w, PyObject *s, int depth) {
    int rc = bp_write_tag_u32(w, BP_T_SET, (uint32_t)PySet_GET_SIZE(s));
    if (rc) return rc;
    PyObject *it = PyObject_GetIter(s);
    if (!it) return BP_ERR_PYTHON;
    PyObject *v;
    Py_ssize_t count = 0;
    while ((v = PyIter_Next(it))) {
        count++;
        rc = bp_write_value(w, v, depth + 1);
        Py_DECREF(v);
        if (rc) break;
    }
    Py_DECREF(it);
    if (rc) return rc;
    if (PyErr_Occurred()) return BP_ERR_PYTHON;
    if (count != PySet_GET_SIZE(s)) return convert_error(w, "set changed size during conversion");
    return BP_OK;
}

static int is_datetime(bp_writer *w, PyObject *o) {
    /* Cheap name test first: datetime may not even be imported. The C type is named
       "datetime.datetime"; the pure-Python one (used in subinterpreters) "datetime". */
    PyTypeObject *t = Py_TYPE(o);
    if (!w->deep && strcmp(t->tp_name, "datetime.datetime") != 0 && strcmp(t->tp_name, "datetime") != 0) return 0;
    if (!w->st) w->st = bp_interp_get();
    if (!w->st) return 0;
    if (!w->st->datetime_type && !bp_interp_helper(w->st, "date_to_ms")) {
        PyErr_Clear();
        return 0;
    }
    if (!w->st->datetime_type) return 0;
    if ((PyObject *)t == w->st->datetime_type) return 1;
    return w->deep && PyObject_TypeCheck(o, (PyTypeObject *)w->st->datetime_type);
}

static int write_datetime(bp_writer *w, PyObject *o) {
    PyObject *fn = bp_interp_helper(w->st, "date_to_ms");
    if (!fn) return BP_ERR_PYTHON;
    PyObject *ms = PyObject_CallOneArg(fn, o);
    if (!ms) return BP_ERR_PYTHON;
    double d = PyFloat_AsDouble(ms);
    Py_DECREF(ms);
    if (d == -1.0 && PyErr_Occurred()) return BP_ERR_PYTHON;
    int rc = reserve(w, 9);
    if (rc) return rc;
    put_u8(w, BP_T_DATE);
    put_f64(w, d);
    return BP_OK;
}

static int write_buffer(bp_writer *w, PyObject *o) {
    Py_buffer view;
    if (PyObject_GetBuffer(o, &view, PyBUF_CONTIG_RO) < 0) return BP_ERR_PYTHON;
    int rc = write_span(w, BP_T_BYTES, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return rc;
}

int bp_write_value(bp_writer *w, PyObject *o, int depth) {
    PyTypeObject *t = Py_TYPE(o);
    int rc;
    /* scalars: exact types first (the common case), subclasses only when deep */
    if (o == Py_None || o == Py_False || o == Py_True) {
        rc = reserve(w, 1);
        if (rc) return rc;
        put_u8(w, o == Py_None ? BP_T_NONE : o == Py_True ? BP_T_TRUE : BP_T_FALSE);
        return BP_OK;
    }
    if (t == &PyLong_Type || (w->deep && PyLong_Check(o))) return write_int(w, o);
    if (t == &PyUnicode_Type || (w->deep && PyUnicode_Check(o))) return write_str(w, o);
    if (t == &PyFloat_Type || (w->deep && PyFloat_Check(o))) {
        rc = reserve(w, 9);
        if (rc) return rc;
        put_u8(w, BP_T_FLOAT);
        put_f64(w, PyFloat_AS_DOUBLE(o));
        return BP_OK;
    }
    if (t == &PyBytes_Type || (w->deep && PyBytes_Check(o)))
        return write_span(w, BP_T_BYTES, PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o));
    if (w->deep && (PyByteArray_Check(o) || PyMemoryView_Check(o))) return write_buffer(w, o);

    int container = t == &PyList_Type || t == &PyTuple_Type || t == &PyDict_Type || t == &PySet_Type ||
                    t == &PyFrozenSet_Type ||
                    (w->deep && (PyList_Check(o) || PyTuple_Check(o) || PyDict_Check(o) || PyAnySet_Check(o)));
    if (container) {
        if (depth > BP_MAX_DEPTH) return too_deep(w, o, depth);
        w->path[depth] = o;
        if (PyList_Check(o)) return write_items(w, o, BP_T_LIST, depth);
        if (PyTuple_Check(o)) return write_items(w, o, BP_T_TUPLE, depth);
        if (PyDict_Check(o)) return write_dict(w, o, depth);
        return write_set(w, o, depth);
    }
    if (is_datetime(w, o)) return write_datetime(w, o);
    if (PyErr_Occurred()) return BP_ERR_PYTHON;
    return write_handle(w, o);
}

/* A call for JS: [STR name,] LIST args, NONE | DICT kwargs (vectorcall layout in). */
int bp_write_call(bp_writer *w, PyObject *name, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    int rc = BP_OK;
    if (name) rc = bp_write_value(w, name, 0);
    if (!rc) rc = bp_write_tag_u32(w, BP_T_LIST, (uint32_t)nargs);
    for (Py_ssize_t i = 0; !rc && i < nargs; i++) rc = bp_write_value(w, args[i], 1);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (!rc && nkw == 0) {
        rc = bp_write_value(w, Py_None, 0);
    } else if (!rc) {
        rc = bp_write_tag_u32(w, BP_T_DICT, (uint32_t)nkw);
        for (Py_ssize_t i = 0; !rc && i < nkw; i++) {
            rc = bp_write_value(w, PyTuple_GET_ITEM(kwnames, i), 1);
            if (!rc) rc = bp_write_value(w, args[nargs + i], 1);
        }
    }
    return rc;
}
