/*
 * timers.c — the timer store of _bunpy.Reactor: a binary heap of (when, seq, TimerHandle)
 * compared in C, so scheduling a timer never runs Python comparisons. Cancelled handles
 * stay in the heap as tombstones and are skipped when they reach the top, or swept out
 * when they are more than half of it. As a sequence it stands for loop._scheduled.
 */
#include "reactor.h"
#include <math.h>

static inline int heap_less(const bp_timer *a, const bp_timer *b) {
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void sift_up(bp_timer *h, Py_ssize_t i) {
    bp_timer t = h[i];
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / 2;
        if (!heap_less(&t, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = t;
}

static void sift_down(bp_timer *h, Py_ssize_t n, Py_ssize_t i) {
    bp_timer t = h[i];
    for (;;) {
        Py_ssize_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && heap_less(&h[child + 1], &h[child])) child++;
        if (!heap_less(&h[child], &t)) break;
        h[i] = h[child];
        i = child;
    }
    h[i] = t;
}


/* 1 if the handle was cancelled, 0 if not, -1 on error. */
int bp_timer_cancelled(bp_reactor *r, PyObject *handle) {
    int fast = bp_calls_cancelled(r, handle); /* asyncio's own handle types: read the slot */
    if (fast >= 0) return fast;
    PyObject *v = PyObject_GetAttr(handle, NAME(r, CANCELLED));
    if (!v) return -1;
    int yes = PyObject_IsTrue(v);
    Py_DECREF(v);
    return yes;
}

static bp_timer heap_pop(bp_reactor *r) {
    bp_timer top = r->heap[0];
    if (--r->n > 0) {
        r->heap[0] = r->heap[r->n];
        sift_down(r->heap, r->n, 0);
    }
    return top;
}

/* Drops cancelled handles from the top of the heap. */
static int drop_cancelled_top(bp_reactor *r) {
    while (r->n > 0) {
        int c = bp_timer_cancelled(r, r->heap[0].handle);
        if (c < 0) return -1;
        if (!c) break;
        bp_timer t = heap_pop(r);
        if (r->cancelled > 0) r->cancelled--;
        int rc = PyObject_SetAttr(t.handle, NAME(r, SCHEDULED), Py_False);
        Py_DECREF(t.handle);
        if (rc < 0) return -1;
    }
    return 0;
}

/* push(handle): schedules a TimerHandle at handle._when. */
PyObject *bp_reactor_push(PyObject *self, PyObject *handle) {
    bp_reactor *r = (bp_reactor *)self;
    PyObject *w = PyObject_GetAttr(handle, NAME(r, WHEN));
    if (!w) return NULL;
    double when = PyFloat_AsDouble(w);
    Py_DECREF(w);
    if (when == -1 && PyErr_Occurred()) return NULL;
    if (isnan(when)) {
        PyErr_SetString(PyExc_ValueError, "a timer's time cannot be NaN");
        return NULL;
    }
    if (PyObject_SetAttr(handle, NAME(r, SCHEDULED), Py_True) < 0) return NULL;
    if (bp_timers_insert(r, when, handle) < 0) return NULL;
    Py_RETURN_NONE;
}

/* Puts a handle (its _scheduled set already) on the heap at `when`: 0, or -1 (no memory). */
int bp_timers_insert(bp_reactor *r, double when, PyObject *handle) {
    if (r->n == r->cap) {
        Py_ssize_t cap = r->cap ? r->cap * 2 : 64;
        bp_timer *h = PyMem_Realloc(r->heap, (size_t)cap * sizeof *h);
        if (!h) {
            PyErr_NoMemory();
            return -1;
        }
        r->heap = h;
        r->cap = cap;
    }
    r->heap[r->n] = (bp_timer){.when = when, .seq = r->seq++, .handle = Py_NewRef(handle)};
    sift_up(r->heap, r->n++);
    return 0;
}

/* cancelled(): a scheduled handle was cancelled. Sweeps the heap when tombstones are more
   than half of it (and more than 100), as the stock loop does. */
PyObject *bp_reactor_cancelled(PyObject *self, PyObject *unused) {
    bp_reactor *r = (bp_reactor *)self;
    if (++r->cancelled <= 100 || r->cancelled * 2 <= r->n) Py_RETURN_NONE;
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < r->n; i++) {
        int c = bp_timer_cancelled(r, r->heap[i].handle);
        if (c == 0) {
            r->heap[kept++] = r->heap[i];
            continue;
        }
        if (c < 0) PyErr_Clear();
        if (PyObject_SetAttr(r->heap[i].handle, NAME(r, SCHEDULED), Py_False) < 0) PyErr_Clear();
        Py_DECREF(r->heap[i].handle);
    }
    r->n = kept;
    for (Py_ssize_t i = kept / 2; i-- > 0;) sift_down(r->heap, r->n, i);
    r->cancelled = 0;
    Py_RETURN_NONE;
}

double bp_timers_timeout(bp_reactor *r, double now) {
    if (drop_cancelled_top(r) < 0 || r->n == 0) return -1;
    double t = r->heap[0].when - now;
    return t > 0 ? t : 0;
}

/* timeout(now) -> seconds until the first live timer, or None without timers. */
PyObject *bp_reactor_timeout(PyObject *self, PyObject *arg) {
    double now = PyFloat_AsDouble(arg);
    if (now == -1 && PyErr_Occurred()) return NULL;
    double t = bp_timers_timeout((bp_reactor *)self, now);
    if (t < 0) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(t);
}

/* Moves every timer due by `end` to the ready queue through `append`. */
int bp_timers_pop_due(bp_reactor *r, double end, PyObject *append) {
    while (r->n > 0 && r->heap[0].when < end) {
        bp_timer t = heap_pop(r);
        int c = bp_timer_cancelled(r, t.handle);
        int rc = c < 0 ? -1 : PyObject_SetAttr(t.handle, NAME(r, SCHEDULED), Py_False);
        if (rc == 0 && c == 0) {
            PyObject *v = PyObject_CallOneArg(append, t.handle);
            rc = v ? 0 : -1;
            Py_XDECREF(v);
        } else if (c > 0 && r->cancelled > 0) {
            r->cancelled--;
        }
        Py_DECREF(t.handle);
        if (rc < 0) return -1;
    }
    return 0;
}

/* pop_due(end_time, append): moves every timer due by end_time to the ready queue. */
PyObject *bp_reactor_pop_due(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "expected (end_time, append)");
        return NULL;
    }
    double end = PyFloat_AsDouble(args[0]);
    if (end == -1 && PyErr_Occurred()) return NULL;
    if (bp_timers_pop_due((bp_reactor *)self, end, args[1]) < 0) return NULL;
    Py_RETURN_NONE;
}

void bp_timers_clear(bp_reactor *r) {
    while (r->n > 0) {
        PyObject *h = r->heap[--r->n].handle;
        if (PyObject_SetAttr(h, NAME(r, SCHEDULED), Py_False) < 0) PyErr_Clear();
        Py_DECREF(h);
    }
    r->cancelled = 0;
}

PyObject *bp_reactor_clear(PyObject *self, PyObject *unused) {
    bp_timers_clear((bp_reactor *)self);
    Py_RETURN_NONE;
}

/* The timer store as a sequence: [0] is the next timer due (for code that peeks at
   loop._scheduled), the rest in heap order. */
Py_ssize_t bp_reactor_len(PyObject *self) { return ((bp_reactor *)self)->n; }

PyObject *bp_reactor_item(PyObject *self, Py_ssize_t i) {
    bp_reactor *r = (bp_reactor *)self;
    if (i < 0 || i >= r->n) {
        PyErr_SetString(PyExc_IndexError, "timer index out of range");
        return NULL;
    }
    return Py_NewRef(r->heap[i].handle);
}

