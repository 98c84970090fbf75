/*
 * bell.c — a sandboxed owngil context rings JS threads' doorbells through a thread of its own.
 *
 * A JS thread's doorbell is a threadsafe JSCallback, and Bun's code for it writes that JS
 * thread's event-loop eventfd *by its number* from whichever thread rings. A sandboxed
 * owngil context's threads have an fd table of their own (fdtable.c), so if they rang
 * themselves that number would have to stay open in their table — and then code in the
 * context could read Bun's eventfd and swallow the JS thread's wake-ups (measured: awaited
 * calls on *other* contexts stalled for up to a second), or clear its O_NONBLOCK. Instead
 * the context queues the port here and writes `fd`, an eventfd of its own made before its
 * thread started; the ringer thread, made by the JS thread in the process's shared table,
 * rings the doorbells. The context's table then keeps no eventfd but its own.
 *
 * The cost is one thread hop per doorbell (a doorbell rings only when a port's queue goes
 * from empty to non-empty while JS is not polling), for sandboxed owngil contexts only.
 *
 * Lifetime: the bell is shared by the context (until its last reference goes) and the
 * ringer thread, which is detached: a doorbell of a JS thread that just ended may never
 * return, so the context waits for the ringer to end for a moment only (then its fd is
 * closed when the context is), not forever. Whoever drops the last reference frees it.
 */
#include "internal.h"
#include "context.h"
#include <errno.h>
#include <poll.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

struct bp_bell {
    atomic_int refs;      /* the context's and the ringer thread's */
    atomic_int stopping;  /* the context is gone: ring what is queued, then end */
    sem_t ended;          /* posted by the ringer as it ends */
    int fd;               /* eventfd: written by the context's threads, read by the ringer */
    pthread_mutex_t lock; /* guards the two lists below */
    bp_port **queued;     /* ports to ring (a reference held on each), no duplicates */
    size_t n, cap;
    bp_port **spare;      /* the ringer's list, swapped with `queued` (no allocation per ring) */
    size_t spare_cap;
};

static void bell_unref(bp_bell *b) {
    if (atomic_fetch_sub(&b->refs, 1) != 1) return;
    for (size_t i = 0; i < b->n; i++) bp_port_unref(b->queued[i]);
    if (b->fd >= 0) close(b->fd);
    pthread_mutex_destroy(&b->lock);
    sem_destroy(&b->ended);
    free(b->queued);
    free(b->spare);
    free(b);
}

static void *ringer_main(void *arg) {
    bp_bell *b = arg;
    for (;;) {
        struct pollfd pfd = {.fd = b->fd, .events = POLLIN};
        if (poll(&pfd, 1, -1) < 0) continue; /* EINTR */
        uint64_t v;
        if (read(b->fd, &v, sizeof v) < 0) { /* EAGAIN: someone else read it; look anyway */ }
        pthread_mutex_lock(&b->lock);
        bp_port **ring = b->queued;
        size_t n = b->n, cap = b->cap;
        b->queued = b->spare;
        b->cap = b->spare_cap;
        b->n = 0;
        b->spare = ring;
        b->spare_cap = cap;
        pthread_mutex_unlock(&b->lock);
        for (size_t i = 0; i < n; i++) {
            bp_port *p = ring[i];
            if (bp_port_alive(p) && p->doorbell) p->doorbell(&p->io);
            bp_port_unref(p);
        }
        /* stop() writes the fd under the lock after setting `stopping`: closing it here
           under the lock cannot race that write onto a number reused meanwhile */
        pthread_mutex_lock(&b->lock);
        int done = atomic_load(&b->stopping) && b->n == 0;
        if (done) {
            close(b->fd);
            b->fd = -1;
        }
        pthread_mutex_unlock(&b->lock);
        if (done) break;
    }
    sem_post(&b->ended);
    bell_unref(b);
    return NULL;
}

bp_bell *bp_bell_new(void) {
    bp_bell *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    b->cap = b->spare_cap = 4; /* a port per JS thread that calls the context: few */
    b->queued = malloc(b->cap * sizeof *b->queued);
    b->spare = malloc(b->spare_cap * sizeof *b->spare);
    if (b->fd < 0 || !b->queued || !b->spare) goto fail;
    pthread_mutex_init(&b->lock, NULL);
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
    pthread_mutex_destroy(&b->lock);
    sem_destroy(&b->ended);
fail:
    if (b->fd >= 0) close(b->fd);
    free(b->queued);
    free(b->spare);
    free(b);
    return NULL;
}

int bp_bell_fd(const bp_bell *b) { return b->fd; }

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
            uint64_t one = 1;
            ssize_t w = write(b->fd, &one, sizeof one);
            (void)w; /* only fails when the counter is full: the ringer is awake anyway */
        }
    }
    pthread_mutex_unlock(&b->lock);
}

void bp_bell_stop(bp_bell *b) {
    pthread_mutex_lock(&b->lock);
    atomic_store(&b->stopping, 1);
    uint64_t one = 1;
    ssize_t w = write(b->fd, &one, sizeof one);
    (void)w;
    pthread_mutex_unlock(&b->lock);
    /* its eventfd is gone when the context is, unless a doorbell holds the ringer up */
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
