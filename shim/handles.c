/*
 * handles.c — running asyncio's handles from C for _bunpy.Reactor: Handle/TimerHandle
 * callbacks run inside their contextvars context, and one whole loop iteration (run_once)
 * per call from Python. (Handles are made in loopcalls.c.)
 */
#include "reactor.h"

/*
 * Runs one handle as Handle._run does: callback(*args) inside the handle's context; an
 * exception other than SystemExit / KeyboardInterrupt goes to report(handle, exc), which
 * hands it to the loop's exception handler. Subclasses of the handle types run their
 * own _run.
 */
static int run_handle(bp_reactor *r, PyObject *h) {
    if (!r->report || (Py_TYPE(h) != (PyTypeObject *)r->handle_type && Py_TYPE(h) != (PyTypeObject *)r->timer_type)) {
        PyObject *v = PyObject_CallMethodNoArgs(h, NAME(r, RUN));
        Py_XDECREF(v);
        return v ? 0 : -1;
    }
    PyObject *ctx = PyObject_GetAttr(h, NAME(r, CONTEXT));
    PyObject *cb = ctx ? PyObject_GetAttr(h, NAME(r, CALLBACK)) : NULL;
    PyObject *args = cb ? PyObject_GetAttr(h, NAME(r, ARGS)) : NULL;
    PyObject *v = NULL;
    if (args && PyTuple_Check(args) && PyContext_CheckExact(ctx) && PyContext_Enter(ctx) == 0) {
        v = PyObject_Call(cb, args, NULL);
        if (PyContext_Exit(ctx) < 0) Py_CLEAR(v);
    } else if (args && !PyErr_Occurred()) {
        PyErr_SetString(PyExc_TypeError, "bunpy: a malformed asyncio handle");
    }
    Py_XDECREF(ctx);
    Py_XDECREF(cb);
    Py_XDECREF(args);
    if (v) {
        Py_DECREF(v);
        return 0;
    }
    if (PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) return -1;
    PyObject *exc = bp_err_take();
    PyObject *rv = PyObject_CallFunctionObjArgs(r->report, h, exc, NULL);
    Py_DECREF(exc);
    Py_XDECREF(rv);
    return rv ? 0 : -1;
}

/* Runs the handles in the ready deque now (not those they add). */
static int run_ready(bp_reactor *r, PyObject *ready) {
    Py_ssize_t ntodo = PyObject_Length(ready);
    if (ntodo < 0) return -1;
    PyObject *popleft = PyObject_GetAttr(ready, NAME(r, POPLEFT));
    if (!popleft) return -1;
    for (Py_ssize_t i = 0; i < ntodo; i++) {
        PyObject *h = PyObject_CallNoArgs(popleft);
        if (!h) goto fail;
        int c = bp_timer_cancelled(r, h);
        int rc = c == 0 ? run_handle(r, h) : c;
        Py_DECREF(h);
        if (rc < 0) goto fail; /* only SystemExit and KeyboardInterrupt get out */
    }
    Py_DECREF(popleft);
    return 0;
fail:
    Py_DECREF(popleft);
    return -1;
}

/* configure(Handle, TimerHandle, report): lets handles of these exact types run from C. */
PyObject *bp_reactor_configure(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    bp_reactor *r = (bp_reactor *)self;
    if (nargs != 3 || !PyType_Check(args[0]) || !PyType_Check(args[1]) || !PyCallable_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "expected (Handle, TimerHandle, report)");
        return NULL;
    }
    Py_XSETREF(r->handle_type, Py_NewRef(args[0]));
    Py_XSETREF(r->timer_type, Py_NewRef(args[1]));
    Py_XSETREF(r->report, Py_NewRef(args[2]));
    bp_calls_resolve(r);
    Py_RETURN_NONE;
}

PyObject *bp_reactor_run_ready(PyObject *self, PyObject *ready) {
    if (run_ready((bp_reactor *)self, ready) < 0) return NULL;
    Py_RETURN_NONE;
}

/* run_transports(): the C transports' reads and flushes (the Python path of an iteration). */
PyObject *bp_reactor_run_transports(PyObject *self, PyObject *unused) {
    if (bp_transports_run((bp_reactor *)self) < 0) return NULL;
    Py_RETURN_NONE;
}

/*
 * soon(Handle, callback, args, context, loop, ready) -> handle: what loop.call_soon does
 * outside debug mode — an asyncio.Handle made without running its Python __init__ (the
 * same attributes are set), appended to the ready queue.
 */
PyObject *bp_reactor_soon(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    bp_reactor *r = (bp_reactor *)self;
    if (nargs != 6 || args[0] != r->handle_type) { /* only the type configure() vetted */
        PyErr_SetString(PyExc_TypeError, "expected (Handle, callback, args, context, loop, ready) after configure()");
        return NULL;
    }
    PyObject *h = bp_calls_handle(r, args[1], args[2], args[3], args[4]);
    if (!h) return NULL;
    PyObject *v = PyObject_CallMethodOneArg(args[5], NAME(r, APPEND), h);
    if (!v) {
        Py_DECREF(h);
        return NULL;
    }
    Py_DECREF(v);
    return h;
}

/* time.monotonic(), which is what loop.time() returns */
static double monotonic_s(void) { return (double)bp_now_ns() / 1e9; }

/* The reader or writer handle of a ready fd goes to the ready queue; a cancelled one is
   removed instead (as BaseSelectorEventLoop._process_events). */
static int dispatch(bp_reactor *r, PyObject *loop, PyObject *fileobj, PyObject *handle, PyObject *remove, PyObject *append) {
    if (handle == Py_None) return 0;
    int c = bp_timer_cancelled(r, handle);
    if (c < 0) return -1;
    PyObject *v = c ? PyObject_CallMethodOneArg(loop, remove, fileobj) : PyObject_CallOneArg(append, handle);
    Py_XDECREF(v);
    return v ? 0 : -1;
}

/*
 * run_once(loop, ready, stopping, clock_resolution): one iteration of the loop, as
 * BaseEventLoop._run_once without debug mode — wait for I/O (no longer than until the
 * next timer, not at all with callbacks ready), queue the handles of ready fds and due
 * timers, run what is queued. One call from Python per iteration.
 */
PyObject *bp_reactor_run_once(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    bp_reactor *r = (bp_reactor *)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "expected (loop, ready, stopping, clock_resolution)");
        return NULL;
    }
    if (r->epfd < 0) return bp_reactor_closed_error();
    PyObject *loop = args[0], *ready = args[1];
    int stopping = PyObject_IsTrue(args[2]);
    double resolution = PyFloat_AsDouble(args[3]);
    Py_ssize_t queued = PyObject_Length(ready);
    if (stopping < 0 || (resolution == -1 && PyErr_Occurred()) || queued < 0) return NULL;
    double timeout = queued > 0 || stopping ? 0 : bp_timers_timeout(r, monotonic_s());
    if (timeout < 0 && PyErr_Occurred()) return NULL;
    int n = bp_reactor_wait(r, timeout);
    if (n < 0) return NULL;
    PyObject *append = PyObject_GetAttr(ready, NAME(r, APPEND));
    if (!append) return NULL;
    int i = 0, mask = 0;
    for (PyObject *key; (key = bp_reactor_next_key(r, &i, n, &mask));) {
        PyObject *fileobj = PyTuple_GET_ITEM(key, 0), *data = PyTuple_GET_ITEM(key, 3);
        if (!PyTuple_Check(data) || PyTuple_GET_SIZE(data) != 2) continue; /* not a loop's (reader, writer) */
        Py_INCREF(key); /* a callback may unregister the fd before we are done with it */
        int rc = 0;
        if (mask & BP_EVENT_READ) rc = dispatch(r, loop, fileobj, PyTuple_GET_ITEM(data, 0), NAME(r, REMOVE_READER), append);
        if (rc == 0 && mask & BP_EVENT_WRITE) rc = dispatch(r, loop, fileobj, PyTuple_GET_ITEM(data, 1), NAME(r, REMOVE_WRITER), append);
        Py_DECREF(key);
        if (rc < 0) goto fail;
    }
    if (PyErr_Occurred()) goto fail;
    if (bp_timers_pop_due(r, monotonic_s() + resolution, append) < 0) goto fail;
    Py_DECREF(append);
    if (run_ready(r, ready) < 0) return NULL;
    /* C transports: reads and flushes, after the handles (as asyncio's reader handles run
       in this turn, and what they schedule in the next) */
    if (bp_transports_run(r) < 0) return NULL;
    Py_RETURN_NONE;
fail:
    Py_DECREF(append);
    return NULL;
}

