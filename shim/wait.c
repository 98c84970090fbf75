/*
 * wait.c — how a context's thread waits: for requests when idle (spin, then sleep on the
 * wake-up fd: wakefd.c), and for JS while Python code waits on a callback (bp_ctx_wait_serving,
 * which serves requests that arrive meanwhile); what cuts a wait short (a cancel, close);
 * and taking the next request off the queue in order.
 */
#include "internal.h"
#include "context.h"
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <unistd.h>

/* bunpy-host: what its ring holds goes onto the queue first (see bp_ctx_set_feed). */
static inline void feed(bp_context *c) {
    bp_feed_fn fn = atomic_load_explicit(&c->feed, memory_order_acquire);
    if (fn) fn(c->feed_arg, atomic_load_explicit(&c->sleeping, memory_order_relaxed));
}

void bp_ctx_set_feed(bp_context *c, bp_feed_fn fn, void *arg, int32_t fd) {
    c->feed_arg = arg;
    c->feed_fd = fd;
    atomic_store_explicit(&c->feed, fn, memory_order_release);
}

int bp_ctx_has_work(bp_context *c) {
    feed(c);
    return !bp_mpsc_empty(&c->requests) || atomic_load(&c->task_cancels) != c->task_cancels_seen;
}

void bp_ctx_alert(bp_context *c) {
    bp_wakefd_post(c->alert.wr);
}

/* A request arrived. */
static inline int has_work(bp_context *c) {
    feed(c);
    return !bp_mpsc_empty(&c->requests);
}

const char *bp_ctx_wait_cut(bp_context *c, bp_request *owner) {
    if (owner && atomic_load(&owner->cancelled)) return "bunpy: the call was cancelled from JS (timeout or AbortSignal)";
    if (atomic_load(&c->close_gen)) return "bunpy: the context is closing";
    return NULL;
}

void bp_ctx_raise_interrupted(bp_context *c, const char *msg) {
    /* an interrupt already set for this run would fire on top of this one: drop it */
    if (atomic_exchange(&c->interrupts, 0)) PyThreadState_SetAsyncExc(c->ident, NULL);
    PyErr_SetString(c->interrupt_type ? c->interrupt_type : PyExc_KeyboardInterrupt, msg);
}

/* Sleeps on the context's wake-up fd until bp_ctx_wake (or timeout_ms, -1: none), unless
   `ready` is already true once `sleeping` is announced. GIL released by the caller. */
void bp_ctx_sleep(bp_context *c, int (*ready)(bp_context *, void *), void *arg, int timeout_ms) {
    atomic_store(&c->sleeping, 1);
    if (!ready(c, arg)) { /* re-checked after announcing: a producer that saw 0 pushed before */
        /* bunpy-host: its feed's producer rings feed_fd (ready() announced the sleep) */
        int feed_fd = atomic_load_explicit(&c->feed, memory_order_acquire) ? c->feed_fd : -1;
        struct pollfd pfd[2] = {{.fd = c->wake.rd, .events = POLLIN}, {.fd = feed_fd, .events = POLLIN}};
        int n;
        /* the caller looks again when this returns early (fdtable.c: the number may name a
           file nobody writes) */
        if (c->own_fds && (timeout_ms < 0 || timeout_ms > BP_OWN_FDS_WAIT_MS)) timeout_ms = BP_OWN_FDS_WAIT_MS;
        while ((n = poll(pfd, feed_fd >= 0 ? 2 : 1, timeout_ms)) < 0 && errno == EINTR) {
        }
        if (n > 0 && (pfd[0].revents & POLLIN)) bp_wakefd_drain(c->wake.rd, c->own_fds);
        if (n > 0 && feed_fd >= 0 && (pfd[1].revents & POLLIN)) bp_wakefd_drain(feed_fd, 0);
    }
    atomic_store(&c->sleeping, 0);
}

static int work_ready(bp_context *c, void *unused) {
    (void)unused;
    return has_work(c);
}

/* Waits until ready(c, arg): spins briefly, then sleeps on the wake-up fd. Releases the GIL. */
static void wait_for(bp_context *c, int (*ready)(bp_context *, void *), void *arg) {
    PyThreadState *ts = PyEval_SaveThread();
    int64_t until = bp_now_ns() + SPIN_NS;
    /* sched_yield, not a pause loop: on a machine with fewer cores than busy threads the
       spinning context must give its core to the JS thread that produces its work. */
    while (!ready(c, arg) && bp_now_ns() < until) sched_yield();
    if (!ready(c, arg)) bp_ctx_sleep(c, ready, arg, -1);
    PyEval_RestoreThread(ts);
}

void bp_ctx_wait_for_work(bp_context *c) { wait_for(c, work_ready, NULL); }

/* A wait for JS: answered, a request to serve, or cut (cancel, close). */
typedef struct {
    atomic_int *flag;
    bp_request *owner;
} js_wait;

static int js_wait_over(bp_context *c, void *arg) {
    js_wait *w = arg;
    return atomic_load(w->flag) || has_work(c) || bp_ctx_wait_cut(c, w->owner);
}

/* The next request to run, in order: from the batch taken off the queue last time, or a
   new batch. Kept in the context (not a local) so a dying thread can still fail it. */
bp_request *bp_ctx_next_request(bp_context *c) {
    if (!c->batch) feed(c);
    if (!c->batch) c->batch = bp_mpsc_take(&c->requests);
    bp_node *n = c->batch;
    if (n) c->batch = n->next;
    return (bp_request *)n;
}

/* See context.h. Requests served here run nested inside the waiting one (a stack). */
int bp_ctx_wait_serving(bp_context *c, atomic_int *flag) {
    if (c->depth >= BP_MAX_NESTING) {
        PyErr_Format(PyExc_RecursionError, "bunpy: calls between JS and Python nested deeper than %d levels",
                     BP_MAX_NESTING);
        return -1;
    }
    /* the call this wait belongs to: cancelling it (timeout, AbortSignal) ends the wait */
    js_wait w = {.flag = flag, .owner = bp_ctx_wait_owner(c)};
    const char *cut = NULL;
    c->depth++;
    while (!atomic_load(flag) && !(cut = bp_ctx_wait_cut(c, w.owner))) {
        bp_request *req = bp_ctx_next_request(c);
        if (!req) wait_for(c, js_wait_over, &w);
        else if (req->op == BP_REQ_CLOSE) c->deferred_close = req; /* the main loop ends the context */
        else bp_ctx_serve(c, req);
    }
    c->depth--;
    if (cut && !atomic_load(flag)) {
        bp_ctx_raise_interrupted(c, cut);
        return -2;
    }
    return 0;
}
