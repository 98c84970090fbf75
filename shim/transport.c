/*
 * transport.c — _bunpy.StreamCore: the hot half of bunpy's stream socket transport (TCP and
 * Unix), on the reactor of the loop that owns it. python/bunpy/_transport.py subclasses it
 * with the cold half (close, errors, connection_lost, extra info), as asyncio's
 * _SelectorSocketTransport does them.
 *
 * The fd is registered once, EPOLLIN | EPOLLOUT | EPOLLET, when reading starts, and removed
 * when the connection is lost: pausing, resuming and write-queue changes make no epoll_ctl.
 * Edge-triggered readiness is kept in the transport (`readable`, `writable`): a read goes on
 * until EAGAIN (fact 8), and a transport with data left unread after its share of reads
 * (or that resumes reading) waits in the reactor's pending list, which makes the next
 * wait a poll.
 *
 * For comparison only, a reactor set to registration("level") (BUNPY_LOOP_REGISTRATION=level)
 * registers its transports' fds level-triggered with the events wanted at the moment, as
 * asyncio's add_reader/add_writer do, and changes the registration with every change of
 * interest: pause and resume, a backlog formed or sent, the end of reading (bp_transport_arm).
 *
 * Reads land in the reactor's reusable buffer and go to Protocol.data_received as bytes, or
 * straight into BufferedProtocol.get_buffer()'s buffer. The write half (gathered writes,
 * the queue flushed on EPOLLOUT edges, the water marks) is in transmit.c.
 */
#include "reactor.h"
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>
#include <structmember.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define READS_PER_TURN 16           /* reads of one transport per loop iteration (fairness) */
#define READ_BUF (256 * 1024)
#define BIG_READ (32 * 1024)       /* from this size on, the next read goes into its own bytes */

static const char *COLD[] = {"_on_eof", "_fatal_error", "_write_drained", "_protocol_call_failed"};

PyObject *bp_transport_cold(bp_transport *t, int which, PyObject *arg, const char *msg) {
    PyObject *m = PyUnicode_InternFromString(COLD[which]);
    if (!m) return NULL;
    PyObject *args[3] = {(PyObject *)t, arg, NULL};
    size_t n = 1;
    PyObject *s = NULL;
    if (arg) n = 2;
    if (msg) {
        s = PyUnicode_FromString(msg);
        if (!s) {
            Py_DECREF(m);
            return NULL;
        }
        args[n++] = s;
    }
    args[0] = t->owner ? t->owner : (PyObject *)t; /* the Python transport this is the core of */
    PyObject *v = PyObject_VectorcallMethod(m, args, n, NULL);
    Py_DECREF(m);
    Py_XDECREF(s);
    return v;
}

/* An error from Python code: SystemExit / KeyboardInterrupt go up (-1); others go to the
   transport's _fatal_error(exc, msg), which reports and closes (0, or -1 if it fails). */
static int fatal_from_python(bp_transport *t, const char *msg) {
    if (PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) return -1;
    PyObject *exc = bp_err_take();
    PyObject *v = bp_transport_cold(t, BP_COLD_FATAL_ERROR, exc, msg);
    Py_DECREF(exc);
    Py_XDECREF(v);
    return v ? 0 : -1;
}

int bp_transport_fatal_errno(bp_transport *t, int err, const char *msg) {
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    return fatal_from_python(t, msg);
}

/* ---- the reactor side ----------------------------------------------------------------- */

static int map_put(bp_reactor *r, int fd, bp_transport *t) {
    if (fd >= r->tcap) {
        int cap = r->tcap ? r->tcap : 64;
        while (cap <= fd) cap *= 2;
        bp_transport **m = PyMem_Realloc(r->tmap, (size_t)cap * sizeof *m);
        if (!m) {
            PyErr_NoMemory();
            return -1;
        }
        memset(m + r->tcap, 0, (size_t)(cap - r->tcap) * sizeof *m);
        r->tmap = m;
        r->tcap = cap;
    }
    r->tmap[fd] = t;
    return 0;
}

void bp_transport_pend(bp_reactor *r, bp_transport *t) {
    if (t->pending) return;
    t->pending = 1;
    t->pend_next = NULL;
    if (r->pend_tail) r->pend_tail->pend_next = t;
    else r->pend_head = t;
    r->pend_tail = t;
    Py_INCREF(t);
}

/* An epoll event for a transport fd (data: BP_TAG_TRANSPORT | fd). No Python runs here. */
void bp_transport_event(bp_reactor *r, uint64_t data, uint32_t events) {
    int fd = (int)(data & 0xffffffffu);
    bp_transport *t = fd < r->tcap ? r->tmap[fd] : NULL;
    if (!t) {
        bp_connect_event(r, fd, events); /* a connect in progress (connect.c), or stale */
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) t->readable = 1;
    if (events & (EPOLLHUP | EPOLLERR | EPOLLRDHUP)) t->hangup = 1; /* read on to the EOF or error */
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) t->writable = 1;
    bp_transport_pend(r, t);
}

/* One read into the protocol: 1 data delivered, 0 EAGAIN / stop, -1 error raised. */
static int read_once(bp_transport *t, char *buf) {
    ssize_t n;
    int err = 0; /* recv's errno, taken before any Python runs */
    if (t->buffered) {
        /* get_buffer() may call set_protocol() (or close the transport): what was read into
           this protocol's buffer is reported to this protocol's buffer_updated, held here,
           as t->buffer_updated may be another protocol's by then or gone (a crash) */
        PyObject *get_buffer = Py_NewRef(t->get_buffer);
        PyObject *updated = Py_NewRef(t->buffer_updated);
        PyObject *mv = PyObject_CallOneArg(get_buffer, t->minus_one);
        Py_DECREF(get_buffer);
        if (!mv) {
            Py_DECREF(updated);
            return fatal_from_python(t, "Fatal error: protocol.get_buffer() call failed.") < 0 ? -1 : 0;
        }
        Py_buffer view;
        if (PyObject_GetBuffer(mv, &view, PyBUF_WRITABLE) < 0) {
            Py_DECREF(mv);
            Py_DECREF(updated);
            return fatal_from_python(t, "Fatal error: protocol.get_buffer() call failed.") < 0 ? -1 : 0;
        }
        if (view.len == 0) {
            PyBuffer_Release(&view);
            Py_DECREF(mv);
            Py_DECREF(updated);
            PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
            return fatal_from_python(t, "Fatal error: protocol.get_buffer() call failed.") < 0 ? -1 : 0;
        }
        do n = recv(t->fd, view.buf, (size_t)view.len, 0);
        while (n < 0 && errno == EINTR);
        err = errno; /* the DECREFs below may run a __del__ that changes errno */
        PyBuffer_Release(&view);
        Py_DECREF(mv);
        if (n <= 0) Py_DECREF(updated);
        if (n > 0) {
            if (n < view.len && !t->hangup) t->readable = 0; /* drained: see below */
            PyObject *len = PyLong_FromSsize_t(n);
            PyObject *v = len ? PyObject_CallOneArg(updated, len) : NULL;
            Py_DECREF(updated);
            Py_XDECREF(len);
            if (!v) return fatal_from_python(t, "Fatal error: protocol.buffer_updated() call failed.") < 0 ? -1 : 0;
            Py_DECREF(v);
            return 1;
        }
    } else if (t->big_reads) {
        /* large reads go straight into a bytes object (as asyncio's sock.recv does): copying
           them out of the shared buffer would cost a pass over every byte */
        PyObject *data = PyBytes_FromStringAndSize(NULL, READ_BUF);
        if (!data) return -1;
        do n = recv(t->fd, PyBytes_AS_STRING(data), READ_BUF, 0);
        while (n < 0 && errno == EINTR);
        err = errno;
        if (n > 0) {
            if (n < READ_BUF && !t->hangup) t->readable = 0; /* drained: see below */
            t->big_reads = n >= BIG_READ;
            if (n < READ_BUF && _PyBytes_Resize(&data, n) < 0) return -1;
            PyObject *received = Py_NewRef(t->data_received); /* set_protocol() in it drops t's */
            PyObject *v = PyObject_CallOneArg(received, data);
            Py_DECREF(received);
            Py_DECREF(data);
            if (!v) return fatal_from_python(t, "Fatal error: protocol.data_received() call failed.") < 0 ? -1 : 0;
            Py_DECREF(v);
            return 1;
        }
        Py_DECREF(data);
    } else {
        do n = recv(t->fd, buf, READ_BUF, 0);
        while (n < 0 && errno == EINTR);
        err = errno;
        if (n > 0) {
            t->big_reads = n >= BIG_READ;
            /* A short read emptied the socket's queue: Linux signals an edge-triggered fd
               again for every arrival after this, so the read that would only say EAGAIN
               is skipped (one syscall less per message, as tokio does) — unless the peer's
               FIN or an error came with the edge (EPOLLRDHUP/HUP/ERR): no edge will follow
               for those, so reading goes on until recv says so. */
            if (n < READ_BUF && !t->hangup) t->readable = 0;
            PyObject *data = PyBytes_FromStringAndSize(buf, n);
            PyObject *received = Py_NewRef(t->data_received); /* set_protocol() in it drops t's */
            PyObject *v = data ? PyObject_CallOneArg(received, data) : NULL;
            Py_DECREF(received);
            Py_XDECREF(data);
            if (!v) return fatal_from_python(t, "Fatal error: protocol.data_received() call failed.") < 0 ? -1 : 0;
            Py_DECREF(v);
            return 1;
        }
    }
    if (n == 0) { /* EOF: no more reads; the protocol decides between half-open and close */
        t->readable = 0;
        t->eof_received = 1;
        PyObject *v = bp_transport_cold(t, BP_COLD_ON_EOF, NULL, NULL);
        Py_XDECREF(v);
        return v ? 0 : -1;
    }
    if (err == EAGAIN || err == EWOULDBLOCK) {
        t->readable = 0;
        return 0;
    }
    t->readable = 0;
    return bp_transport_fatal_errno(t, err, "Fatal read error on socket transport") < 0 ? -1 : 0;
}

static int reading(bp_transport *t) { return t->registered && !t->paused && !t->closing && !t->eof_received; }

#define ARMED_EDGE 0xffffffffu /* registered by connect_wait, edge-triggered: not a level mask */

/* Level mode: the events a registered transport wants now (a backlog wants EPOLLOUT). */
static uint32_t level_want(bp_transport *t) {
    return (reading(t) ? EPOLLIN | EPOLLRDHUP : 0) | (t->wlen > t->wpos && !t->gathered ? EPOLLOUT : 0);
}

void bp_transport_arm(bp_transport *t) {
    bp_reactor *r = (bp_reactor *)t->reactor;
    /* the mode the fd was registered in: registration() may change since (new transports) */
    if (!r || !t->level || !t->registered || r->epfd < 0) return;
    uint32_t want = level_want(t);
    if (want == t->armed) return;
    /* with nothing wanted the fd leaves the set, as asyncio's selector drops it: a
       level-triggered hang-up would otherwise be reported at every wait */
    struct epoll_event ev = {.events = want, .data.u64 = BP_TAG_TRANSPORT | (uint64_t)t->fd};
    int op = !t->armed ? EPOLL_CTL_ADD : want ? EPOLL_CTL_MOD : EPOLL_CTL_DEL;
    if (epoll_ctl(r->epfd, op, t->fd, &ev) != 0) return;
    if (op == EPOLL_CTL_ADD) r->nfds++;
    else if (op == EPOLL_CTL_DEL && r->nfds > 0) r->nfds--; /* as bp_reactor_disown would */
    t->armed = want;
}

/* Serves one pending transport: flushes, then reads its share. */
static int serve(bp_reactor *r, bp_transport *t) {
    if (!t->registered) return 0;
    if ((t->writable || t->gathered) && bp_transport_on_writable(t) < 0) return -1;
    int rc = 1;
    t->serving = 1; /* what data_received writes is gathered and sent below */
    for (int i = 0; i < READS_PER_TURN && t->readable && reading(t); i++) {
        rc = read_once(t, r->rbuf);
        if (rc <= 0) break;
        /* the peer's FIN is known to follow: the EOF is for the next turn, so the protocol
           sees data and EOF in two iterations, as with asyncio's transports */
        if (t->hangup) break;
    }
    t->serving = 0;
    if (rc < 0) {
        if (t->gathered) bp_transport_pend(r, t); /* sent at the next turn */
        return -1;
    }
    if (t->gathered && t->registered && bp_transport_on_writable(t) < 0) return -1;
    if (t->readable && reading(t)) bp_transport_pend(r, t); /* more to read: its turn comes again */
    bp_transport_arm(t);
    return 0;
}

int bp_transports_run(bp_reactor *r) {
    if (r->napend && bp_accepts_run(r) < 0) return -1;
    if ((r->ncpend || r->cpend_lost) && bp_connects_run(r) < 0) return -1;
    if (!r->pend_head) return 0;
    if (!r->rbuf && !(r->rbuf = PyMem_Malloc(READ_BUF))) {
        PyErr_NoMemory();
        return -1;
    }
    /* only those pending now: a transport re-queued while served waits for the next turn */
    bp_transport *t = r->pend_head, *last = r->pend_tail;
    r->pend_head = r->pend_tail = NULL;
    int rc = 0;
    for (;;) {
        bp_transport *next = t->pend_next;
        int is_last = t == last;
        t->pending = 0;
        t->pend_next = NULL;
        if (rc == 0) rc = serve(r, t);
        /* SystemExit/KeyboardInterrupt (or no memory) stops this turn: a transport not served
           keeps its edge for the next one, or it would never be told again */
        if (rc < 0 && (t->readable || t->writable || t->gathered) && t->registered) bp_transport_pend(r, t);
        Py_DECREF(t);
        if (is_last) break;
        t = next;
    }
    return rc;
}

/* The reactor is closing: drop what it holds. */
void bp_transports_clear(bp_reactor *r) {
    while (r->pend_head) {
        bp_transport *t = r->pend_head;
        r->pend_head = t->pend_next;
        t->pending = 0;
        t->pend_next = NULL;
        Py_DECREF(t);
    }
    r->pend_tail = NULL;
    for (int fd = 0; fd < r->tcap; fd++) {
        bp_transport *t = r->tmap[fd];
        if (!t) continue;
        r->tmap[fd] = NULL;
        t->registered = 0;
        Py_DECREF(t);
    }
    PyMem_Free(r->tmap);
    r->tmap = NULL;
    r->tcap = 0;
    PyMem_Free(r->rbuf);
    r->rbuf = NULL;
}

/* ---- the type ----------------------------------------------------------------------- */

/* asyncio.BufferedProtocol, looked up once per reactor (borrowed) */
static PyObject *buffered_protocol(bp_reactor *r) {
    if (!r->buffered_type) {
        PyObject *asyncio = PyImport_ImportModule("asyncio");
        r->buffered_type = asyncio ? PyObject_GetAttrString(asyncio, "BufferedProtocol") : NULL;
        Py_XDECREF(asyncio);
    }
    return r->buffered_type;
}

static int set_protocol(bp_transport *t, PyObject *protocol) {
    PyObject *gb = NULL, *bu = NULL, *dr = NULL;
    PyObject *bp_type = buffered_protocol((bp_reactor *)t->reactor);
    if (!bp_type) return -1;
    int buffered = PyObject_IsInstance(protocol, bp_type);
    if (buffered < 0) return -1;
    if (buffered) {
        gb = PyObject_GetAttrString(protocol, "get_buffer");
        bu = gb ? PyObject_GetAttrString(protocol, "buffer_updated") : NULL;
        if (!bu) {
            Py_XDECREF(gb);
            return -1;
        }
    } else {
        dr = PyObject_GetAttrString(protocol, "data_received");
        if (!dr) return -1;
    }
    t->buffered = buffered;
    Py_XSETREF(t->protocol, Py_NewRef(protocol));
    Py_XSETREF(t->get_buffer, gb);
    Py_XSETREF(t->buffer_updated, bu);
    Py_XSETREF(t->data_received, dr);
    return 0;
}

/* StreamCore(loop, sock, protocol): the socket must be non-blocking. */
static int core_init(PyObject *self, PyObject *args, PyObject *kwargs) {
    bp_transport *t = (bp_transport *)self;
    static char *names[] = {"loop", "sock", "protocol", "owner", NULL};
    PyObject *loop, *sock, *protocol, *owner = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|O:StreamCore", names, &loop, &sock, &protocol, &owner)) return -1;
    PyObject *reactor = PyObject_GetAttrString(loop, "_reactor");
    if (!reactor && !PyErr_ExceptionMatches(PyExc_AttributeError)) return -1;
    PyErr_Clear();
    if (!reactor || strcmp(Py_TYPE(reactor)->tp_name, "_bunpy.Reactor") != 0) {
        Py_XDECREF(reactor);
        PyErr_SetString(PyExc_TypeError, "StreamCore: the loop is not a bunpy loop");
        return -1;
    }
    PyObject *fdo = PyObject_CallMethod(sock, "fileno", NULL);
    long fd = fdo ? PyLong_AsLong(fdo) : -1;
    Py_XDECREF(fdo);
    if (fd < 0 || fd > INT_MAX) {
        Py_DECREF(reactor);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "StreamCore: the socket is closed");
        return -1;
    }
    Py_XSETREF(t->reactor, reactor);
    if (set_protocol(t, protocol) < 0) return -1;
    Py_XSETREF(t->loop, Py_NewRef(loop));
    Py_XSETREF(t->sock, Py_NewRef(sock));
    Py_XSETREF(t->owner, Py_XNewRef(owner));
    if (!t->minus_one) t->minus_one = PyLong_FromLong(-1);
    if (!t->minus_one) return -1;
    t->fd = (int)fd;
    t->high = 64 * 1024; /* asyncio's defaults (FlowControlMixin) */
    t->low = 16 * 1024;
    return 0;
}

/* _start(): registers the fd for the transport's life (EPOLLIN|EPOLLOUT|EPOLLET). */
static PyObject *core_start(PyObject *self, PyObject *unused) {
    bp_transport *t = (bp_transport *)self;
    bp_reactor *r = (bp_reactor *)t->reactor;
    /* closing is no reason to skip: a close() in connection_made waits for the queue */
    if (!r || t->registered || t->conn_lost) Py_RETURN_NONE;
    if (r->epfd < 0) return bp_reactor_closed_error();
    if (map_put(r, t->fd, t) < 0) return NULL;
    uint32_t early = 0;
    t->level = r->level;
    if (bp_connect_adopt(r, t->fd, &early)) { /* registered by connect_wait already */
        Py_INCREF(t); /* the map's reference */
        t->registered = 1;
        t->armed = ARMED_EDGE;
        bp_transport_arm(t);
        if (early) bp_transport_event(r, BP_TAG_TRANSPORT | (uint64_t)t->fd, early);
        Py_RETURN_NONE;
    }
    uint32_t events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    if (r->level) { /* what it wants once started: writes made before the start want EPOLLOUT */
        t->registered = 1;
        events = level_want(t) | EPOLLRDHUP; /* never 0: armed 0 means "not in the set" */
        t->registered = 0;
    }
    t->armed = r->level ? events : 0;
    if (bp_reactor_own(r, t->fd, events, BP_TAG_TRANSPORT | (uint64_t)t->fd) < 0) {
        r->tmap[t->fd] = NULL;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_INCREF(t); /* the map's reference */
    t->registered = 1;
    Py_RETURN_NONE;
}

/* _stop(): the connection is lost: the fd leaves the epoll set. */
static PyObject *core_stop(PyObject *self, PyObject *unused) {
    bp_transport *t = (bp_transport *)self;
    bp_reactor *r = (bp_reactor *)t->reactor;
    if (!t->registered) { /* never started: a registration made for it by connect_wait goes */
        if (r && r->epfd >= 0) bp_connect_release(r, t->fd);
        Py_RETURN_NONE;
    }
    t->registered = 0;
    if (r && t->fd < r->tcap && r->tmap[t->fd] == t) {
        r->tmap[t->fd] = NULL;
        bp_reactor_disown(r, t->fd);
        Py_DECREF(t);
    }
    Py_RETURN_NONE;
}

static PyObject *core_pause_reading(PyObject *self, PyObject *unused) {
    bp_transport *t = (bp_transport *)self;
    t->paused = 1;
    bp_transport_arm(t);
    Py_RETURN_NONE;
}

static PyObject *core_resume_reading(PyObject *self, PyObject *unused) {
    bp_transport *t = (bp_transport *)self;
    if (!t->paused) Py_RETURN_NONE;
    t->paused = 0;
    /* data that arrived while paused gave its edge already: read it at the next turn */
    if (t->readable && reading(t)) bp_transport_pend((bp_reactor *)t->reactor, t);
    bp_transport_arm(t);
    Py_RETURN_NONE;
}

static PyObject *core_set_protocol(PyObject *self, PyObject *protocol) {
    if (!((bp_transport *)self)->reactor) {
        PyErr_SetString(PyExc_RuntimeError, "StreamCore: not initialised");
        return NULL;
    }
    if (set_protocol((bp_transport *)self, protocol) < 0) return NULL;
    Py_RETURN_NONE;
}

/* _release(): the connection is lost: drop the references to Python objects (a cycle
   through the owner otherwise waits for the garbage collector). */
static PyObject *core_release(PyObject *self, PyObject *unused) {
    bp_transport *t = (bp_transport *)self;
    Py_CLEAR(t->owner);
    Py_CLEAR(t->sock);
    Py_CLEAR(t->data_received);
    Py_CLEAR(t->get_buffer);
    Py_CLEAR(t->buffer_updated);
    PyMem_Free(t->wbuf);
    t->wbuf = NULL;
    t->wcap = t->wlen = t->wpos = 0;
    Py_RETURN_NONE;
}

static PyMemberDef core_members[] = {
    {"_protocol", T_OBJECT, offsetof(bp_transport, protocol), READONLY, NULL},
    {"_loop", T_OBJECT, offsetof(bp_transport, loop), 0, NULL},
    {"_sock", T_OBJECT, offsetof(bp_transport, sock), 0, NULL},
    {"_sock_fd", T_INT, offsetof(bp_transport, fd), READONLY, NULL},
    {"_closing", T_BOOL, offsetof(bp_transport, closing), 0, NULL},
    {"_eof", T_BOOL, offsetof(bp_transport, eof_requested), 0, NULL},
    {"_eof_received", T_BOOL, offsetof(bp_transport, eof_received), READONLY, NULL},
    {"_paused", T_BOOL, offsetof(bp_transport, paused), READONLY, NULL},
    {"_protocol_paused", T_BOOL, offsetof(bp_transport, protocol_paused), 0, NULL},
    {"_conn_lost", T_INT, offsetof(bp_transport, conn_lost), 0, NULL},
    {"_registered", T_BOOL, offsetof(bp_transport, registered), READONLY, NULL},
    {NULL}};

static PyMethodDef core_methods[] = {
    {"write", bp_core_write, METH_O, "write(data): gathered for the end of the loop iteration, or sent now."},
    {"writelines", bp_core_writelines, METH_O, "writelines(list_of_data): as write(), one gathered send."},
    {"_flush", bp_core_flush, METH_NOARGS, "_flush(): send what was gathered now."},
    {"pause_reading", core_pause_reading, METH_NOARGS, NULL},
    {"resume_reading", core_resume_reading, METH_NOARGS, NULL},
    {"get_write_buffer_size", bp_core_get_write_buffer_size, METH_NOARGS, NULL},
    {"set_write_buffer_limits", (PyCFunction)(void (*)(void))bp_core_set_write_buffer_limits, METH_VARARGS | METH_KEYWORDS, NULL},
    {"get_write_buffer_limits", bp_core_get_write_buffer_limits, METH_NOARGS, NULL},
    {"_set_protocol", core_set_protocol, METH_O, NULL},
    {"_start", core_start, METH_NOARGS, NULL},
    {"_stop", core_stop, METH_NOARGS, NULL},
    {"_discard", bp_core_discard, METH_NOARGS, NULL},
    {"_release", core_release, METH_NOARGS, NULL},
    {NULL}};

static int core_traverse(PyObject *self, visitproc visit, void *arg) {
    bp_transport *t = (bp_transport *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(t->reactor);
    Py_VISIT(t->loop);
    Py_VISIT(t->sock);
    Py_VISIT(t->owner);
    Py_VISIT(t->protocol);
    Py_VISIT(t->data_received);
    Py_VISIT(t->get_buffer);
    Py_VISIT(t->buffer_updated);
    return 0;
}

static int core_clear(PyObject *self) {
    bp_transport *t = (bp_transport *)self;
    Py_CLEAR(t->reactor);
    Py_CLEAR(t->loop);
    Py_CLEAR(t->sock);
    Py_CLEAR(t->owner);
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->data_received);
    Py_CLEAR(t->get_buffer);
    Py_CLEAR(t->buffer_updated);
    Py_CLEAR(t->minus_one);
    return 0;
}

static void core_dealloc(PyObject *self) {
    bp_transport *t = (bp_transport *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    core_clear(self);
    PyMem_Free(t->wbuf);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot core_slots[] = {
    {Py_tp_init, core_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_methods, core_methods},
    {Py_tp_members, core_members},
    {Py_tp_traverse, core_traverse},
    {Py_tp_clear, core_clear},
    {Py_tp_dealloc, core_dealloc},
    {Py_tp_doc, "StreamCore(loop, sock, protocol): the C half of bunpy's stream transport."},
    {0, NULL}};

static PyType_Spec core_spec = {
    .name = "_bunpy.StreamCore",
    .basicsize = sizeof(bp_transport),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = core_slots,
};

PyObject *bp_transport_type_new(PyObject *module) { return PyType_FromModuleAndSpec(module, &core_spec, NULL); }
