/*
 * bell.c — a sandboxed owngil context rings JS threads' doorbells through a thread of its own.
 *
 * A JS thread's doorbell is a threadsafe JSCallback, and Bun's code for it writes that JS
 * thread's event-loop eventfd *by its number* from whichever thread rings. A sandboxed
 * owngil context's threads have an fd table of their own (fdtable.c), so if they rang
 * themselves that number would have to stay open in their table — and then code in the
 * context could read Bun's eventfd and swallow the JS thread's wake-ups (measured: awaited
 * calls on *other* contexts stalled for up to a second), or clear its O_NONBLOCK. Instead
 * the context queues the port here and signals `wake`, a condition variable; the ringer
 * thread, made by the JS thread in the process's shared table, rings the doorbells. The
 * context's table then keeps no eventfd but its own. The bell has no fd at all: an eventfd
 * there could be read by code in the context (it is in its table), and a wake-up it
 * swallowed left the port unrung for good, so that no later completion of *any* context for
 * that JS thread rang it either (its queue was no longer empty): their results stalled.
 *
 * The cost is one thread hop per doorbell (a doorbell rings only when a port's queue goes
 * from empty to non-empty while JS is not polling), for sandboxed owngil contexts only.
 *
 * Lifetime: the bell is shared by the context (until its last reference goes) and the
 * ringer thread, which is detached: a doorbell of a JS thread that just ended may never
 * return, so the context waits for the ringer to end for a moment only, not forever.
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
    atomic_int stopping;  /* the context is gone: ring what is queued, then end */
    sem_t ended;          /* posted by the ringer as it ends */
    pthread_mutex_t lock; /* guards the two lists below and `stopping`'s change */
    pthread_cond_t wake;  /* signalled when a port is queued or the context stops */
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
    for (;;) {
        pthread_mutex_lock(&b->lock);
        while (b->n == 0 && !atomic_load(&b->stopping)) pthread_cond_wait(&b->wake, &b->lock);
        bp_port **ring = b->queued;
        size_t n = b->n, cap = b->cap;
        b->queued = b->spare;
        b->cap = b->spare_cap;
        b->n = 0;
        b->spare = ring;
        b->spare_cap = cap;
        int done = n == 0; /* stopping, and everything queued before was rung */
        pthread_mutex_unlock(&b->lock);
        if (done) break;
        for (size_t i = 0; i < n; i++) {
            bp_port *p = ring[i];
            if (bp_port_alive(p) && p->doorbell) p->doorbell(&p->io);
            bp_port_unref(p);
        }
    }
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
    atomic_init(&b->stopping, 0);
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
    atomic_store(&b->stopping, 1);
    pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->lock);
    /* a doorbell of a JS thread that just ended may hold the ringer up: wait a moment only */
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
    else p->doorbell(&p->io);
}
