/*
 * channel.h — the frames a process context's relay (relay.c, in the Bun process) and its
 * host process (host.c) exchange, in the shared-memory rings (ring.h) when they fit, else
 * over their socketpair (the host's fd 3). Every frame is a
 * header and `len` bytes of payload; payloads are the codec bytes the thread contexts
 * already use, copied as is. Included by both sides: the helpers are static.
 *
 * The relay trusts nothing the host sends: a frame names a request by (slot, run id) and
 * is dropped unless that slot holds that run now; lengths are capped (BP_FRAME_MAX).
 */
#ifndef BUNPY_CHANNEL_H
#define BUNPY_CHANNEL_H

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct bp_frame {
    uint32_t kind;   /* BP_FRAME_*                                                   */
    int32_t arg;     /* op (SUBMIT), status (DONE, ANSWER, STARTED), grace ms (CLOSE) */
    uint32_t len;    /* payload bytes that follow                                     */
    uint32_t slot;   /* the relay's slot of the request (SUBMIT, DONE, CANCEL)          */
    uint64_t id;     /* the request's run number (SUBMIT, DONE, CANCEL; 0: no reply), */
                     /* or the host's call handle (CALL, ANSWER)                       */
} bp_frame;

enum {
    /* Bun -> host */
    BP_FRAME_START = 1,   /* payload: the sandbox policy (DICT|NONE), as bp_ctx_new reads it */
    BP_FRAME_SUBMIT = 2,  /* a request: arg = BP_REQ_* op, payload as submitted           */
    BP_FRAME_CANCEL = 3,  /* cancel the request (slot, id) if it still runs                 */
    BP_FRAME_ANSWER = 4,  /* JS answered the host's Python -> JS call `id`                  */
    BP_FRAME_CLOSE = 5,   /* close the context (arg = grace ms), then exit 0                */
    /* host -> Bun */
    BP_FRAME_STARTED = 16, /* arg = BP_OK, or an error status with its record as payload    */
    BP_FRAME_DONE = 17,    /* a request finished: arg = status, payload = result or record   */
    BP_FRAME_MESSAGE = 18, /* bunpy.send: the message record (origin rewritten by the relay) */
    BP_FRAME_CALL = 19,    /* bunpy.call / async_call: id = host call handle, payload = call */
};

/* The fd number the host finds its end of the socketpair on. */
#define BP_HOST_FD 3

/* The largest payload either side accepts (a bigger one ends the channel). */
#define BP_FRAME_MAX (1u << 30)

/* A buffer grown past this by a big frame is freed once that frame is consumed. */
#define BP_CHAN_KEEP (4u << 20)

/* Incoming bytes, parsed into whole frames. */
typedef struct bp_chan_in {
    uint8_t *buf;
    size_t cap, have, used; /* buf[used..have) not yet consumed */
} bp_chan_in;

/* Reads what the socket has (non-blocking). 1: got bytes; 0: nothing now; -1: EOF, error
   or out of memory. */
static inline int bp_chan_fill(bp_chan_in *in, int fd) {
    if (in->used > 0 && in->used == in->have) {
        in->used = in->have = 0;
        if (in->cap > BP_CHAN_KEEP) { /* a big frame went through: give its memory back */
            free(in->buf);
            in->buf = NULL;
            in->cap = 0;
        }
    }
    if (in->cap - in->have < 65536) {
        if (in->used > 0) { /* slide the unconsumed rest to the front */
            memmove(in->buf, in->buf + in->used, in->have - in->used);
            in->have -= in->used;
            in->used = 0;
        }
        if (in->cap - in->have < 65536) {
            size_t cap = in->cap ? in->cap * 2 : 256 * 1024;
            uint8_t *b = realloc(in->buf, cap);
            if (!b) return -1;
            in->buf = b;
            in->cap = cap;
        }
    }
    ssize_t n = recv(fd, in->buf + in->have, in->cap - in->have, MSG_DONTWAIT);
    if (n > 0) {
        in->have += (size_t)n;
        return 1;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    return -1;
}

/* The next whole frame (its payload follows the header, unaligned: copy the header out),
   or NULL. *bad is set when a frame announces more than BP_FRAME_MAX. */
static inline const uint8_t *bp_chan_next(bp_chan_in *in, bp_frame *f, int *bad) {
    size_t avail = in->have - in->used;
    if (avail < sizeof *f) return NULL;
    memcpy(f, in->buf + in->used, sizeof *f);
    if (f->len > BP_FRAME_MAX) {
        *bad = 1;
        return NULL;
    }
    /* a frame bigger than the buffer: make room for all of it */
    if (sizeof *f + (size_t)f->len > in->cap - in->used) {
        memmove(in->buf, in->buf + in->used, avail);
        in->have = avail;
        in->used = 0;
        size_t need = sizeof *f + (size_t)f->len + 65536;
        if (need > in->cap) {
            uint8_t *b = realloc(in->buf, need);
            if (!b) {
                *bad = 1;
                return NULL;
            }
            in->buf = b;
            in->cap = need;
        }
    }
    if (avail < sizeof *f + f->len) return NULL;
    const uint8_t *payload = in->buf + in->used + sizeof *f;
    in->used += sizeof *f + f->len;
    return payload;
}

/* Whether a whole frame is buffered already. */
static inline int bp_chan_ready(const bp_chan_in *in) {
    size_t avail = in->have - in->used;
    if (avail < sizeof(bp_frame)) return 0;
    bp_frame f;
    memcpy(&f, in->buf + in->used, sizeof f);
    return f.len > BP_FRAME_MAX || avail >= sizeof f + f.len;
}

/* Writes all of `len` bytes; waits for room up to `timeout_ms` at a time (-1: forever).
   0, or -1 (the peer is gone, or did not read for that long). Never raises SIGPIPE. */
static inline int bp_chan_write_all(int fd, const void *data, size_t len, int timeout_ms) {
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            int r = poll(&pfd, 1, timeout_ms);
            if (r == 0) return -1;
            if (r < 0 && errno != EINTR) return -1;
            if (r > 0 && (pfd.revents & (POLLERR | POLLHUP))) return -1;
            continue;
        }
        return -1;
    }
    return 0;
}

/* One frame: header (with f->len set to len) and payload, in one send when it is small. */
static inline int bp_chan_send(int fd, bp_frame *f, const void *payload, uint32_t len, int timeout_ms) {
    f->len = len;
    if (len <= 4096) {
        uint8_t b[sizeof *f + 4096];
        memcpy(b, f, sizeof *f);
        if (len) memcpy(b + sizeof *f, payload, len);
        return bp_chan_write_all(fd, b, sizeof *f + len, timeout_ms);
    }
    if (bp_chan_write_all(fd, f, sizeof *f, timeout_ms) < 0) return -1;
    return bp_chan_write_all(fd, payload, len, timeout_ms);
}

#endif
