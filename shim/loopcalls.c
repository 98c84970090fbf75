/*
 * loopcalls.c — call_soon, call_at, call_later and _timer_handle_cancelled of bunpy's loop
 * as C functions, set on each loop instance (python/bunpy/_loop.py, _bunpy_bind_calls).
 *
 * The handles they return are asyncio's own Handle and TimerHandle (code checks
 * isinstance(h, asyncio.TimerHandle), and asyncio's tests do), made here without their
 * Python __init__: their __slots__ are written at the offsets their member descriptors
 * give, found once by configure(). A TimerHandle goes straight into the C heap
 * (timers.c); cancel() stays TimerHandle.cancel, which calls the C
 * _timer_handle_cancelled. In debug mode, on a closed loop, or (call_later) with a loop
 * whose time() is overridden, each function hands over to the Python method it stands
 * for, so messages, checks and tracebacks stay asyncio's.
 */
#include "reactor.h"
#include <math.h>
#include <structmember.h>

static const char *SLOT_NAMES[BP_SLOT_COUNT] = {"_callback", "_args", "_cancelled", "_loop", "_source_traceback",
                                                "_repr", "_context", "_scheduled", "_when"};

/* The offsets of the handles' slots (configure()); 0 when a type is not laid out as
   expected, and then attributes are set by name. */
int bp_calls_resolve(bp_reactor *r) {
    r->slots_ok = 0;
    for (int i = 0; i < BP_SLOT_COUNT; i++) {
        PyObject *d = PyObject_GetAttrString(i < BP_SLOT_SCHEDULED ? r->handle_type : r->timer_type, SLOT_NAMES[i]);
        if (!d) {
            PyErr_Clear();
            return 0;
        }
        int ok = Py_IS_TYPE(d, &PyMemberDescr_Type) && ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
        r->slot_off[i] = ok ? ((PyMemberDescrObject *)d)->d_member->offset : 0;
        Py_DECREF(d);
        if (!ok) return 0;
    }
    /* TimerHandle extends Handle's layout: the base slots are at the same offsets */
    r->slots_ok = ((PyTypeObject *)r->timer_type)->tp_base == (PyTypeObject *)r->handle_type;
    return 0;
}

static inline PyObject **slot(PyObject *h, Py_ssize_t off) { return (PyObject **)((char *)h + off); }

/* A handle's _cancelled without an attribute lookup: 1, 0, or -1 when it cannot say. */
int bp_calls_cancelled(bp_reactor *r, PyObject *h) {
    if (!r->slots_ok || (Py_TYPE(h) != (PyTypeObject *)r->handle_type && Py_TYPE(h) != (PyTypeObject *)r->timer_type)) return -1;
    PyObject *v = *slot(h, r->slot_off[BP_SLOT_CANCELLED]);
    return v == Py_True ? 1 : v == Py_False ? 0 : -1;
}

/* A Handle or TimerHandle (tp) with its slots set; values[i] for slot i (borrowed). */
static PyObject *make_handle(bp_reactor *r, PyTypeObject *tp, PyObject *const *values, int n) {
    PyObject *h = tp->tp_alloc(tp, 0);
    if (!h) return NULL;
    for (int i = 0; i < n; i++) {
        if (r->slots_ok) {
            Py_XSETREF(*slot(h, r->slot_off[i]), Py_NewRef(values[i]));
        } else if (PyObject_SetAttrString(h, SLOT_NAMES[i], values[i]) < 0) {
            Py_DECREF(h);
            return NULL;
        }
    }
    return h;
}

/* Handle(callback, args, loop, context) as asyncio's __init__ makes it outside debug mode. */
PyObject *bp_calls_handle(bp_reactor *r, PyObject *callback, PyObject *args, PyObject *context, PyObject *loop) {
    PyObject *ctx = context == Py_None || !context ? PyContext_CopyCurrent() : Py_NewRef(context);
    if (!ctx) return NULL;
    PyObject *values[] = {callback, args, Py_False, loop, Py_None, Py_None, ctx};
    PyObject *h = make_handle(r, (PyTypeObject *)r->handle_type, values, 7);
    Py_DECREF(ctx);
    return h;
}

/* Splits (fixed positional..., *args, context=None): 0 with *rest (new tuple) and *context
   (borrowed), or -1 with TypeError. */
static int split_args(const char *fn, int fixed, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                      PyObject **rest, PyObject **context) {
    *context = Py_None;
    if (nargs < fixed) {
        PyErr_Format(PyExc_TypeError, "%s() missing required positional arguments", fn);
        return -1;
    }
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(k, "context") != 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fn, k);
            return -1;
        }
        *context = args[nargs + i];
    }
    *rest = PyTuple_New(nargs - fixed);
    if (!*rest) return -1;
    for (Py_ssize_t i = fixed; i < nargs; i++) PyTuple_SET_ITEM(*rest, i - fixed, Py_NewRef(args[i]));
    return 0;
}

/* The Python method this function stands for: fallback(loop, *args, **kw). */
static PyObject *hand_over(bp_reactor *r, int which, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *fn = r->call_fallback[which];
    if (!fn || !r->call_loop) {
        PyErr_SetString(PyExc_RuntimeError, "bunpy: the event loop's reactor is closed");
        return NULL;
    }
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *stack[9], **all = stack;
    if (total + 1 > 9 && !(all = PyMem_Malloc((size_t)(total + 1) * sizeof *all))) return PyErr_NoMemory();
    all[0] = r->call_loop;
    for (Py_ssize_t i = 0; i < total; i++) all[i + 1] = args[i];
    PyObject *v = PyObject_Vectorcall(fn, all, (size_t)nargs + 1, kwnames);
    if (all != stack) PyMem_Free(all);
    return v;
}

static PyObject *calls_soon(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    bp_reactor *r = (bp_reactor *)self;
    if (!r->calls_fast || !r->call_ready) return hand_over(r, 0, args, nargs, kwnames);
    PyObject *rest, *context;
    if (split_args("call_soon", 1, args, nargs, kwnames, &rest, &context) < 0) return NULL;
    PyObject *h = bp_calls_handle(r, args[0], rest, context, r->call_loop);
    Py_DECREF(rest);
    if (!h) return NULL;
    PyObject *v = PyObject_CallMethodOneArg(r->call_ready, NAME(r, APPEND), h);
    if (!v) {
        Py_DECREF(h);
        return NULL;
    }
    Py_DECREF(v);
    return h;
}

/* A TimerHandle at `when` (the object stored as _when; `w` its value), pushed on the heap. */
static PyObject *timer_at(bp_reactor *r, PyObject *when, double w, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                          const char *fn) {
    if (isnan(w)) {
        PyErr_SetString(PyExc_ValueError, "a timer's time cannot be NaN");
        return NULL;
    }
    PyObject *rest, *context;
    if (split_args(fn, 2, args, nargs, kwnames, &rest, &context) < 0) return NULL;
    PyObject *ctx = context == Py_None ? PyContext_CopyCurrent() : Py_NewRef(context);
    PyObject *h = NULL;
    if (ctx) {
        PyObject *values[] = {args[1], rest, Py_False, r->call_loop, Py_None, Py_None, ctx, Py_True, when};
        h = make_handle(r, (PyTypeObject *)r->timer_type, values, 9);
        Py_DECREF(ctx);
    }
    Py_DECREF(rest);
    if (!h) return NULL;
    if (bp_timers_insert(r, w, h) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return h;
}

static PyObject *calls_at(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    bp_reactor *r = (bp_reactor *)self;
    if (nargs >= 1 && args[0] == Py_None) {
        PyErr_SetString(PyExc_TypeError, "when cannot be None");
        return NULL;
    }
    if (!r->calls_fast || !r->slots_ok || nargs < 2 || !(PyFloat_CheckExact(args[0]) || PyLong_CheckExact(args[0])))
        return hand_over(r, 1, args, nargs, kwnames);
    double w = PyFloat_AsDouble(args[0]);
    if (w == -1 && PyErr_Occurred()) return NULL;
    return timer_at(r, args[0], w, args, nargs, kwnames, "call_at");
}

static PyObject *calls_later(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    bp_reactor *r = (bp_reactor *)self;
    if (!r->calls_fast || !r->own_clock || !r->slots_ok || nargs < 2 ||
        !(PyFloat_CheckExact(args[0]) || PyLong_CheckExact(args[0])))
        return hand_over(r, 2, args, nargs, kwnames);
    double delay = PyFloat_AsDouble(args[0]);
    if (delay == -1 && PyErr_Occurred()) return NULL;
    double w = (double)bp_now_ns() / 1e9 + delay; /* loop.time() + delay */
    PyObject *when = PyFloat_FromDouble(w);
    if (!when) return NULL;
    PyObject *h = timer_at(r, when, w, args, nargs, kwnames, "call_later");
    Py_DECREF(when);
    return h;
}

static PyObject *calls_timer_cancelled(PyObject *self, PyObject *handle) {
    bp_reactor *r = (bp_reactor *)self;
    int scheduled;
    if (r->slots_ok && Py_IS_TYPE(handle, (PyTypeObject *)r->timer_type)) {
        PyObject *v = *slot(handle, r->slot_off[BP_SLOT_SCHEDULED]);
        scheduled = v ? PyObject_IsTrue(v) : -1;
        if (!v) PyErr_SetString(PyExc_AttributeError, "_scheduled");
    } else {
        PyObject *v = PyObject_GetAttr(handle, NAME(r, SCHEDULED));
        scheduled = v ? PyObject_IsTrue(v) : -1;
        Py_XDECREF(v);
    }
    if (scheduled < 0) return NULL;
    if (!scheduled) Py_RETURN_NONE;
    return bp_reactor_cancelled(self, NULL);
}

static PyMethodDef call_defs[] = {
    {"call_soon", (PyCFunction)(void (*)(void))calls_soon, METH_FASTCALL | METH_KEYWORDS, "call_soon(callback, *args, context=None)"},
    {"call_at", (PyCFunction)(void (*)(void))calls_at, METH_FASTCALL | METH_KEYWORDS, "call_at(when, callback, *args, context=None)"},
    {"call_later", (PyCFunction)(void (*)(void))calls_later, METH_FASTCALL | METH_KEYWORDS,
     "call_later(delay, callback, *args, context=None)"},
    {"_timer_handle_cancelled", calls_timer_cancelled, METH_O, "_timer_handle_cancelled(handle)"},
};

/* bind(loop, ready, call_soon, call_at, call_later) -> (call_soon, call_at, call_later,
   _timer_handle_cancelled): C functions for this loop; the three Python methods given are
   what they hand over to (debug mode, a closed loop). After configure(). */
PyObject *bp_reactor_bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    bp_reactor *r = (bp_reactor *)self;
    if (nargs != 5 || !r->handle_type) {
        PyErr_SetString(PyExc_TypeError, "expected (loop, ready, call_soon, call_at, call_later) after configure()");
        return NULL;
    }
    Py_XSETREF(r->call_loop, Py_NewRef(args[0]));
    Py_XSETREF(r->call_ready, Py_NewRef(args[1]));
    for (int i = 0; i < 3; i++) Py_XSETREF(r->call_fallback[i], Py_NewRef(args[2 + i]));
    PyObject *out = PyTuple_New(4);
    if (!out) return NULL;
    for (int i = 0; i < 4; i++) {
        PyObject *f = PyCFunction_New(&call_defs[i], self);
        if (!f) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, f);
    }
    return out;
}

/* calls_mode(fast, own_clock): fast is False in debug mode and once the loop is closed;
   own_clock: loop.time() is time.monotonic(). */
PyObject *bp_reactor_calls_mode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    bp_reactor *r = (bp_reactor *)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "expected (fast, own_clock)");
        return NULL;
    }
    int fast = PyObject_IsTrue(args[0]), own = PyObject_IsTrue(args[1]);
    if (fast < 0 || own < 0) return NULL;
    r->calls_fast = (char)fast;
    r->own_clock = (char)own;
    Py_RETURN_NONE;
}

/* The loop is closing: the functions hand over (and raise "Event loop is closed"). */
void bp_calls_clear(bp_reactor *r) {
    r->calls_fast = 0;
    Py_CLEAR(r->call_loop);
    Py_CLEAR(r->call_ready);
    for (int i = 0; i < 3; i++) Py_CLEAR(r->call_fallback[i]);
}
