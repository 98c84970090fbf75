/*
 * ops.c — what JS can do with the main interpreter. Each entry point:
 *   1. checks the runtime state and the calling thread (bp_enter),
 *   2. takes the main GIL with the port's thread state, unless this thread already
 *      holds it (a JS callback running inside a Python call released it, so nested
 *      calls take it again here),
 *   3. reads its inputs from io->buf, does the work, writes the result to io->buf,
 *   4. releases the GIL (bp_leave): Python threads run freely between calls.
 */
#include "internal.h"
#include <string.h>

extern atomic_int bp_foreign_calls;
extern PyThreadState *bp_main_ts;

typedef struct {
    bp_port *p;
    bp_port *prev;
    int took_gil;
    int foreign;
} bp_call_scope;

/* Handles JS let go of since the last call (proxies collected or disposed). GIL held.
   A __del__ run here must not call into JS: the buffer holds this call's arguments. */
static void drop_handles(bp_io *io) {
    bp_port *p = bp_port_of(io);
    uint32_t n = io->ndrop;
    io->ndrop = 0;
    p->no_dispatch++;
    for (uint32_t i = 0; i < n; i++) {
        PyObject *o = (PyObject *)(uintptr_t)io->drop[i];
        Py_XDECREF(o);
    }
    p->no_dispatch--;
}

static int32_t bp_enter(bp_io *io, bp_call_scope *s) {
    bp_port *p = bp_port_of(io);
    s->p = p;
    if (!pthread_equal(p->owner, pthread_self())) return BP_ERR_THREAD;
    if (__builtin_expect(atomic_load_explicit(&bp_sigint_flags, memory_order_relaxed) & BP_SIGINT_STALE, 0))
        bp_sigint_refresh();
    s->foreign = p->from_gilstate;
    if (s->foreign) atomic_fetch_add(&bp_foreign_calls, 1);
    if (!bp_running() || !p->ts) {
        if (s->foreign) atomic_fetch_sub(&bp_foreign_calls, 1);
        return bp_fail_message(io, BP_ERR_STATE, "Python is not running (it was closed, or failed to start)");
    }
    p->depth++;
    s->took_gil = !p->held;
    if (s->took_gil) {
        PyEval_RestoreThread(p->ts);
        p->held = 1;
    }
    s->prev = bp_current_port;
    bp_current_port = p;
    if (io->ndrop) drop_handles(io);
    if (__builtin_expect(bp_views_waiting(), 0)) { /* py.view ArrayBuffers that were freed */
        p->no_dispatch++;
        bp_views_drain();
        p->no_dispatch--;
    }
    return BP_OK;
}

static int32_t bp_leave(bp_call_scope *s, int32_t rc) {
    bp_current_port = s->prev;
    s->p->depth--; /* before the GIL goes: a Ctrl-C from now on is not this call's (runtime.c) */
    if (s->took_gil) {
        if (__builtin_expect(atomic_load_explicit(&bp_sigint_flags, memory_order_relaxed) & BP_SIGINT_TRIPPED, 0))
            bp_sigint_leave(s->p);
        s->p->held = 0;
        PyEval_SaveThread();
    }
    if (s->p->depth == 0) bp_io_trim(&s->p->io, s->p->io.len);
    if (s->foreign) atomic_fetch_sub(&bp_foreign_calls, 1);
    return rc;
}

#define ENTER(io)                                \
    bp_call_scope scope_;                        \
    do {                                         \
        int32_t e_ = bp_enter((io), &scope_);    \
        if (e_) return e_;                       \
    } while (0)
#define LEAVE(rc) return bp_leave(&scope_, (rc))

/* Writes `value` (stolen) as the result; NULL means a Python exception is set. Python code
   run by the conversion or by dropping the value (a tzinfo, a dict subclass's items(),
   __del__) must not call into JS: that would overwrite the buffer being written. */
static int32_t finish(bp_io *io, PyObject *value, int deep) {
    if (!value) return bp_fail_python(io);
    bp_port *p = bp_port_of(io);
    bp_writer w;
    bp_writer_init(&w, io, deep);
    p->no_dispatch++;
    int rc = bp_write_value(&w, value, 0);
    Py_DECREF(value);
    p->no_dispatch--;
    if (rc) return bp_fail_writer(&w, rc);
    bp_writer_commit(&w);
    return BP_OK;
}

/* Writes `obj` (stolen) as a handle even when it has a JS form (iterators, names). */
static int32_t finish_handle(bp_io *io, PyObject *obj) {
    if (bp_io_grow(io, 9) < 0) {
        Py_DECREF(obj);
        return bp_fail_python(io);
    }
    io->buf[0] = bp_handle_tag(obj);
    memcpy(io->buf + 1, &obj, 8); /* the reference goes to JS */
    io->len = 9;
    return BP_OK;
}



int32_t bp_compile(bp_io *io, int32_t mode) {
    ENTER(io);
    bp_reader r;
    bp_reader_init(&r, io, 0);
    PyObject *src = bp_read_str(&r);
    PyObject *filename = src ? bp_read_str(&r) : NULL;
    if (!filename) { Py_XDECREF(src); LEAVE(bp_fail_read(io)); }
    const char *fname = PyUnicode_AsUTF8(filename);
    PyObject *code = fname ? bp_compile_source(src, fname, mode == BP_MODE_EVAL ? Py_eval_input : Py_file_input) : NULL;
    Py_DECREF(src);
    Py_DECREF(filename);
    LEAVE(finish(io, code, 0));
}

int32_t bp_run(bp_io *io, void *code) {
    ENTER(io);
    PyObject *main = PyImport_AddModule("__main__"); /* borrowed */
    PyObject *globals = main ? PyModule_GetDict(main) : NULL;
    PyObject *v = globals ? PyEval_EvalCode((PyObject *)code, globals, globals) : NULL;
    LEAVE(finish(io, v, 0));
}

int32_t bp_import(bp_io *io) {
    ENTER(io);
    bp_reader r;
    bp_reader_init(&r, io, 0);
    PyObject *name = bp_read_str(&r);
    if (!name) LEAVE(bp_fail_read(io));
    PyObject *mod = bp_check_module_name(name) < 0 ? NULL : PyImport_Import(name);
    Py_DECREF(name);
    LEAVE(mod ? finish_handle(io, mod) : bp_fail_python(io));
}

int32_t bp_intern(bp_io *io) {
    ENTER(io);
    bp_reader r;
    bp_reader_init(&r, io, 0);
    PyObject *s = bp_read_str(&r);
    if (!s) LEAVE(bp_fail_read(io));
    PyUnicode_InternInPlace(&s);
    LEAVE(finish_handle(io, s));
}

/* A method bound to `self`: JS calls it through bp_call_attr, no handle needed. */
static int is_bound_method(PyObject *v, PyObject *self) {
    if (PyMethod_Check(v)) return PyMethod_GET_SELF(v) == self;
    if (PyCFunction_Check(v)) return PyCFunction_GET_SELF(v) == self && !PyModule_Check(self);
    return 0;
}

int32_t bp_getattr(bp_io *io, void *obj, void *name) {
    ENTER(io);
    PyObject *v = PyObject_GetAttr((PyObject *)obj, (PyObject *)name);
    if (!v) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) LEAVE(bp_fail_python(io));
        PyErr_Clear();
        LEAVE(1);
    }
    if (is_bound_method(v, (PyObject *)obj)) {
        Py_DECREF(v);
        bp_method_answer(io, (PyObject *)obj, (PyObject *)name);
        LEAVE(BP_OK);
    }
    LEAVE(finish(io, v, 0));
}

static int32_t none_or_fail(bp_io *io, int rc) {
    if (rc < 0) return bp_fail_python(io);
    io->buf[0] = BP_T_NONE;
    io->len = 1;
    return BP_OK;
}

int32_t bp_setattr(bp_io *io, void *obj, void *name) {
    ENTER(io);
    bp_reader r;
    bp_reader_init(&r, io, 0);
    PyObject *v = bp_read_value(&r, 0);
    if (!v) LEAVE(bp_fail_read(io));
    int rc = PyObject_SetAttr((PyObject *)obj, (PyObject *)name, v);
    Py_DECREF(v);
    LEAVE(none_or_fail(io, rc));
}

int32_t bp_delattr(bp_io *io, void *obj, void *name) {
    ENTER(io);
    LEAVE(none_or_fail(io, PyObject_DelAttr((PyObject *)obj, (PyObject *)name)));
}


/* Calls `callable` with the arguments in the buffer (LIST args, NONE | DICT kwargs). */
static PyObject *call_buffer(bp_io *io, PyObject *callable, int32_t *read_failed) {
    bp_reader r;
    bp_reader_init(&r, io, 0);
    return bp_read_call(&r, callable, read_failed);
}

int32_t bp_call(bp_io *io, void *callable) {
    ENTER(io);
    int32_t read_failed = 0;
    PyObject *v = call_buffer(io, (PyObject *)callable, &read_failed);
    LEAVE(read_failed ? bp_fail_read(io) : finish(io, v, 0));
}

/* obj.name(*args). With the generic attribute lookup (instances of classes, builtins):
   PyObject_VectorcallMethod, which makes no bound method when the attribute is a function
   or method descriptor of the type. Otherwise (modules: py.call) getattr, then the call,
   which is what VectorcallMethod would do with a few more steps. Either looks the method up
   in full, so it is right whatever JS cached about obj.name. */
int32_t bp_call_attr(bp_io *io, void *obj, void *name) {
    ENTER(io);
    PyObject *o = (PyObject *)obj;
    int32_t read_failed = 0;
    bp_reader r;
    bp_reader_init(&r, io, 0);
    PyObject *v;
    if (Py_TYPE(o)->tp_getattro == PyObject_GenericGetAttr) {
        v = bp_read_method_call(&r, o, (PyObject *)name, &read_failed);
    } else {
        PyObject *fn = PyObject_GetAttr(o, (PyObject *)name);
        if (!fn) LEAVE(bp_fail_python(io));
        v = bp_read_call(&r, fn, &read_failed);
        Py_DECREF(fn); /* before the result is written: dropping it may run a __del__ */
    }
    LEAVE(read_failed ? bp_fail_read(io) : finish(io, v, 0));
}

/* ---- items ---------------------------------------------------------------------------- */

int32_t bp_getitem(bp_io *io, void *obj) {
    ENTER(io);
    bp_reader r;
    bp_reader_init(&r, io, 0);
    PyObject *k = bp_read_value(&r, 0);
    if (!k) LEAVE(bp_fail_read(io));
    PyObject *v = PyObject_GetItem((PyObject *)obj, k);
    Py_DECREF(k);
    LEAVE(finish(io, v, 0));
}

int32_t bp_setitem(bp_io *io, void *obj) {
    ENTER(io);
    bp_reader r;
    bp_reader_init(&r, io, 0);
    PyObject *k = bp_read_value(&r, 0);
    PyObject *v = k ? bp_read_value(&r, 0) : NULL;
    if (!v) { Py_XDECREF(k); LEAVE(bp_fail_read(io)); }
    int rc = PyObject_SetItem((PyObject *)obj, k, v);
    Py_DECREF(k);
    Py_DECREF(v);
    LEAVE(none_or_fail(io, rc));
}

int32_t bp_delitem(bp_io *io, void *obj) {
    ENTER(io);
    bp_reader r;
    bp_reader_init(&r, io, 0);
    PyObject *k = bp_read_value(&r, 0);
    if (!k) LEAVE(bp_fail_read(io));
    int rc = PyObject_DelItem((PyObject *)obj, k);
    Py_DECREF(k);
    LEAVE(none_or_fail(io, rc));
}

/* `x in obj`: Python membership where obj supports it, otherwise attribute presence
   (so `"dumps" in json` is true for a module). */
int32_t bp_contains(bp_io *io, void *obj) {
    ENTER(io);
    PyObject *o = (PyObject *)obj;
    bp_reader r;
    bp_reader_init(&r, io, 0);
    PyObject *x = bp_read_value(&r, 0);
    if (!x) LEAVE(bp_fail_read(io));
    PyTypeObject *t = Py_TYPE(o);
    int rc;
    if ((t->tp_as_sequence && t->tp_as_sequence->sq_contains) || t->tp_iter) {
        rc = PySequence_Contains(o, x);
    } else if (PyUnicode_Check(x)) {
        PyObject *v = PyObject_GetAttr(o, x);
        rc = v ? 1 : PyErr_ExceptionMatches(PyExc_AttributeError) ? (PyErr_Clear(), 0) : -1;
        Py_XDECREF(v);
    } else {
        PyErr_Format(PyExc_TypeError, "argument of type '%s' is not a container", t->tp_name);
        rc = -1;
    }
    Py_DECREF(x);
    LEAVE(finish(io, rc < 0 ? NULL : PyBool_FromLong(rc), 0));
}

/* ---- one-object operations ------------------------------------------------------------ */

int32_t bp_object_op(bp_io *io, void *obj, int32_t op) {
    ENTER(io);
    PyObject *o = (PyObject *)obj, *v = NULL;
    int deep = 0;
    switch (op) {
    case BP_OP_REPR:
    case BP_OP_STR:
        v = op == BP_OP_STR ? PyObject_Str(o) : PyObject_Repr(o);
        /* __str__ may return a str subclass (Django's SafeString returns itself): JS
           gets a string, so copy it to an exact str instead of handing back a proxy */
        if (v && !PyUnicode_CheckExact(v)) Py_SETREF(v, PyUnicode_Substring(v, 0, PyUnicode_GET_LENGTH(v)));
        break;
    case BP_OP_LEN: {
        Py_ssize_t n = PyObject_Size(o);
        v = n < 0 ? NULL : PyLong_FromSsize_t(n);
        break;
    }
    case BP_OP_TOJS: v = Py_NewRef(o); deep = 1; break;
    case BP_OP_ITER: {
        PyObject *it = PyObject_GetIter(o);
        LEAVE(it ? finish_handle(io, it) : bp_fail_python(io));
    }
    case BP_OP_NEXT: {
        v = PyIter_Next(o);
        if (!v && !PyErr_Occurred()) LEAVE(1); /* exhausted */
        break;
    }
    case BP_OP_TYPENAME: {
        PyTypeObject *t = Py_TYPE(o);
        PyObject *mod = PyObject_GetAttrString((PyObject *)t, "__module__");
        PyObject *qual = PyObject_GetAttrString((PyObject *)t, "__qualname__");
        if (mod && qual && PyUnicode_Check(mod) && PyUnicode_CompareWithASCIIString(mod, "builtins") != 0)
            v = PyUnicode_FromFormat("%U.%U", mod, qual);
        else if (qual)
            v = Py_NewRef(qual);
        PyErr_Clear();
        if (!v) v = PyUnicode_FromString(t->tp_name);
        Py_XDECREF(mod);
        Py_XDECREF(qual);
        break;
    }
    case BP_OP_CALLABLE: v = PyBool_FromLong(PyCallable_Check(o)); break;
    case BP_OP_BOOL: {
        int b = PyObject_IsTrue(o);
        v = b < 0 ? NULL : PyBool_FromLong(b);
        break;
    }
    default: PyErr_Format(PyExc_ValueError, "bunpy: unknown object operation %d", op);
    }
    LEAVE(finish(io, v, deep));
}

int32_t bp_builtins(bp_io *io) {
    ENTER(io);
    PyObject *b = PyImport_ImportModule("builtins");
    LEAVE(b ? finish_handle(io, b) : bp_fail_python(io));
}

int32_t bp_flush(bp_io *io) {
    ENTER(io);
    LEAVE(BP_OK); /* bp_enter dropped them */
}

/* The formatted traceback of an exception JS kept from a failed call (bp_fail_python sent
   it as a handle), as traceback.format_exception prints it. */
int32_t bp_format_exception(bp_io *io, void *exc) {
    ENTER(io);
    bp_interp *st = bp_interp_get();
    PyObject *fmt = st ? bp_interp_helper(st, "format_exception") : NULL;
    PyObject *text = fmt ? PyObject_CallOneArg(fmt, (PyObject *)exc) : NULL;
    if (!text) { /* never an error record: that would hand JS yet another exception */
        PyErr_Clear();
        text = PyUnicode_FromString("");
    }
    LEAVE(finish(io, text, 0));
}
