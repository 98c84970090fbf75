/*
 * relay.h — the relay's state (relay.c), shared with ring.c (its side of the shared-memory
 * rings). Internal to the shim.
 */
#ifndef BUNPY_RELAY_H
#define BUNPY_RELAY_H

#include "context.h"
#include "ring.h"

struct bp_relay {
    /* taken by the relay thread whenever it is not waiting, and tried by JS threads that
       send a request frame themselves (bp_relay_try_send): the socket's writing side,
       `slots`, `runs`, `sock`, `close_sent` */
    pthread_mutex_t lock;
    char **argv;           /* the host's command line (argv[0] its path), NULL-ended */
    int sock;              /* our end of the socketpair; -1 once closed              */
    pid_t pid;             /* the host; 0 once reaped                                */
    int pidfd;             /* readable once the host exited (a child of the host may
                              keep the socket open: EOF alone does not say it), or -1  */
    int exited;            /* the pidfd was readable                                 */
    bp_request **slots;    /* requests sent and not completed, by slot               */
    uint32_t nslots, *free_ids, nfree;
    uint64_t runs;         /* run ids handed out                                     */
    uint32_t outstanding;
    bp_chan_in in;
    int started;           /* STARTED came                                           */
    int close_sent;
    int64_t kill_at;       /* closing: SIGKILL the host at this time (ns), else 0    */
    int killed;            /* we sent SIGKILL (after the grace period)               */
    int broken;            /* the channel is cut (a send went out in part, or the
                              host broke the shared memory's rules: `violation` says how) */
    /* the shared memory (ring.c, ring.h) */
    bp_context *ctx;
    bp_shm *shm;           /* mapped BP_SHM_SIZE bytes, or NULL                       */
    int shm_fd;            /* the memfd (until spawned)                              */
    int host_bell, bun_bell; /* the bells (pipes, ring.c): the write end we ring the
                              host's context by, the read end the host rings us by */
    int host_bell_theirs, bun_bell_theirs; /* their other ends, until spawned       */
    bp_ring tx, rx;        /* requests we write; results we read                     */
    atomic_int ring_ready; /* the host runs: JS threads may use the rings             */
    uint8_t *scratch;      /* BP_RING_CAP bytes: frames copied out of the ring          */
    char violation[200];
    struct bp_relay *port_next; /* the owner port's list (bp_port_poll)              */
};

/* relay.c: one frame from the host. -1: the channel cannot go on. r->lock held. */
int bp_relay_frame(bp_context *c, bp_relay *r, const bp_frame *f, const uint8_t *p);
int bp_relay_paused(bp_context *c);

/* ring.c, all with r->lock held */
int bp_ring_setup(bp_relay *r, char *err, size_t errlen); /* the memfd and the bell pipes */
void bp_ring_teardown(bp_relay *r);
void bp_ring_spawned(bp_relay *r); /* closes the host's ends of the bells (it has its own) */
/* A frame into the request ring: 1 written, 0 no room now, -1 the host broke the ring. */
int bp_ring_submit(bp_relay *r, const bp_frame *f, const void *payload);
/* Results out of the ring, in order, up to a MARK (or, `done_only`, up to anything but a
   DONE; or a MESSAGE while JS is behind). Returns -1 when the host broke the rules (the
   host is killed), else 1 when it stopped at a frame it left there, else 0. */
int bp_ring_take(bp_context *c, bp_relay *r, int done_only);
/* Pops the MARK at the head of the result ring; 0 when there is none. */
int bp_ring_pop_mark(bp_relay *r);
/* The result ring's next frame can be taken now (not a MARK, not a held-back MESSAGE). */
int bp_ring_ready(bp_context *c, bp_relay *r);
/* The host broke the shared memory's rules: it is killed, the context dies. */
void bp_ring_violation(bp_context *c, bp_relay *r, const char *why);

#endif
