/*
 * shared.c — py.shared / bunpy.shared: one small key-value store per process, visible from
 * every JS thread and every interpreter (main, worker and owngil contexts).
 *
 * Keys are strings; values are stored as bytes of the binary codec, so anything the codec
 * carries by value (None, bool, numbers, bigint, str, bytes, list/tuple, dict, Map, set,
 * datetime) can be stored, and each side decodes into its own objects: no PyObject ever
 * lives in the store (fact 11), so no interpreter can trip over another's objects. Handles,
 * JS functions and lent buffers are refused. One mutex guards the table; it is held only
 * for hashing and copying bytes, never while Python code or JS runs, and JS takes it
 * without the GIL. Every operation is atomic: incr and compareAndSet never lose an update.
 */
#include "internal.h"
#include "context.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    uint32_t klen, vlen;
    uint8_t *val;     /* codec bytes of one value (ASCII strings stored with the STR tag) */
    char key[];
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static entry **table;
static uint32_t nbuckets, count;

static uint64_t hash_key(const char *k, uint32_t n) { /* FNV-1a */
    uint64_t h = 1469598103934665603ull;
    for (uint32_t i = 0; i < n; i++) h = (h ^ (uint8_t)k[i]) * 1099511628211ull;
    return h;
}

/* lock held */
static entry **find(const char *k, uint32_t n, uint64_t h) {
    if (!nbuckets) return NULL;
    entry **pp = &table[h & (nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && (*pp)->klen == n && memcmp((*pp)->key, k, n) == 0) return pp;
    return pp;
}

/* lock held; 0 or -1 (out of memory) */
static int grow(void) {
    uint32_t nb = nbuckets ? nbuckets * 2 : 64;
    entry **t = calloc(nb, sizeof *t);
    if (!t) return -1;
    for (uint32_t i = 0; i < nbuckets; i++)
        for (entry *e = table[i], *next; e; e = next) {
            next = e->next;
            e->next = t[e->hash & (nb - 1)];
            t[e->hash & (nb - 1)] = e;
        }
    free(table);
    table = t;
    nbuckets = nb;
    return 0;
}

/* ---- checking and normalising a stored value --------------------------------------- */

/* Copies one value from src[*pos] to dst (NULL: only measure), turning ASCII tags into
   STR so equal strings from JS and Python compare equal. Returns its length, or -1 for a
   malformed value or a tag that cannot be stored. */
static int64_t value_copy(const uint8_t *src, uint32_t end, uint32_t *pos, uint8_t *dst, int depth) {
    if (depth > BP_MAX_DEPTH || *pos >= end) return -1;
    uint32_t start = *pos;
    uint8_t tag = src[(*pos)++];
    uint32_t n;
    switch (tag) {
    case BP_T_NONE: case BP_T_FALSE: case BP_T_TRUE: break;
    case BP_T_INT32: *pos += 4; break;
    case BP_T_FLOAT: case BP_T_INT53: case BP_T_DATE: *pos += 8; break;
    case BP_T_BIGINT: case BP_T_STR: case BP_T_BYTES: case BP_T_ASCII:
        if (end - *pos < 4) return -1;
        memcpy(&n, src + *pos, 4);
        *pos += 4;
        if (end - *pos < n) return -1;
        *pos += n;
        break;
    case BP_T_ASCII_MEMO: /* normalised to STR below: its length is the low byte */
        if (end - *pos < 4) return -1;
        memcpy(&n, src + *pos, 4);
        n &= 0xff;
        *pos += 4;
        if (end - *pos < n) return -1;
        *pos += n;
        break;
    case BP_T_LIST: case BP_T_TUPLE: case BP_T_SET: case BP_T_DICT: case BP_T_MAP: {
        if (end - *pos < 4) return -1;
        memcpy(&n, src + *pos, 4);
        *pos += 4;
        uint64_t items = (tag == BP_T_DICT || tag == BP_T_MAP) ? 2ull * n : n;
        if (items > end - *pos) return -1;
        if (dst) memcpy(dst, src + start, 5);
        int64_t total = 5;
        for (uint64_t i = 0; i < items; i++) {
            int64_t len = value_copy(src, end, pos, dst ? dst + total : NULL, depth + 1);
            if (len < 0) return -1;
            total += len;
        }
        return total;
    }
    case BP_T_SHAPE: { /* normalised to DICT: u32 n, u32 hint, u32 k, k bytes of keys, n values */
        uint32_t hdr[3];
        if (end - *pos < 12) return -1;
        memcpy(hdr, src + *pos, 12);
        *pos += 12;
        uint32_t count = hdr[0], k = hdr[2];
        if (count < 1 || count > BP_SHAPE_MAX_KEYS || k > end - *pos) return -1;
        const uint8_t *keys = src + *pos;
        *pos += k;
        if (dst) {
            dst[0] = BP_T_DICT;
            memcpy(dst + 1, &count, 4);
        }
        int64_t total = 5;
        uint32_t at = 0;
        for (uint32_t i = 0; i < count; i++) {
            uint32_t len = at < k ? keys[at] : 0;
            if (len < 1 || k - at - 1 < len) return -1;
            if (dst) {
                dst[total] = BP_T_STR;
                memcpy(dst + total + 1, &len, 4);
                memcpy(dst + total + 5, keys + at + 1, len);
            }
            total += 5 + len;
            at += 1 + len;
            int64_t vlen = value_copy(src, end, pos, dst ? dst + total : NULL, depth + 1);
            if (vlen < 0) return -1;
            total += vlen;
        }
        if (at != k) return -1;
        return total;
    }
    default: return -1; /* handles, JS functions, buffers, iterators: not storable */
    }
    if (*pos > end) return -1;
    if (dst) {
        memcpy(dst, src + start, *pos - start);
        if (tag == BP_T_ASCII) dst[0] = BP_T_STR;
        if (tag == BP_T_ASCII_MEMO) {
            dst[0] = BP_T_STR;
            memcpy(dst + 1, &n, 4);
        }
    }
    return *pos - start;
}

/* A malloc'd normalised copy of the value at src[*pos]; NULL with *bad = 1 if refused. */
static uint8_t *value_dup(const uint8_t *src, uint32_t end, uint32_t *pos, uint32_t *len, int *bad) {
    uint32_t p = *pos;
    int64_t n = value_copy(src, end, &p, NULL, 0);
    *bad = n < 0;
    if (n < 0) return NULL;
    uint8_t *out = malloc(n ? (size_t)n : 1);
    if (!out) return NULL;
    value_copy(src, end, pos, out, 0);
    *len = (uint32_t)n;
    return out;
}

/* A single number as a double (INT32, INT53, FLOAT), else 0. */
static int as_number(const uint8_t *v, uint32_t n, double *out) {
    if (n == 5 && v[0] == BP_T_INT32) {
        int32_t i;
        memcpy(&i, v + 1, 4);
        *out = i;
        return 1;
    }
    if (n == 9 && (v[0] == BP_T_INT53 || v[0] == BP_T_FLOAT)) {
        memcpy(out, v + 1, 8);
        return 1;
    }
    return 0;
}

static int same_value(const uint8_t *a, uint32_t an, const uint8_t *b, uint32_t bn) {
    double x, y;
    if (as_number(a, an, &x) && as_number(b, bn, &y)) return x == y; /* 1 equals 1.0 */
    return an == bn && memcmp(a, b, an) == 0;
}

/* Writes a number as the codec does (INT32 / INT53 / FLOAT); dst has room for 9 bytes. */
static uint32_t encode_number(double d, uint8_t *dst) {
    if (d >= -2147483648.0 && d <= 2147483647.0 && d == (double)(int32_t)d && !(d == 0 && signbit(d))) {
        int32_t i = (int32_t)d;
        dst[0] = BP_T_INT32;
        memcpy(dst + 1, &i, 4);
        return 5;
    }
    dst[0] = (d == floor(d) && fabs(d) <= 9007199254740991.0) ? BP_T_INT53 : BP_T_FLOAT;
    memcpy(dst + 1, &d, 8);
    return 9;
}

/* ---- the operations (both sides) ------------------------------------------------------ */

enum { OP_GET = 0, OP_SET = 1, OP_INCR = 2, OP_CAS = 3, OP_DELETE = 4, OP_KEYS = 5, OP_CLEAR = 6 };
enum { S_OK = 0, S_MISSING = 1, S_NOMEM = -1, S_NOT_NUMBER = -2, S_NOT_SAFE = -3 };

/* The value of `key`, copied (malloc'd) into *out. */
/* A new entry for key k (hash h) holding val, linked at *pp. Lock held. -1: no memory. */
static int add_entry(entry **pp, const char *k, uint32_t kn, uint64_t h, uint8_t *val, uint32_t vn) {
    entry *e = malloc(sizeof *e + kn);
    if (!e) return -1;
    e->next = NULL;
    e->hash = h;
    e->klen = kn;
    e->vlen = vn;
    e->val = val;
    memcpy(e->key, k, kn);
    *pp = e;
    count++;
    return 0;
}

static int store_get(const char *k, uint32_t kn, uint8_t **out, uint32_t *outn) {
    uint64_t h = hash_key(k, kn);
    pthread_mutex_lock(&lock);
    entry **pp = find(k, kn, h);
    if (!pp || !*pp) {
        pthread_mutex_unlock(&lock);
        return S_MISSING;
    }
    uint8_t *copy = malloc((*pp)->vlen ? (*pp)->vlen : 1);
    if (copy) {
        memcpy(copy, (*pp)->val, (*pp)->vlen);
        *outn = (*pp)->vlen;
    }
    pthread_mutex_unlock(&lock);
    *out = copy;
    return copy ? S_OK : S_NOMEM;
}

/* Stores `val` (taken) under `key`; with `expected`, only if the current value equals it
   (a missing key equals None). *swapped says whether it was stored. */
static int store_put(const char *k, uint32_t kn, uint8_t *val, uint32_t vn, const uint8_t *expected, uint32_t en,
                     int *swapped) {
    uint64_t h = hash_key(k, kn);
    uint8_t *old = NULL;
    pthread_mutex_lock(&lock);
    if (count >= nbuckets && grow() < 0) {
        pthread_mutex_unlock(&lock);
        free(val);
        return S_NOMEM;
    }
    entry **pp = find(k, kn, h);
    if (expected) {
        int match = *pp ? same_value((*pp)->val, (*pp)->vlen, expected, en)
                        : (en == 1 && expected[0] == BP_T_NONE);
        if (!match) {
            pthread_mutex_unlock(&lock);
            free(val);
            *swapped = 0;
            return S_OK;
        }
    }
    if (*pp) {
        old = (*pp)->val;
        (*pp)->val = val;
        (*pp)->vlen = vn;
    } else if (add_entry(pp, k, kn, h, val, vn) < 0) {
        pthread_mutex_unlock(&lock);
        free(val);
        return S_NOMEM;
    }
    pthread_mutex_unlock(&lock);
    free(old);
    if (swapped) *swapped = 1;
    return S_OK;
}

/* Adds `delta` to a number (a missing key counts as 0); the new value in *result. */
static int store_incr(const char *k, uint32_t kn, double delta, double *result) {
    uint64_t h = hash_key(k, kn);
    pthread_mutex_lock(&lock);
    if (count >= nbuckets && grow() < 0) {
        pthread_mutex_unlock(&lock);
        return S_NOMEM;
    }
    entry **pp = find(k, kn, h);
    double cur = 0;
    if (*pp && !as_number((*pp)->val, (*pp)->vlen, &cur)) {
        pthread_mutex_unlock(&lock);
        return S_NOT_NUMBER;
    }
    double next = cur + delta;
    /* A whole-number counter crossing 2^53 would silently lose increments from then on.
       Judged on the values, not on how they were stored (JS stores 2**53 as a float); a
       number already past 2^53 (a float counter) goes on as floats do. */
    if (cur == floor(cur) && delta == floor(delta) && fabs(cur) <= 9007199254740992.0 && fabs(next) > 9007199254740991.0) {
        pthread_mutex_unlock(&lock);
        return S_NOT_SAFE;
    }
    /* the number is written in place when its buffer is big enough (9 bytes: a float) */
    int reuse = *pp && (*pp)->vlen >= 9;
    uint8_t *val = reuse ? (*pp)->val : malloc(9);
    if (!val) {
        pthread_mutex_unlock(&lock);
        return S_NOMEM;
    }
    uint32_t vn = encode_number(next, val);
    uint8_t *old = NULL;
    if (*pp) {
        if (!reuse) old = (*pp)->val; /* a shorter encoding (an Int32) is replaced */
        (*pp)->val = val;
        (*pp)->vlen = vn;
    } else if (add_entry(pp, k, kn, h, val, vn) < 0) {
        pthread_mutex_unlock(&lock);
        free(val);
        return S_NOMEM;
    }
    pthread_mutex_unlock(&lock);
    free(old);
    *result = next;
    return S_OK;
}

static int store_delete(const char *k, uint32_t kn) {
    uint64_t h = hash_key(k, kn);
    pthread_mutex_lock(&lock);
    entry **pp = find(k, kn, h);
    entry *e = pp ? *pp : NULL;
    if (e) {
        *pp = e->next;
        count--;
    }
    pthread_mutex_unlock(&lock);
    if (!e) return S_MISSING;
    free(e->val);
    free(e);
    return S_OK;
}

/* The keys as one codec LIST of STR (malloc'd). */
static int store_keys(uint8_t **out, uint32_t *outn) {
    pthread_mutex_lock(&lock);
    uint64_t size = 5;
    for (uint32_t i = 0; i < nbuckets; i++)
        for (entry *e = table[i]; e; e = e->next) size += 5 + e->klen;
    uint8_t *b = size <= UINT32_MAX ? malloc(size) : NULL;
    if (!b) {
        pthread_mutex_unlock(&lock);
        return S_NOMEM;
    }
    b[0] = BP_T_LIST;
    memcpy(b + 1, &count, 4);
    uint32_t pos = 5;
    for (uint32_t i = 0; i < nbuckets; i++)
        for (entry *e = table[i]; e; e = e->next) {
            b[pos] = BP_T_STR;
            memcpy(b + pos + 1, &e->klen, 4);
            memcpy(b + pos + 5, e->key, e->klen);
            pos += 5 + e->klen;
        }
    pthread_mutex_unlock(&lock);
    *out = b;
    *outn = pos;
    return S_OK;
}

static void store_clear(void) {
    pthread_mutex_lock(&lock);
    entry **t = table;
    uint32_t nb = nbuckets;
    table = NULL;
    nbuckets = count = 0;
    pthread_mutex_unlock(&lock);
    for (uint32_t i = 0; i < nb; i++)
        for (entry *e = t[i], *next; e; e = next) {
            next = e->next;
            free(e->val);
            free(e);
        }
    free(t);
}

/* ---- JS: bp_shared(io, op, delta); no GIL, no Python ----------------------------------- */

static int32_t js_error(bp_io *io, const char *msg) {
    size_t n = strlen(msg);
    if (bp_io_reserve(io, (uint32_t)n + 5) != BP_OK) return BP_ERR_MEMORY;
    io->buf[0] = BP_T_STR;
    uint32_t n32 = (uint32_t)n;
    memcpy(io->buf + 1, &n32, 4);
    memcpy(io->buf + 5, msg, n);
    io->len = (uint32_t)n + 5;
    return BP_ERR_CONVERT;
}

static int32_t js_bytes(bp_io *io, const uint8_t *v, uint32_t n) {
    if (bp_io_reserve(io, n ? n : 1) != BP_OK) return BP_ERR_MEMORY;
    memcpy(io->buf, v, n);
    io->len = n;
    return BP_OK;
}

static const char NOT_STORABLE[] =
    "py.shared: this value cannot be stored (only values that cross by copy: null, booleans, numbers, "
    "bigints, strings, bytes, arrays, plain objects, Maps, Sets, Dates; no Python objects or functions)";

/* buf: STR key [value [value]] (as written by JS; read up to io->cap). Status: BP_OK with the
   result in buf; 1 for a missing key (GET, DELETE); BP_ERR_CONVERT with a message. */
int32_t bp_shared(bp_io *io, int32_t op, double delta) {
    uint32_t end = io->cap, pos = 0, kn = 0;
    const uint8_t *b = io->buf;
    if (op == OP_KEYS || op == OP_CLEAR) {
        if (op == OP_CLEAR) {
            store_clear();
            return js_bytes(io, (const uint8_t[]){BP_T_NONE}, 1);
        }
        uint8_t *keys;
        uint32_t n;
        if (store_keys(&keys, &n) != S_OK) return BP_ERR_MEMORY;
        int32_t rc = js_bytes(io, keys, n);
        free(keys);
        return rc;
    }
    if (end < 5 || (b[0] != BP_T_STR && b[0] != BP_T_ASCII && b[0] != BP_T_ASCII_MEMO))
        return js_error(io, "py.shared: the key must be a string");
    memcpy(&kn, b + 1, 4);
    if (b[0] == BP_T_ASCII_MEMO) kn &= 0xff; /* the rest is the memo hint */
    if (end - 5 < kn) return js_error(io, "py.shared: malformed key");
    char small[256];
    char *k = kn <= sizeof small ? small : malloc(kn);
    if (!k) return BP_ERR_MEMORY;
    memcpy(k, b + 5, kn); /* the buffer is overwritten by the answer */
    pos = 5 + kn;
    int32_t rc = BP_OK;
    switch (op) {
    case OP_GET: {
        uint8_t *v;
        uint32_t n = 0;
        int r = store_get(k, kn, &v, &n);
        if (r == S_MISSING) rc = 1;
        else if (r != S_OK) rc = BP_ERR_MEMORY;
        else {
            rc = js_bytes(io, v, n);
            free(v);
        }
        break;
    }
    case OP_SET:
    case OP_CAS: {
        int bad = 0;
        uint32_t en = 0, vn = 0;
        uint8_t *expected = NULL;
        if (op == OP_CAS) {
            expected = value_dup(b, end, &pos, &en, &bad);
            if (!expected) { rc = bad ? js_error(io, NOT_STORABLE) : BP_ERR_MEMORY; break; }
        }
        uint8_t *val = value_dup(b, end, &pos, &vn, &bad);
        if (!val) {
            free(expected);
            rc = bad ? js_error(io, NOT_STORABLE) : BP_ERR_MEMORY;
            break;
        }
        int swapped = 1;
        int r = store_put(k, kn, val, vn, expected, en, &swapped);
        free(expected);
        rc = r != S_OK ? BP_ERR_MEMORY : js_bytes(io, (const uint8_t[]){swapped ? BP_T_TRUE : BP_T_FALSE}, 1);
        break;
    }
    case OP_INCR: {
        double result;
        int r = store_incr(k, kn, delta, &result);
        if (r == S_NOT_NUMBER) rc = js_error(io, "py.shared.incr: the stored value is not a number");
        else if (r == S_NOT_SAFE) rc = js_error(io, "py.shared.incr: the result would pass 2^53 (not a safe integer)");
        else if (r != S_OK) rc = BP_ERR_MEMORY;
        else {
            uint8_t num[9];
            rc = js_bytes(io, num, encode_number(result, num));
        }
        break;
    }
    case OP_DELETE:
        rc = js_bytes(io, (const uint8_t[]){store_delete(k, kn) == S_OK ? BP_T_TRUE : BP_T_FALSE}, 1);
        break;
    default: rc = js_error(io, "py.shared: unknown operation");
    }
    if (k != small) free(k);
    return rc;
}

/* ---- Python: _bunpy.shared_* --------------------------------------------------------------
   The GIL stays held around the store's lock: the lock is held only for a hash and a few
   pointer moves or one copy, and nobody holding it waits for anything, so there is no
   deadlock; releasing the GIL per operation would cost more than the operation (two
   worker contexts incrementing one key ran at half the speed of one). */

/* The codec bytes of `v` in a malloc'd normalised copy; NULL + exception if it cannot be stored. */
static uint8_t *py_encode(PyObject *v, uint32_t *n) {
    bp_io tmp = {0};
    tmp.cap = 256;
    tmp.buf = malloc(tmp.cap);
    if (!tmp.buf) { PyErr_NoMemory(); return NULL; }
    bp_writer *w = PyMem_Malloc(sizeof *w); /* ~8 KiB: not on a context thread's stack */
    if (!w) { free(tmp.buf); PyErr_NoMemory(); return NULL; }
    bp_writer_init(w, &tmp, 0);
    int rc = bp_write_value(w, v, 0);
    uint8_t *out = NULL;
    if (rc == BP_OK) {
        uint32_t pos = 0;
        int bad = 0;
        out = value_dup(tmp.buf, w->pos, &pos, n, &bad);
        if (!out && bad)
            PyErr_Format(PyExc_TypeError, "bunpy.shared: a '%.200s' value cannot be stored (only values that cross "
                         "by copy: None, bool, int, float, str, bytes, list, tuple, dict, set, datetime)", Py_TYPE(v)->tp_name);
        else if (!out) PyErr_NoMemory();
        bp_writer_abort(w);
    } else {
        bp_writer_abort(w);
        if (rc == BP_ERR_CONVERT) PyErr_Format(PyExc_TypeError, "bunpy.shared: %s", w->error);
        else if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "bunpy.shared: the value cannot be stored");
    }
    PyMem_Free(w);
    free(tmp.buf);
    return out;
}

static PyObject *py_decode(const uint8_t *v, uint32_t n) {
    bp_reader r = {.buf = v, .pos = 0, .end = n, .port = NULL, .st = NULL};
    return bp_read_value(&r, 0);
}

static const char *py_key(PyObject *key, Py_ssize_t *n) {
    if (!PyUnicode_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "bunpy.shared: keys are strings");
        return NULL;
    }
    return PyUnicode_AsUTF8AndSize(key, n);
}

/* The sandbox's `shared: false`: the store is the whole process's (JS and every context). */
static int shared_refused(void) {
    if (!bp_policy_refuses("shared")) return 0;
    PyErr_SetString(PyExc_PermissionError, "bunpy sandbox: bunpy.shared is refused (rule: no shared): this context may not "
                                           "use the process's shared store");
    return 1;
}

PyObject *bp_shared_py_get(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    (void)m;
    if (shared_refused()) return NULL;
    if (nargs < 1 || nargs > 2) return PyErr_Format(PyExc_TypeError, "get(key, default=None)");
    Py_ssize_t kn;
    const char *k = py_key(args[0], &kn);
    if (!k) return NULL;
    uint8_t *v;
    uint32_t n = 0;
    int r;
    r = store_get(k, (uint32_t)kn, &v, &n);
    if (r == S_MISSING) return Py_NewRef(nargs == 2 ? args[1] : Py_None);
    if (r != S_OK) return PyErr_NoMemory();
    PyObject *o = py_decode(v, n);
    free(v);
    return o;
}

PyObject *bp_shared_py_set(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    (void)m;
    if (shared_refused()) return NULL;
    if (nargs != 2) return PyErr_Format(PyExc_TypeError, "set(key, value)");
    Py_ssize_t kn;
    const char *k = py_key(args[0], &kn);
    if (!k) return NULL;
    uint32_t n;
    uint8_t *v = py_encode(args[1], &n);
    if (!v) return NULL;
    int r, swapped;
    r = store_put(k, (uint32_t)kn, v, n, NULL, 0, &swapped);
    if (r != S_OK) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

PyObject *bp_shared_py_cas(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    (void)m;
    if (shared_refused()) return NULL;
    if (nargs != 3) return PyErr_Format(PyExc_TypeError, "compare_and_set(key, expected, value)");
    Py_ssize_t kn;
    const char *k = py_key(args[0], &kn);
    if (!k) return NULL;
    uint32_t en, vn;
    uint8_t *e = py_encode(args[1], &en);
    if (!e) return NULL;
    uint8_t *v = py_encode(args[2], &vn);
    if (!v) { free(e); return NULL; }
    int r, swapped = 0;
    r = store_put(k, (uint32_t)kn, v, vn, e, en, &swapped);
    free(e);
    if (r != S_OK) return PyErr_NoMemory();
    return PyBool_FromLong(swapped);
}

PyObject *bp_shared_py_incr(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    (void)m;
    if (shared_refused()) return NULL;
    if (nargs < 1 || nargs > 2) return PyErr_Format(PyExc_TypeError, "incr(key, delta=1)");
    Py_ssize_t kn;
    const char *k = py_key(args[0], &kn);
    if (!k) return NULL;
    double delta = 1;
    if (nargs == 2) {
        if (PyLong_Check(args[1])) {
            delta = PyLong_AsDouble(args[1]);
        } else if (PyFloat_Check(args[1])) {
            delta = PyFloat_AS_DOUBLE(args[1]);
        } else {
            return PyErr_Format(PyExc_TypeError, "bunpy.shared.incr: delta must be an int or a float");
        }
        if (delta == -1 && PyErr_Occurred()) return NULL;
    }
    double result;
    int r;
    r = store_incr(k, (uint32_t)kn, delta, &result);
    if (r == S_NOT_NUMBER) return PyErr_Format(PyExc_TypeError, "bunpy.shared.incr: the value of %R is not a number", args[0]);
    if (r == S_NOT_SAFE) return PyErr_Format(PyExc_OverflowError, "bunpy.shared.incr: the result would pass 2**53");
    if (r != S_OK) return PyErr_NoMemory();
    uint8_t num[9];
    return py_decode(num, encode_number(result, num));
}

PyObject *bp_shared_py_delete(PyObject *m, PyObject *key) {
    (void)m;
    if (shared_refused()) return NULL;
    Py_ssize_t kn;
    const char *k = py_key(key, &kn);
    if (!k) return NULL;
    int r;
    r = store_delete(k, (uint32_t)kn);
    return PyBool_FromLong(r == S_OK);
}

PyObject *bp_shared_py_keys(PyObject *m, PyObject *unused) {
    if (shared_refused()) return NULL;
    (void)m;
    (void)unused;
    uint8_t *b;
    uint32_t n;
    if (store_keys(&b, &n) != S_OK) return PyErr_NoMemory();
    PyObject *o = py_decode(b, n);
    free(b);
    return o;
}
