/*
 * bench.c — the baseline that bench/call.bench.ts compares py.call against: one FFI call
 * that takes the GIL, calls a cached Python callable with two ints and returns an int,
 * with no codec and no lookups. It is the floor for a synchronous call into Python.
 */
#include "internal.h"

int32_t bp_bench_prepare(bp_io *io, void *callable) {
    bp_port *p = bp_port_of(io);
    if (!bp_running() || p->held) return BP_ERR_STATE;
    PyEval_RestoreThread(p->ts);
    Py_XSETREF(p->bench_fn, Py_XNewRef((PyObject *)callable));
    PyEval_SaveThread();
    return BP_OK;
}

int64_t bp_bench_call(bp_io *io, int64_t a, int64_t b) {
    bp_port *p = bp_port_of(io);
    if (!bp_running() || p->held || !p->bench_fn) return -1;
    PyEval_RestoreThread(p->ts);
    PyObject *args[2] = {PyLong_FromLongLong(a), PyLong_FromLongLong(b)};
    PyObject *r = args[0] && args[1] ? PyObject_Vectorcall(p->bench_fn, args, 2, NULL) : NULL;
    Py_XDECREF(args[0]);
    Py_XDECREF(args[1]);
    long long v = r ? PyLong_AsLongLong(r) : -1;
    Py_XDECREF(r);
    PyErr_Clear();
    PyEval_SaveThread();
    return v;
}
