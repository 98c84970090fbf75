/*
 * ring.c — the Bun side of a process context's shared memory (ring.h): creating the sealed
 * memfd and the two bells (pipes), writing request frames, reading result frames (on the relay
 * thread, or on the JS thread while it polls: bp_port_poll), and what happens when the host
 * breaks the rules.
 *
 * Everything read from the shared memory is checked before use (positions, lengths, frame
 * kinds) and copied once; the host may change it at any moment. A violation kills the
 * host: the relay thread then ends the context (ContextDiedError naming the violation).
 * The memfd is sealed against shrinking and growing, so no access to the mapping can fault.
 */
#define _GNU_SOURCE
#include "relay.h"
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* fds below 10 might collide with the numbers the host gets them on (3..6) */
static int high_fd(int fd) {
    if (fd < 0 || fd >= 10) return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    close(fd);
    return moved;
}

/* A bell is a pipe, not an eventfd: O_NONBLOCK belongs to the open file, and an eventfd is
   one open file for both sides. A host could clear it on its copy, fill the counter and
   stop draining it (its main thread watches fd 5: dup2 another fd there), and Bun's next
   write blocked for good, on a JS thread (bp_relay_try_send). A pipe's two ends are open
   files of their own: Bun keeps only its end, which stays non-blocking whatever the host
   does to the other; a full pipe means the reader is woken already (EAGAIN, given up). */
static int bell_pipe(int *ours, int *theirs, int we_write) {
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return -1;
    *ours = high_fd(p[we_write ? 1 : 0]);
    *theirs = high_fd(p[we_write ? 0 : 1]);
    return *ours < 0 || *theirs < 0 ? -1 : 0;
}

int bp_ring_setup(bp_relay *r, char *err, size_t errlen) {
    r->shm_fd = high_fd(memfd_create("bunpy-rings", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    int bells = bell_pipe(&r->host_bell, &r->host_bell_theirs, 1) | bell_pipe(&r->bun_bell, &r->bun_bell_theirs, 0);
    if (r->shm_fd < 0 || bells < 0 || ftruncate(r->shm_fd, BP_SHM_SIZE) < 0 ||
        fcntl(r->shm_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        snprintf(err, errlen, "cannot create the shared memory: %s", strerror(errno));
        return -1;
    }
    void *m = mmap(NULL, BP_SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, r->shm_fd, 0);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "cannot map the shared memory: %s", strerror(errno));
        return -1;
    }
    r->shm = m;
    r->shm->magic = BP_RING_MAGIC;
    r->shm->cap = BP_RING_CAP;
    bp_ring_init(&r->tx, &r->shm->req, (uint8_t *)m + BP_SHM_DATA, BP_RING_CAP);
    bp_ring_init(&r->rx, &r->shm->res, (uint8_t *)m + BP_SHM_DATA + BP_RING_CAP, BP_RING_CAP);
    return 0;
}

void bp_ring_teardown(bp_relay *r) {
    if (r->shm) munmap(r->shm, BP_SHM_SIZE);
    r->shm = NULL;
    if (r->shm_fd >= 0) close(r->shm_fd);
    bp_ring_spawned(r);
    if (r->host_bell >= 0) close(r->host_bell);
    if (r->bun_bell >= 0) close(r->bun_bell);
    r->shm_fd = r->host_bell = r->bun_bell = -1;
    free(r->scratch);
    r->scratch = NULL;
}

void bp_ring_spawned(bp_relay *r) {
    if (r->host_bell_theirs >= 0) close(r->host_bell_theirs);
    if (r->bun_bell_theirs >= 0) close(r->bun_bell_theirs);
    r->host_bell_theirs = r->bun_bell_theirs = -1;
}

void bp_ring_violation(bp_context *c, bp_relay *r, const char *why) {
    if (!r->violation[0]) snprintf(r->violation, sizeof r->violation, "its host process broke the shared memory's rules (%s) and was killed", why);
    r->broken = 1;
    if (r->pid > 0) kill(r->pid, SIGKILL); /* not reaped yet: we hold the lock the reaper takes */
    bp_ctx_wake(c);                        /* the relay thread ends the context */
}

int bp_ring_submit(bp_relay *r, const bp_frame *f, const void *payload) {
    int64_t room = bp_ring_room(&r->tx);
    if (room < 0) return -1;
    if ((uint64_t)room < sizeof *f + f->len) return 0;
    bp_ring_put(&r->tx, f, payload);
    /* pairs with the host's: it announces its sleep, then looks at the ring again */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&r->shm->host_sleeping, memory_order_relaxed)) {
        uint64_t one = 1;
        ssize_t n = write(r->host_bell, &one, sizeof one);
        (void)n;
    }
    return 1;
}

/* The next frame's header, checked. 1: there is one; 0: none; -1: violation (reported). */
static int next_frame(bp_context *c, bp_relay *r, bp_frame *f) {
    int rc = bp_ring_peek(&r->rx, f);
    if (rc < 0) {
        bp_ring_violation(c, r, "an impossible result ring position or frame length");
        return -1;
    }
    if (rc == 1 && f->kind == BP_FRAME_MARK && f->len != 0) {
        bp_ring_violation(c, r, "a MARK frame with a payload");
        return -1;
    }
    return rc;
}

int bp_ring_take(bp_context *c, bp_relay *r, int done_only) {
    if (!r->shm || r->broken) return r->broken ? -1 : 0;
    bp_frame f;
    int rc;
    while ((rc = next_frame(c, r, &f)) == 1) {
        if (f.kind == BP_FRAME_MARK) return 1;
        if (done_only && f.kind != BP_FRAME_DONE) return 1;
        if (f.kind == BP_FRAME_MESSAGE && bp_relay_paused(c)) return 1;
        if (!r->scratch && !(r->scratch = malloc(BP_RING_CAP))) {
            bp_ring_violation(c, r, "out of memory");
            return -1;
        }
        /* a DONE's payload is copied once by bp_request_complete; other payloads are parsed
           here, so they are copied out of the host's reach first */
        const uint8_t *p;
        if (f.kind == BP_FRAME_DONE) {
            p = bp_ring_payload(&r->rx, &f, r->scratch);
        } else {
            bp_ring_read(&r->rx, r->rx.mine + sizeof f, r->scratch, f.len);
            p = r->scratch;
        }
        /* a failed start ends the channel too, without breaking any rule */
        int start_failed = f.kind == BP_FRAME_STARTED && !r->started && c->start && f.arg != BP_OK;
        if (bp_relay_frame(c, r, &f, p) < 0) {
            if (start_failed) r->broken = 1;
            else bp_ring_violation(c, r, "a frame it may not send");
            return -1;
        }
        bp_ring_pop(&r->rx, &f);
    }
    return rc < 0 ? -1 : 0;
}

int bp_ring_pop_mark(bp_relay *r) {
    bp_frame f;
    if (!r->shm || bp_ring_peek(&r->rx, &f) != 1 || f.kind != BP_FRAME_MARK || f.len) return 0;
    bp_ring_pop(&r->rx, &f);
    return 1;
}

int bp_ring_ready(bp_context *c, bp_relay *r) {
    bp_frame f;
    if (!r->shm || r->broken) return 0;
    int rc = bp_ring_peek(&r->rx, &f);
    if (rc < 0) return 1; /* taking it reports the violation */
    return rc == 1 && f.kind != BP_FRAME_MARK && !(f.kind == BP_FRAME_MESSAGE && bp_relay_paused(c));
}

/* ---- the JS thread (bp_port_poll) ---------------------------------------------------- */

/* While JS polls it takes DONE frames itself (no relay thread, no doorbell); the host rings
   the relay only when JS does not poll and the relay sleeps. */
void bp_relay_poll(bp_relay *r, int polling) {
    if (!atomic_load_explicit(&r->ring_ready, memory_order_acquire)) return;
    bp_shm *s = r->shm;
    if (atomic_load_explicit(&s->js_polling, memory_order_relaxed) != (unsigned)polling)
        atomic_store(&s->js_polling, (unsigned)polling);
    atomic_thread_fence(memory_order_seq_cst); /* pairs with the host's after publishing */
    if (!bp_ring_nonempty(&s->res)) return;
    if (pthread_mutex_trylock(&r->lock) != 0) {
        /* the relay thread holds it: it reads, unless it is just going to sleep, having
           looked before the host published (the host saw JS polling and rang nobody).
           A look that ends JS's polling makes sure the relay looks again. */
        if (!polling) bp_wakefd_post(r->ctx->wake.wr); /* (not the host's bell: its write end is the host's too) */
        return;
    }
    if (bp_ring_take(r->ctx, r, 1) == 1) bp_ctx_wake(r->ctx); /* left a frame for the relay */
    pthread_mutex_unlock(&r->lock);
}

void bp_relay_poll_all(bp_relay *list, int polling) {
    for (bp_relay *r = list; r; r = r->port_next) bp_relay_poll(r, polling);
}

void bp_relay_take_all(bp_port *p, void (*each)(bp_context *)) {
    bp_relay *r = p->relays;
    p->relays = NULL;
    while (r) {
        bp_relay *next = r->port_next;
        r->port_next = NULL;
        each(r->ctx);
        r = next;
    }
}

void bp_relay_detach(bp_context *c) {
    bp_port *p = c->owner;
    if (!c->relay || !p) return;
    for (bp_relay **at = &p->relays; *at; at = &(*at)->port_next)
        if (*at == c->relay) {
            *at = c->relay->port_next;
            break;
        }
}
