/*
 * module.c — the _bunpy C module (multi-phase, state per interpreter) behind the
 * python/bunpy package: bunpy.call and JSFunction, the Python callable that stands for a
 * JS function (bunpy.JSError is in jserror.c).
 *
 * A call into JS runs on the JS thread that is inside a bp_ call right now (its port is
 * bp_current_port): the GIL is released while JS runs, so Python threads keep going and
 * JS may call back into Python (nested calls take the GIL again in ops.c).
 */
#include "context.h"
#include <stddef.h>
#include <string.h>

#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define Py_T_PYSSIZET T_PYSSIZET
#define Py_READONLY READONLY
#endif

#define STATE_KEY "bunpy._bunpy"

typedef struct {
    PyObject_HEAD
    bp_port *port;
    int32_t id;
    vectorcallfunc vectorcall;
} bp_jsfunc;

/* ---- per-interpreter state lookup ------------------------------------------------------ */

static _Thread_local int64_t cached_interp_id = -1;
static _Thread_local bp_interp *cached_state;

bp_interp *bp_interp_get(void) {
    PyInterpreterState *interp = PyInterpreterState_Get();
    int64_t id = PyInterpreterState_GetID(interp);
    if (id == cached_interp_id) return cached_state;
    PyObject *d = PyInterpreterState_GetDict(interp); /* borrowed */
    PyObject *m = d ? PyDict_GetItemString(d, STATE_KEY) : NULL; /* borrowed */
    if (!m) return NULL;
    cached_interp_id = id;
    cached_state = PyModule_GetState(m);
    return cached_state;
}

/* A function from bunpy._codec (borrowed: the module keeps it alive), loaded on first use. */
PyObject *bp_interp_helper(bp_interp *st, const char *name) {
    if (!st->helpers) {
        st->helpers = PyImport_ImportModule("bunpy._codec");
        if (!st->helpers) return NULL;
        st->datetime_type = PyObject_GetAttrString(st->helpers, "datetime");
        if (!st->datetime_type) return NULL;
    }
    PyObject *fn = PyObject_GetAttrString(st->helpers, name);
    if (!fn) return NULL;
    Py_DECREF(fn);
    return fn;
}

/* ---- calling into JS -------------------------------------------------------------------- */

/* target >= 0: a JS function id; -1: a function registered by name (`name`); <= -2: the
   stack of the Error in slot -2 - target of the JS thread's table (jserror.c). */
static PyObject *call_js(bp_interp *st, bp_port *p, int32_t target, PyObject *name, PyObject *const *args,
                         Py_ssize_t nargs, PyObject *kwnames) {
    bp_port *here = bp_current_port;
    /* a first read of JSError.js_stack asks JS too: say that, not "JS function" */
    static const char stack_elsewhere[] =
        "bunpy: JSError.js_stack is first read on the JS thread that threw the error (JS keeps the "
        "stack there until then); read it there, in the except block, to keep it";
    if (!here || !pthread_equal(here->owner, pthread_self())) {
        PyErr_SetString(PyExc_RuntimeError,
                        target <= -2 ? stack_elsewhere
                                     : "bunpy: JS functions can only be called from the JS thread that is calling into "
                                       "Python (not from a Python thread started with `threading`)");
        return NULL;
    }
    if (!p) p = here;
    if (p != here) {
        PyErr_SetString(PyExc_RuntimeError,
                        target <= -2 ? stack_elsewhere : "bunpy: this JS function belongs to another JS thread (a Bun Worker)");
        return NULL;
    }
    if (p->no_dispatch) {
        PyErr_SetString(PyExc_RuntimeError,
                        "bunpy: JS cannot be called from Python code that bunpy runs while it converts a value "
                        "or drops references (a tzinfo, __hash__, items() or __del__)");
        return NULL;
    }
    if (atomic_load(&p->closed) || !p->dispatch) {
        PyErr_SetString(PyExc_RuntimeError, "bunpy: the JS side of this function is gone");
        return NULL;
    }
    nargs = PyVectorcall_NARGS(nargs);
    bp_writer w;
    bp_writer_init(&w, &p->io, 0);
    p->no_dispatch++; /* the conversion may run Python code: it must not call JS meanwhile */
    int rc = bp_write_call(&w, name, args, nargs, kwnames);
    p->no_dispatch--;
    if (rc) {
        bp_writer_abort(&w);
        if (rc != BP_ERR_PYTHON) PyErr_Format(PyExc_TypeError, "bunpy: cannot pass to JS: %s", w.error);
        return NULL;
    }
    bp_writer_commit(&w); /* handles in the arguments now belong to JS */

    /* Release the GIL while JS runs so that Python threads keep going — unless this is
       the interpreter's only thread: then nobody could use it, and keeping it saves a
       release and a re-acquire (nested bp_ calls see `held` and do not take it again). */
    PyThreadState *ts = PyThreadState_Get();
    int alone = PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(ts)) == ts && !PyThreadState_Next(ts);
    int32_t status;
    if (alone) {
        status = p->dispatch(&p->io, target);
    } else {
        p->held = 0;
        PyEval_SaveThread();
        status = p->dispatch(&p->io, target);
        PyEval_RestoreThread(ts);
        p->held = 1;
    }

    if (status == BP_OK) {
        bp_reader r;
        bp_reader_init(&r, &p->io, 0);
        r.st = st;
        return bp_read_value(&r, 0);
    }
    if (status == BP_ERR_JS) {
        bp_reader r;
        bp_reader_init(&r, &p->io, 0);
        r.st = st;
        return bp_raise_js_error(st, &r);
    }
    PyErr_Format(PyExc_RuntimeError, "bunpy: calling into JS failed (status %d)", (int)status);
    return NULL;
}

PyObject *bp_call_js_target(bp_interp *st, bp_port *p, int32_t target) {
    return call_js(st, p, target, NULL, NULL, 0, NULL);
}

/* bunpy.call(name, *args, **kwargs) */
static PyObject *mod_call(PyObject *m, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "bunpy.call(name, *args, **kwargs): name must be a str");
        return NULL;
    }
    bp_interp *st = PyModule_GetState(m);
    if (!bp_current_port && bp_this_context) /* on a context's thread: through its JS port */
        return bp_context_call_js(st, args[0], args + 1, nargs - 1, kwnames);
    return call_js(st, NULL, -1, args[0], args + 1, nargs - 1, kwnames);
}

/* The checks shared by call_start and call_start_batched; 0 when the call may go. */
static int async_call_checks(PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "bunpy.async_call(name, *args, **kwargs): name must be a str");
        return -1;
    }
    if (!bp_this_context || bp_current_port) {
        PyErr_SetString(PyExc_RuntimeError, "bunpy: call_start works only on a context's thread");
        return -1;
    }
    return 0;
}

/* _bunpy.call_start(name, *args, **kwargs): the first half of bunpy.async_call in a context */
static PyObject *mod_call_start(PyObject *m, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (async_call_checks(args, nargs) < 0) return NULL;
    return bp_context_call_start(PyModule_GetState(m), args[0], args + 1, nargs - 1, kwnames);
}

/* _bunpy.call_start_batched(name, *args, **kwargs): the same on the context's own loop */
static PyObject *mod_call_start_batched(PyObject *m, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (async_call_checks(args, nargs) < 0) return NULL;
    return bp_context_call_start_batched(PyModule_GetState(m), args[0], args + 1, nargs - 1, kwnames);
}

static PyObject *mod_take_answers(PyObject *m, PyObject *unused) {
    if (!bp_this_context || bp_current_port) {
        PyErr_SetString(PyExc_RuntimeError, "bunpy: take_answers works only on a context's thread");
        return NULL;
    }
    return bp_context_take_answers();
}

static PyObject *mod_answers_fd(PyObject *m, PyObject *unused) {
    if (!bp_this_context || bp_current_port) {
        PyErr_SetString(PyExc_RuntimeError, "bunpy: answers_fd works only on a context's thread");
        return NULL;
    }
    return PyLong_FromLong(bp_this_context->answers.rd);
}

static PyObject *mod_call_finish(PyObject *m, PyObject *handle) {
    return bp_context_call_finish(PyModule_GetState(m), handle);
}

static PyObject *mod_refused(PyObject *m, PyObject *rule) {
    (void)m;
    const char *s = PyUnicode_Check(rule) ? PyUnicode_AsUTF8(rule) : NULL;
    if (!s) {
        PyErr_SetString(PyExc_TypeError, "refused(rule): rule must be a str");
        return NULL;
    }
    return PyBool_FromLong(bp_policy_refuses(s));
}

static PyObject *mod_in_context(PyObject *m, PyObject *unused) {
    (void)m;
    (void)unused;
    return PyBool_FromLong(bp_this_context != NULL && bp_current_port == NULL);
}

/* bunpy.send(channel, value) */
static PyObject *mod_send(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "bunpy.send(channel, value): channel must be a str");
        return NULL;
    }
    return bp_send(PyModule_GetState(m), args[0], args[1]);
}

static PyObject *mod_port(PyObject *m, PyObject *unused) {
    (void)m;
    (void)unused;
    return bp_port_capsule();
}

static PyObject *mod_port_send(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    (void)m;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "port_send(port, channel, value) takes 3 arguments");
        return NULL;
    }
    return bp_port_send(args[0], args[1], args[2]);
}

/* ---- JSFunction ----------------------------------------------------------------------------- */

static PyObject *jsfunc_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    bp_jsfunc *f = (bp_jsfunc *)self;
    bp_interp *st = PyType_GetModuleState(Py_TYPE(self));
    return call_js(st, f->port, f->id, NULL, args, (Py_ssize_t)nargsf, kwnames);
}

static void jsfunc_dealloc(PyObject *self) {
    bp_jsfunc *f = (bp_jsfunc *)self;
    PyTypeObject *tp = Py_TYPE(self);
    if (f->port) {
        if (!atomic_load(&f->port->closed)) bp_port_release_id(f->port, f->id);
        bp_port_unref(f->port);
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *jsfunc_repr(PyObject *self) {
    return PyUnicode_FromFormat("<JS function #%d>", (int)((bp_jsfunc *)self)->id);
}

static PyMemberDef jsfunc_members[] = {
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(bp_jsfunc, vectorcall), Py_READONLY, NULL},
    {NULL},
};

static PyType_Slot jsfunc_slots[] = {
    {Py_tp_dealloc, jsfunc_dealloc},
    {Py_tp_repr, jsfunc_repr},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_members, jsfunc_members},
    {Py_tp_doc, "A JavaScript function passed to Python; calling it runs it on its JS thread."},
    {0, NULL},
};

static PyType_Spec jsfunc_spec = {
    .name = "bunpy.JSFunction",
    .basicsize = sizeof(bp_jsfunc),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = jsfunc_slots,
};

PyObject *bp_jsfunc_new(bp_interp *st, bp_port *port, int32_t id) {
    bp_jsfunc *f = PyObject_New(bp_jsfunc, st->jsfunc_type);
    if (!f) return NULL;
    f->port = port;
    f->id = id;
    f->vectorcall = jsfunc_vectorcall;
    atomic_fetch_add(&port->refs, 1);
    return (PyObject *)f;
}

/* ---- module ------------------------------------------------------------------------------------ */

static int mod_exec(PyObject *m) {
    bp_interp *st = PyModule_GetState(m);
    static const char *const names[BP_NAME_COUNT] = {
        [BP_NAME_WHEN] = "_when", [BP_NAME_CANCELLED] = "_cancelled", [BP_NAME_SCHEDULED] = "_scheduled",
        [BP_NAME_RUN] = "_run", [BP_NAME_POPLEFT] = "popleft", [BP_NAME_APPEND] = "append",
        [BP_NAME_CONTEXT] = "_context", [BP_NAME_CALLBACK] = "_callback", [BP_NAME_ARGS] = "_args",
        [BP_NAME_LOOP] = "_loop", [BP_NAME_REPR] = "_repr", [BP_NAME_SOURCE_TRACEBACK] = "_source_traceback",
        [BP_NAME_REMOVE_READER] = "_remove_reader", [BP_NAME_REMOVE_WRITER] = "_remove_writer",
        [BP_NAME_BUNPY_STEP] = "_bunpy_step", [BP_NAME_BUNPY_START] = "_bunpy_start", [BP_NAME_DONE] = "done",
        [BP_NAME_RESULT] = "result", [BP_NAME_ASYNCIO] = "asyncio", [BP_NAME_CURRENT_TASK] = "current_task",
    };
    for (int i = 0; i < BP_NAME_COUNT; i++)
        if (!(st->names[i] = PyUnicode_InternFromString(names[i]))) return -1;
    if (bp_jserror_init(m, st) < 0) return -1;
    st->jsfunc_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &jsfunc_spec, NULL);
    if (!st->jsfunc_type || PyModule_AddObjectRef(m, "JSFunction", (PyObject *)st->jsfunc_type) < 0) return -1;
    if (bp_buffers_init(m, st) < 0) return -1;
    PyObject *reactor = bp_reactor_type_new(m);
    if (!reactor || PyModule_AddObjectRef(m, "Reactor", reactor) < 0) {
        Py_XDECREF(reactor);
        return -1;
    }
    Py_DECREF(reactor);
    /* Found again by bp_interp_get; the interpreter dict keeps the module alive until the
       interpreter itself goes. */
    PyObject *d = PyInterpreterState_GetDict(PyInterpreterState_Get());
    if (!d) {
        PyErr_SetString(PyExc_RuntimeError, "bunpy: no interpreter dict");
        return -1;
    }
    return PyDict_SetItemString(d, STATE_KEY, m);
}

static int mod_traverse(PyObject *m, visitproc visit, void *arg) {
    bp_interp *st = PyModule_GetState(m);
    if (!st) return 0;
    Py_VISIT(st->jserror_type);
    Py_VISIT(st->jserror_last[2]);
    Py_VISIT(st->jsfunc_type);
    Py_VISIT(st->jsbuf_type);
    Py_VISIT(st->helpers);
    Py_VISIT(st->datetime_type);
    return 0;
}

static int mod_clear(PyObject *m) {
    bp_interp *st = PyModule_GetState(m);
    if (!st) return 0;
    Py_CLEAR(st->jserror_type);
    Py_CLEAR(st->jsfunc_type);
    Py_CLEAR(st->jsbuf_type);
    Py_CLEAR(st->helpers);
    Py_CLEAR(st->datetime_type);
    for (int i = 0; i < BP_NAME_COUNT; i++) Py_CLEAR(st->names[i]);
    for (int i = 0; i < BP_STR_MEMO; i++) Py_CLEAR(st->str_memo[i]);
    bp_shape_memo_clear(st);
    for (int i = 0; i < 3; i++) Py_CLEAR(st->jserror_last[i]);
    cached_interp_id = -1;
    return 0;
}

static void mod_free(void *m) { mod_clear((PyObject *)m); }

static PyObject *mod_finish_parked(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "finish_parked(token, task)");
        return NULL;
    }
    return bp_loop_finish_parked(args[0], args[1]);
}

static PyObject *mod_sleep(PyObject *m, PyObject *arg) {
    double s = PyFloat_AsDouble(arg);
    if (s == -1 && PyErr_Occurred()) return NULL;
    return bp_sleep(s);
}

static PyMethodDef mod_methods[] = {
    {"shared_get", (PyCFunction)(void (*)(void))bp_shared_py_get, METH_FASTCALL, "shared_get(key, default=None)\n--\n\nbunpy.shared.get"},
    {"shared_set", (PyCFunction)(void (*)(void))bp_shared_py_set, METH_FASTCALL, "shared_set(key, value)\n--\n\nbunpy.shared.set"},
    {"shared_cas", (PyCFunction)(void (*)(void))bp_shared_py_cas, METH_FASTCALL, "shared_cas(key, expected, value)\n--\n\nbunpy.shared.compare_and_set"},
    {"shared_incr", (PyCFunction)(void (*)(void))bp_shared_py_incr, METH_FASTCALL, "shared_incr(key, delta=1)\n--\n\nbunpy.shared.incr"},
    {"shared_delete", bp_shared_py_delete, METH_O, "shared_delete(key)\n--\n\nbunpy.shared.delete"},
    {"shared_keys", bp_shared_py_keys, METH_NOARGS, "shared_keys()\n--\n\nbunpy.shared.keys"},
    {"_view", (PyCFunction)(void (*)(void))bp_view_open, METH_FASTCALL, "_view(obj, prev=None)\n--\n\nInternal (py.view): keeps a buffer of obj for a JS view."},
    {"_view_close", bp_view_close, METH_O, "_view_close(record)\n--\n\nInternal: releases a view JS could not make."},
    {"_views_live", bp_views_live, METH_NOARGS, "_views_live()\n--\n\nInternal: buffers still held for JS views."},
    {"finish_parked", (PyCFunction)(void (*)(void))mod_finish_parked, METH_FASTCALL,
     "finish_parked(token, task)\n--\n\nInternal: a task started for a JS call ended."},
    {"sleep", mod_sleep, METH_O,
     "sleep(seconds)\n--\n\nSleep with the GIL released; a cancel of the running call or the context's close ends it."},
    {"call", (PyCFunction)(void (*)(void))mod_call, METH_FASTCALL | METH_KEYWORDS,
     "call(name, *args, **kwargs)\n--\n\nCall the JS function registered as `name` with py.register()."},
    {"call_start", (PyCFunction)(void (*)(void))mod_call_start, METH_FASTCALL | METH_KEYWORDS,
     "call_start(name, *args, **kwargs) -> (handle, fd)\n--\n\nInternal: queue a JS call; fd is readable once answered."},
    {"call_finish", mod_call_finish, METH_O, "call_finish(handle)\n--\n\nInternal: the answer of a call_start call."},
    {"call_start_batched", (PyCFunction)(void (*)(void))mod_call_start_batched, METH_FASTCALL | METH_KEYWORDS,
     "call_start_batched(name, *args, **kwargs) -> (handle, key)\n--\n\nInternal: queue a JS call answered through answers_fd()."},
    {"take_answers", mod_take_answers, METH_NOARGS, "take_answers() -> [key]\n--\n\nInternal: batched calls answered since the last take."},
    {"answers_fd", mod_answers_fd, METH_NOARGS, "answers_fd() -> fd\n--\n\nInternal: readable when batched calls were answered."},
    {"in_context", mod_in_context, METH_NOARGS, "in_context()\n--\n\nTrue on a context's thread."},
    {"refused", mod_refused, METH_O, "refused(rule)\n--\n\nWhether the sandbox policy of this thread refuses `rule`."},
    {"guard_extensions", (PyCFunction)(void (*)(void))bp_guard_extensions, METH_FASTCALL,
     "guard_extensions(refused, allowed, dir)\n--\n\nInternal: check every extension load of this interpreter."},
    {"echo_floor", (PyCFunction)(void (*)(void))bp_echo_floor, METH_FASTCALL,
     "echo_floor(size, conns, round_trips) -> seconds\n--\n\nInternal (bench): the echo of bench/loop.bench.ts in C only, no loop."},
    {"port", mod_port, METH_NOARGS, "port() -> the calling JS thread's port (a capsule), while JS calls in."},
    {"port_send", (PyCFunction)(void (*)(void))mod_port_send, METH_FASTCALL,
     "port_send(port, channel, value): bunpy.send to that JS thread, from any thread of the main interpreter."},
    {"send", (PyCFunction)(void (*)(void))mod_send, METH_FASTCALL,
     "send(channel, value)\n--\n\nDeliver `value` to the JS listeners of `channel` (py.on) without waiting."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot mod_slots[] = {
    {Py_mod_exec, mod_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static PyModuleDef mod_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_bunpy",
    .m_doc = "bunpy's C side: calls into JS.",
    .m_size = sizeof(bp_interp),
    .m_methods = mod_methods,
    .m_slots = mod_slots,
    .m_traverse = mod_traverse,
    .m_clear = mod_clear,
    .m_free = mod_free,
};

PyObject *bp_module_init(void) { return PyModuleDef_Init(&mod_def); }
