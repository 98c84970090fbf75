/*
 * channel.h — the frames a process context's relay (in the Bun process) and its host
 * process (host.c) exchange over their socketpair. Planned protocol; see the report of
 * issue 10 item 3 and docs/architecture.md. Every frame is a header and `len` bytes of
 * payload; payloads are the codec bytes the thread contexts already use, copied as is.
 */
#ifndef BUNPY_CHANNEL_H
#define BUNPY_CHANNEL_H

#include <stdint.h>

typedef struct bp_frame {
    uint32_t kind;   /* BP_FRAME_*                                                   */
    int32_t arg;     /* op (SUBMIT), status (DONE, ANSWER, STARTED), slot (CANCEL),   */
                     /* grace ms (CLOSE)                                              */
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
    BP_FRAME_STARTED = 16, /* arg = BP_OK (payload: isolation DICT) or an error record       */
    BP_FRAME_DONE = 17,    /* a request finished: arg = status, payload = result or record   */
    BP_FRAME_MESSAGE = 18, /* bunpy.send: the message record (origin rewritten by the relay) */
    BP_FRAME_CALL = 19,    /* bunpy.call / async_call: id = host call handle, payload = call */
};

/* The fd number the host finds its end of the socketpair on. */
#define BP_HOST_FD 3

#endif
