/*
 * serve.c — running requests on a context's thread: resolving the target, running the
 * call / eval / exec / handle operation, starting awaitable results as tasks on the
 * context's loop, and writing and handing each result to JS (bp_ctx_complete_with).
 * Context thread, GIL held throughout.
 */
#include "internal.h"
#include "context.h"
#include <string.h>

static PyObject *resolve_module(bp_context *c, PyObject *name) {
    if (PyUnicode_CompareWithASCIIString(name, "__main__") == 0) return Py_NewRef(c->main_module);
    if (bp_check_module_name(name) < 0) return NULL;
    PyObject *m = PyImport_GetModule(name);
    if (m || PyErr_Occurred()) return m;
    return PyImport_Import(name);
}

static PyObject *run_request(bp_context *c, bp_request *req, int *deep, int32_t *read_failed) {
    bp_reader r = {.buf = req->data, .pos = 0, .end = req->len, .port = NULL, .st = NULL};
    switch (req->op) {
    case BP_REQ_CALL: {
        PyObject *modname = bp_read_str(&r);
        PyObject *fname = modname ? bp_read_str(&r) : NULL;
        PyObject *mod = fname ? resolve_module(c, modname) : NULL;
        PyObject *fn = mod ? PyObject_GetAttr(mod, fname) : NULL;
        PyObject *v = fn ? bp_read_call(&r, fn, read_failed) : NULL;
        Py_XDECREF(fn);
        Py_XDECREF(mod);
        Py_XDECREF(fname);
        Py_XDECREF(modname);
        return v;
    }
    case BP_REQ_EVAL:
    case BP_REQ_EXEC: {
        PyObject *src = bp_read_str(&r);
        if (!src) return NULL;
        PyObject *code = bp_compile_source(src, req->op == BP_REQ_EVAL ? "<ctx.eval>" : "<ctx.exec>",
                                           req->op == BP_REQ_EVAL ? Py_eval_input : Py_file_input);
        Py_DECREF(src);
        if (!code) return NULL;
        PyObject *g = PyModule_GetDict(c->main_module);
        PyObject *v = PyEval_EvalCode(code, g, g);
        Py_DECREF(code);
        if (v && req->op == BP_REQ_EXEC) Py_SETREF(v, Py_NewRef(Py_None));
        return v;
    }
    case BP_REQ_REF_CALL: {
        PyObject *fn = bp_read_value(&r, 0);
        PyObject *v = fn ? bp_read_call(&r, fn, read_failed) : NULL;
        Py_XDECREF(fn);
        return v;
    }
    case BP_REQ_REF_GETATTR: {
        PyObject *o = bp_read_value(&r, 0);
        PyObject *name = o ? bp_read_str(&r) : NULL;
        PyObject *v = name ? PyObject_GetAttr(o, name) : NULL;
        Py_XDECREF(name);
        Py_XDECREF(o);
        return v;
    }
    case BP_REQ_REF_TOJS:
        *deep = 1;
        return bp_read_value(&r, 0);
    case BP_REQ_REF_DROP: {
        /* LIST of handles this context gave out: JS dropped them (one ref each). */
        uint32_t n;
        if (r.end - r.pos < 5 || r.buf[r.pos] != BP_T_LIST) return Py_NewRef(Py_None);
        r.pos++;
        if (bp_read_u32(&r, &n) < 0) return NULL;
        for (uint32_t i = 0; i < n && r.end - r.pos >= 9; i++) {
            PyObject *o;
            memcpy(&o, r.buf + r.pos + 1, 8);
            r.pos += 9;
            Py_XDECREF(o);
        }
        return Py_NewRef(Py_None);
    }
    default:
        PyErr_Format(PyExc_ValueError, "bunpy: unknown request %d", req->op);
        return NULL;
    }
}

/* A call whose result is awaitable (an `async def`'s coroutine, a Future) settles when it
   finishes: its Promise follows the task, as a JS async function's would. */
static int awaited(bp_request *req, PyObject *v) {
    if (req->op != BP_REQ_CALL && req->op != BP_REQ_REF_CALL && req->op != BP_REQ_EVAL) return 0;
    if (PyCoro_CheckExact(v)) return 1;
    PyAsyncMethods *am = Py_TYPE(v)->tp_as_async;
    return am && am->am_await;
}

/* `current` changes only with the context's GIL held (thread-state rules, context.c). */
static void set_current(bp_context *c, bp_request *r) {
    c->current = r;
    atomic_store(&c->running_seq, r ? atomic_load(&r->seq) : 0);
}

/* Runs one request on the context thread (GIL held) and completes it, unless its result
   is an awaitable that goes on as a task on the context's loop. */
void bp_ctx_serve(bp_context *c, bp_request *req) {
    bp_request *outer = c->current; /* set when this request runs inside a JS callback's wait */
    req->outer = outer;
    atomic_store(&req->seq, ++c->seq);
    set_current(c, req);
    /* after set_current: bp_ctx_cancel sets `cancelled` then reads running_seq, so either
       we see the flag here or it sees this request running and interrupts it */
    if (atomic_load(&req->cancelled)) {
        set_current(c, outer);
        bp_request_fail(req, BP_ERR_STATE, "cancelled before it started");
        return;
    }
    if (atomic_load(&c->hard_close)) { /* close()'s grace period is over: nothing new starts */
        set_current(c, outer);
        bp_request_fail(req, BP_ERR_STATE, "the context was closed before this call started");
        return;
    }
    /* An interrupt aimed at the outer call (which waits for JS) must not hit this one, nor
       one that arrived as this request finished hit the next. Clearing takes a runtime-wide
       lock, so it is done only when an interrupt was delivered. */
    if (outer && atomic_load(&c->interrupts)) {
        atomic_store(&c->interrupts, 0);
        PyThreadState_SetAsyncExc(c->ident, NULL);
    }
    int deep = 0;
    int32_t read_failed = 0;
    PyObject *v = run_request(c, req, &deep, &read_failed);
    int parked = 0;
    if (v && awaited(req, v)) {
        /* still the current request: a coroutine's first step is part of the call (its
           JS calls go to the caller, a cancel interrupts it) */
        PyObject *awaitable = v;
        v = bp_loop_start(c, req, awaitable, &parked);
        Py_DECREF(awaitable);
    }
    set_current(c, outer);
    if (atomic_load(&c->interrupts)) {
        atomic_store(&c->interrupts, 0);
        PyThreadState_SetAsyncExc(c->ident, NULL);
    }
    if (parked) return; /* completed when its task ends */
    bp_ctx_complete_with(c, req, v, deep, read_failed);
}

/* Writes the result of a request (or the Python error set when v is NULL; v is stolen)
   and hands it to JS. */
void bp_ctx_complete_with(bp_context *c, bp_request *req, PyObject *v, int deep, int32_t read_failed) {
    bp_io *io = &c->scratch;
    int32_t status;
    c->no_js++; /* writing may run Python code (a tzinfo, items(), __del__): it must not call JS */
    if (!v) {
        status = read_failed ? bp_fail_read(io) : bp_fail_python(io);
    } else {
        bp_writer w;
        bp_writer_init(&w, io, deep);
        int rc = bp_write_value(&w, v, 0);
        Py_DECREF(v);
        if (rc) {
            status = bp_fail_writer(&w, rc);
        } else {
            bp_writer_commit(&w);
            status = BP_OK;
        }
    }
    c->no_js--;
    if (req->op == BP_REQ_REF_DROP) {
        bp_request_free(req);
        return;
    }
    atomic_fetch_add(&c->completed, 1);
    if (c->mode == BP_CTX_WORKER) {
        /* the main GIL: never hold it while handing a result to JS */
        PyThreadState *ts = PyEval_SaveThread();
        bp_request_complete(req, status, io->buf, io->len);
        PyEval_RestoreThread(ts);
    } else {
        bp_request_complete(req, status, io->buf, io->len);
    }
    bp_io_trim(io, 0);
}
