/*
 * reactor.c — _bunpy.Reactor: the C core under bunpy's asyncio loop (python/bunpy/_loop.py).
 *
 * One per event loop: an epoll set, an eventfd that wakes the loop from other threads
 * (written only when no wake-up is pending), and the timer store (timers.c). This file
 * holds the type, its life, fd registration and the waits; handles.c runs the loop's
 * handles.
 *
 * File descriptors are registered level-triggered (fact 8 in docs/architecture.md: asyncio transports
 * read once per readiness event, so an edge-triggered registration would lose data).
 * An fd belongs to one reactor: registering it in another removes it from the first
 * (`fd_owner`), so an fd used from another context moves there.
 *
 * A context's own loop also watches the context's wake-up fd (wakefd.c): a request arriving
 * ends the loop's wait, and the context thread (context.c) serves it between two loop
 * iterations.
 */
#include "reactor.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_epoll_pwait2
#define SYS_epoll_pwait2 441
#endif

/* epoll data of the two internal fds; user fds carry their number (< 2^31). */
#define TAG_WAKE (1ULL << 40)
#define TAG_CONTEXT (2ULL << 40)
#define TAG_NUDGE (3ULL << 40) /* edge-triggered: only ends the wait, read by its context */

/* Which epoll set each fd is registered in (epoll fd + 1; 0: none). fds are process-wide,
   so this table is too; fds beyond it are not tracked (they simply do not move). */
#define FD_TRACKED 65536
static atomic_int fd_owner[FD_TRACKED];

/* ---- fd registration ------------------------------------------------------------------ */

static uint32_t epoll_mask(int events) {
    return (events & BP_EVENT_READ ? EPOLLIN : 0) | (events & BP_EVENT_WRITE ? EPOLLOUT : 0);
}

static void take_ownership(bp_reactor *r, int fd) {
    if (fd >= FD_TRACKED) return;
    int prev = atomic_exchange(&fd_owner[fd], r->epfd + 1);
    if (prev && prev != r->epfd + 1) /* registered in another loop: it moves here */
        epoll_ctl(prev - 1, EPOLL_CTL_DEL, fd, NULL);
}

static void release_ownership(bp_reactor *r, int fd) {
    if (fd >= FD_TRACKED) return;
    int mine = r->epfd + 1;
    atomic_compare_exchange_strong(&fd_owner[fd], &mine, 0);
}

/* PyLong_AsInt is 3.13+ */
static int as_int(PyObject *o) {
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v > INT_MAX || v < INT_MIN) {
        PyErr_SetString(PyExc_OverflowError, "value out of range for a C int");
        return -1;
    }
    return (int)v;
}

static int fd_arg(PyObject *o) {
    int fd = as_int(o);
    if (fd == -1 && PyErr_Occurred()) return -1;
    if (fd < 0) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %d", fd);
        return -1;
    }
    return fd;
}

PyObject *bp_reactor_closed_error(void) {
    PyErr_SetString(PyExc_RuntimeError, "bunpy: the event loop's reactor is closed");
    return NULL;
}

/* register(fd, events) / modify(fd, events): level-triggered interest in the fd. */
static PyObject *ctl(bp_reactor *r, PyObject *const *args, Py_ssize_t nargs, int op) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "expected (fd, events)");
        return NULL;
    }
    if (r->epfd < 0) return bp_reactor_closed_error();
    int fd = fd_arg(args[0]);
    int events = fd < 0 ? -1 : as_int(args[1]);
    if (fd < 0 || (events == -1 && PyErr_Occurred())) return NULL;
    struct epoll_event ev = {.events = epoll_mask(events), .data.u64 = (uint64_t)fd};
    int rc = epoll_ctl(r->epfd, op, fd, &ev);
    /* the fd left this set (moved to another loop and back, or closed and reused) */
    if (rc < 0 && op == EPOLL_CTL_MOD && errno == ENOENT) rc = epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev);
    else if (rc < 0 && op == EPOLL_CTL_ADD && errno == EEXIST) rc = epoll_ctl(r->epfd, EPOLL_CTL_MOD, fd, &ev);
    if (rc < 0) return PyErr_SetFromErrno(PyExc_OSError);
    if (op == EPOLL_CTL_ADD) r->nfds++;
    take_ownership(r, fd);
    Py_RETURN_NONE;
}

static PyObject *reactor_register(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return ctl((bp_reactor *)self, args, nargs, EPOLL_CTL_ADD);
}

static PyObject *reactor_modify(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return ctl((bp_reactor *)self, args, nargs, EPOLL_CTL_MOD);
}

int bp_reactor_own(bp_reactor *r, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev = {.events = events, .data.u64 = data};
    int rc = epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev);
    if (rc < 0 && errno == EEXIST) rc = epoll_ctl(r->epfd, EPOLL_CTL_MOD, fd, &ev);
    else if (rc == 0) r->nfds++;
    if (rc == 0) take_ownership(r, fd);
    return rc;
}

void bp_reactor_disown(bp_reactor *r, int fd) {
    if (r->epfd < 0) return;
    if (epoll_ctl(r->epfd, EPOLL_CTL_DEL, fd, NULL) == 0 && r->nfds > 0) r->nfds--;
    release_ownership(r, fd);
}

/* unregister(fd): errors are ignored — the fd may be closed already, or have moved away. */
static PyObject *reactor_unregister(PyObject *self, PyObject *arg) {
    bp_reactor *r = (bp_reactor *)self;
    int fd = fd_arg(arg);
    if (fd < 0) return NULL;
    if (r->epfd >= 0) {
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, fd, NULL);
        release_ownership(r, fd);
    }
    if (r->nfds > 0) r->nfds--;
    Py_RETURN_NONE;
}

/* ---- waiting ----------------------------------------------------------------------- */

static int context_has_work(bp_context *c) { return c && bp_ctx_has_work(c); }

static int wait_events(bp_reactor *r, double timeout) {
    int max = (int)(sizeof r->events / sizeof r->events[0]);
    if (timeout == 0) return epoll_wait(r->epfd, r->events, max, 0);
    struct timespec ts, *tsp = NULL;
    if (timeout > 0) {
        if (timeout > 1e9) timeout = 1e9;
        ts.tv_sec = (time_t)timeout;
        ts.tv_nsec = (long)((timeout - (double)ts.tv_sec) * 1e9);
        tsp = &ts;
    }
    static atomic_int no_pwait2;
    if (!atomic_load(&no_pwait2)) {
        int n = (int)syscall(SYS_epoll_pwait2, r->epfd, r->events, max, tsp, NULL, 0);
        if (n >= 0 || errno != ENOSYS) return n;
        atomic_store(&no_pwait2, 1);
    }
    int ms = tsp ? (int)ceil(timeout * 1e3) : -1; /* millisecond precision only */
    return epoll_wait(r->epfd, r->events, max, ms);
}

/*
 * Before sleeping in epoll, look for work for a short while, yielding the core between
 * looks: waking a sleeping thread costs tens of µs on this kind of machine — more than a
 * loopback round trip or a short call from JS. Returns the number of events found (0 with
 * a request or a wake-up pending), or -1 when the caller should sleep.
 */
static int spin_before_sleep(bp_reactor *r, double timeout, int max) {
    if (timeout == 0) return -1; /* not asked to wait: the caller polls once */
    int64_t spin = SPIN_NS;
    if (timeout > 0 && timeout * 1e9 < (double)spin) spin = (int64_t)(timeout * 1e9);
    int64_t until = bp_now_ns() + spin;
    for (;;) {
        if ((r->ctx && bp_ctx_has_work(r->ctx)) || atomic_load(&r->wake_pending)) return 0;
        if (r->nfds > 0) { /* without user fds only the flags above can change */
            int n = epoll_wait(r->epfd, r->events, max, 0);
            if (n != 0) return n;
        }
        if (bp_now_ns() >= until) return -1;
        sched_yield();
    }
}

/* Waits for events (GIL released); timeout < 0 waits for ever. Returns the event count. */
int bp_reactor_wait(bp_reactor *r, double timeout) {
    if (r->waiting) { /* the events buffer is in use: asyncio loops are not thread-safe either */
        PyErr_SetString(PyExc_RuntimeError, "bunpy: this event loop is already waiting in another thread");
        return -1;
    }
    int pending = atomic_load(&r->wake_pending);
    if (pending || context_has_work(r->ctx) || r->pend_head) timeout = 0;
    /* Nothing to poll, no wake-up to drain and no time to wait: skip the syscall. */
    if (timeout == 0 && r->nfds == 0 && !pending) return 0;
    int max = (int)(sizeof r->events / sizeof r->events[0]);
    int n;
    r->waiting = 1;
    /* an interrupt raised while this thread waits here fires only when bytecode runs
       again: the interrupter wakes the wait through this fd (request.c) */
    bp_context *tc = bp_this_context;
    if (tc && tc->own_fds && r->ctx != tc && !r->nudged) {
        /* an interrupt cannot write this loop's own fd from another fd table (fdtable.c):
           it writes the context's, which this loop now watches too */
        struct epoll_event nudge = {.events = EPOLLIN | EPOLLET, .data.u64 = TAG_NUDGE};
        if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, tc->wake.rd, &nudge) == 0 || errno == EEXIST) r->nudged = 1;
    }
    if (tc) atomic_store(&tc->loop_wake_fd, r->wake_fd);
    /* requests, interrupts and close wake it by a number the context may have put another
       file under (fdtable.c): the wait is cut, the loop looks again (an asyncio loop takes a
       wake-up with no events in its stride) */
    if (r->own_table && (timeout < 0 || timeout > BP_OWN_FDS_WAIT_MS / 1e3)) timeout = BP_OWN_FDS_WAIT_MS / 1e3;
    Py_BEGIN_ALLOW_THREADS
    n = spin_before_sleep(r, timeout, max);
    if (n < 0) {
        if (r->ctx) {
            /* announce the sleep, then look again: a producer that saw `sleeping` clear
               has pushed already (the same handshake as bp_ctx_sleep) */
            atomic_store(&r->ctx->sleeping, 1);
            if (bp_ctx_has_work(r->ctx)) timeout = 0;
        }
        while ((n = wait_events(r, timeout)) < 0 && errno == EINTR) {
        }
        if (r->ctx) atomic_store(&r->ctx->sleeping, 0);
    }
    Py_END_ALLOW_THREADS
    if (tc) atomic_store(&tc->loop_wake_fd, -1);
    r->waiting = 0;
    if (n < 0) PyErr_SetFromErrno(PyExc_OSError);
    return n;
}

/* Event i as selectors reports it: its key (borrowed) and the ready events it asked for;
   NULL key (no error) for the internal fds and fds no longer registered. */
static PyObject *event_key(bp_reactor *r, int i, int *mask) {
    struct epoll_event *ev = &r->events[i];
    if (ev->data.u64 == TAG_NUDGE) return NULL;
    if (ev->data.u64 == TAG_WAKE || ev->data.u64 == TAG_CONTEXT) {
        int fd = ev->data.u64 == TAG_WAKE ? r->wake_fd : r->ctx ? r->ctx->wake.rd : -1;
        if (fd >= 0) bp_wakefd_drain(fd, r->own_table);
        if (ev->data.u64 == TAG_WAKE) atomic_store(&r->wake_pending, 0);
        return NULL;
    }
    if ((ev->data.u64 >> 40) == (BP_TAG_ACCEPT >> 40)) {
        bp_accept_event(r, (int)(ev->data.u64 & 0xffffffffu));
        return NULL;
    }
    if ((ev->data.u64 >> 40) == (BP_TAG_TRANSPORT >> 40)) {
        bp_transport_event(r, ev->data.u64, ev->events);
        return NULL;
    }
    int m = 0;
    if (ev->events & ~(uint32_t)EPOLLIN) m |= BP_EVENT_WRITE; /* as selectors.EpollSelector */
    if (ev->events & ~(uint32_t)EPOLLOUT) m |= BP_EVENT_READ;
    PyObject *fd = PyLong_FromLong((long)ev->data.u64);
    if (!fd) return NULL;
    PyObject *key = PyDict_GetItemWithError(r->keys, fd); /* borrowed */
    Py_DECREF(fd);
    if (!key || !PyTuple_Check(key) || PyTuple_GET_SIZE(key) < 4) return NULL;
    long interest = PyLong_AsLong(PyTuple_GET_ITEM(key, 2));
    if (interest == -1 && PyErr_Occurred()) return NULL;
    *mask = m & (int)interest;
    return *mask ? key : NULL;
}

PyObject *bp_reactor_next_key(bp_reactor *r, int *i, int n, int *mask) {
    while (*i < n) {
        PyObject *key = event_key(r, (*i)++, mask);
        if (key || PyErr_Occurred()) return key;
    }
    return NULL;
}

static double timeout_arg(PyObject *arg) {
    if (arg == Py_None) return -1;
    double t = PyFloat_AsDouble(arg);
    return t < 0 && !PyErr_Occurred() ? 0 : t;
}

/* select(timeout) -> [(key, events)] for the ready user fds; timeout None waits for ever. */
static PyObject *reactor_select(PyObject *self, PyObject *arg) {
    bp_reactor *r = (bp_reactor *)self;
    if (r->epfd < 0) return bp_reactor_closed_error();
    double timeout = timeout_arg(arg);
    if (timeout == -1 && PyErr_Occurred()) return NULL;
    int n = bp_reactor_wait(r, timeout);
    if (n < 0) return NULL;
    PyObject *ready = PyList_New(0);
    if (!ready) return NULL;
    int i = 0, mask = 0;
    for (PyObject *key; (key = bp_reactor_next_key(r, &i, n, &mask));) {
        PyObject *item = Py_BuildValue("(Oi)", key, mask);
        if (!item || PyList_Append(ready, item) < 0) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
    }
    if (PyErr_Occurred()) goto fail;
    return ready;
fail:
    Py_DECREF(ready);
    return NULL;
}

/* wake(): ends a wait from any thread; one write per pending wake-up. */
static PyObject *reactor_wake(PyObject *self, PyObject *unused) {
    bp_reactor *r = (bp_reactor *)self;
    if (r->wake_fd >= 0 && !atomic_exchange(&r->wake_pending, 1)) {
        uint64_t one = 1;
        ssize_t n = write(r->wake_fd, &one, sizeof one);
        (void)n;
    }
    Py_RETURN_NONE;
}


/* signals(mask) -> fd: the process signals (BP_SIG_* bits) this loop wants from now on;
   the fd (an eventfd, owned by the reactor) becomes readable when one arrives. Only a
   context's loop subscribes (see loop.c). */
static PyObject *reactor_signals(PyObject *self, PyObject *arg) {
    bp_reactor *r = (bp_reactor *)self;
    if (r->epfd < 0) return bp_reactor_closed_error();
    long mask = PyLong_AsLong(arg);
    if (mask == -1 && PyErr_Occurred()) return NULL;
    if (mask & ~(long)(BP_SIG_INT | BP_SIG_TERM)) {
        PyErr_SetString(PyExc_ValueError, "signals(mask): unknown signal bits");
        return NULL;
    }
    if (!r->sig_slot) {
        /* a context with its own fd table (fdtable.c) gets its signals through its pipe: the
           handler runs on another thread, in Bun's table, which holds the write end */
        bp_interp *is = bp_interp_get();
        bp_context *oc = is ? is->ctx : NULL;
        int shared = oc && oc->own_fds;
        if (shared && r->ctx != oc) {
            PyErr_SetString(PyExc_RuntimeError, "bunpy: in a sandboxed context only the context's own event loop gets signals");
            return NULL;
        }
        int fd = shared ? oc->sig.wr : eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (fd < 0) return PyErr_SetFromErrno(PyExc_OSError);
        int slot = bp_loop_signals_claim(fd, !shared);
        if (slot < 0) {
            if (!shared) close(fd);
            PyErr_SetString(PyExc_RuntimeError, "bunpy: too many event loops with signal handlers");
            return NULL;
        }
        r->sig_slot = slot + 1;
        r->sig_rd = shared ? oc->sig.rd : fd;
    }
    bp_loop_signals_want(r->sig_slot - 1, (unsigned)mask);
    return PyLong_FromLong(r->sig_rd);
}

/* take_signals() -> the signals (BP_SIG_* bits) that arrived since the last call. */
static PyObject *reactor_take_signals(PyObject *self, PyObject *unused) {
    bp_reactor *r = (bp_reactor *)self;
    if (!r->sig_slot) return PyLong_FromLong(0);
    bp_wakefd_drain(r->sig_rd, r->own_table);
    return PyLong_FromUnsignedLong(bp_loop_signals_take(r->sig_slot - 1));
}

/* ---- life ------------------------------------------------------------------------------ */

static void close_fds(bp_reactor *r) {
    if (r->ctx && r->ctx->loop_reactor == (PyObject *)r) r->ctx->loop_reactor = NULL;
    if (r->epfd >= 0) {
        if (r->keys) { /* fds still registered here are no longer owned by this set */
            PyObject *fd, *key;
            Py_ssize_t pos = 0;
            while (PyDict_Next(r->keys, &pos, &fd, &key)) {
                int n = as_int(fd);
                if (n >= 0) release_ownership(r, n);
                else PyErr_Clear();
            }
        }
        close(r->epfd);
        r->epfd = -1;
    }
    bp_transports_clear(r);
    bp_connects_clear(r);
    bp_accepts_clear(r);
    bp_calls_clear(r);
    if (r->wake_fd >= 0) close(r->wake_fd);
    r->wake_fd = -1;
    r->ctx = NULL;
    if (r->sig_slot) bp_loop_signals_release(r->sig_slot - 1); /* closes its eventfd */
    r->sig_slot = 0;
}

static PyObject *reactor_close(PyObject *self, PyObject *unused) {
    bp_reactor *r = (bp_reactor *)self;
    if (r->waiting) {
        PyErr_SetString(PyExc_RuntimeError, "bunpy: cannot close an event loop that is waiting in another thread");
        return NULL;
    }
    close_fds(r);
    bp_timers_clear(r);
    Py_RETURN_NONE;
}

/* registration("edge" | "level"): how C transports started from now on register their fds
   (transport.c; each keeps the mode it started in); "level" exists to measure what the
   lifetime registration saves. */
static PyObject *reactor_registration(PyObject *self, PyObject *arg) {
    bp_reactor *r = (bp_reactor *)self;
    const char *mode = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (!mode || (strcmp(mode, "edge") != 0 && strcmp(mode, "level") != 0)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "registration(mode): mode is \"edge\" or \"level\"");
        return NULL;
    }
    r->level = mode[0] == 'l';
    Py_RETURN_NONE;
}

static PyObject *reactor_fileno(PyObject *self, PyObject *unused) {
    bp_reactor *r = (bp_reactor *)self;
    if (r->epfd < 0) return bp_reactor_closed_error();
    return PyLong_FromLong(r->epfd);
}

/* Reactor(keys, context=False): context=True on a context's thread makes this the
   context's loop reactor (its requests end waits). */
static PyObject *reactor_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"keys", "context", NULL};
    PyObject *keys;
    int for_context = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!|p:Reactor", names, &PyDict_Type, &keys, &for_context)) return NULL;
    bp_context *c = for_context ? bp_this_context : NULL;
    if (for_context && (!c || c->loop_reactor)) {
        PyErr_SetString(PyExc_RuntimeError, c ? "bunpy: this context has a loop already" : "bunpy: not on a context's thread");
        return NULL;
    }
    bp_interp *st = PyType_GetModuleState(type);
    if (!st) return NULL;
    bp_reactor *r = (bp_reactor *)type->tp_alloc(type, 0);
    if (!r) return NULL;
    r->st = st;
    r->own_table = st->ctx && st->ctx->own_fds;
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    r->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    r->keys = Py_NewRef(keys);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_WAKE};
    if (r->epfd < 0 || r->wake_fd < 0 || epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->wake_fd, &ev) < 0) goto fail;
    if (c) {
        ev.data.u64 = TAG_CONTEXT;
        if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, c->wake.rd, &ev) < 0) goto fail;
        r->ctx = c;
        c->loop_reactor = (PyObject *)r; /* borrowed: cleared when this reactor closes */
    }
    return (PyObject *)r;
fail:
    PyErr_SetFromErrno(PyExc_OSError);
    Py_DECREF(r);
    return NULL;
}

static int reactor_traverse(PyObject *self, visitproc visit, void *arg) {
    bp_reactor *r = (bp_reactor *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(r->keys);
    Py_VISIT(r->handle_type);
    Py_VISIT(r->timer_type);
    Py_VISIT(r->report);
    Py_VISIT(r->call_loop);
    Py_VISIT(r->call_ready);
    for (int i = 0; i < 3; i++) Py_VISIT(r->call_fallback[i]);
    for (Py_ssize_t i = 0; i < r->n; i++) Py_VISIT(r->heap[i].handle);
    for (int fd = 0; fd < r->tcap; fd++) Py_VISIT((PyObject *)r->tmap[fd]);
    for (bp_transport *t = r->pend_head; t; t = t->pend_next) Py_VISIT((PyObject *)t);
    Py_VISIT(r->connecting);
    Py_VISIT(r->buffered_type);
    Py_VISIT(r->listeners);
    return 0;
}

static int reactor_tp_clear(PyObject *self) {
    bp_reactor *r = (bp_reactor *)self;
    Py_ssize_t n = r->n;
    r->n = 0;
    for (Py_ssize_t i = 0; i < n; i++) Py_CLEAR(r->heap[i].handle);
    Py_CLEAR(r->keys);
    Py_CLEAR(r->handle_type);
    Py_CLEAR(r->timer_type);
    Py_CLEAR(r->report);
    Py_CLEAR(r->buffered_type);
    bp_calls_clear(r);
    bp_transports_clear(r);
    bp_connects_clear(r);
    bp_accepts_clear(r);
    return 0;
}

static void reactor_dealloc(PyObject *self) {
    bp_reactor *r = (bp_reactor *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    close_fds(r);
    reactor_tp_clear(self);
    PyMem_Free(r->heap);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef reactor_methods[] = {
    {"register", (PyCFunction)(void (*)(void))reactor_register, METH_FASTCALL, "register(fd, events): watch fd."},
    {"modify", (PyCFunction)(void (*)(void))reactor_modify, METH_FASTCALL, "modify(fd, events): change the interest."},
    {"unregister", reactor_unregister, METH_O, "unregister(fd): stop watching fd."},
    {"select", reactor_select, METH_O, "select(timeout) -> [(key, events)]; None waits for ever."},
    {"wake", reactor_wake, METH_NOARGS, "wake(): end the current or next wait (any thread)."},
    {"push", bp_reactor_push, METH_O, "push(timer_handle): schedule it at its _when."},
    {"cancelled", bp_reactor_cancelled, METH_NOARGS, "cancelled(): a scheduled handle was cancelled."},
    {"timeout", bp_reactor_timeout, METH_O, "timeout(now) -> seconds to the next timer, or None."},
    {"pop_due", (PyCFunction)(void (*)(void))bp_reactor_pop_due, METH_FASTCALL, "pop_due(end, append): due timers to append."},
    {"run_ready", bp_reactor_run_ready, METH_O, "run_ready(deque): run the handles queued now."},
    {"run_transports", bp_reactor_run_transports, METH_NOARGS, "run_transports(): C transports' reads and flushes."},
    {"configure", (PyCFunction)(void (*)(void))bp_reactor_configure, METH_FASTCALL,
     "configure(Handle, TimerHandle, report): run handles of these types from C."},
    {"soon", (PyCFunction)(void (*)(void))bp_reactor_soon, METH_FASTCALL,
     "soon(Handle, callback, args, context, loop, ready) -> handle: call_soon outside debug mode."},
    {"bind", (PyCFunction)(void (*)(void))bp_reactor_bind, METH_FASTCALL,
     "bind(loop, ready, call_soon, call_at, call_later) -> the loop's calls in C (loopcalls.c)."},
    {"calls_mode", (PyCFunction)(void (*)(void))bp_reactor_calls_mode, METH_FASTCALL, "calls_mode(fast, own_clock)."},
    {"run_once", (PyCFunction)(void (*)(void))bp_reactor_run_once, METH_FASTCALL,
     "run_once(loop, ready, stopping, clock_resolution): one loop iteration without debug mode."},
    {"clear", bp_reactor_clear, METH_NOARGS, "clear(): drop every timer."},
    {"close", reactor_close, METH_NOARGS, "close(): close the epoll set and the wake-up fd."},
    {"signals", reactor_signals, METH_O, "signals(mask) -> fd: subscribe to process signals (a context's loop)."},
    {"take_signals", reactor_take_signals, METH_NOARGS, "take_signals() -> the signals that arrived."},
    {"connect_wait", (PyCFunction)(void (*)(void))bp_reactor_connect_wait, METH_FASTCALL,
     "connect_wait(fd, callback): callback(errno or 0) when the connect on fd ends (connect.c)."},
    {"connect_cancel", bp_reactor_connect_cancel, METH_O, "connect_cancel(fd): drop connect_wait's registration."},
    {"accept_start", (PyCFunction)(void (*)(void))bp_reactor_accept_start, METH_FASTCALL,
     "accept_start(fd, callback, backlog): accept in C; callback(fd, address) per connection (accept.c)."},
    {"accept_stop", bp_reactor_accept_stop, METH_O, "accept_stop(fd) -> bool: stop accepting from fd."},
    {"fileno", reactor_fileno, METH_NOARGS, "fileno() -> the epoll fd."},
    {"registration", reactor_registration, METH_O,
     "registration(mode): \"edge\" (default: C transports' fds registered once, edge-triggered) or \"level\"."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot reactor_slots[] = {
    {Py_tp_new, reactor_new},
    {Py_tp_dealloc, reactor_dealloc},
    {Py_tp_traverse, reactor_traverse},
    {Py_tp_clear, reactor_tp_clear},
    {Py_tp_methods, reactor_methods},
    {Py_sq_length, bp_reactor_len},
    {Py_sq_item, bp_reactor_item},
    {Py_tp_doc, "The epoll set, wake-up fd and timer heap of one bunpy event loop."},
    {0, NULL},
};

static PyType_Spec reactor_spec = {
    .name = "_bunpy.Reactor",
    .basicsize = sizeof(bp_reactor),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = reactor_slots,
};

PyObject *bp_reactor_type_new(PyObject *module) {
    PyObject *core = bp_transport_type_new(module); /* _bunpy.StreamCore rides along */
    if (!core || PyModule_AddObjectRef(module, "StreamCore", core) < 0) {
        Py_XDECREF(core);
        return NULL;
    }
    Py_DECREF(core);
    return PyType_FromModuleAndSpec(module, &reactor_spec, NULL);
}
