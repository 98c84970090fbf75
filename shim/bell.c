/*
 * bell.c — a sandboxed owngil context rings JS threads' doorbells through a thread of its own.
 *
 * A JS thread's doorbell is a threadsafe JSCallback, and Bun's code for it writes that JS
 * thread's event-loop eventfd *by its number* from whichever thread rings. A sandboxed
 * owngil context's threads have an fd table of their own (fdtable.c), so if they rang
 * themselves that number would have to stay open in their table — and then code in the
 * context could read Bun's eventfd and swallow the JS thread's wake-ups (measured: awaited
 * calls on *other* contexts stalled for up to a second), or clear its O_NONBLOCK. Instead
 * the context queues the port here and signals a condition variable; the ringer thread,
 * made by the JS thread in the process's shared table, rings the doorbells. No fd is
 * involved, so nothing of the ringer's is in the context's table for its code to drain,
 * close or make blocking: all it could do to the ringer is through memory, which a thread
 * context shares with the process anyway (process contexts are the boundary for that).
 *
 * The cost is one thread hop per doorbell (a doorbell rings only when a port's queue goes
 * from empty to non-empty while JS is not polling), for sandboxed owngil contexts only.
 *
 * One ringer serves every JS thread the context answers. Doorbells are rung through
 * bp_port_ring (io.c), which rings none of a JS thread that is ending, so a ring returns;
 * were one to hang, it would hold up the others of this context, not the context's thread.
 *
 * Lifetime: the bell is shared by the context (until its last reference goes) and the
 * ringer thread, which is detached: the context waits for the ringer to end for a moment
 * only, not forever (a bound, should Bun's code ever block).
 * Whoever drops the last reference frees it.
 */
#include "internal.h"
#include "context.h"
#include <errno.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

struct bp_bell {
    atomic_int refs;      /* the context's and the ringer thread's */
    sem_t ended;          /* posted by the ringer as it ends */
    pthread_mutex_t lock; /* guards what follows */
    pthread_cond_t wake;  /* signalled when a port is queued, or to stop */
    int stopping;         /* the context is gone: ring what is queued, then end */
    bp_port **queued;     /* ports to ring (a reference held on each), no duplicates */
    size_t n, cap;
    bp_port **spare;      /* the ringer's list, swapped with `queued` (no allocation per ring) */
    size_t spare_cap;
};

static void bell_unref(bp_bell *b) {
    if (atomic_fetch_sub(&b->refs, 1) != 1) return;
    for (size_t i = 0; i < b->n; i++) bp_port_unref(b->queued[i]);
    pthread_cond_destroy(&b->wake);
    pthread_mutex_destroy(&b->lock);
    sem_destroy(&b->ended);
    free(b->queued);
    free(b->spare);
    free(b);
}

static void *ringer_main(void *arg) {
    bp_bell *b = arg;
    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (b->n == 0 && !b->stopping) pthread_cond_wait(&b->wake, &b->lock);
        if (b->n == 0) break; /* stopping, and nothing left to ring */
        bp_port **ring = b->queued;
        size_t n = b->n, cap = b->cap;
        b->queued = b->spare;
        b->cap = b->spare_cap;
        b->n = 0;
        b->spare = ring;
        b->spare_cap = cap;
        pthread_mutex_unlock(&b->lock); /* no lock across Bun's code */
        for (size_t i = 0; i < n; i++) {
            bp_port *p = ring[i];
            bp_port_ring(p);
            bp_port_unref(p);
        }
        pthread_mutex_lock(&b->lock);
    }
    pthread_mutex_unlock(&b->lock);
    sem_post(&b->ended);
    bell_unref(b);
    return NULL;
}

bp_bell *bp_bell_new(void) {
    bp_bell *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->cap = b->spare_cap = 4; /* a port per JS thread that calls the context: few */
    b->queued = malloc(b->cap * sizeof *b->queued);
    b->spare = malloc(b->spare_cap * sizeof *b->spare);
    if (!b->queued || !b->spare) goto fail;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->wake, NULL);
    sem_init(&b->ended, 0, 0);
    atomic_init(&b->refs, 2);
    /* no signal handler may run here (Bun's would find its thread state missing) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_t t;
    int rc = pthread_create(&t, &attr, ringer_main, b);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) return b;
    pthread_cond_destroy(&b->wake);
    pthread_mutex_destroy(&b->lock);
    sem_destroy(&b->ended);
fail:
    free(b->queued);
    free(b->spare);
    free(b);
    return NULL;
}

void bp_bell_ring(bp_bell *b, bp_port *p) {
    pthread_mutex_lock(&b->lock);
    size_t i = 0;
    while (i < b->n && b->queued[i] != p) i++;
    if (i == b->n) { /* not queued yet (a queued port is rung once for all its news) */
        if (b->n == b->cap) {
            bp_port **more = realloc(b->queued, 2 * b->cap * sizeof *more);
            if (more) {
                b->queued = more;
                b->cap *= 2;
            }
        }
        if (b->n < b->cap) { /* out of memory: this wake-up is lost, the next ring tries again */
            atomic_fetch_add(&p->refs, 1);
            b->queued[b->n++] = p;
            pthread_cond_signal(&b->wake);
        }
    }
    pthread_mutex_unlock(&b->lock);
}

void bp_bell_stop(bp_bell *b) {
    pthread_mutex_lock(&b->lock);
    b->stopping = 1;
    pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->lock);
    /* the ringer ends with the context, unless a doorbell holds it up: then it ends later */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 200 * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (sem_timedwait(&b->ended, &until) < 0 && errno == EINTR) {}
    bell_unref(b);
}

void bp_ring_doorbell(bp_context *c, bp_port *p) {
    if (c && c->bell) bp_bell_ring(c->bell, p);
    else bp_port_ring(p);
}
