/*
 * request.c — requests between JS threads and contexts: their memory, handing results
 * back (completion queue + doorbell, or a callSync waiter), submitting, callSync,
 * interrupting a running request, and draining completions into JS.
 *
 * A request is one allocation holding its payload; small results are written back into
 * it. It belongs to the context while queued or running, and to JS from the moment it is
 * pushed onto the port's completion queue until bp_port_drain frees it.
 */
#include "context.h"
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Small results (most of them) are written back into the request's own allocation. */
#define BP_INLINE_MIN 64

bp_request *bp_request_new(bp_context *c, bp_io *io, uint32_t id, int32_t op, uint32_t len) {
    uint32_t cap = len < BP_INLINE_MIN ? BP_INLINE_MIN : len;
    bp_request *r = malloc(sizeof *r + cap);
    if (!r) return NULL;
    memset(r, 0, sizeof *r);
    r->inline_cap = cap;
    r->data = r->inline_data;
    if (len) memcpy(r->data, io->buf, len);
    r->len = len;
    r->ctx = c;
    r->id = id;
    r->op = op;
    r->reply = bp_port_of(io);
    /* A reference per request would be two atomic operations on a cache line the context
       thread reads at every completion: the context's owner port is kept by the context
       already (requests never outlive their context's use of it, and JS drains the rest). */
    r->borrowed = r->reply == c->owner;
    if (!r->borrowed) atomic_fetch_add(&r->reply->refs, 1);
    return r;
}

void bp_request_free(bp_request *r) {
    if (r->reply && !r->borrowed) bp_port_unref(r->reply);
    if (r->data != r->inline_data) free(r->data);
    free(r);
}

/* Hands a finished request back to its JS thread. The result is copied out of `src`. */
void bp_request_complete(bp_request *r, int32_t status, const uint8_t *src, uint32_t len) {
    uint8_t *dst = len <= r->inline_cap ? r->inline_data : malloc(len);
    if (!dst) {
        status = BP_ERR_MEMORY;
        len = 0;
        dst = r->inline_data;
    } else if (len) {
        memcpy(dst, src, len);
    }
    if (r->data != r->inline_data) free(r->data);
    r->data = dst;
    r->len = len;
    r->status = status;
    bp_request_deliver(r);
}

void bp_request_deliver(bp_request *r) {
    if (r->sync) {
        sem_t *sync = r->sync; /* the port's: it outlives r, which the waiter may free now */
        atomic_store(&r->done, 1);
        sem_post(sync);
        return;
    }
    bp_port *p = r->reply;
    if (!bp_port_alive(p)) { /* its JS thread is gone: nobody will drain it */
        bp_request_free(r);
        return;
    }
    /* From the push on, r is JS's: bp_port_drain may free it at once, and with it the
       reference r held on a port that is not the context's own (a Bun Worker's port) — the
       last one if that port was freed meanwhile. So such a port is held by a reference of
       our own from before the push until after the doorbell and the sem_post (no lock is
       held across them: references are plain atomics). A borrowed request's port is the
       context's owner, kept by the context, and whoever delivers holds the context. */
    int hold = !r->borrowed;
    bp_context *c = r->ctx; /* read before the push too */
    if (hold) atomic_fetch_add(&p->refs, 1);
    int was_empty = bp_mpsc_push(&p->completions, &r->node);
    /* JS polling (bp_port_poll) finds it without the doorbell. The fence pairs with the one
       in bp_port_poll: either JS sees this completion after it stopped polling, or we see
       that it stopped and ring. */
    atomic_thread_fence(memory_order_seq_cst);
    /* alive again: the JS thread may have ended since the look above */
    if (was_empty && p->doorbell && !atomic_load(&p->js_polling) && bp_port_alive(p)) bp_ring_doorbell(c, p);
    if (atomic_load(&p->sync_waiting)) sem_post(&p->sync_wake);
    if (hold) bp_port_unref(p);
}

static int port_ready(bp_port *p) { return !bp_mpsc_empty(&p->completions) || !bp_mpsc_empty(&p->calls); }

/* JS looks for completions and calls itself for a few µs after sending a call (hub.ts):
   `polling` 1 while it does (completions then ring no doorbell), 0 when it stops. Returns 1
   when completions or calls wait. While polling with nothing there, the JS thread yields
   its core first: a context thread sharing that core (2 cores, other load) then runs at
   once instead of after the poll window. */
int32_t bp_port_poll(bp_io *io, int32_t polling) {
    bp_port *p = bp_port_of(io);
    /* process contexts' results are taken from their rings while `js_polling` is still 1:
       they then ring no doorbell (a poll that stops takes them before it says so) */
    if (polling) atomic_store(&p->js_polling, 1);
    if (p->relays) bp_relay_poll_all(p->relays, polling);
    if (!polling) atomic_store(&p->js_polling, 0);
    atomic_thread_fence(memory_order_seq_cst);
    if (port_ready(p)) return 1;
    if (!polling) return 0;
    sched_yield();
    if (p->relays) bp_relay_poll_all(p->relays, 1);
    return port_ready(p);
}

void bp_request_fail(bp_request *r, int32_t status, const char *msg) {
    bp_io tmp = {0};
    tmp.buf = malloc(256 + strlen(msg));
    if (!tmp.buf) {
        bp_request_complete(r, BP_ERR_MEMORY, NULL, 0);
        return;
    }
    tmp.cap = 256 + (uint32_t)strlen(msg);
    bp_fail_message(&tmp, status, "%s", msg);
    bp_request_complete(r, status, tmp.buf, tmp.len);
    free(tmp.buf);
}

void bp_port_set_doorbell(bp_io *io, bp_doorbell_fn fn) { bp_port_of(io)->doorbell = fn; }

void bp_ctx_wake(bp_context *c) {
    /* a plain load first: an exchange would take the cache line the spinning thread reads */
    if (atomic_load(&c->sleeping) && atomic_exchange(&c->sleeping, 0)) {
        bp_wakefd_post(c->wake.wr);
    }
}

int32_t bp_ctx_push(bp_context *c, bp_request *r) {
    atomic_fetch_add(&c->submitting, 1);
    if (atomic_load(&c->state) >= CTX_CLOSED) {
        atomic_fetch_sub(&c->submitting, 1);
        return BP_ERR_STATE;
    }
    if (c->mode == BP_CTX_PROCESS && bp_relay_try_send(c, r)) { /* relay.c: sent already */
        atomic_fetch_sub(&c->submitting, 1);
        return BP_OK;
    }
    bp_mpsc_push(&c->requests, &r->node);
    atomic_fetch_sub(&c->submitting, 1);
    bp_ctx_wake(c);
    return BP_OK;
}

/* Requests JS may send (the others are internal). */
static int user_op(int32_t op) { return op >= BP_REQ_CALL && op <= BP_REQ_REF_DROP; }

bp_request *bp_ctx_submit(bp_context *c, bp_io *io, uint32_t id, int32_t op, uint32_t len) {
    if (len > io->cap || !user_op(op)) return NULL;
    bp_request *r = bp_request_new(c, io, id, op, len);
    if (!r) return NULL;
    if (bp_ctx_push(c, r) != BP_OK) {
        bp_request_free(r);
        return NULL;
    }
    return r;
}

/* Waits for a sync request; returns BP_CALLS_PENDING (with the request pointer in the
   buffer) when a context calls into JS or JS has completions or messages to take
   meanwhile: JS handles them, then calls bp_ctx_sync_wait. */
static int32_t sync_wait(bp_port *p, bp_request *r, bp_io *io) {
    atomic_fetch_add(&p->sync_waiting, 1);
    for (;;) {
        if (atomic_load(&r->done)) break;
        /* JS must answer calls and drain messages even while it waits here: a context can
           be blocked on either (a message queue at its back-pressure limit). */
        if (!bp_mpsc_empty(&p->calls) || !bp_mpsc_empty(&p->completions)) {
            atomic_fetch_sub(&p->sync_waiting, 1);
            memcpy(io->buf, &r, sizeof r);
            io->len = sizeof r;
            return BP_CALLS_PENDING;
        }
        /* A futex wake-up costs tens of µs: spin a little first, yielding the core. */
        /* Process contexts: their results are read from their rings meanwhile (ring.c),
           and before sleeping their hosts are told to ring their relay threads again. */
        int64_t until = bp_now_ns() + SPIN_NS;
        while (!atomic_load(&r->done) && bp_mpsc_empty(&p->calls) && bp_mpsc_empty(&p->completions) &&
               bp_now_ns() < until) {
            sched_yield();
            if (p->relays) bp_relay_poll_all(p->relays, 1);
        }
        if (p->relays) bp_relay_poll_all(p->relays, 0); /* JS polls nothing while blocked here */
        if (atomic_load(&r->done) || !bp_mpsc_empty(&p->calls) || !bp_mpsc_empty(&p->completions)) continue;
        while (sem_wait(&p->sync_wake) < 0 && errno == EINTR) {
        }
    }
    if (p->relays) bp_relay_poll_all(p->relays, atomic_load(&p->js_polling));
    atomic_fetch_sub(&p->sync_waiting, 1);
    while (sem_trywait(&p->sync_wake) == 0) { /* wake-ups nobody slept for: drop them */
    }
    int32_t status = r->status;
    if (bp_io_reserve(io, r->len) == BP_OK) {
        if (r->len) memcpy(io->buf, r->data, r->len);
        io->len = r->len;
    } else {
        status = BP_ERR_MEMORY;
    }
    bp_request_free(r);
    return status;
}

int32_t bp_ctx_call_sync(bp_context *c, bp_io *io, int32_t op, uint32_t len) {
    if (len > io->cap || !user_op(op) || op == BP_REQ_REF_DROP) return BP_ERR_MEMORY;
    bp_request *r = bp_request_new(c, io, 0, op, len);
    if (!r) return BP_ERR_MEMORY;
    bp_port *p = bp_port_of(io);
    r->sync = &p->sync_wake;
    if (bp_ctx_push(c, r) != BP_OK) {
        bp_request_free(r);
        return bp_fail_message(io, BP_ERR_STATE, "the context is closed");
    }
    return sync_wait(p, r, io);
}

int32_t bp_ctx_sync_wait(bp_context *c, bp_io *io, bp_request *r) {
    if (r->ctx != c) return BP_ERR_STATE;
    return sync_wait(bp_port_of(io), r, io);
}

/*
 * Interrupts: bunpy.Interrupted (a KeyboardInterrupt, which asyncio's handles and tasks do
 * not swallow) raised as an async exception in the context thread, from a helper thread
 * that enters the context's interpreter (so JS never waits for the context's GIL). For a
 * cancelled call it is repeated, less and less often, for as long as that call still runs
 * (Python code may catch it); it is only raised while the call's own code is what runs:
 *   - a call running now (innermost `current`): at once;
 *   - a parked call (a task on the loop): when its task is seen running in the same loop
 *     iteration twice in a row (a task spinning after an await) — a suspended task is
 *     cancelled by the context itself (task_cancels);
 *   - a call waiting for JS with a nested call running: not at all (its wait ends by itself).
 * seq 0 is one delivery for the close watchdog: whatever runs is interrupted.
 */
typedef struct {
    bp_context *ctx;
    uint64_t seq; /* the run of the request to interrupt (addresses get reused); 0: anything */
} interrupt_job;

static void deliver(bp_context *c) {
    atomic_store(&c->interrupts, 1);
    PyThreadState_SetAsyncExc(c->ident, c->interrupt_type ? c->interrupt_type : PyExc_KeyboardInterrupt);
    /* waiting in an event loop (asyncio.run in a sync call): the exception fires once the
       loop runs bytecode again, so wake it. The fd is set only while the thread waits with
       its GIL released, and the loop cannot be closed while we hold that GIL. */
    int fd = atomic_load(&c->loop_wake_fd);
    if (fd >= 0) {
        /* with an fd table of its own, the loop's fd number means another file here: the
           context's wake fd (in both tables) wakes every loop its thread polls (reactor.c) */
        bp_wakefd_post(c->own_fds ? c->wake.wr : fd);
    }
}

/* One look, with the context's GIL (which keeps `current` and `parked` stable): 1 while the
   run `seq` is still there. */
static int visit(bp_context *c, uint64_t seq, uint64_t *seen_step) {
    pthread_mutex_lock(&c->life_lock);
    int s = atomic_load(&c->state);
    int alive = (s == CTX_RUNNING || s == CTX_CLOSING) && !atomic_load(&c->abandoned);
    if (alive) c->interrupters++;
    pthread_mutex_unlock(&c->life_lock);
    if (!alive) return 0;
    PyThreadState *ts = PyThreadState_New(c->interp);
    PyEval_RestoreThread(ts);
    int keep = 0;
    /* a thread asleep in bunpy's own waits sees cancels and the close by itself */
    int asleep = atomic_load(&c->sleeping);
    if (seq == 0) {
        if (!asleep) deliver(c);
    } else {
        for (bp_request *r = c->current; r && !keep; r = r->outer) {
            if (atomic_load(&r->seq) != seq) continue;
            keep = 1;
            if (r == c->current && !asleep) deliver(c);
        }
        for (bp_request *r = c->parked; r && !keep; r = r->park_next) {
            if (atomic_load(&r->seq) != seq) continue;
            keep = 1;
            uint64_t step = atomic_load(&c->steps);
            int running = !c->current && atomic_load(&c->in_step) && bp_loop_running_request(c) == r;
            if (running && step == *seen_step) deliver(c);
            *seen_step = running ? step : UINT64_MAX;
            if (PyErr_Occurred()) PyErr_Clear();
        }
    }
    PyThreadState_Clear(ts);
    PyThreadState_DeleteCurrent();
    pthread_mutex_lock(&c->life_lock);
    if (--c->interrupters == 0) pthread_cond_broadcast(&c->life_cond);
    pthread_mutex_unlock(&c->life_lock);
    return keep;
}

static void *interrupter_main(void *arg) {
    interrupt_job job = *(interrupt_job *)arg;
    free(arg);
    bp_context *c = job.ctx;
    uint64_t seen_step = UINT64_MAX;
    int pause_ms = 20;
    while (visit(c, job.seq, &seen_step) && job.seq != 0) {
        struct timespec ts = {.tv_sec = pause_ms / 1000, .tv_nsec = (long)(pause_ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
        /* less and less often, up to once a second; a task seen running: look again soon */
        pause_ms = seen_step != UINT64_MAX ? 20 : pause_ms >= 500 ? 1000 : pause_ms * 2;
    }
    if (job.seq == 0) atomic_store(&c->delivering, 0);
    bp_ctx_unref(c);
    return NULL;
}

int32_t bp_interrupter_start(bp_context *c, uint64_t seq) {
    if (seq == 0 && atomic_exchange(&c->delivering, 1)) return BP_OK; /* the last one is still entering */
    interrupt_job *job = malloc(sizeof *job);
    if (!job) {
        if (seq == 0) atomic_store(&c->delivering, 0);
        return BP_ERR_MEMORY;
    }
    job->ctx = c;
    job->seq = seq;
    bp_ctx_ref(c);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, interrupter_main, job);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        free(job);
        if (seq == 0) atomic_store(&c->delivering, 0);
        bp_ctx_unref(c);
        return BP_ERR_MEMORY;
    }
    return BP_OK;
}

/* Cancels a request JS has not seen completed: skipped if not started, interrupted if
   running (a parked one's task is also cancelled by the context). */
int32_t bp_ctx_cancel(bp_context *c, bp_request *req) {
    atomic_store(&req->cancelled, 1);
    int s = atomic_load(&c->state);
    if (!bp_running() || s > CTX_CLOSING) return BP_OK;
    if (c->mode == BP_CTX_PROCESS) { /* the relay sends a CANCEL frame */
        atomic_fetch_add(&c->task_cancels, 1);
        bp_ctx_wake(c);
        return BP_OK;
    }
    uint64_t seq = atomic_load(&req->seq);
    if (seq == 0) return BP_OK; /* not started: the flag makes bp_ctx_serve() skip it */
    if (atomic_load(&req->parked)) atomic_fetch_add(&c->task_cancels, 1); /* the context cancels its task */
    bp_ctx_alert(c); /* ends a bunpy.sleep in progress */
    bp_ctx_wake(c);  /* ends a wait for JS, or the loop's wait (task_cancels) */
    return bp_interrupter_start(c, seq);
}

/* The port's JS thread is ending (io.c; on that thread, the only consumer, after the port
   was closed): results and messages it will never drain are freed, and with them the
   references each message holds on its context, so a closed context is freed too. One
   delivered by a thread that looked at the port just before it closed may still come
   later: it stays until the process exits, as all of them did before. */
void bp_port_drop_completions(bp_port *p) {
    bp_node *list = p->drain_rest;
    p->drain_rest = NULL;
    do {
        while (list) {
            bp_request *r = (bp_request *)list;
            list = list->next;
            if (r->op == BP_REQ_MESSAGE) bp_message_drained(r);
            bp_request_free(r);
        }
    } while ((list = bp_mpsc_take(&p->completions)) != NULL);
}

/* Every completion for this port that fits in one buffer: u32 count, then per request
   u32 id, i32 status, u32 len and len bytes (a value, or an error record). What does not
   fit (more than 4 GiB together, or no memory to grow) stays in `drain_rest` for the next
   call: JS calls again until it gets 0. */
int32_t bp_port_drain(bp_io *io) {
    bp_port *p = bp_port_of(io);
    /* A big result or message grew the buffer: give it back before the next batch (as
       bp_leave does after a call; not inside a call, whose writer may point into it). */
    if (p->depth == 0) bp_io_trim(io, 0);
    bp_node *list = p->drain_rest;
    p->drain_rest = NULL;
    bp_node *fresh = bp_mpsc_take(&p->completions);
    if (!list) list = fresh;
    else if (fresh) { /* append: the leftovers came first */
        bp_node *tail = list;
        while (tail->next) tail = tail->next;
        tail->next = fresh;
    }
    if (!list) return 0;
    /* the longest prefix that fits, at least one record */
    uint32_t count = 0;
    uint64_t need = 4;
    bp_node *last = NULL;
    for (bp_node *n = list; n; n = n->next) {
        uint64_t more = 12 + (uint64_t)((bp_request *)n)->len;
        if (count > 0 && need + more > UINT32_MAX - 16) break;
        need += more;
        count++;
        last = n;
    }
    while (count > 1 && bp_io_reserve(io, (uint32_t)need) != BP_OK) { /* out of memory: take fewer */
        bp_node *prev = list;
        while (prev->next != last) prev = prev->next;
        need -= 12 + (uint64_t)((bp_request *)last)->len;
        last = prev;
        count--;
    }
    if (bp_io_reserve(io, (uint32_t)need) != BP_OK) {
        p->drain_rest = list;
        return BP_ERR_MEMORY;
    }
    p->drain_rest = last->next;
    last->next = NULL;
    uint8_t *b = io->buf;
    memcpy(b, &count, 4);
    uint32_t pos = 4;
    while (list) {
        bp_request *r = (bp_request *)list;
        list = list->next;
        memcpy(b + pos, &r->id, 4);
        memcpy(b + pos + 4, &r->status, 4);
        memcpy(b + pos + 8, &r->len, 4);
        if (r->len) memcpy(b + pos + 12, r->data, r->len);
        pos += 12 + r->len;
        if (r->op == BP_REQ_MESSAGE) bp_message_drained(r);
        bp_request_free(r);
    }
    io->len = pos;
    return (int32_t)count;
}
