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
 * Also here: bunpy.sleep for synchronous code, which waits on the context's alert fd; and
 * the process signals (SIGINT, SIGTERM) that Python code in contexts asked for.
 */
#include "context.h"
#include "reactor.h"
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#define TOKEN_NAME "bunpy.parked"

static PyObject *loop_module(void) { return PyImport_ImportModule("bunpy._loop"); }

/* The context's loop, created on first use (new reference); a new one if code in the
   context closed the old one's reactor (a call queued meanwhile must not run on it). */
static PyObject *context_loop(bp_context *c) {
    if (c->loop && !c->loop_reactor) bp_loop_lost(c);
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

#define CLOSED_BEFORE "the context was closed before this call's coroutine finished"

/* Fails every parked request with `why` (their tasks are cancelled by close_context_loop):
   a ContextClosedError in JS, or a Python RuntimeError (as_python) while the context lives. */
static void fail_parked(bp_context *c, int with_python, const char *why, int as_python) {
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
        if (as_python) {
            PyErr_SetString(PyExc_RuntimeError, why);
            bp_ctx_complete_with(c, r, NULL, 0, 0);
        } else {
            bp_request_fail(r, BP_ERR_STATE, why);
        }
    }
}

static void close_loop(bp_context *c, const char *why, int as_python) {
    fail_parked(c, 1, why, as_python);
    if (!c->loop && !c->loop_reactor) return;
    PyObject *m = loop_module();
    PyObject *v = m ? PyObject_CallMethod(m, "close_context_loop", NULL) : NULL;
    if (!v && c->interrupt_type && PyErr_ExceptionMatches(c->interrupt_type)) PyErr_Clear(); /* the watchdog */
    if (!v && PyErr_Occurred()) PyErr_WriteUnraisable(m);
    Py_XDECREF(v);
    Py_XDECREF(m);
    fail_parked(c, 1, why, as_python); /* requests parked while the loop unwound */
    Py_CLEAR(c->loop);
}

void bp_loop_close(bp_context *c) { close_loop(c, CLOSED_BEFORE, 0); }

void bp_loop_lost(bp_context *c) {
    close_loop(c, "bunpy: the context's event loop was closed by code running in it before this call's coroutine finished", 1);
}

void bp_loop_abandon(bp_context *c) {
    fail_parked(c, 0, CLOSED_BEFORE, 0);
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
        /* a cancel or close alerts it by a number the context may have put another file under */
        if (c && c->own_fds && left > (int64_t)BP_OWN_FDS_WAIT_MS * 1000000) left = (int64_t)BP_OWN_FDS_WAIT_MS * 1000000;
        struct timespec ts = {.tv_sec = left / 1000000000, .tv_nsec = left % 1000000000};
        struct pollfd pfd = {.fd = c ? c->alert.rd : -1, .events = POLLIN};
        int n;
        Py_BEGIN_ALLOW_THREADS
        n = ppoll(&pfd, 1, &ts, NULL);
        Py_END_ALLOW_THREADS
        if (n > 0) {
            bp_wakefd_drain(c->alert.rd, c->own_fds);
        } else if (n < 0 && errno == EINTR && PyErr_CheckSignals() < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

/* ---- process signals for contexts ----------------------------------------------------
 *
 * Only the main thread of the main interpreter may install Python signal handlers. In a
 * context, signal.signal(SIGINT|SIGTERM, h) and loop.add_signal_handler subscribe the
 * context's loop here instead (python/bunpy/_signals.py, _loop.py): its reactor claims a
 * slot holding the fd that wakes it (an eventfd, or a sandboxed context's pipe: wakefd.c)
 * and the signals it wants. When the process gets one of them, bp_loop_signal_notify
 * (called from the SIGINT handler in runtime.c and from the SIGTERM handler below) marks
 * it pending in every slot that wants it and writes the slot's fd; the loop's reader on
 * it runs the handlers on the context's thread.
 *
 * The table is process-wide because signals are; a slot belongs to one reactor. Everything
 * the signal handler touches is an atomic, and it only calls write(). A slot being
 * released clears its fd first and then waits for handlers that may still hold the old
 * number (`busy`) before closing it, so a late write never reaches a reused fd.
 */
#define SIG_SLOTS 4096

typedef struct {
    atomic_int claimed;
    atomic_int fd1;        /* the fd written + 1; 0: none      */
    atomic_uint want;      /* BP_SIG_* bits                    */
    atomic_uint pending;
    atomic_int busy;       /* signal handlers reading fd1 now  */
    int owns_fd;           /* closed on release (not a context's sig pipe) */
} sig_slot;

static sig_slot sig_slots[SIG_SLOTS];
static atomic_int sig_used;            /* slots below this index may be in use */
static struct sigaction prev_sigterm;  /* the handler ours stands in front of  */
static atomic_int sigterm_wanted;      /* ours was installed once: keep it in front */

static unsigned sig_bit(int sig) { return sig == SIGINT ? BP_SIG_INT : sig == SIGTERM ? BP_SIG_TERM : 0; }

int bp_loop_signal_notify(int sig) {
    unsigned bit = sig_bit(sig);
    int n = atomic_load(&sig_used), taken = 0;
    for (int i = 0; i < n && bit; i++) {
        sig_slot *s = &sig_slots[i];
        if (!(atomic_load(&s->want) & bit)) continue;
        atomic_fetch_add(&s->busy, 1);
        int fd1 = atomic_load(&s->fd1);
        if (fd1 && (atomic_load(&s->want) & bit)) {
            atomic_fetch_or(&s->pending, bit);
            uint64_t one = 1;
            ssize_t w = write(fd1 - 1, &one, sizeof one);
            (void)w;
            taken++;
        }
        atomic_fetch_sub(&s->busy, 1);
    }
    return taken;
}

/* SIGTERM: the contexts that asked for it get it; the process ends only if none did (and
   JS has no listener: then the previous handler is SIG_DFL). A JS listener still runs. */
static void on_sigterm(int sig, siginfo_t *info, void *uc) {
    int saved_errno = errno;
    int taken = bp_loop_signal_notify(sig);
    struct sigaction prev = prev_sigterm;
    if (!(prev.sa_flags & SA_SIGINFO) && (prev.sa_handler == SIG_IGN || prev.sa_handler == SIG_DFL)) {
        if (!taken && prev.sa_handler == SIG_DFL) {
            signal(sig, SIG_DFL);
            raise(sig); /* delivered when this handler returns */
        }
        errno = saved_errno;
        return;
    }
    errno = saved_errno;
    if (prev.sa_flags & SA_SIGINFO) prev.sa_sigaction(sig, info, uc);
    else prev.sa_handler(sig);
}

static void install_sigterm(void) {
    struct sigaction cur;
    if (sigaction(SIGTERM, NULL, &cur) != 0) return;
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_sigterm) return;
    prev_sigterm = cur;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigterm;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
}

/* JS added or removed a SIGTERM listener (Bun replaced the handler): ours back in front. */
void bp_loop_signals_refresh(void) {
    if (atomic_load(&sigterm_wanted)) install_sigterm();
}

int bp_loop_signals_claim(int fd, int owns_fd) {
    for (int i = 0; i < SIG_SLOTS; i++) {
        int free_slot = 0;
        if (!atomic_compare_exchange_strong(&sig_slots[i].claimed, &free_slot, 1)) continue;
        atomic_store(&sig_slots[i].pending, 0);
        sig_slots[i].owns_fd = owns_fd;
        atomic_store(&sig_slots[i].fd1, fd + 1);
        int used = atomic_load(&sig_used);
        while (used < i + 1 && !atomic_compare_exchange_weak(&sig_used, &used, i + 1)) {
        }
        return i;
    }
    return -1;
}

void bp_loop_signals_want(int slot, unsigned mask) {
    if (mask & BP_SIG_TERM && !atomic_exchange(&sigterm_wanted, 1)) install_sigterm();
    atomic_store(&sig_slots[slot].want, mask);
}

unsigned bp_loop_signals_take(int slot) { return atomic_exchange(&sig_slots[slot].pending, 0); }

void bp_loop_signals_release(int slot) {
    sig_slot *s = &sig_slots[slot];
    atomic_store(&s->want, 0);
    int fd1 = atomic_exchange(&s->fd1, 0);
    while (atomic_load(&s->busy)) sched_yield(); /* a handler on another thread, writing */
    if (fd1 && s->owns_fd) close(fd1 - 1);
    atomic_store(&s->pending, 0);
    atomic_store(&s->claimed, 0);
}
