/*
 * ring.h — the shared memory of a process context (relay.c in Bun, host.c in bunpy-host):
 * one sealed memfd holding two single-producer / single-consumer byte rings of frames
 * (channel.h's header + payload, unchanged):
 *
 *   requests  Bun -> host   SUBMIT frames (JS thread or relay thread in; host context
 *                           thread, or its main thread when that one sleeps, out)
 *   results   host -> Bun   STARTED / DONE / MESSAGE / CALL (host in; the JS thread while
 *                           it polls for completions, else the relay thread, out)
 *
 * A frame that does not fit in the free space goes over the socket instead, announced in
 * its ring by a MARK frame (header only): the reader stops at a MARK until that socket
 * frame came, so both streams keep one order. Cancels, answers, close and start stay on
 * the socket (the host's main thread reads them while its context thread runs Python).
 *
 * Counters are free-running byte positions (C11 atomics): the producer publishes `tail`
 * with release after writing the bytes, the consumer `head` with release after reading
 * them. Each side keeps its own positions privately and only *reads* the other's, checking
 * it: Bun trusts nothing in this memory (Python in the host can write to it with ctypes),
 * so every position and length it reads is validated before use (bp_ring_room,
 * bp_ring_peek) and a violation kills the host. Headers are copied out once; payloads are
 * copied once into Bun's own memory before anything decodes them.
 *
 * Sleeping: a side announces it sleeps in a flag here, then looks at the ring again; the
 * other side, after publishing, fences and rings the sleeper's bell (a pipe) only if the flag is
 * set. Both busy: no syscall at all.
 */
#ifndef BUNPY_RING_H
#define BUNPY_RING_H

#include "channel.h"
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* fds the host finds them on (the socket is BP_HOST_FD, 3) */
#define BP_HOST_SHM_FD 4  /* the memfd                                              */
#define BP_HOST_BELL_FD 5 /* a pipe's read end: Bun rings it when the host's context sleeps */
#define BP_BUN_BELL_FD 6  /* a pipe's write end: the host rings it when Bun's readers sleep */

#define BP_RING_MAGIC 0x62707231u /* "bpr1" */
#define BP_RING_CAP (1u << 20)   /* bytes of each ring                               */
#define BP_SHM_DATA 4096u        /* the rings' bytes start here                       */
#define BP_SHM_SIZE (BP_SHM_DATA + 2u * BP_RING_CAP)

/* A MARK in a ring: the next frame of this stream comes over the socket. */
#define BP_FRAME_MARK 32u

typedef struct bp_ring_ctl {
    _Alignas(64) atomic_ullong head; /* bytes consumed (written by the consumer) */
    _Alignas(64) atomic_ullong tail; /* bytes published (written by the producer) */
} bp_ring_ctl;

typedef struct bp_shm {
    uint32_t magic, cap;
    _Alignas(64) atomic_uint host_sleeping; /* the host's context thread sleeps: ring BP_HOST_BELL_FD */
    _Alignas(64) atomic_uint bun_asleep;    /* the relay thread sleeps ...                          */
    atomic_uint js_polling;                 /* ... and JS does not poll: ring BP_BUN_BELL_FD         */
    bp_ring_ctl req, res;
} bp_shm;

/* test/process-rings.test.ts writes over these from the host's Python (a hostile host) */
_Static_assert(offsetof(bp_shm, req) == 192 && offsetof(bp_shm, res) == 320, "the layout the tests know");
_Static_assert(sizeof(bp_shm) <= BP_SHM_DATA, "the header fits before the rings");

/* One side's view of one ring. `mine` is this side's own position (the producer's tail or
   the consumer's head), `seen` the last position of the other side found valid. */
typedef struct bp_ring {
    bp_ring_ctl *ctl;
    uint8_t *data;
    uint32_t cap;
    uint64_t mine, seen;
} bp_ring;

static inline void bp_ring_init(bp_ring *r, bp_ring_ctl *ctl, uint8_t *data, uint32_t cap) {
    r->ctl = ctl;
    r->data = data;
    r->cap = cap;
    r->mine = r->seen = 0;
}

static inline void bp_ring_write(bp_ring *r, uint64_t pos, const void *src, uint32_t n) {
    uint32_t off = (uint32_t)(pos % r->cap), first = r->cap - off < n ? r->cap - off : n;
    memcpy(r->data + off, src, first);
    if (n > first) memcpy(r->data, (const uint8_t *)src + first, n - first);
}

static inline void bp_ring_read(const bp_ring *r, uint64_t pos, void *dst, uint32_t n) {
    uint32_t off = (uint32_t)(pos % r->cap), first = r->cap - off < n ? r->cap - off : n;
    memcpy(dst, r->data + off, first);
    if (n > first) memcpy((uint8_t *)dst + first, r->data, n - first);
}

/* Producer: free bytes, or -1 when the consumer's head is impossible (went back, or past
   what was published). */
static inline int64_t bp_ring_room(bp_ring *r) {
    uint64_t h = atomic_load_explicit(&r->ctl->head, memory_order_acquire);
    if (h < r->seen || h > r->mine || r->mine - h > r->cap) return -1;
    r->seen = h;
    return (int64_t)r->cap - (int64_t)(r->mine - h);
}

/* Producer: appends a frame (f->len payload bytes) that the caller knows fits, publishes it. */
static inline void bp_ring_put(bp_ring *r, const bp_frame *f, const void *payload) {
    bp_ring_write(r, r->mine, f, sizeof *f);
    if (f->len) bp_ring_write(r, r->mine + sizeof *f, payload, f->len);
    r->mine += sizeof *f + f->len;
    atomic_store_explicit(&r->ctl->tail, r->mine, memory_order_release);
}

/* Consumer: anything published? (a hint: bp_ring_peek decides) */
static inline int bp_ring_nonempty(const bp_ring_ctl *ctl) {
    return atomic_load_explicit(&ctl->tail, memory_order_acquire) != atomic_load_explicit(&ctl->head, memory_order_relaxed);
}

/* Consumer: copies the next frame's header into *f. 1: a whole frame is there; 0: empty;
   -1: the producer's tail or the frame's length is impossible. */
static inline int bp_ring_peek(bp_ring *r, bp_frame *f) {
    uint64_t t = atomic_load_explicit(&r->ctl->tail, memory_order_acquire);
    if (t < r->mine || t - r->mine > r->cap) return -1;
    uint64_t avail = t - r->mine;
    if (avail == 0) return 0;
    if (avail < sizeof *f) return -1; /* frames are published whole */
    bp_ring_read(r, r->mine, f, sizeof *f);
    if ((uint64_t)f->len > avail - sizeof *f) return -1;
    return 1;
}

/* Consumer: the payload of the frame peeked last, in the ring when it does not wrap, else
   copied to `scratch` (f->len bytes). */
static inline const uint8_t *bp_ring_payload(const bp_ring *r, const bp_frame *f, uint8_t *scratch) {
    uint64_t pos = r->mine + sizeof *f;
    uint32_t off = (uint32_t)(pos % r->cap);
    if ((uint64_t)off + f->len <= r->cap) return r->data + off;
    bp_ring_read(r, pos, scratch, f->len);
    return scratch;
}

/* Consumer: done with the frame peeked last. */
static inline void bp_ring_pop(bp_ring *r, const bp_frame *f) {
    r->mine += sizeof *f + f->len;
    atomic_store_explicit(&r->ctl->head, r->mine, memory_order_release);
}

#endif
