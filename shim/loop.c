/*
 * loop.c — a context's event loop (python/bunpy/_loop.py) as seen from its thread.
 *
 * The context thread alternates: serve the queued requests, then run one iteration of
 * the loop, whose wait (reactor.c) also ends when a request arrives. A request whose
 * result is awaitable is "parked": its awaitable runs as a task on the loop and the
 * request is completed by the task's done-callback (bp_loop_finish_parked). JS cancelling
 * a parked request bumps `task_cancels` and wakes the thread, which cancels the task.
 *
 * A parked request is reached from Python only through its token, a capsule whose
 * context pointer is the request; the pointer is cleared when the request completes or
 * is failed at close, so a late done-callback finds nothing.
 *
 * Also here: bunpy.sleep for synchronous code, which waits on the context's alert fd.
 */
#include "context.h"
#include <errno.h>
#include <poll.h>
#include <unistd.h>

#define TOKEN_NAME "bunpy.parked"

static PyObject *loop_module(void) { return PyImport_ImportModule("bunpy._loop"); }

/* The context's loop, created on first use (new reference). */
static PyObject *context_loop(bp_context *c) {
    if (c->loop) return Py_NewRef(c->loop);
    PyObject *m = loop_module();
    PyObject *loop = m ? PyObject_CallMethod(m, "context_loop", NULL) : NULL;
    Py_XDECREF(m);
    if (loop) c->loop = Py_NewRef(loop);
    return loop;
}

static void unlink_parked(bp_context *c, bp_request *r) {
    if (r->park_prev) r->park_prev->park_next = r->park_next;
    else c->parked = r->park_next;
    if (r->park_next) r->park_next->park_prev = r->park_prev;
    r->park_prev = r->park_next = NULL;
    atomic_store(&r->parked, 0);
    PyCapsule_SetContext(r->token, NULL);
    Py_CLEAR(r->token);
}

static void cancel_task(PyObject *task) {
    PyObject *v = PyObject_CallMethod(task, "cancel", NULL);
    if (!v) PyErr_WriteUnraisable(task);
    Py_XDECREF(v);
}

PyObject *bp_loop_start(bp_context *c, bp_request *req, PyObject *awaitable, int *parked) {
    *parked = 0;
    PyObject *loop = context_loop(c);
    if (!loop) return NULL;
    PyObject *token = PyCapsule_New(c, TOKEN_NAME, NULL);
    if (!token || PyCapsule_SetContext(token, req) < 0) {
        Py_XDECREF(token);
        Py_DECREF(loop);
        return NULL;
    }
    bp_interp *st = bp_interp_get();
    PyObject *start_args[] = {loop, awaitable, token};
    PyObject *task = PyObject_VectorcallMethod(st->names[BP_NAME_BUNPY_START], start_args, 3, NULL);
    Py_DECREF(loop);
    PyObject *done = task ? PyObject_CallMethodNoArgs(task, st->names[BP_NAME_DONE]) : NULL;
    int finished = done ? PyObject_IsTrue(done) : -1;
    Py_XDECREF(done);
    if (finished != 0) { /* finished in its first step, or could not start */
        PyObject *v = finished > 0 ? PyObject_CallMethodNoArgs(task, st->names[BP_NAME_RESULT]) : NULL;
        Py_XDECREF(task);
        Py_DECREF(token);
        return v;
    }
    req->task = task;
    req->token = token; /* the same capsule the done-callback will present */
    req->park_prev = NULL;
    req->park_next = c->parked;
    if (c->parked) c->parked->park_prev = req;
    c->parked = req;
    atomic_store(&req->parked, 1);
    *parked = 1;
    /* a cancel that came before `parked` was set did not bump task_cancels */
    if (atomic_load(&req->cancelled)) cancel_task(task);
    return NULL;
}

PyObject *bp_loop_finish_parked(PyObject *token, PyObject *task) {
    if (!PyCapsule_IsValid(token, TOKEN_NAME)) {
        PyErr_SetString(PyExc_TypeError, "finish_parked: not a bunpy token");
        return NULL;
    }
    bp_request *req = PyCapsule_GetContext(token);
    bp_context *c = bp_this_context;
    if (!req || !c || PyCapsule_GetPointer(token, TOKEN_NAME) != c) Py_RETURN_NONE; /* failed at close */
    unlink_parked(c, req);
    PyObject *t = req->task;
    req->task = NULL;
    PyObject *v = PyObject_CallMethodNoArgs(task, bp_interp_get()->names[BP_NAME_RESULT]);
    Py_XDECREF(t);
    bp_ctx_complete_with(c, req, v, 0, 0);
    Py_RETURN_NONE;
}

void bp_loop_cancel_tasks(bp_context *c) {
    c->task_cancels_seen = atomic_load(&c->task_cancels);
    for (bp_request *r = c->parked; r; r = r->park_next)
        if (atomic_load(&r->cancelled) && r->task) cancel_task(r->task);
}

bp_request *bp_loop_running_request(bp_context *c) {
    if (!c->parked || !c->loop) return NULL;
    bp_interp *st = bp_interp_get();
    if (!st) return NULL;
    PyObject *const *names = st->names;
    PyObject *asyncio = PyImport_GetModule(names[BP_NAME_ASYNCIO]);
    PyObject *task = asyncio ? PyObject_CallMethodOneArg(asyncio, names[BP_NAME_CURRENT_TASK], c->loop) : NULL;
    Py_XDECREF(asyncio);
    if (!task) {
        PyErr_Clear();
        return NULL;
    }
    bp_request *found = NULL;
    for (bp_request *r = c->parked; r && !found; r = r->park_next)
        if (r->task == task) found = r;
    Py_DECREF(task);
    return found;
}

bp_request *bp_ctx_wait_owner(bp_context *c) { return c->current ? c->current : bp_loop_running_request(c); }

void bp_loop_step(bp_context *c) {
    PyObject *loop = context_loop(c); /* it may have been made by Python code (get_event_loop) */
    /* this thread alone writes steps and in_step: plain release stores, no locked ops */
    atomic_store_explicit(&c->steps, atomic_load_explicit(&c->steps, memory_order_relaxed) + 1, memory_order_release);
    atomic_store_explicit(&c->in_step, 1, memory_order_release);
    PyObject *v = loop ? PyObject_CallMethodNoArgs(loop, bp_interp_get()->names[BP_NAME_BUNPY_STEP]) : NULL;
    atomic_store_explicit(&c->in_step, 0, memory_order_release);
    Py_XDECREF(loop);
    /* an interrupt meant for a task that has ended since must not hit the next callback */
    if (atomic_load_explicit(&c->interrupts, memory_order_relaxed) && atomic_exchange(&c->interrupts, 0))
        PyThreadState_SetAsyncExc(c->ident, NULL);
    if (!v && c->interrupt_type && PyErr_ExceptionMatches(c->interrupt_type)) {
        PyErr_Clear(); /* it ended the task it was raised in: that task's call completes */
    } else if (!v) {
        PyErr_WriteUnraisable(c->loop); /* SystemExit or KeyboardInterrupt out of a callback */
    }
    Py_XDECREF(v);
}

/* Fails every parked request (their tasks are cancelled by close_context_loop). */
static void fail_parked(bp_context *c, int with_python) {
    while (c->parked) {
        bp_request *r = c->parked;
        if (with_python) {
            PyObject *task = r->task;
            r->task = NULL;
            unlink_parked(c, r);
            /* a task that ended (interrupted) before its done-callback ran: its call fails
               here, so its exception is taken here (asyncio would log it as never retrieved) */
            PyObject *x = task ? PyObject_CallMethod(task, "exception", NULL) : NULL;
            Py_XDECREF(x);
            PyErr_Clear();
            Py_XDECREF(task);
        } else { /* the thread is dying: Python objects are abandoned */
            c->parked = r->park_next;
            r->task = r->token = NULL;
        }
        bp_request_fail(r, BP_ERR_STATE, "the context was closed before this call's coroutine finished");
    }
}

void bp_loop_close(bp_context *c) {
    fail_parked(c, 1);
    if (!c->loop && !c->loop_reactor) return;
    PyObject *m = loop_module();
    PyObject *v = m ? PyObject_CallMethod(m, "close_context_loop", NULL) : NULL;
    if (!v && c->interrupt_type && PyErr_ExceptionMatches(c->interrupt_type)) PyErr_Clear(); /* the watchdog */
    if (!v && PyErr_Occurred()) PyErr_WriteUnraisable(m);
    Py_XDECREF(v);
    Py_XDECREF(m);
    fail_parked(c, 1); /* requests parked while the loop unwound */
    Py_CLEAR(c->loop);
}

void bp_loop_abandon(bp_context *c) {
    fail_parked(c, 0);
    c->loop = NULL;
}

/* ---- bunpy.sleep ------------------------------------------------------------------- */

/* Raises bunpy.Interrupted for the cancel of the call it runs for, or the context's close;
   0 otherwise. */
static int interrupted(bp_context *c, bp_request *owner) {
    const char *cut = bp_ctx_wait_cut(c, owner);
    if (!cut) return 0;
    bp_ctx_raise_interrupted(c, cut);
    return -1;
}

PyObject *bp_sleep(double seconds) {
    if (!(seconds >= 0)) { /* also NaN */
        PyErr_SetString(PyExc_ValueError, "sleep length must be a non-negative number");
        return NULL;
    }
    bp_context *c = bp_this_context;
    int64_t deadline = bp_now_ns() + (int64_t)(seconds > 1e9 ? 1e18 : seconds * 1e9);
    bp_request *owner = c ? bp_ctx_wait_owner(c) : NULL;
    for (;;) {
        if (c && interrupted(c, owner) < 0) return NULL;
        int64_t left = deadline - bp_now_ns();
        if (left <= 0) break;
        struct timespec ts = {.tv_sec = left / 1000000000, .tv_nsec = left % 1000000000};
        struct pollfd pfd = {.fd = c ? c->alert_fd : -1, .events = POLLIN};
        int n;
        Py_BEGIN_ALLOW_THREADS
        n = ppoll(&pfd, 1, &ts, NULL);
        Py_END_ALLOW_THREADS
        if (n > 0) {
            uint64_t v;
            ssize_t got = read(c->alert_fd, &v, sizeof v);
            (void)got;
        } else if (n < 0 && errno == EINTR && PyErr_CheckSignals() < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}
