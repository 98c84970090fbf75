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

/*
 * The floor for an awaited call into another thread (bench/contexts.bench.ts): a C thread
 * that, for each ping, calls a threadsafe JSCallback — nothing else. It waits for pings the
 * way an idle context waits for requests (spin yielding the core for SPIN_NS, then sleep on
 * an eventfd), so the difference to `await ctx.call` is bunpy's own work, not the wake-up.
 */
#include "context.h"
#include <sched.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

typedef struct bp_bench_echo {
    atomic_uint pings;
    atomic_int stop;
    atomic_int sleeping;
    int fd;
    void (*cb)(void *);
    pthread_t thread;
} bp_bench_echo;

static void *echo_main(void *arg) {
    bp_bench_echo *e = arg;
    unsigned seen = 0;
    for (;;) {
        int64_t until = bp_now_ns() + SPIN_NS;
        while (atomic_load(&e->pings) == seen && !atomic_load(&e->stop) && bp_now_ns() < until) sched_yield();
        if (atomic_load(&e->pings) == seen && !atomic_load(&e->stop)) {
            atomic_store(&e->sleeping, 1);
            if (atomic_load(&e->pings) == seen && !atomic_load(&e->stop)) {
                uint64_t v;
                ssize_t n = read(e->fd, &v, sizeof v);
                (void)n;
            }
            atomic_store(&e->sleeping, 0);
            continue;
        }
        if (atomic_load(&e->stop)) return NULL;
        seen++;
        e->cb(NULL);
    }
}

void *bp_bench_echo_start(void *cb) {
    bp_bench_echo *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->cb = (void (*)(void *))cb;
    e->fd = eventfd(0, EFD_CLOEXEC);
    if (e->fd < 0 || pthread_create(&e->thread, NULL, echo_main, e) != 0) {
        if (e->fd >= 0) close(e->fd);
        free(e);
        return NULL;
    }
    return e;
}

static void echo_wake(bp_bench_echo *e) {
    if (atomic_exchange(&e->sleeping, 0)) {
        uint64_t one = 1;
        ssize_t n = write(e->fd, &one, sizeof one);
        (void)n;
    }
}

void bp_bench_echo_ping(void *echo) {
    bp_bench_echo *e = echo;
    atomic_fetch_add(&e->pings, 1);
    echo_wake(e);
}

void bp_bench_echo_stop(void *echo) {
    bp_bench_echo *e = echo;
    atomic_store(&e->stop, 1);
    uint64_t one = 1;
    ssize_t n = write(e->fd, &one, sizeof one);
    (void)n;
    pthread_join(e->thread, NULL);
    close(e->fd);
    free(e);
}
