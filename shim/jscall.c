/*
 * jscall.c — Python reaching JS from a context thread, and bunpy.send everywhere.
 *
 * bunpy.call(name, ...) on a context thread: the call is queued on the `calls` queue of the
 * JS thread that sent the request being served, that thread's doorbell is rung (or its
 * callSync waiter woken), and the context thread waits with its GIL released — serving any
 * request that arrives meanwhile, so JS -> Python -> JS -> Python chains work — until JS
 * answers with bp_call_reply.
 *
 * bunpy.send(channel, value) queues a message on the completion queue of the JS thread
 * that owns the interpreter (the context's creator, or the calling JS thread for the main
 * interpreter). At most BP_MAX_UNREAD messages wait per sender: a context then blocks in
 * send until JS catches up; the main interpreter (which runs on the JS thread and so
 * cannot wait for it) raises BufferError.
 */
#include "context.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#define BP_MAX_UNREAD 1024

typedef struct bp_jscall {
    bp_node node;             /* queue link: must stay first */
    bp_context *ctx;
    atomic_int answered;
    int32_t status;
    uint8_t *data;            /* the call (name, args, kwargs), then the answer */
    uint32_t len;
    int notify_fd;            /* async_call: an eventfd written when answered; -1 when sync */
    int batched;              /* async_call on the context's loop: answered through `answered`;
                                 2: a process context's host call (relay.c), sent back as ANSWER */
    uint64_t remote;          /* batched 2: the host's handle of the call */
    atomic_int refs;          /* async_call: the Python handle and the pending answer       */
    bp_port *taken;           /* the port whose JS took it and has not answered yet, and the */
    struct bp_jscall *taken_prev, *taken_next; /* links in its taken_calls (that JS thread) */
} bp_jscall;

static void call_unref(bp_jscall *call) {
    if (atomic_fetch_sub(&call->refs, 1) != 1) return;
    if (call->notify_fd >= 0) close(call->notify_fd);
    free(call->data);
    free(call);
}

/* Copies what the writer produced into a fresh heap block. */
static uint8_t *take_written(bp_writer *w, uint32_t *len) {
    bp_writer_commit(w);
    *len = w->io->len;
    uint8_t *copy = malloc(*len ? *len : 1);
    if (copy) memcpy(copy, w->io->buf, *len);
    return copy;
}

static PyObject *raise_convert(bp_writer *w, int rc, const char *what) {
    bp_writer_abort(w);
    if (rc != BP_ERR_PYTHON) PyErr_Format(PyExc_TypeError, "bunpy: cannot pass to JS (%s): %s", what, w->error);
    return NULL;
}

/* What a call into a JS thread that ended (or is ending) gets: refused when queued, or
   answered with BP_ERR_STATE by the ending thread (bp_port_refuse_calls). */
static const char JS_GONE[] = "bunpy: the JS thread (Bun Worker) ended before it answered this call";

/* Rings a port's doorbell; a worker context lets the main GIL go first (Bun's code runs
   there, and a closing JS thread waits for rings under way: io.c). Called outside the
   port's guard (bp_port_enter): taking the GIL back may wait long. */
static void ring(bp_context *c, bp_port *p) {
    if (!bp_port_alive(p)) return;
    if (c && c->mode == BP_CTX_WORKER) {
        PyThreadState *ts = PyEval_SaveThread();
        bp_port_ring(p);
        PyEval_RestoreThread(ts);
    } else {
        bp_ring_doorbell(c, p);
    }
}

/* Encodes the call and queues it on the JS port of the request being served. */
static int refuse_while_writing(bp_context *c) {
    if (!c->no_js) return 0;
    PyErr_SetString(PyExc_RuntimeError, "bunpy: JS cannot be called from Python code that bunpy runs while it "
                                        "converts a value (a tzinfo, __hash__, items() or __del__)");
    return -1;
}

static bp_jscall *queue_call(bp_context *c, PyObject *name, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                             int notify_fd, int batched) {
    if (refuse_while_writing(c) < 0) return NULL;
    bp_port *p = c->current ? c->current->reply : c->owner;
    if (!bp_port_alive(p) || !p->doorbell) {
        PyErr_SetString(PyExc_RuntimeError, JS_GONE);
        return NULL;
    }
    bp_writer w;
    bp_writer_init(&w, &c->scratch, 0);
    int rc = bp_write_call(&w, name, args, nargs, kwnames);
    if (rc) {
        raise_convert(&w, rc, "call arguments");
        return NULL;
    }
    bp_jscall *call = calloc(1, sizeof *call);
    if (call) call->data = take_written(&w, &call->len);
    if (!call || !call->data) {
        free(call);
        PyErr_NoMemory();
        return NULL;
    }
    call->ctx = c;
    bp_ctx_ref(c); /* the answer may come after the context died and JS freed it */
    call->notify_fd = notify_fd;
    call->batched = batched;
    /* the waiter (or the Python handle) and the pending answer: either may go first (a
       cancelled or closing context stops waiting for an answer that may never come) */
    atomic_init(&call->refs, 2);
    /* pushed inside the port's guard, as messages are: a JS thread that is ending answers
       every call queued before it closed the port (bp_port_refuse_calls), and none after */
    if (!bp_port_enter(p)) {
        bp_ctx_unref(c);
        free(call->data);
        free(call);
        PyErr_SetString(PyExc_RuntimeError, JS_GONE);
        return NULL;
    }
    int was_empty = bp_mpsc_push(&p->calls, &call->node);
    if (atomic_load(&p->sync_waiting)) sem_post(&p->sync_wake);
    bp_port_leave(p);
    if (was_empty) ring(c, p); /* the context's reference keeps p */
    return call;
}

/* The JS answer as a Python value, or the JSError it stands for. */
static PyObject *answer_of(bp_interp *st, bp_jscall *call) {
    bp_reader r = {.buf = call->data, .pos = 0, .end = call->len, .port = NULL, .st = st};
    if (call->status == BP_OK) return bp_read_value(&r, 0);
    if (call->status == BP_ERR_JS) return bp_raise_js_error(st, &r);
    if (call->status == BP_ERR_STATE) {
        PyErr_SetString(PyExc_RuntimeError, JS_GONE);
        return NULL;
    }
    PyErr_Format(PyExc_RuntimeError, "bunpy: calling into JS failed (status %d)", (int)call->status);
    return NULL;
}

PyObject *bp_context_call_js(bp_interp *st, PyObject *name, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    bp_context *c = bp_this_context;
    if (c->depth >= BP_MAX_NESTING) {
        PyErr_Format(PyExc_RecursionError, "bunpy: calls between JS and Python nested deeper than %d levels",
                     BP_MAX_NESTING);
        return NULL;
    }
    bp_jscall *call = queue_call(c, name, args, nargs, kwnames, -1, 0);
    if (!call) return NULL;
    /* The answer comes back through bp_call_reply, which sets `answered` and wakes us;
       meanwhile requests to this context are served (JS may call back into it). A cancel
       of the call this code runs for, or the context's close, ends the wait with
       bunpy.Interrupted; the answer, if it ever comes, is then dropped. */
    PyObject *result = bp_ctx_wait_serving(c, &call->answered) == 0 ? answer_of(st, call) : NULL;
    call_unref(call);
    return result;
}

/* ---- async_call: the answer wakes an asyncio loop through an eventfd ------------------- */

#define CALL_CAPSULE "bunpy.jscall"

static void capsule_drop(PyObject *capsule) {
    bp_jscall *call = PyCapsule_GetPointer(capsule, CALL_CAPSULE);
    if (call) call_unref(call);
}

/* _bunpy.call_start(name, *args, **kwargs) -> (handle, fd): fd becomes readable when JS answered. */
PyObject *bp_context_call_start(bp_interp *st, PyObject *name, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames) {
    (void)st;
    bp_context *c = bp_this_context;
    if (c && c->own_fds) {
        /* JS would write this eventfd by a number that means another file in its fd table */
        PyErr_SetString(PyExc_RuntimeError,
                        "bunpy.async_call: in a sandboxed context it can only be awaited on the context's own event "
                        "loop (run the coroutine with ctx.call, not asyncio.run inside a call)");
        return NULL;
    }
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) return PyErr_SetFromErrno(PyExc_OSError);
    bp_jscall *call = queue_call(c, name, args, nargs, kwnames, fd, 0);
    if (!call) {
        close(fd);
        return NULL;
    }
    PyObject *capsule = PyCapsule_New(call, CALL_CAPSULE, capsule_drop);
    if (!capsule) {
        /* the queued call still holds its reference and is answered later */
        atomic_fetch_sub(&call->refs, 1);
        return NULL;
    }
    return Py_BuildValue("(Ni)", capsule, fd);
}

/* _bunpy.call_start_batched(name, *args, **kwargs) -> (handle, key): on the context's own
   loop, the answer is announced through the context's answers fd (one for all calls,
   registered in the loop for its whole life) and listed by take_answers() under `key`. */
PyObject *bp_context_call_start_batched(bp_interp *st, PyObject *name, PyObject *const *args, Py_ssize_t nargs,
                                        PyObject *kwnames) {
    (void)st;
    bp_context *c = bp_this_context;
    bp_jscall *call = queue_call(c, name, args, nargs, kwnames, -1, 1);
    if (!call) return NULL;
    PyObject *capsule = PyCapsule_New(call, CALL_CAPSULE, capsule_drop);
    if (!capsule) {
        atomic_fetch_sub(&call->refs, 1); /* the answer's reference stays */
        return NULL;
    }
    return Py_BuildValue("(NN)", capsule, PyLong_FromVoidPtr(call));
}

/* _bunpy.take_answers() -> [key]: the batched calls JS answered since the last take. */
PyObject *bp_context_take_answers(void) {
    bp_context *c = bp_this_context;
    bp_wakefd_drain(c->answers.rd, c->own_fds); /* reset first: a later answer writes again */
    bp_node *list = bp_mpsc_take(&c->answered);
    PyObject *keys = PyList_New(0);
    while (list) {
        bp_jscall *call = (bp_jscall *)list;
        list = list->next;
        PyObject *key = keys ? PyLong_FromVoidPtr(call) : NULL;
        if (key && PyList_Append(keys, key) < 0) Py_CLEAR(keys);
        Py_XDECREF(key);
        call_unref(call); /* the list's reference: the Python handle keeps the call */
    }
    return keys;
}

void bp_ctx_drop_answers(bp_context *c) {
    for (bp_node *n = bp_mpsc_take(&c->answered); n;) {
        bp_jscall *call = (bp_jscall *)n;
        n = n->next;
        call_unref(call);
    }
}

/* _bunpy.call_finish(handle) -> the answer (or raises the JSError). */
PyObject *bp_context_call_finish(bp_interp *st, PyObject *capsule) {
    bp_jscall *call = PyCapsule_GetPointer(capsule, CALL_CAPSULE);
    if (!call) return NULL;
    if (!atomic_load(&call->answered)) {
        PyErr_SetString(PyExc_RuntimeError, "bunpy: the JS call has not been answered yet");
        return NULL;
    }
    return answer_of(st, call);
}

int32_t bp_port_take_calls(bp_io *io) {
    bp_port *p = bp_port_of(io);
    bp_node *list = bp_mpsc_take(&p->calls);
    uint32_t count = 0;
    uint64_t need = 4;
    for (bp_node *n = list; n; n = n->next) {
        count++;
        need += 20 + ((bp_jscall *)n)->len;
    }
    if (need > UINT32_MAX || bp_io_reserve(io, (uint32_t)need) != BP_OK) {
        /* out of memory: answer them with an error rather than reorder or lose them */
        for (bp_node *n = list; n;) {
            bp_jscall *call = (bp_jscall *)n;
            n = n->next;
            bp_call_reply(call, io, BP_ERR_MEMORY, 0);
        }
        return BP_ERR_MEMORY;
    }
    uint8_t *b = io->buf;
    memcpy(b, &count, 4);
    uint32_t pos = 4;
    for (bp_node *n = list; n;) {
        bp_jscall *call = (bp_jscall *)n;
        n = n->next; /* the call stays alive until bp_call_reply */
        uint64_t cp = (uint64_t)(uintptr_t)call, ctx = (uint64_t)(uintptr_t)call->ctx;
        memcpy(b + pos, &cp, 8);
        memcpy(b + pos + 8, &ctx, 8);
        memcpy(b + pos + 16, &call->len, 4);
        memcpy(b + pos + 20, call->data, call->len);
        pos += 20 + call->len;
        /* listed until answered: a JS thread that ends first answers it (bp_port_refuse_calls) */
        call->taken = p;
        call->taken_prev = NULL;
        call->taken_next = p->taken_calls;
        if (p->taken_calls) p->taken_calls->taken_prev = call;
        p->taken_calls = call;
    }
    io->len = pos;
    return (int32_t)count;
}

int32_t bp_call_reply(void *handle, bp_io *io, int32_t status, uint32_t len) {
    bp_jscall *call = handle;
    if (call->taken) { /* off the taking port's list (the same JS thread, or the host's lock) */
        if (call->taken_prev) call->taken_prev->taken_next = call->taken_next;
        else call->taken->taken_calls = call->taken_next;
        if (call->taken_next) call->taken_next->taken_prev = call->taken_prev;
        call->taken = NULL;
    }
    uint8_t *answer = malloc(len ? len : 1);
    if (!answer) {
        status = BP_ERR_MEMORY;
        len = 0;
    } else if (len) {
        memcpy(answer, io->buf, len);
    }
    free(call->data);
    call->data = answer;
    call->len = len;
    call->status = status;
    bp_context *c = call->ctx;
    if (call->batched == 2) { /* the relay sends it to the host process */
        atomic_store(&call->answered, 1);
        bp_mpsc_push(&c->answered, &call->node);
        bp_ctx_wake(c);
    } else if (call->batched) {
        atomic_store(&call->answered, 1);
        /* the answered list takes over the answer's reference; written on the edge only */
        if (bp_mpsc_push(&c->answered, &call->node)) bp_wakefd_post(c->answers.wr);
    } else if (call->notify_fd >= 0) {
        atomic_store(&call->answered, 1);
        uint64_t one = 1;
        ssize_t n = write(call->notify_fd, &one, sizeof one);
        (void)n;
        call_unref(call); /* the answer's reference; the Python handle keeps its own */
    } else {
        atomic_store(&call->answered, 1);
        bp_ctx_wake(c);
        call_unref(call); /* the answer's reference: the waiter (if it still waits) keeps its own */
    }
    bp_ctx_unref(c); /* taken in queue_call */
    return BP_OK;
}

/* The port's JS thread is ending (io.c, on that thread, after it closed the port: nothing
   is queued any more, and its JS runs no more): the calls it never took, and those it took
   but never answered (stopped in the middle, or awaiting a Promise), are answered with
   BP_ERR_STATE, each as JS would (a waiter woken, an eventfd written, a batched or relayed
   answer listed), so each gives back its context reference. */
void bp_port_refuse_calls(bp_port *p) {
    while (p->taken_calls) bp_call_reply(p->taken_calls, &p->io, BP_ERR_STATE, 0); /* unlinks it */
    for (bp_node *n = bp_mpsc_take(&p->calls); n;) {
        bp_jscall *call = (bp_jscall *)n;
        n = n->next;
        bp_call_reply(call, &p->io, BP_ERR_STATE, 0);
    }
}

/* ------------------------------------------------------------------------ messages ----- */

/* Waits (GIL released) until fewer than BP_MAX_UNREAD messages of this context wait. */
static int reader_caught_up(bp_context *c, void *unused) {
    (void)unused;
    return atomic_load(&c->unread) < BP_MAX_UNREAD;
}

static int reader_caught_up_or_cut(bp_context *c, void *owner) {
    return reader_caught_up(c, NULL) || bp_ctx_wait_cut(c, owner);
}

/* 0 once the reader caught up; -1 with bunpy.Interrupted when the call this code runs for
   was cancelled or the context is closing. */
static int wait_for_reader(bp_context *c) {
    bp_request *owner = bp_ctx_wait_owner(c);
    PyThreadState *ts = PyEval_SaveThread();
    /* woken by bp_message_drained, a cancel or the close; the timeout only guards against
       a lost wake-up */
    while (!reader_caught_up_or_cut(c, owner)) bp_ctx_sleep(c, reader_caught_up_or_cut, owner, 100);
    PyEval_RestoreThread(ts);
    if (reader_caught_up(c, NULL)) return 0;
    bp_ctx_raise_interrupted(c, bp_ctx_wait_cut(c, owner));
    return -1;
}

/* A message record: a bp_request with op MESSAGE and id 0, drained with the completions. */
static bp_request *message_new(uint8_t *payload, uint32_t len, bp_port *to, bp_context *from) {
    bp_request *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->op = BP_REQ_MESSAGE;
    r->data = payload; /* heap: request_free frees it since it is not inline_data */
    r->len = len;
    r->reply = to;
    atomic_fetch_add(&to->refs, 1);
    r->ctx = from;
    if (from) bp_ctx_ref(from);
    return r;
}

/* A message that was never queued: its references go. */
static void message_discard(bp_request *r) {
    if (r->ctx) bp_ctx_unref(r->ctx);
    r->ctx = NULL;
    bp_request_free(r);
}

static PyObject *send_to(bp_port *to, bp_context *c, PyObject *channel, PyObject *value);

PyObject *bp_send(bp_interp *st, PyObject *channel, PyObject *value) {
    (void)st;
    bp_context *c = bp_this_context;
    bp_port *to = c ? c->owner : bp_current_port;
    if (!to) {
        PyErr_SetString(PyExc_RuntimeError,
                        "bunpy.send works on a context's thread or while JS is calling into Python, not from "
                        "a Python thread started with `threading`");
        return NULL;
    }
    return send_to(to, c, channel, value);
}

/* ---- a main-interpreter port kept by Python (inline serving, python/bunpy/_inline.py) ----
   _bunpy.port() while JS calls in: a capsule holding a reference to that JS thread's port;
   _bunpy.port_send(port, channel, value) from any thread of the main interpreter queues a
   message for it as bunpy.send does (the GIL is released around the doorbell off the JS
   thread). */
#define PORT_CAPSULE "bunpy.port"

static void port_capsule_free(PyObject *cap) {
    bp_port *p = PyCapsule_GetPointer(cap, PORT_CAPSULE);
    if (p) bp_port_unref(p);
}

PyObject *bp_port_capsule(void) {
    bp_port *p = bp_this_context ? NULL : bp_current_port;
    if (!p) {
        PyErr_SetString(PyExc_RuntimeError, "bunpy: port() works only while JS calls into the main interpreter");
        return NULL;
    }
    atomic_fetch_add(&p->refs, 1);
    PyObject *cap = PyCapsule_New(p, PORT_CAPSULE, port_capsule_free);
    if (!cap) bp_port_unref(p);
    return cap;
}

PyObject *bp_port_send(PyObject *cap, PyObject *channel, PyObject *value) {
    bp_port *p = PyCapsule_GetPointer(cap, PORT_CAPSULE);
    if (!p) return NULL;
    if (!PyUnicode_Check(channel)) {
        PyErr_SetString(PyExc_TypeError, "port_send(port, channel, value): channel must be a str");
        return NULL;
    }
    return send_to(p, NULL, channel, value);
}

static PyObject *send_to(bp_port *to, bp_context *c, PyObject *channel, PyObject *value) {
    if (c && refuse_while_writing(c) < 0) return NULL;
    if (!bp_port_alive(to)) {
        PyErr_SetString(PyExc_RuntimeError, "bunpy.send: the JS thread of this interpreter is gone");
        return NULL;
    }
    atomic_int *unread = c ? &c->unread : &to->unread;
    if (atomic_load(unread) >= BP_MAX_UNREAD) {
        if (!c) {
            PyErr_Format(PyExc_BufferError,
                         "bunpy.send: %d messages are waiting for JS; the main interpreter runs on the JS "
                         "thread and cannot wait for JS to read them (send from a context, or return first)",
                         BP_MAX_UNREAD);
            return NULL;
        }
        if (wait_for_reader(c) < 0) return NULL;
    }
    bp_io *scratch = c ? &c->scratch : NULL;
    bp_io tmp = {0};
    if (!scratch) { /* the main interpreter's port buffer may hold the current call's data */
        tmp.cap = 256;
        tmp.buf = malloc(tmp.cap);
        if (!tmp.buf) return PyErr_NoMemory();
        scratch = &tmp;
    }
    bp_writer w;
    bp_writer_init(&w, scratch, 0);
    PyObject *origin = PyFloat_FromDouble((double)(uintptr_t)c);
    int rc = origin ? bp_write_value(&w, origin, 0) : BP_ERR_PYTHON;
    Py_XDECREF(origin);
    if (!rc) rc = bp_write_value(&w, channel, 0);
    if (!rc) rc = bp_write_value(&w, value, 0);
    uint32_t len = 0;
    uint8_t *payload = NULL;
    if (rc) {
        raise_convert(&w, rc, "message");
    } else {
        payload = take_written(&w, &len);
        if (!payload) PyErr_NoMemory();
    }
    free(tmp.buf);
    if (!payload) return NULL;
    bp_request *r = message_new(payload, len, to, c);
    if (!r) {
        free(payload);
        return PyErr_NoMemory();
    }
    /* pushed inside the port's guard: a JS thread that is ending frees every message queued
       before it closed the port (bp_port_drop_completions), so none keeps its context */
    if (!bp_port_enter(to)) {
        message_discard(r);
        PyErr_SetString(PyExc_RuntimeError, "bunpy.send: the JS thread of this interpreter is gone");
        return NULL;
    }
    atomic_fetch_add(unread, 1);
    int was_empty = bp_mpsc_push(&to->completions, &r->node);
    if (atomic_load(&to->sync_waiting)) sem_post(&to->sync_wake);
    /* the guard ends here: the ring below may take the main GIL back, a wait of any length,
       and a closing JS thread waits for the guard (io.c). `to` stays allocated: the
       context's, the capsule's or the running call's reference keeps it. */
    bp_port_leave(to);
    if (was_empty && to->doorbell) {
        if (!c && to != bp_current_port) { /* a thread of the main interpreter (port_send) */
            PyThreadState *ts = PyEval_SaveThread();
            bp_port_ring(to);
            PyEval_RestoreThread(ts);
        } else {
            ring(c, to);
        }
    }
    Py_RETURN_NONE;
}

/* bp_port_drain saw a message go to JS. */
void bp_message_drained(bp_request *r) {
    if (r->ctx) {
        if (atomic_fetch_sub(&r->ctx->unread, 1) == BP_MAX_UNREAD) bp_ctx_wake(r->ctx);
        bp_ctx_unref(r->ctx);
        r->ctx = NULL;
    } else {
        atomic_fetch_sub(&r->reply->unread, 1);
    }
}

/* ---- process contexts (relay.c): the host's calls and messages, relayed ------------- */

/* A CALL frame: queued on the owner port like a context's bunpy.call. The answer goes to
   c->answered (batched 2) and from there back to the host (bp_relay_answers). */
int bp_relay_call(bp_context *c, const uint8_t *data, uint32_t len, uint64_t remote) {
    bp_port *p = c->owner;
    bp_jscall *call = calloc(1, sizeof *call);
    if (!call) return -1;
    call->data = malloc(len ? len : 1);
    if (!call->data) {
        free(call);
        return -1;
    }
    if (len) memcpy(call->data, data, len);
    call->len = len;
    call->ctx = c;
    call->notify_fd = -1;
    call->batched = 2;
    call->remote = remote;
    atomic_init(&call->refs, 1); /* the answer's: the relay drops it once sent */
    bp_ctx_ref(c);
    /* nobody to ask (the guard as in queue_call): answer with an error */
    if (!p->doorbell || !bp_port_enter(p)) {
        call->status = BP_ERR_STATE; /* the host raises RuntimeError */
        call->len = 0;
        atomic_store(&call->answered, 1);
        bp_mpsc_push(&c->answered, &call->node);
        bp_ctx_unref(c);
        return 0;
    }
    int was_empty = bp_mpsc_push(&p->calls, &call->node);
    if (atomic_load(&p->sync_waiting)) sem_post(&p->sync_wake);
    bp_port_leave(p);
    if (was_empty) bp_port_ring(p);
    return 0;
}

/* Sends (send != NULL) or drops the answers JS gave to relayed calls. -1: a send failed. */
int bp_relay_answers(bp_context *c, int (*send)(bp_context *, uint64_t, int32_t, const uint8_t *, uint32_t)) {
    int rc = 0;
    for (bp_node *n = bp_mpsc_take(&c->answered); n;) {
        bp_jscall *call = (bp_jscall *)n;
        n = n->next;
        if (send && rc == 0 && send(c, call->remote, call->status, call->data, call->len) < 0) rc = -1;
        call_unref(call);
    }
    return rc;
}

/* A MESSAGE frame: the host's message record with its origin (a number: the host's context)
   rewritten to this context, queued for the owner port like a context's bunpy.send. */
int bp_relay_message(bp_context *c, const uint8_t *data, uint32_t len) {
    /* the origin is written as a float (a pointer as a double) */
    if (len < 9 || (data[0] != BP_T_FLOAT && data[0] != BP_T_INT53)) return 0; /* not a message record: dropped */
    bp_port *to = c->owner;
    if (!bp_port_alive(to)) return 0;
    uint8_t *payload = malloc(len);
    if (!payload) return -1;
    memcpy(payload, data, len);
    double origin = (double)(uintptr_t)c;
    memcpy(payload + 1, &origin, 8);
    bp_request *r = message_new(payload, len, to, c);
    if (!r) {
        free(payload);
        return -1;
    }
    if (!bp_port_enter(to)) { /* as in send_to */
        message_discard(r);
        return 0;
    }
    atomic_fetch_add(&c->unread, 1);
    if (bp_mpsc_push(&to->completions, &r->node) && to->doorbell && !atomic_load(&to->js_polling)) bp_port_ring(to);
    if (atomic_load(&to->sync_waiting)) sem_post(&to->sync_wake);
    bp_port_leave(to);
    return 0;
}
