/*
 * relay.c — process contexts (mode "process"): Python runs in a bunpy-host process
 * (host.c); in the Bun process the context is a bp_context of kind BP_CTX_PROCESS whose
 * thread, instead of running Python, is the relay. Everything JS uses stays the same
 * (the request queue, completions and doorbell, callSync, cancels, calls into JS,
 * messages, close); only what the context thread does with a request differs. The frames
 * travel in the shared-memory rings (ring.h, ring.c) when they fit, else on the socket; the
 * hot path of an awaited call skips this thread entirely (a JS thread writes the SUBMIT
 * into the ring itself, bp_relay_try_send, and reads the DONE itself while it polls,
 * bp_relay_poll): the relay forwards what was queued, reads what JS does not, and owns
 * the socket, the host's life and the close.
 *
 *   request queue ──► SUBMIT (slot, run id, payload as is) ──► host ──► its own context
 *   completion    ◄── DONE (slot, run id, status, payload)  ◄──
 *   bunpy.send    ◄── MESSAGE (origin rewritten to this context)
 *   bunpy.call    ◄── CALL (host handle) ──► the owner port's calls ──► ANSWER
 *   cancel        ──► CANCEL (slot, run id)        close ──► CLOSE (grace ms)
 *
 * The host is not trusted: a DONE completes a request only when its slot holds that run
 * now; an unknown CALL/MESSAGE payload is decoded by JS like any other (it tolerates bad
 * bytes); what it writes into the shared memory is checked on every read (ring.c). When
 * the channel ends (EOF, a protocol error, a ring violation) the host is killed if still
 * there and reaped; the context is dead: what was in flight and every later call fail
 * with BP_ERR_DIED naming the signal or exit code. close(): CLOSE, then SIGKILL once
 * the grace period and BP_ABANDON_MS are over, then reap. No zombie, no fd left.
 */
#define _GNU_SOURCE
#include "context.h"
#include "descendants.h"
#include "relay.h"
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern atomic_int bp_live_contexts;
extern char **environ;


static void relay_release_live(bp_context *c) {
    if (!atomic_exchange(&c->live_released, 1)) atomic_fetch_sub(&bp_live_contexts, 1);
}

/* The host's pidfd, or -1 where the kernel has none (then only EOF tells its death). */
static int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0); /* close-on-exec */
    return fd < 0 ? -1 : fd;
#else
    (void)pid;
    return -1;
#endif
}

/* Polls the socket for `events` and the pidfd for the host's exit. -1: the host exited or
   the poll failed (both end the channel). */
static int poll_host(bp_relay *r, struct pollfd *sock, int ms) {
    struct pollfd pfd[2] = {*sock, {.fd = r->pidfd, .events = POLLIN}};
    if (poll(pfd, 2, ms) < 0 && errno != EINTR) return -1;
    *sock = pfd[0];
    if (pfd[1].revents) {
        r->exited = 1;
        return -1;
    }
    return 0;
}

void bp_relay_free(bp_relay *r) {
    if (!r) return;
    pthread_mutex_destroy(&r->lock);
    if (r->sock >= 0) close(r->sock);
    if (r->pidfd >= 0) close(r->pidfd);
    bp_ring_teardown(r);
    if (r->pid > 0) { /* never started serving (thread creation failed) */
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
    }
    if (r->argv)
        for (char **a = r->argv; *a; a++) free(*a);
    free(r->argv);
    free(r->slots);
    free(r->free_ids);
    free(r->in.buf);
    free(r);
}

/* ------------------------------------------------------------------ slots ----- */

static int slot_put(bp_relay *r, bp_request *req, uint32_t *slot) {
    if (!r->nfree) {
        uint32_t cap = r->nslots ? r->nslots * 2 : 64;
        bp_request **s = realloc(r->slots, cap * sizeof *s);
        if (!s) return -1;
        r->slots = s;
        uint32_t *f = realloc(r->free_ids, cap * sizeof *f);
        if (!f) return -1;
        r->free_ids = f;
        for (uint32_t i = cap; i > r->nslots; i--) r->free_ids[r->nfree++] = i - 1;
        memset(s + r->nslots, 0, (cap - r->nslots) * sizeof *s);
        r->nslots = cap;
    }
    *slot = r->free_ids[--r->nfree];
    r->slots[*slot] = req;
    r->outstanding++;
    return 0;
}

/* The request in `slot` if it is the run `run`, taken out of its slot; else NULL. */
static bp_request *slot_take(bp_relay *r, uint32_t slot, uint64_t run) {
    if (slot >= r->nslots || !r->slots[slot] || atomic_load(&r->slots[slot]->seq) != run) return NULL;
    bp_request *req = r->slots[slot];
    r->slots[slot] = NULL;
    r->free_ids[r->nfree++] = slot;
    r->outstanding--;
    return req;
}

/* ------------------------------------------------------------------- frames ----- */

/* Writes all of `len` bytes. While the host has no room it reads what the host sends
   (buffered for the loop): the host's context thread may be writing a big result at the
   same time, and neither side must wait for the other. Gives up once a close's SIGKILL is
   due, or when the host is gone. */
static int relay_write(bp_relay *r, const uint8_t *p, size_t len) {
    while (len > 0) {
        ssize_t n = send(r->sock, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        if (r->kill_at && bp_now_ns() >= r->kill_at) return -1;
        struct pollfd pfd = {.fd = r->sock, .events = POLLOUT | POLLIN};
        if (poll_host(r, &pfd, 100) < 0) return -1;
        if (pfd.revents & POLLIN && bp_chan_fill(&r->in, r->sock) < 0) return -1;
        if (pfd.revents & (POLLERR | POLLHUP)) return -1;
    }
    return 0;
}

static int relay_send(bp_relay *r, uint32_t kind, int32_t arg, uint32_t slot, uint64_t id, const void *p, uint32_t len) {
    if (r->sock < 0) return -1;
    bp_frame f = {.kind = kind, .arg = arg, .len = len, .slot = slot, .id = id};
    if (len <= 4096) { /* one send */
        uint8_t b[sizeof f + 4096];
        memcpy(b, &f, sizeof f);
        if (len) memcpy(b + sizeof f, p, len);
        return relay_write(r, b, sizeof f + len);
    }
    if (relay_write(r, (const uint8_t *)&f, sizeof f) < 0) return -1;
    return relay_write(r, p, len);
}

/* Fails every request in `list` (the queue's rest) with `status`. */
static void relay_reject(bp_context *c, bp_node *list, int32_t status, const char *why) {
    while (list) {
        bp_request *req = (bp_request *)list;
        list = list->next;
        if (req->op == BP_REQ_REF_DROP) bp_request_free(req);
        else if (req->op == BP_REQ_CLOSE) { /* completed at the end */
            if (!c->close_req) c->close_req = req;
            else if (req != c->close_req) bp_request_free(req);
        } else bp_request_fail(req, status, why);
    }
}

static int relay_pump(bp_context *c, bp_relay *r);

/* A SUBMIT frame: into the request ring when it fits now, else over the socket behind a
   MARK in the ring (the host takes it in its place). When not even a MARK fits, the relay
   goes on reading results (the host may be waiting for room too) until the host has read. */
static int relay_submit(bp_context *c, bp_relay *r, int32_t op, uint32_t slot, uint64_t run, const void *p, uint32_t len) {
    bp_frame f = {.kind = BP_FRAME_SUBMIT, .arg = op, .len = len, .slot = slot, .id = run};
    bp_frame mark = {.kind = BP_FRAME_MARK};
    for (;;) {
        int rc = bp_ring_submit(r, &f, p);
        if (rc > 0) return 0;
        if (rc == 0 && (rc = bp_ring_submit(r, &mark, NULL)) > 0) return relay_send(r, BP_FRAME_SUBMIT, op, slot, run, p, len);
        if (rc < 0) {
            bp_ring_violation(c, r, "an impossible request ring position");
            return -1;
        }
        if (r->kill_at && bp_now_ns() >= r->kill_at) return -1;
        struct pollfd pfd = {.fd = r->sock, .events = POLLIN};
        if (poll_host(r, &pfd, 1) < 0) return -1;
        if ((pfd.revents & POLLIN) && !bp_relay_paused(c) && bp_chan_fill(&r->in, r->sock) < 0) return -1;
        if (relay_pump(c, r) < 0) return -1;
    }
}

/* Hands one request to the host. */
static int relay_forward(bp_context *c, bp_relay *r, bp_request *req) {
    if (req->op == BP_REQ_CLOSE) {
        c->close_req = req;
        if (!r->close_sent) {
            r->close_sent = 1;
            r->kill_at = bp_now_ns() + ((int64_t)c->close_grace_ms + BP_ABANDON_MS) * 1000000;
            relay_send(r, BP_FRAME_CLOSE, (int32_t)(c->close_grace_ms > INT32_MAX ? INT32_MAX : c->close_grace_ms), 0, 0,
                       NULL, 0);
        }
        return 0;
    }
    if (req->op == BP_REQ_REF_DROP) {
        int rc = relay_submit(c, r, req->op, 0, 0, req->data, req->len);
        bp_request_free(req);
        return rc;
    }
    if (atomic_load(&req->cancelled)) {
        bp_request_fail(req, BP_ERR_STATE, "cancelled before it started");
        return 0;
    }
    uint32_t slot;
    if (slot_put(r, req, &slot) < 0) {
        bp_request_complete(req, BP_ERR_MEMORY, NULL, 0);
        return 0;
    }
    uint64_t run = ++r->runs;
    atomic_store(&req->seq, run);
    return relay_submit(c, r, req->op, slot, run, req->data, req->len);
}

/* On a JS thread (bp_ctx_push): writes a request's frame into the request ring itself when
   nobody else is writing, nothing is queued before it and it fits, skipping the relay
   thread's wake-up on the way in. Returns 1 when sent. */
int bp_relay_try_send(bp_context *c, bp_request *req) {
    bp_relay *r = c->relay;
    if (req->op < BP_REQ_CALL || req->op > BP_REQ_REF_TOJS || !atomic_load(&r->ring_ready)) return 0;
    if (pthread_mutex_trylock(&r->lock) != 0) return 0;
    int sent = 0;
    uint32_t slot;
    if (atomic_load(&c->state) == CTX_RUNNING && r->sock >= 0 && !r->close_sent && !r->broken &&
        bp_mpsc_empty(&c->requests) && slot_put(r, req, &slot) == 0) {
        uint64_t run = r->runs + 1;
        atomic_store(&req->seq, run);
        bp_frame f = {.kind = BP_FRAME_SUBMIT, .arg = req->op, .len = req->len, .slot = slot, .id = run};
        /* this JS thread polls for the result next (hub.ts after a submit, sync_wait after
           a callSync; both end by saying they stopped): a result that comes before its
           first look must not ring the relay thread (and then the doorbell) */
        if (!atomic_load_explicit(&r->shm->js_polling, memory_order_relaxed)) atomic_store(&r->shm->js_polling, 1);
        int rc = bp_ring_submit(r, &f, req->data);
        if (rc > 0) {
            r->runs = run;
            sent = 1;
        } else { /* no room now: the queue takes it */
            slot_take(r, slot, run);
            atomic_store(&req->seq, 0);
            if (rc < 0) bp_ring_violation(c, r, "an impossible request ring position");
        }
    }
    pthread_mutex_unlock(&r->lock);
    return sent; /* (JS has not seen the request yet: no cancel can have come) */
}

/* Cancels JS asked for since the last look. */
static void relay_cancels(bp_context *c, bp_relay *r) {
    int seen = atomic_load(&c->task_cancels);
    if (seen == c->task_cancels_seen) return;
    c->task_cancels_seen = seen;
    for (uint32_t i = 0; i < r->nslots; i++) {
        bp_request *req = r->slots[i];
        if (!req || !atomic_load(&req->cancelled) || atomic_load(&req->parked)) continue;
        atomic_store(&req->parked, 1); /* here: "the CANCEL frame went out" */
        relay_send(r, BP_FRAME_CANCEL, 0, i, atomic_load(&req->seq), NULL, 0);
    }
}

/* One frame from the host. -1: the channel cannot go on. */
int bp_relay_frame(bp_context *c, bp_relay *r, const bp_frame *f, const uint8_t *p) {
    switch (f->kind) {
    case BP_FRAME_STARTED:
        if (r->started || !c->start) return -1;
        r->started = 1;
        if (f->arg == BP_OK) {
            int expected = CTX_STARTING;
            atomic_compare_exchange_strong(&c->state, &expected, CTX_RUNNING); /* or CLOSING already */
            bp_request_complete(c->start, BP_OK, (const uint8_t[]){BP_T_NONE}, 1);
        } else {
            /* a start fails with a message record: any other status is the host lying */
            bp_request_complete(c->start, f->arg == BP_ERR_PYTHON ? f->arg : BP_ERR_STATE, p, f->len);
        }
        c->start = NULL;
        return f->arg == BP_OK ? 0 : -1;
    case BP_FRAME_DONE: {
        bp_request *req = slot_take(r, f->slot, f->id);
        if (!req) return 0; /* not (or no longer) ours */
        atomic_fetch_add(&c->completed, 1);
        /* only the statuses a context gives; anything else is the host lying */
        int32_t st = f->arg <= 0 && f->arg >= BP_ERR_DIED ? f->arg : BP_ERR_STATE;
        bp_request_complete(req, st, p, f->len);
        return 0;
    }
    case BP_FRAME_MESSAGE:
        return bp_relay_message(c, p, f->len) < 0 ? -1 : 0;
    case BP_FRAME_CALL:
        return bp_relay_call(c, p, f->len, f->id) < 0 ? -1 : 0;
    default:
        return -1;
    }
}

/* Sends the answers JS gave to the host's calls. */
static int relay_answer(bp_context *c, uint64_t remote, int32_t status, const uint8_t *data, uint32_t len) {
    return relay_send(c->relay, BP_FRAME_ANSWER, status, 0, remote, data, len);
}

/* ------------------------------------------------------------------ the host ----- */

static pid_t spawn_host(bp_relay *r, char *err, size_t errlen) {
    int sv[2];
    if (bp_ring_setup(r, err, errlen) < 0) return -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        snprintf(err, errlen, "socketpair: %s", strerror(errno));
        return -1;
    }
    /* the child's fds must not already be at 3..6 (a dup2 onto itself would keep CLOEXEC,
       or one would land on another): bp_ring_setup's are above 10 */
    if (sv[1] < 10) {
        int moved = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
        close(sv[1]);
        sv[1] = moved;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], BP_HOST_FD);
    posix_spawn_file_actions_adddup2(&fa, r->shm_fd, BP_HOST_SHM_FD);
    posix_spawn_file_actions_adddup2(&fa, r->host_bell_theirs, BP_HOST_BELL_FD);
    posix_spawn_file_actions_adddup2(&fa, r->bun_bell_theirs, BP_BUN_BELL_FD);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    /* a clean signal state: Bun's handlers and mask are not the host's */
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    /* its own process group: Ctrl-C in a terminal (SIGINT to the foreground group) is Bun's
       to handle, not a reason for every host to die */
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
    pid_t pid = -1;
    int rc = sv[1] >= 0 ? posix_spawn(&pid, r->argv[0], &fa, &at, r->argv, environ) : errno;
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (sv[1] >= 0) close(sv[1]);
    if (rc != 0) {
        close(sv[0]);
        snprintf(err, errlen, "cannot start %s: %s", r->argv[0], strerror(rc));
        return -1;
    }
    r->sock = sv[0];
    r->pidfd = open_pidfd(pid);
    close(r->shm_fd); /* mapped; the host has its own */
    r->shm_fd = -1;
    bp_ring_spawned(r);
    return pid;
}

static const char *signal_name(int sig) {
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGABRT: return "SIGABRT";
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    case SIGXCPU: return "SIGXCPU";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGSYS: return "SIGSYS";
    case SIGINT: return "SIGINT";
    case SIGXFSZ: return "SIGXFSZ";
    default: return "a signal";
    }
}

/* Kills (when asked) and reaps the host; writes how it ended. Returns 1 when it exited 0. */
static int reap_host(bp_relay *r, int kill_it, char *how, size_t len) {
    /* End what the host started, while it lives (it is their subreaper: descendants.h;
       after its exit they belong to init). It is stopped first, so it neither starts nor
       reaps processes, and never let go on: the SIGKILL below ends it. A host that ended
       its context (kill_it 0: the close was sent and the channel ended) waits for that,
       for the socket's close (host.c), and that SIGKILL counts as its clean exit; let go
       on, its threads could start processes no walk saw. */
    int ended_by_us = 0;
    if (r->pid > 0 && !r->exited) {
        kill(r->pid, SIGSTOP);
        bp_kill_descendants(r->pid);
        ended_by_us = !kill_it && !r->broken;
    }
    if (r->sock >= 0) {
        close(r->sock);
        r->sock = -1;
    }
    if (r->pid <= 0) {
        snprintf(how, len, "its host process is gone");
        return 0;
    }
    int status = 0;
    pid_t got;
    /* (not reaped before this: its pid must stay its own until its process group is
       killed below) */
    kill(r->pid, SIGKILL);
    /* and every process it started that stayed in its process group (spawn_host made it
       the leader): none outlives the context, none keeps the socket open */
    kill(-r->pid, SIGKILL);
    while ((got = waitpid(r->pid, &status, 0)) < 0 && errno == EINTR) {
    }
    r->pid = 0;
    if (got < 0) {
        snprintf(how, len, "its host process ended (not reaped: %s)", strerror(errno));
        return 0;
    }
    if (r->violation[0]) {
        snprintf(how, len, "%s", r->violation);
        return 0;
    }
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        if (sig == SIGKILL && ended_by_us) {
            snprintf(how, len, "its host process ended after the close");
            return 1;
        }
        snprintf(how, len, "its host process was killed by %s (signal %d)%s", signal_name(sig), sig,
                 sig == SIGKILL && !r->killed ? "; out of memory, or killed from outside" : "");
        return 0;
    }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    snprintf(how, len, "its host process exited with code %d", code);
    return code == 0;
}

/* ------------------------------------------------------------------ the thread ----- */

/* Back-pressure for bunpy.send: past this many messages JS has not taken, the relay stops
   reading the host (whose sends then wait, as a thread context's would); JS taking them
   wakes it (bp_message_drained). The same limit as BP_MAX_UNREAD in jscall.c. */
#define RELAY_MAX_UNREAD 1024
int bp_relay_paused(bp_context *c) { return atomic_load(&c->unread) >= RELAY_MAX_UNREAD; }

/* Results in the ring and frames from the socket, in the host's order: a socket frame
   takes the place of the MARK at the ring's head. -1: the channel cannot go on. */
static int relay_pump(bp_context *c, bp_relay *r) {
    for (;;) {
        if (bp_ring_take(c, r, 0) < 0) return -1;
        if (bp_relay_paused(c) || !bp_chan_ready(&r->in)) return 0;
        if (!bp_ring_pop_mark(r)) {
            bp_ring_violation(c, r, "a frame on the socket without its MARK in the ring");
            return -1;
        }
        bp_frame f;
        int bad = 0;
        const uint8_t *p = bp_chan_next(&r->in, &f, &bad);
        if (!p || bp_relay_frame(c, r, &f, p) < 0) return -1;
    }
}

/* Sleeps until there is work: requests, answers, cancels, results. Called and returns with
   r->lock held; the sleep is announced (the host rings then, unless JS polls) before the
   last look, and the lock is let go while asleep (JS threads send and read meanwhile). */
static void relay_wait(bp_context *c, bp_relay *r) {
    int hold = bp_relay_paused(c); /* then only the wake-up fd counts, not the socket */
    atomic_store(&c->sleeping, 1);
    if (r->shm) atomic_store(&r->shm->bun_asleep, 1);
    atomic_thread_fence(memory_order_seq_cst);
    if (!bp_mpsc_empty(&c->requests) || !bp_mpsc_empty(&c->answered) || r->broken ||
        atomic_load(&c->task_cancels) != c->task_cancels_seen || (hold && !bp_relay_paused(c)) || bp_ring_ready(c, r)) {
        atomic_store(&c->sleeping, 0);
        if (r->shm) atomic_store(&r->shm->bun_asleep, 0);
        return;
    }
    pthread_mutex_unlock(&r->lock);
    struct pollfd pfd[4] = {{.fd = c->wake.rd, .events = POLLIN},
                            {.fd = r->bun_bell, .events = POLLIN},
                            {.fd = r->sock, .events = POLLIN},
                            {.fd = r->exited ? -1 : r->pidfd, .events = POLLIN}};
    int timeout = -1;
    if (r->kill_at) {
        int64_t left = (r->kill_at - bp_now_ns()) / 1000000;
        timeout = left < 0 ? 0 : left > 100000 ? 100000 : (int)left + 1;
    }
    poll(pfd, hold ? 1 : 4, timeout);
    if (!hold && pfd[3].revents) r->exited = 1;
    atomic_store(&c->sleeping, 0);
    if (r->shm) atomic_store(&r->shm->bun_asleep, 0);
    bp_wakefd_drain(c->wake.rd, 0);
    bp_wakefd_drain(r->bun_bell, 0);
    pthread_mutex_lock(&r->lock);
}

static void *relay_main(void *arg) {
    bp_context *c = arg;
    bp_relay *r = c->relay;
    char how[300];
    int ended_ok = 0;
    pid_t pid = spawn_host(r, how, sizeof how);
    if (pid < 0) {
        if (c->start) bp_request_fail(c->start, BP_ERR_STATE, how);
        c->start = NULL;
        pthread_mutex_lock(&r->lock);
        goto dead;
    }
    r->pid = pid;
    pthread_mutex_lock(&r->lock);
    atomic_store(&r->ring_ready, 1);
    if (relay_send(r, BP_FRAME_START, 0, 0, 0, c->start->data, c->start->len) < 0) goto ended;
    for (;;) {
        if (r->broken) goto ended;
        for (bp_node *n = bp_mpsc_take(&c->requests); n;) {
            bp_request *req = (bp_request *)n;
            n = n->next;
            if (relay_forward(c, r, req) < 0) {
                relay_reject(c, n, BP_ERR_DIED, "the process context died");
                goto ended;
            }
        }
        relay_cancels(c, r);
        if (bp_relay_answers(c, relay_answer) < 0) goto ended;
        int got = bp_relay_paused(c) ? 0 : bp_chan_fill(&r->in, r->sock);
        /* (at EOF: what the host wrote before it ended still counts) */
        if (relay_pump(c, r) < 0 || got < 0 || r->broken) goto ended;
        /* the host exited, and what it wrote before is read: a process it started may
           hold the socket open, so no EOF may ever come */
        if (r->exited && got == 0 && !bp_relay_paused(c)) goto ended;
        if (r->kill_at && bp_now_ns() >= r->kill_at) {
            r->killed = 1;
            goto ended;
        }
        if (got == 0 && (bp_relay_paused(c) || !bp_chan_ready(&r->in))) relay_wait(c, r);
    }
ended:
    ended_ok = reap_host(r, r->killed || r->close_sent == 0, how, sizeof how) && r->close_sent;
    if (r->killed) ended_ok = 1; /* the close's grace period ran out: ended by us */
dead:;
    /* the host is gone: fail what it had, then seal the queue */
    char msg[400];
    int closed = ended_ok || (r->close_sent && r->killed);
    snprintf(msg, sizeof msg, closed ? "the context was closed" : "the process context died: %s", how);
    int32_t status = closed ? BP_ERR_STATE : BP_ERR_DIED;
    if (c->start) { /* died before STARTED */
        bp_request_fail(c->start, BP_ERR_STATE, msg);
        c->start = NULL;
    }
    atomic_store(&c->state, closed ? CTX_CLOSED : CTX_DEAD);
    for (uint32_t i = 0; i < r->nslots; i++) {
        bp_request *req = r->slots[i];
        if (!req) continue;
        r->slots[i] = NULL;
        bp_request_fail(req, status, msg);
    }
    r->outstanding = 0;
    while (atomic_load(&c->submitting) > 0) sched_yield();
    relay_reject(c, bp_mpsc_take(&c->requests), status, msg);
    bp_relay_answers(c, NULL); /* answers nobody can take any more: freed */
    pthread_mutex_unlock(&r->lock);
    relay_release_live(c);
    if (c->close_req && !atomic_exchange(&c->close_claimed, 1))
        bp_request_complete(c->close_req, BP_OK, (const uint8_t[]){BP_T_NONE}, 1);
    bp_ctx_unref(c);
    return NULL;
}

/* ------------------------------------------------------------------ exported ----- */

/* buf: the sandbox policy (as bp_ctx_new); argv: the host's command line as NUL-separated
   strings ending with an empty one (argv[0] is the host's path). */
bp_context *bp_ctx_new_process(bp_io *io, uint32_t id, uint32_t len, const char *argv) {
    if (!bp_running() || !argv || !*argv || len > io->cap) return NULL;
    bp_relay *r = calloc(1, sizeof *r);
    bp_context *c = calloc(1, sizeof *c);
    if (!r || !c) goto fail;
    r->sock = r->shm_fd = r->host_bell = r->bun_bell = r->host_bell_theirs = r->bun_bell_theirs = r->pidfd = -1;
    r->ctx = c;
    pthread_mutex_init(&r->lock, NULL);
    size_t n = 0;
    for (const char *a = argv; *a; a += strlen(a) + 1) n++;
    r->argv = calloc(n + 1, sizeof *r->argv);
    if (!r->argv) goto fail;
    size_t i = 0;
    for (const char *a = argv; *a; a += strlen(a) + 1)
        if (!(r->argv[i++] = strdup(a))) goto fail;
    c->mode = BP_CTX_PROCESS;
    c->relay = r;
    c->alert.rd = c->alert.wr = c->answers.rd = c->answers.wr = c->sig.rd = c->sig.wr = -1;
    int woken = bp_wakefd_open(&c->wake, 0) == 0; /* the relay thread is Bun's: one table */
    c->start = bp_request_new(c, io, id, BP_REQ_START, len);
    if (!woken || !c->start) goto fail;
    atomic_init(&c->state, CTX_STARTING);
    atomic_init(&c->loop_wake_fd, -1);
    atomic_init(&c->refs, 2); /* JS and the thread */
    c->owner = bp_port_of(io);
    atomic_fetch_add(&c->owner->refs, 1);
    pthread_mutex_init(&c->life_lock, NULL);
    pthread_cond_init(&c->life_cond, NULL);
    atomic_fetch_add(&bp_live_contexts, 1);
    if (pthread_create(&c->thread, NULL, relay_main, c) != 0) {
        atomic_fetch_sub(&bp_live_contexts, 1);
        bp_request_free(c->start);
        c->start = NULL;
        atomic_store(&c->refs, 1);
        bp_ctx_unref(c); /* frees the relay too */
        return NULL;
    }
    r->port_next = c->owner->relays; /* bp_port_poll reads its results (this JS thread) */
    c->owner->relays = r;
    return c;
fail:
    if (c && c->wake.rd > 0) bp_wakefd_close(&c->wake); /* 0: calloc's, not opened yet */
    if (c && c->start) bp_request_free(c->start);
    free(c);
    bp_relay_free(r);
    return NULL;
}
